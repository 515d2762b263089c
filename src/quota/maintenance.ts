import type { Logger } from '../logger';
import type { QuotaService } from './quota.service';
import type { RateLimiter } from './rate-limiter';

const EVERY_MS = 60_000;

/**
 * Gives back the reservations of processes that died (once now, then every minute) and
 * forgets rate windows that no longer count.
 */
export async function startQuotaMaintenance(quota: QuotaService, rateLimiter: RateLimiter, log: Logger): Promise<{ stop(): void }> {
  await quota.reapExpired();
  const timer = setInterval(() => {
    quota.reapExpired().catch((error: unknown) => log.error({ err: error }, 'reservation reaper failed'));
    rateLimiter.forgetOldWindows().catch((error: unknown) => log.error({ err: error }, 'rate window cleanup failed'));
  }, EVERY_MS);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
