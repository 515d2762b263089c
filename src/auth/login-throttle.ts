import type { EntityManager } from '@mikro-orm/postgresql';
import type { Config } from '../config';
import { query, queryOne } from '../db/sql';
import { RateLimitedError } from '../errors';

interface ThrottleRow {
  failures: number;
  last_failure_at: Date;
  locked_until: Date | null;
  now: Date;
}

/**
 * Counts sign-in attempts per account and per client address, in PostgreSQL so every
 * instance sees the same counts. An attempt is counted before the password is checked, so
 * many attempts at once (aliases in one document, parallel requests) cannot slip past the
 * limit; a success takes the account's count back to zero. Locks grow exponentially and are
 * capped, so a locked-out victim waits minutes, not forever.
 */
export class LoginThrottle {
  constructor(private readonly config: Config['login']) {}

  static accountSubject(email: string): string {
    return `account:${email}`;
  }

  static addressSubject(address: string): string {
    return `address:${address}`;
  }

  /** Records an attempt for each subject, or throws RATE_LIMITED when any is locked. */
  async attempt(em: EntityManager, subjects: { account: string; address: string }): Promise<void> {
    await em.transactional(async (tx) => {
      const limits: [string, number][] = [
        [subjects.account, this.config.maxFailuresPerAccount],
        [subjects.address, this.config.maxFailuresPerAddress],
      ];
      for (const [subject] of limits) {
        await query(tx, 'insert into login_throttle (subject) values (?) on conflict (subject) do nothing', [subject]);
      }
      let retryAfter = 0;
      const updates: [string, number, Date | null][] = [];
      for (const [subject, max] of limits) {
        const row = await queryOne<ThrottleRow>(
          tx,
          'select failures, last_failure_at, locked_until, now() as now from login_throttle where subject = ? for update',
          [subject],
        );
        if (row === undefined) continue;
        const now = new Date(row.now);
        if (row.locked_until !== null && new Date(row.locked_until) > now) {
          retryAfter = Math.max(retryAfter, (new Date(row.locked_until).getTime() - now.getTime()) / 1000);
          continue;
        }
        const windowExpired = now.getTime() - new Date(row.last_failure_at).getTime() > this.config.failureWindowSeconds * 1000;
        const failures = (windowExpired ? 0 : row.failures) + 1;
        const lockedUntil = failures >= max ? new Date(now.getTime() + this.lockSeconds(failures - max) * 1000) : null;
        updates.push([subject, failures, lockedUntil]);
      }
      if (retryAfter > 0) {
        throw new RateLimitedError('Too many sign-in attempts. Try again later.', retryAfter);
      }
      for (const [subject, failures, lockedUntil] of updates) {
        await query(tx, 'update login_throttle set failures = ?, last_failure_at = now(), locked_until = ? where subject = ?', [
          failures,
          lockedUntil,
          subject,
        ]);
      }
    });
  }

  /**
   * After a correct password: the account starts afresh, the address gets its attempt back.
   * `attempt` counted this sign-in before the password was checked, and when it was the one
   * that reached the limit it also set the lock: both are undone, or a success would lock its
   * own address. (A locked address never gets here: `attempt` refuses it first.)
   */
  async succeeded(em: EntityManager, subjects: { account: string; address: string }): Promise<void> {
    await query(em, 'delete from login_throttle where subject = ?', [subjects.account]);
    await query(em, 'update login_throttle set failures = greatest(failures - 1, 0), locked_until = null where subject = ?', [subjects.address]);
  }

  private lockSeconds(excessFailures: number): number {
    return Math.min(this.config.lockoutBaseSeconds * 2 ** Math.min(excessFailures, 30), this.config.lockoutMaxSeconds);
  }
}
