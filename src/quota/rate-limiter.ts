import type { Config } from '../config';
import type { Database } from '../db/database';
import { RateLimitedError } from '../errors';

/**
 * Requests and tokens per user per calendar minute, counted in PostgreSQL so the limit holds
 * across instances. Off (no query at all) when both limits are 0.
 */
export class RateLimiter {
  constructor(
    private readonly limits: Config['rateLimit'],
    private readonly db: Database,
  ) {}

  get enabled(): boolean {
    return this.limits.requestsPerMinute > 0 || this.limits.tokensPerMinute > 0;
  }

  /** Counts one request, refusing it when the minute's requests or tokens are spent. */
  async admit(userId: string): Promise<void> {
    if (!this.enabled) return;
    const row = await this.db.one<{ requests: number; tokens: string; seconds_left: string }>(
      `insert into rate_windows (user_id, window_start, requests) values ($1, date_trunc('minute', now()), 1)
       on conflict (user_id, window_start) do update set requests = rate_windows.requests + 1
       returning requests, tokens, extract(epoch from (window_start + interval '1 minute' - now())) as seconds_left`,
      [userId],
    );
    if (row === undefined) return;
    const retryAfter = Math.max(1, Math.ceil(Number(row.seconds_left)));
    const { requestsPerMinute, tokensPerMinute } = this.limits;
    if (requestsPerMinute > 0 && row.requests > requestsPerMinute) {
      throw new RateLimitedError(`At most ${requestsPerMinute} chat requests per minute.`, retryAfter);
    }
    if (tokensPerMinute > 0 && Number(row.tokens) >= tokensPerMinute) {
      throw new RateLimitedError(`At most ${tokensPerMinute} tokens per minute.`, retryAfter);
    }
  }

  /**
   * Holds a reservation's tokens in the current minute, so requests in flight count against
   * the tokens-per-minute limit too; refuses when the minute's tokens were already spent.
   */
  async holdTokens(userId: string, tokens: number): Promise<void> {
    if (this.limits.tokensPerMinute <= 0) return;
    const row = await this.db.one<{ before: string; seconds_left: string }>(
      `insert into rate_windows (user_id, window_start, tokens) values ($1, date_trunc('minute', now()), $2::bigint)
       on conflict (user_id, window_start) do update set tokens = rate_windows.tokens + excluded.tokens
       returning tokens - $2::bigint as before, extract(epoch from (window_start + interval '1 minute' - now())) as seconds_left`,
      [userId, tokens],
    );
    if (row !== undefined && Number(row.before) >= this.limits.tokensPerMinute) {
      await this.adjust(userId, -tokens);
      throw new RateLimitedError(`At most ${this.limits.tokensPerMinute} tokens per minute.`, Math.max(1, Math.ceil(Number(row.seconds_left))));
    }
  }

  /** Corrects the current minute's tokens once a request's real charge is known (or released). */
  async adjust(userId: string, delta: number): Promise<void> {
    if (this.limits.tokensPerMinute <= 0 || delta === 0) return;
    await this.db.query(
      `insert into rate_windows (user_id, window_start, tokens) values ($1, date_trunc('minute', now()), greatest($2::bigint, 0))
       on conflict (user_id, window_start) do update set tokens = greatest(rate_windows.tokens + $2::bigint, 0)`,
      [userId, delta],
    );
  }

  async forgetOldWindows(): Promise<void> {
    if (!this.enabled) return;
    await this.db.query("delete from rate_windows where window_start < now() - interval '2 minutes'");
  }
}
