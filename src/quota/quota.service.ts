import type { EntityManager } from '@mikro-orm/postgresql';
import type { Clock } from '../clock';
import type { Sql } from '../db/database';
import { query, queryOne } from '../db/sql';
import { QuotaExceededError, UnauthenticatedError } from '../errors';
import type { Logger } from '../logger';
import type { QuotaPeriod } from '../users/user.entity';
import { periodBounds } from './periods';
import type { QuotaUsage } from './quota.types';

/** Largest count a usage record or a GraphQL Int holds; anything above is refused, never wrapped. */
export const MAX_TOKEN_COUNT = 2_147_483_647;

/** Tokens held for one request in flight, from reservation to settlement or release. */
export interface Reservation {
  readonly requestId: string;
  readonly userId: string;
  readonly promptTokens: number;
  /** What the upstream may generate: the client's maxTokens, or what remained when it gave none. */
  readonly maxCompletionTokens: number;
  readonly amount: number;
  readonly promptCountSource: 'tokenize' | 'tiktoken';
}

export interface ReserveRequest {
  readonly requestId: string;
  readonly userId: string;
  readonly promptTokens: number;
  readonly promptCountSource: 'tokenize' | 'tiktoken';
  /** The client's maxTokens; null lets the gateway cap it to what remains. */
  readonly maxTokens: number | null;
  /** The most the model can generate for this prompt (context length - prompt). */
  readonly modelCompletionLimit: number;
}

export interface Settlement {
  readonly model: string;
  readonly interface: 'graphql' | 'openai';
  readonly apiKeyId: string | null;
  readonly promptTokens: number;
  readonly completionTokens: number;
  readonly usageSource: 'reported' | 'estimated';
  readonly status: 'completed' | 'aborted' | 'upstream_error' | 'timeout' | 'cut';
  readonly latencyMs: number;
}

/**
 * A NOTIFY sent by the settle statement itself, so the usage record and its event commit
 * together (or not at all). `payload` is a JSON object; the statement adds `used`, `rem`
 * (remaining, null when unlimited) and `at`.
 */
export interface SettlementNotice {
  readonly channel: string;
  readonly payload: string;
}

export interface SettledUsage {
  /** False when the request had already been settled: nothing was charged again. */
  readonly charged: boolean;
  readonly chargedTokens: number;
  readonly used: number;
  readonly reserved: number;
  readonly limit: number | null;
  readonly remaining: number | null;
  readonly at: Date;
}

/**
 * The period start of the user's quota at `?` (the clock's now), in SQL, so that the period
 * rolls over inside the same statement that reserves or settles: no cron, no race.
 */
const PERIOD_START_SQL = `case u.quota_period
    when 'DAILY' then date_trunc('day', ?::timestamptz at time zone 'UTC') at time zone 'UTC'
    when 'MONTHLY' then date_trunc('month', ?::timestamptz at time zone 'UTC') at time zone 'UTC'
    else 'epoch'::timestamptz end`;

function assertCount(value: number, name: string): void {
  if (!Number.isSafeInteger(value) || value < 0 || value > MAX_TOKEN_COUNT) {
    throw new RangeError(`${name} out of range: ${value}`);
  }
}

/**
 * The quota ledger. Every change is one SQL statement holding the account row's lock, so
 * `used + reserved <= limit` holds however many requests and gateway instances run at once.
 */
