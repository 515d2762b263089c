import type { Clock } from '../clock';
import type { Database, Sql } from '../db/database';
import { QuotaExceededError, UnauthenticatedError } from '../errors';
import type { Logger } from '../logger';
import { USAGE_CHANNEL, encodeUnsettled } from '../usage/usage-wire';
import { QuotaPeriod } from '../users/user.entity';
import { periodBounds } from './periods';
import type { QuotaUsage } from './quota.types';
import type { RateLimiter } from './rate-limiter';
import {
  MAX_TOKEN_COUNT,
  Reservation,
  type ChargeTarget,
  type PromptCountSource,
  type ReservationLedger,
  type SettledUsage,
  type Usage,
} from './reservation';

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

/**
 * The period start of the user's quota at `$1` (the clock's now), in SQL, so that the period
 * rolls over inside the same statement that reserves or settles: no cron, no race.
 */
const PERIOD_START_SQL = `case u.quota_period
    when 'DAILY' then date_trunc('day', $1::timestamptz at time zone 'UTC') at time zone 'UTC'
    when 'MONTHLY' then date_trunc('month', $1::timestamptz at time zone 'UTC') at time zone 'UTC'
    else 'epoch'::timestamptz end`;

/** The user's account row, locked, with `used` as of the current period. */
const CURRENT_ACCOUNT_SQL = `select q.user_id, u.token_limit, u.quota_period, ps.start as period_start,
                case when q.period_start >= ps.start then q.used else 0 end as used, q.reserved
           from quota_accounts q
           join users u on u.id = q.user_id
           cross join lateral (select ${PERIOD_START_SQL} as start) ps
          where q.user_id = $2`;

/**
 * $1 now, $2 user, $3 the client's maxTokens (null: what remains), $4 the model's completion
 * limit, $5 prompt tokens, $6 request id, $7 reservation lifetime in seconds.
 */
const RESERVE_SQL = `with cur as (
         ${CURRENT_ACCOUNT_SQL} and u.disabled = false
          for update of q
       ), budget as (
         select cur.*,
                case when $3::bigint is not null then $3::bigint
                     when cur.token_limit is null then $4::bigint
                     else least($4::bigint, cur.token_limit - cur.used - cur.reserved - $5::bigint) end as completion
           from cur
       ), upd as (
         update quota_accounts q
            set used = b.used, reserved = q.reserved + $5::bigint + b.completion,
                period_start = greatest(q.period_start, b.period_start), updated_at = now()
           from budget b
          where q.user_id = b.user_id and b.completion >= 1
            and (b.token_limit is null or b.used + b.reserved + $5::bigint + b.completion <= b.token_limit)
         returning q.user_id
       ), ins as (
         insert into quota_reservations (request_id, user_id, amount, expires_at)
         select $6::uuid, b.user_id, $5::bigint + b.completion, now() + make_interval(secs => $7::double precision)
           from budget b where exists (select 1 from upd)
         returning request_id
       )
       select b.token_limit, b.quota_period, b.used, b.reserved, b.completion, exists (select 1 from ins) as granted from budget b`;

/**
 * $1 now, $2 user, $3 request id, $4 API key, $5 model, $6 interface, $7 prompt, $8 completion,
 * $9 total, $10 usage source, $11 prompt count source, $12 status, $13 latency ms, $14 NOTIFY
 * payload. When the upstream reports more than was reserved (a tiktoken estimate came out low),
 * the excess is charged as far as the limit allows, so `used` still never passes it.
 */
const SETTLE_SQL = `with res as (
         delete from quota_reservations where request_id = $3::uuid returning user_id, amount
       ), acct as (
         ${CURRENT_ACCOUNT_SQL}
          for update of q
       ), rec as (
         insert into usage_records (request_id, user_id, api_key_id, model, interface, prompt_tokens, completion_tokens,
                                    total_tokens, charged_tokens, usage_source, prompt_count_source, status, latency_ms, created_at)
         select $3::uuid, a.user_id, $4::uuid, $5, $6, $7::bigint, $8::bigint, $9::bigint,
                least($9::bigint, coalesce((select amount from res), 0) +
                      case when a.token_limit is null then $9::bigint else greatest(a.token_limit - a.used - a.reserved, 0) end),
                $10, $11, $12, $13::bigint, $1::timestamptz
           from acct a
         on conflict (request_id) do nothing
         returning charged_tokens
       ), upd as (
         update quota_accounts q
            set used = a.used + coalesce((select charged_tokens from rec), 0),
                reserved = q.reserved - coalesce((select amount from res), 0),
                period_start = greatest(q.period_start, a.period_start), updated_at = now()
           from acct a
          where q.user_id = a.user_id
         returning q.used, q.reserved
       )
       select upd.used, upd.reserved, (select token_limit from acct) as token_limit, (select charged_tokens from rec) as charged,
              case when exists (select 1 from rec) then pg_notify('${USAGE_CHANNEL}', ($14::jsonb || jsonb_build_object(
                'used', upd.used,
                'rem', case when (select token_limit from acct) is null then null
                            else greatest((select token_limit from acct) - upd.used - upd.reserved, 0) end,
                'at', to_char($1::timestamptz at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')))::text) end as notified
         from upd`;

