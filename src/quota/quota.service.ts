import type { GatewayMetrics } from '../metrics/metrics';
import type { Clock } from '../clock';
import type { Database, Sql } from '../db/database';
import { QuotaExceededError, UnauthenticatedError } from '../errors';
import type { Logger } from '../logger';
import { QuotaPeriod } from '../users/user.entity';
import { periodBounds } from './periods';
import type { QuotaUsage } from './quota.types';
import { REAP_SQL, RESERVE_SQL } from './ledger-sql';
import type { RateLimiter } from './rate-limiter';
import { MAX_TOKEN_COUNT, Reservation, type ChargeTarget, type LedgerAccess, type PromptCountSource } from './reservation';

export interface ReserveRequest {
  readonly requestId: string;
  readonly userId: string;
  readonly promptTokens: number;
  readonly promptCountSource: PromptCountSource;
  /** The client's maxTokens; null lets the gateway cap it to what remains. */
  readonly maxTokens: number | null;
  /** The most the model can generate for this prompt (context length - prompt). */
  readonly modelCompletionLimit: number;
  readonly target: ChargeTarget;
}

export interface QuotaHolder {
  readonly id: string;
  readonly tokenLimit: number | null;
  readonly quotaPeriod: QuotaPeriod;
}

function assertCount(value: number, name: string): void {
  if (!Number.isSafeInteger(value) || value < 0 || value > MAX_TOKEN_COUNT) {
    throw new RangeError(`${name} out of range: ${value}`);
  }
}

/**
 * The quota ledger: accounts, reservations (each `Reservation` then ends itself), the reaper
 * and the usage figures. The tokens-per-minute window moves with each reservation.
 */
export class QuotaService {
  private readonly ledger: LedgerAccess;

  constructor(
    private readonly db: Database,
    rateLimiter: RateLimiter,
    private readonly clock: Clock,
    private readonly log: Logger,
    /** How long a reservation may live before the reaper treats its process as dead. */
    reservationTtlSeconds: number,
    metrics: GatewayMetrics,
  ) {
    this.ledger = { db, rateLimiter, clock, log, ttlSeconds: reservationTtlSeconds, metrics };
  }

  /** How often a running stream should extend its reservation. */
  get extendEveryMs(): number {
    return (this.ledger.ttlSeconds * 1000) / 3;
  }

  async openAccount(sql: Sql, userId: string): Promise<void> {
    await sql.query('insert into quota_accounts (user_id) values ($1) on conflict (user_id) do nothing', [userId]);
  }

  /**
   * Reserves prompt + completion budget atomically. Without a client maxTokens the completion
   * budget is what remains (capped by the model), so a request never starts that cannot fit.
   */
  async reserve(request: ReserveRequest): Promise<Reservation> {
    assertCount(request.promptTokens, 'promptTokens');
    assertCount(request.modelCompletionLimit, 'modelCompletionLimit');
    if (request.maxTokens !== null) assertCount(request.maxTokens, 'maxTokens');
    const now = this.clock.now();
    const row = await this.db.one<{
      token_limit: number | null;
      quota_period: QuotaPeriod;
      used: string;
      reserved: string;
      completion: string | null;
      granted: boolean;
    }>(RESERVE_SQL, [
      now,
      request.userId,
      request.maxTokens,
      request.modelCompletionLimit,
      request.promptTokens,
      request.requestId,
      this.ledger.ttlSeconds,
    ]);
    if (row === undefined) throw new UnauthenticatedError('The user no longer exists or is disabled.');
    if (!row.granted) {
      const requested = request.promptTokens + (request.maxTokens ?? 1);
      const used = Number(row.used);
      const reserved = Number(row.reserved);
      throw new QuotaExceededError(
        `This request needs ${requested} tokens but only ${Math.max(0, (row.token_limit ?? 0) - used - reserved)} remain in your quota.`,
        { limit: row.token_limit, used, reserved, requested, resetsAt: periodBounds(row.quota_period, now).end },
      );
    }
    const completion = Number(row.completion);
    const reservation = new Reservation(
      {
        requestId: request.requestId,
        userId: request.userId,
        promptTokens: request.promptTokens,
        maxCompletionTokens: completion,
        amount: request.promptTokens + completion,
        promptCountSource: request.promptCountSource,
      },
      request.target,
      this.ledger,
    );
    try {
      await reservation.holdInRateWindow();
    } catch (error) {
      await reservation.release();
      throw error;
    }
    return reservation;
  }

  /** Releases reservations whose process died (older than the request timeout). */
  async reapExpired(): Promise<number> {
    const rows = await this.db.query<{ user_id: string }>(REAP_SQL);
    if (rows.length > 0) this.log.warn({ users: rows.length }, 'released reservations left by a stopped process');
    return rows.length;
  }

  /** After a change of quota period, `used` is recounted from the records of the new current period. */
  async recountPeriod(sql: Sql, userId: string, period: QuotaPeriod): Promise<void> {
    const { start } = periodBounds(period, this.clock.now());
    await sql.query(
      `update quota_accounts set period_start = $2,
              used = (select coalesce(sum(charged_tokens), 0) from usage_records where user_id = $1 and created_at >= $2),
              updated_at = now()
        where user_id = $1`,
      [userId, start],
    );
  }

  /** Usage of several users in one query (a page of `users { usage }`), in the order given. */
  async usageOfMany(users: readonly QuotaHolder[]): Promise<QuotaUsage[]> {
    const rows = await this.db.query<{ user_id: string; used: string; reserved: string; period_start: string }>(
      'select user_id, used, reserved, period_start from quota_accounts where user_id = any($1::uuid[])',
      [users.map((user) => user.id)],
    );
    const byUser = new Map(rows.map((row) => [row.user_id, row]));
    const now = this.clock.now();
    return users.map((user) => {
      const row = byUser.get(user.id);
      const bounds = periodBounds(user.quotaPeriod, now);
      const used = row !== undefined && new Date(row.period_start) >= bounds.start ? Number(row.used) : 0;
      const reserved = row === undefined ? 0 : Number(row.reserved);
      return {
        used,
        reserved,
        limit: user.tokenLimit,
        remaining: user.tokenLimit === null ? null : Math.max(0, user.tokenLimit - used - reserved),
        periodStart: bounds.end === null ? null : bounds.start,
        periodEnd: bounds.end,
      };
    });
  }
}
