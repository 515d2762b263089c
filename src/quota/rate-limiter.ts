import type { EntityManager } from '@mikro-orm/postgresql';
import type { Config } from '../config';
import { query, queryOne } from '../db/sql';
import { RateLimitedError } from '../errors';

/**
 * Requests and tokens per user per calendar minute, counted in PostgreSQL so the limit holds
 * across instances. Off (no query at all) when both limits are 0.
 */
export class RateLimiter {
  constructor(private readonly limits: Config['rateLimit']) {}

  get enabled(): boolean {
    return this.limits.requestsPerMinute > 0 || this.limits.tokensPerMinute > 0;
  }

  /** Counts one request, refusing it when the minute's requests or tokens are spent. */
  async admit(em: EntityManager, userId: string): Promise<void> {
    if (!this.enabled) return;
    const row = await queryOne<{ requests: number; tokens: string; seconds_left: string }>(
      em,
      `insert into rate_windows (user_id, window_start, requests) values (?, date_trunc('minute', now()), 1)
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
  async holdTokens(em: EntityManager, userId: string, tokens: number): Promise<void> {
    if (this.limits.tokensPerMinute <= 0) return;
    const row = await queryOne<{ before: string; seconds_left: string }>(
      em,
      `insert into rate_windows (user_id, window_start, tokens) values (?, date_trunc('minute', now()), ?)
       on conflict (user_id, window_start) do update set tokens = rate_windows.tokens + excluded.tokens
       returning tokens - ? as before, extract(epoch from (window_start + interval '1 minute' - now())) as seconds_left`,
      [userId, tokens, tokens],
    );
    if (row !== undefined && Number(row.before) >= this.limits.tokensPerMinute) {
      await this.adjust(em, userId, -tokens);
      throw new RateLimitedError(`At most ${this.limits.tokensPerMinute} tokens per minute.`, Math.max(1, Math.ceil(Number(row.seconds_left))));
    }
  }

  /** Corrects the current minute's tokens once a request's real charge is known (or released). */
  async adjust(em: EntityManager, userId: string, delta: number): Promise<void> {
    if (this.limits.tokensPerMinute <= 0 || delta === 0) return;
    await query(
      em,
      `insert into rate_windows (user_id, window_start, tokens) values (?, date_trunc('minute', now()), greatest(?::bigint, 0))
       on conflict (user_id, window_start) do update set tokens = greatest(rate_windows.tokens + ?::bigint, 0)`,
      [userId, delta, delta],
    );
  }

  async forgetOldWindows(em: EntityManager): Promise<void> {
    if (!this.enabled) return;
    await query(em, "delete from rate_windows where window_start < now() - interval '2 minutes'");
  }
}