function assertCount(value: number, name: string): void {
  if (!Number.isSafeInteger(value) || value < 0 || value > MAX_TOKEN_COUNT) {
    throw new RangeError(`${name} out of range: ${value}`);
  }
}

/**
 * The quota ledger. Every change is one SQL statement holding the account row's lock, so
 * `used + reserved <= limit` holds however many requests and gateway instances run at once.
 * The tokens-per-minute window moves with each reservation.
 */
export class QuotaService implements ReservationLedger {
  constructor(
    private readonly db: Database,
    private readonly rateLimiter: RateLimiter,
    private readonly clock: Clock,
    private readonly log: Logger,
    /** How long a reservation may live before the reaper treats its process as dead. */
    private readonly reservationTtlSeconds: number,
  ) {}

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
      this.reservationTtlSeconds,
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
      this,
    );
    try {
      await this.rateLimiter.holdTokens(request.userId, reservation.budget.amount);
    } catch (error) {
      await this.releaseBudget(reservation);
      throw error;
    }
    return reservation;
  }

  /**
   * Charges what the upstream reported, writes the usage record, announces it and releases the
   * rest of the reservation: one statement, so a crash leaves either all of it or none.
   * Called through `Reservation.settle`, which makes it happen once.
   */
  async settle(reservation: Reservation, usage: Usage): Promise<SettledUsage> {
    const { budget, target } = reservation;
    const total = usage.promptTokens + usage.completionTokens;
    assertCount(total, 'totalTokens');
    if (total > budget.amount) {
      this.log.warn(
        { requestId: budget.requestId, reported: total, reserved: budget.amount },
        'upstream reported more tokens than were reserved; charging what fits in the limit',
      );
    }
    const now = this.clock.now();
    const notice = encodeUnsettled({
      requestId: budget.requestId,
      userId: budget.userId,
      model: target.model,
      promptTokens: usage.promptTokens,
      completionTokens: usage.completionTokens,
    });
    const latencyMs = Math.max(0, Math.min(Math.round(performance.now() - reservation.startedAt), MAX_TOKEN_COUNT));
    const row = await this.db.one<{ used: string; reserved: string; token_limit: number | null; charged: number | null }>(SETTLE_SQL, [
      now,
      budget.userId,
      budget.requestId,
      target.apiKeyId,
      target.model,
      target.interface,
      usage.promptTokens,
      usage.completionTokens,
      total,
      usage.usageSource,
      budget.promptCountSource,
      usage.status,
      latencyMs,
      notice,
    ]);
    if (row === undefined) throw new Error(`quota account of user ${budget.userId} is missing`);
    const used = Number(row.used);
    const reserved = Number(row.reserved);
    const chargedTokens = row.charged ?? 0;
    // The minute's token count held the whole reservation; it keeps what was charged. The charge
    // is committed and announced already: a failure here must not undo either.
    await this.rateLimiter
      .adjust(budget.userId, chargedTokens - budget.amount)
      .catch((error: unknown) => this.log.warn({ err: error }, 'could not adjust the rate window'));
    return {
      charged: row.charged !== null,
      chargedTokens,
      used,
      reserved,
      limit: row.token_limit,
      remaining: row.token_limit === null ? null : Math.max(0, row.token_limit - used - reserved),
      at: now,
    };
  }

  /** Gives a reservation back untouched: the upstream produced nothing chargeable. */
  async release(reservation: Reservation): Promise<void> {
    await this.releaseBudget(reservation);
  }

  async extend(reservation: Reservation): Promise<void> {
    await this.db.query('update quota_reservations set expires_at = now() + make_interval(secs => $1::double precision) where request_id = $2::uuid', [
      this.reservationTtlSeconds,
      reservation.requestId,
    ]);
  }

  /** How often a running stream should call `extend`. */
  get extendEveryMs(): number {
    return (this.reservationTtlSeconds * 1000) / 3;
  }

  private async releaseBudget(reservation: Reservation): Promise<void> {
    await this.db.query(
      `with res as (delete from quota_reservations where request_id = $1::uuid returning user_id, amount)
       update quota_accounts q set reserved = q.reserved - res.amount, updated_at = now() from res where q.user_id = res.user_id`,
      [reservation.requestId],
    );
    await this.rateLimiter.adjust(reservation.budget.userId, -reservation.budget.amount);
  }

  /** Releases reservations whose process died (older than the request timeout). */
  async reapExpired(): Promise<number> {
    const rows = await this.db.query<{ user_id: string }>(
      `with res as (delete from quota_reservations where expires_at < now() returning user_id, amount),
            per_user as (select user_id, sum(amount) as amount from res group by user_id)
       update quota_accounts q set reserved = q.reserved - p.amount, updated_at = now()
         from per_user p where q.user_id = p.user_id
       returning q.user_id`,
    );
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