export class QuotaService {
  constructor(
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
  async reserve(em: EntityManager, request: ReserveRequest): Promise<Reservation> {
    assertCount(request.promptTokens, 'promptTokens');
    assertCount(request.modelCompletionLimit, 'modelCompletionLimit');
    if (request.maxTokens !== null) assertCount(request.maxTokens, 'maxTokens');
    const now = this.clock.now();
    const row = await queryOne<{
      token_limit: number | null;
      used: string;
      reserved: string;
      completion: string | null;
      granted: boolean;
    }>(
      em,
      `with cur as (
         select q.user_id, u.token_limit,
                case when q.period_start >= ps.start then q.used else 0 end as used,
                q.reserved, ps.start as period_start
           from quota_accounts q
           join users u on u.id = q.user_id
           cross join lateral (select ${PERIOD_START_SQL} as start) ps
          where q.user_id = ? and u.disabled = false
          for update of q
       ), budget as (
         select cur.*,
                case when ?::bigint is not null then ?::bigint
                     when cur.token_limit is null then ?::bigint
                     else least(?::bigint, cur.token_limit - cur.used - cur.reserved - ?::bigint) end as completion
           from cur
       ), upd as (
         update quota_accounts q
            set used = b.used, reserved = q.reserved + ?::bigint + b.completion,
                period_start = greatest(q.period_start, b.period_start), updated_at = now()
           from budget b
          where q.user_id = b.user_id and b.completion >= 1
            and (b.token_limit is null or b.used + b.reserved + ?::bigint + b.completion <= b.token_limit)
         returning q.user_id
       ), ins as (
         insert into quota_reservations (request_id, user_id, amount, expires_at)
         select ?, b.user_id, ?::bigint + b.completion, now() + make_interval(secs => ?)
           from budget b where exists (select 1 from upd)
         returning request_id
       )
       select b.token_limit, b.used, b.reserved, b.completion, exists (select 1 from ins) as granted from budget b`,
      [
        now,
        now,
        request.userId,
        request.maxTokens,
        request.maxTokens,
        request.modelCompletionLimit,
        request.modelCompletionLimit,
        request.promptTokens,
        request.promptTokens,
        request.promptTokens,
        request.requestId,
        request.promptTokens,
        this.reservationTtlSeconds,
      ],
    );
    if (row === undefined) throw new UnauthenticatedError('The user no longer exists or is disabled.');
    const completion = row.completion === null ? 0 : Number(row.completion);
    if (!row.granted) {
      const requested = request.promptTokens + (request.maxTokens ?? 1);
      throw new QuotaExceededError(
        `This request needs ${requested} tokens but only ${Math.max(0, (row.token_limit ?? 0) - Number(row.used) - Number(row.reserved))} remain in your quota.`,
        { limit: row.token_limit, used: Number(row.used), reserved: Number(row.reserved), requested },
      );
    }
    return {
      requestId: request.requestId,
      userId: request.userId,
      promptTokens: request.promptTokens,
      maxCompletionTokens: completion,
      amount: request.promptTokens + completion,
      promptCountSource: request.promptCountSource,
    };
  }

  /**
   * Charges what the upstream reported, writes the usage record and releases the rest of the
   * reservation: one statement, so a crash leaves either all of it or none. Settling the same
   * request twice charges once. When the upstream reports more than was reserved (the prompt
   * was estimated with tiktoken and came out low), the excess is charged as far as the limit
   * allows, so `used` still never passes it.
   */
  async settle(em: EntityManager, reservation: Reservation, outcome: Settlement, announce?: SettlementNotice): Promise<SettledUsage> {
    assertCount(outcome.promptTokens, 'promptTokens');
    assertCount(outcome.completionTokens, 'completionTokens');
    const total = outcome.promptTokens + outcome.completionTokens;
    assertCount(total, 'totalTokens');
    if (total > reservation.amount) {
      this.log.warn(
        { requestId: reservation.requestId, reported: total, reserved: reservation.amount },
        'upstream reported more tokens than were reserved; charging what fits in the limit',
      );
    }
    const now = this.clock.now();
    const row = await queryOne<{ used: string; reserved: string; token_limit: number | null; charged: number | null }>(
      em,
      `with res as (
         delete from quota_reservations where request_id = ? returning user_id, amount
       ), acct as (
         select q.user_id, u.token_limit, ps.start as period_start,
                case when q.period_start >= ps.start then q.used else 0 end as used, q.reserved
           from quota_accounts q
           join users u on u.id = q.user_id
           cross join lateral (select ${PERIOD_START_SQL} as start) ps
          where q.user_id = ?
          for update of q
       ), rec as (
         insert into usage_records (request_id, user_id, api_key_id, model, interface, prompt_tokens, completion_tokens,
                                    total_tokens, charged_tokens, usage_source, prompt_count_source, status, latency_ms, created_at)
         select ?, a.user_id, ?, ?, ?, ?, ?, ?,
                least(?::bigint, coalesce((select amount from res), 0) +
                      case when a.token_limit is null then ?::bigint else greatest(a.token_limit - a.used - a.reserved, 0) end),
                ?, ?, ?, ?, ?
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
              case when ?::text is not null and exists (select 1 from rec) then pg_notify(?::text, (?::jsonb || jsonb_build_object(
                'used', upd.used,
                'rem', case when (select token_limit from acct) is null then null
                            else greatest((select token_limit from acct) - upd.used - upd.reserved, 0) end,
                'at', ?::text))::text) end as notified
         from upd`,
      [
        reservation.requestId,
        now,
        now,
        reservation.userId,
        reservation.requestId,
        outcome.apiKeyId,
        outcome.model,
        outcome.interface,
        outcome.promptTokens,
        outcome.completionTokens,
        total,
        total,
        total,
        outcome.usageSource,
        reservation.promptCountSource,
        outcome.status,
        Math.max(0, Math.min(Math.round(outcome.latencyMs), MAX_TOKEN_COUNT)),
        now,
        announce?.channel ?? null,
        announce?.channel ?? null,
        announce?.payload ?? '{}',
        now.toISOString(),
      ],
    );
    if (row === undefined) throw new Error(`quota account of user ${reservation.userId} is missing`);
    const used = Number(row.used);
    const reserved = Number(row.reserved);
    return {
      charged: row.charged !== null,
      chargedTokens: row.charged ?? 0,
      used,
      reserved,
      limit: row.token_limit,
      remaining: row.token_limit === null ? null : Math.max(0, row.token_limit - used - reserved),
      at: now,
    };
  }

  /** Keeps a long-running request's reservation from looking abandoned to the reaper. */
  async extend(em: EntityManager, reservation: Reservation): Promise<void> {
    await query(em, 'update quota_reservations set expires_at = now() + make_interval(secs => ?) where request_id = ?', [
      this.reservationTtlSeconds,
      reservation.requestId,
    ]);
  }

  /** How often a running stream should call `extend`. */
  get extendEveryMs(): number {
    return (this.reservationTtlSeconds * 1000) / 3;
  }

  /** Gives a reservation back untouched: the upstream produced nothing chargeable. */
  async release(em: EntityManager, reservation: Reservation): Promise<void> {
    await query(
      em,
      `with res as (delete from quota_reservations where request_id = ? returning user_id, amount)
       update quota_accounts q set reserved = q.reserved - res.amount, updated_at = now() from res where q.user_id = res.user_id`,
      [reservation.requestId],
    );
  }

  /** Releases reservations whose process died (older than the request timeout). */
  async reapExpired(em: EntityManager): Promise<number> {
    const rows = await query<{ user_id: string }>(
      em,
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
      `update quota_accounts set period_start = $2::timestamptz,
              used = (select coalesce(sum(charged_tokens), 0) from usage_records where user_id = $1::uuid and created_at >= $2::timestamptz),
              updated_at = now()
        where user_id = $1::uuid`,
      [userId, start],
    );
  }

  /** Usage of several users in one query (a page of `users { usage }`), in the order given. */
  async usageOfMany(em: EntityManager, users: readonly QuotaHolder[]): Promise<QuotaUsage[]> {
    const rows = await query<{ user_id: string; used: string; reserved: string; period_start: string }>(
      em,
      'select user_id, used, reserved, period_start from quota_accounts where user_id = any(?::uuid[])',
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

export interface QuotaHolder {
  readonly id: string;
  readonly tokenLimit: number | null;
  readonly quotaPeriod: QuotaPeriod;
}

/**
 * Collects the `usage` fields resolved in one tick of a request and reads them with one
 * query: a page of 100 users costs one round trip, not 100.
 */
export class QuotaUsageLoader {
  private pending: { user: QuotaHolder; resolve: (usage: QuotaUsage) => void; reject: (error: unknown) => void }[] = [];

  constructor(
    private readonly quota: QuotaService,
    private readonly em: EntityManager,
  ) {}

  load(user: QuotaHolder): Promise<QuotaUsage> {
    return new Promise((resolve, reject) => {
      if (this.pending.length === 0) process.nextTick(() => this.flush());
      this.pending.push({ user, resolve, reject });
    });
  }

  private flush(): void {
    const batch = this.pending;
    this.pending = [];
    this.quota.usageOfMany(this.em, batch.map((entry) => entry.user)).then(
      (usages) => batch.forEach((entry, index) => entry.resolve(usages[index])),
      (error: unknown) => batch.forEach((entry) => entry.reject(error)),
    );
  }
}
