import type { Logger } from '../logger';
import type { QuotaService } from './quota.service';
import type { RateLimiter } from './rate-limiter';

/** Often enough that a dead instance's requests are settled well within the contract's 90 s. */
const ORPHANS_EVERY_MS = 5_000;
const CLEANUP_EVERY_MS = 60_000;

/**
 * Settles the requests of instances that died (every 5 s: the first run that may judge comes
 * once this instance's own connection has been up long enough), forgets instances long gone
 * and rate windows that no longer count (every minute).
 */
export function startQuotaMaintenance(quota: QuotaService, rateLimiter: RateLimiter, log: Logger): { stop(): void } {
  let settling: Promise<unknown> | null = null;
  const orphans = setInterval(() => {
    settling ??= quota
      .settleOrphans()
      .catch((error: unknown) => log.error({ err: error }, 'settling the requests of a gone instance failed'))
      .finally(() => {
        settling = null;
      });
  }, ORPHANS_EVERY_MS);
  const cleanup = setInterval(() => {
    quota.forgetGoneInstances().catch((error: unknown) => log.error({ err: error }, 'forgetting gone instances failed'));
    rateLimiter.forgetOldWindows().catch((error: unknown) => log.error({ err: error }, 'rate window cleanup failed'));
  }, CLEANUP_EVERY_MS);
  orphans.unref();
  cleanup.unref();
  return {
    stop: () => {
      clearInterval(orphans);
      clearInterval(cleanup);
    },
  };
}
