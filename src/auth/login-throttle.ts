import type { Config } from '../config';
import type { Database, Sql } from '../db/database';
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
  constructor(
    private readonly config: Config['login'],
    private readonly db: Database,
  ) {}

  static accountSubject(email: string): string {
    return `account:${email}`;
  }

  static addressSubject(address: string): string {
    return `address:${address}`;
  }

  /** Records an attempt for each subject, or throws RATE_LIMITED when any is locked. */
  async attempt(subjects: { account: string; address: string }): Promise<void> {
    await this.db.transaction(async (tx) => {
      const limits: [string, number][] = [
        [subjects.account, this.config.maxFailuresPerAccount],
        [subjects.address, this.config.maxFailuresPerAddress],
      ];
      for (const [subject] of limits) {
        await tx.query('insert into login_throttle (subject) values ($1) on conflict (subject) do nothing', [subject]);
      }
      let retryAfter = 0;
      const updates: [string, number, Date | null][] = [];
      for (const [subject, max] of limits) {
        const row = await tx.one<ThrottleRow>(
          'select failures, last_failure_at, locked_until, now() as now from login_throttle where subject = $1 for update',
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
        await tx.query('update login_throttle set failures = $2, last_failure_at = now(), locked_until = $3 where subject = $1', [
          subject,
          failures,
          lockedUntil,
        ]);
      }
    });
  }

  /**
   * After a correct password: the account starts afresh, the address gets its attempt back.
   * `attempt` counted this sign-in before the password was checked, and when it was the one
   * that reached the limit it also set the lock: both are undone, or a success would lock its
   * own address. (A locked address never gets here: `attempt` refuses it first.) One
   * statement, so both rows change together wherever `sql` runs (the caller's transaction).
   */
  async succeeded(sql: Sql, subjects: { account: string; address: string }): Promise<void> {
    await sql.query(
      `with account as (delete from login_throttle where subject = $1)
       update login_throttle set failures = greatest(failures - 1, 0), locked_until = null where subject = $2`,
      [subjects.account, subjects.address],
    );
  }

  private lockSeconds(excessFailures: number): number {
    return Math.min(this.config.lockoutBaseSeconds * 2 ** Math.min(excessFailures, 30), this.config.lockoutMaxSeconds);
  }
}
