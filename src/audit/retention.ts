import type { Logger } from '../logger';
import type { AuditService } from './audit.service';

const EVERY_MS = 60 * 60_000;

/** Deletes audit log entries past their retention: once now, then every hour. */
export async function startAuditRetention(audit: AuditService, log: Logger): Promise<{ stop(): void }> {
  await audit.prune();
  const timer = setInterval(() => {
    audit.prune().catch((error: unknown) => log.error({ err: error }, 'audit log retention failed'));
  }, EVERY_MS);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
