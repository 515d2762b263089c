import DataLoader from 'dataloader';
import type { QuotaHolder, QuotaService } from './quota.service';
import type { QuotaUsage } from './quota.types';

/**
 * The `usage` fields resolved in one tick of a request, read with one query: a page of 100
 * users costs one round trip, not 100. One loader per request, so nothing is cached across them.
 */
export function createUsageLoader(quota: QuotaService): DataLoader<QuotaHolder, QuotaUsage, string> {
  return new DataLoader((users) => quota.usageOfMany(users), { cacheKeyFn: (user) => user.id });
}
