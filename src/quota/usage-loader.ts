import DataLoader from 'dataloader';
import type { QuotaHolder, QuotaService } from './quota.service';
import type { QuotaUsage } from './quota.types';

export type UsageLoader = DataLoader<QuotaHolder, QuotaUsage, string>;

/**
 * The `usage` fields resolved in one tick of a request (users', teams', API keys'), read with
 * one query per level: a page of 100 users costs one round trip, not 100. One loader per
 * request, so nothing is cached across them.
 */
export function createUsageLoader(quota: QuotaService): UsageLoader {
  return new DataLoader((holders) => quota.usageOfMany(holders), { cacheKeyFn: (holder) => `${holder.scope}:${holder.id}` });
}

/** The holder's usage through the request's loader, created on first use. */
export function loadUsage(ctx: { readonly services: { readonly quota: QuotaService }; usageLoader?: UsageLoader }, holder: QuotaHolder): Promise<QuotaUsage> {
  ctx.usageLoader ??= createUsageLoader(ctx.services.quota);
  return ctx.usageLoader.load(holder);
}
