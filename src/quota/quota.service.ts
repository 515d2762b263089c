import type { GatewayMetrics } from '../metrics/metrics';
import type { Clock } from '../clock';
import type { Database, Sql } from '../db/database';
import { QuotaExceededError, UnauthenticatedError, type QuotaScope } from '../errors';
import type { Logger } from '../logger';
import { QuotaPeriod } from '../users/user.entity';
import { periodBounds } from './periods';
import type { QuotaUsage } from './quota.types';
import { ADVISORY_LOCK_KEYS } from '../db/advisory-locks';
import type { GatewayInstance } from './gateway-instance';
import { GroupCommit, LEDGER_GROUP_MAX } from './group-commit';
import { RESERVE_GROUP_SQL } from './ledger-group-sql';
import { ORPHANS_SQL, REAP_SQL, RESERVE_SQL, SETTLE_ORPHAN_SQL } from './ledger-sql';
import { PendingSettlements } from './pending-settlements';
import type { RateLimiter } from './rate-limiter';
import { MAX_TOKEN_COUNT, Reservation, settlementsOf, type ChargeTarget, type LedgerAccess, type PromptCountSource } from './reservation';

export interface ReserveRequest {
  readonly requestId: string;
  readonly userId: string;
  /** The key the request came with, whose budget binds it too; null for an access token. */
  readonly apiKeyId: string | null;
  readonly promptTokens: number;
  readonly promptCountSource: PromptCountSource;
  /** The client's maxTokens; null lets the gateway cap it to what remains. */
  readonly maxTokens: number | null;
  /** The most the model can generate for this prompt (context length - prompt). */
  readonly modelCompletionLimit: number;
  /** The least completion budget the request can run with: 1, one per choice, or 0 for a request that generates nothing. */
  readonly minCompletionTokens: number;
  readonly target: ChargeTarget;
}

/** Anything with a budget: a user, a team or an API key. */
export interface QuotaHolder {
  readonly scope: QuotaScope;
  readonly id: string;
  readonly tokenLimit: number | null;
  readonly quotaPeriod: QuotaPeriod;
}

/** Where each level keeps its ledger, and the column of usage_records naming it. */
const ACCOUNTS: Record<QuotaScope, { readonly table: string; readonly key: string }> = {
  USER: { table: 'quota_accounts', key: 'user_id' },
  TEAM: { table: 'team_quota_accounts', key: 'team_id' },
  API_KEY: { table: 'api_key_quota_accounts', key: 'api_key_id' },
};

/** How a refusal names the level, after "remain in". */
const WHOSE: Record<QuotaScope, string> = { API_KEY: "this API key's quota", USER: 'your quota', TEAM: "your team's quota" };

interface ReserveRow {
  granted: boolean;
  key_valid: boolean;
  completion: string | null;
  team_id: string | null;
  token_limit: number | null;
  quota_period: QuotaPeriod;
  used: string;
  reserved: string;
  team_limit: number | null;
  team_period: QuotaPeriod | null;
  team_used: string | null;
  team_reserved: string | null;
  key_limit: number | null;
  key_period: QuotaPeriod | null;
  key_used: string | null;
  key_reserved: string | null;
}

interface LevelFigures {
  readonly scope: QuotaScope;
  readonly limit: number | null;
  readonly period: QuotaPeriod;
  readonly used: number;
  readonly reserved: number;
}

/** The levels the request belongs to, narrowest first. */
function levelsOf(row: ReserveRow): LevelFigures[] {
  const levels: LevelFigures[] = [];
  if (row.key_period !== null) {
    levels.push({ scope: 'API_KEY', limit: row.key_limit, period: row.key_period, used: Number(row.key_used), reserved: Number(row.key_reserved) });
  }
  levels.push({ scope: 'USER', limit: row.token_limit, period: row.quota_period, used: Number(row.used), reserved: Number(row.reserved) });
  if (row.team_period !== null) {
    levels.push({ scope: 'TEAM', limit: row.team_limit, period: row.team_period, used: Number(row.team_used), reserved: Number(row.team_reserved) });
  }
  return levels;
}

/**
 * The refusal of a request that fits nowhere it must: among the levels it does not fit in, the
 * one whose period ends last (a lifetime quota never ends), since the request cannot fit before
 * that one resets; between equals, the narrowest.
 */
function refusalOf(row: ReserveRow, requested: number, now: Date): QuotaExceededError {
  const levels = levelsOf(row);
  const refusing = levels.filter((level) => level.limit !== null && level.used + level.reserved + requested > level.limit);
  const resetOf = (level: LevelFigures): number => periodBounds(level.period, now).end?.getTime() ?? Number.POSITIVE_INFINITY;
  const level = (refusing.length > 0 ? refusing : levels).reduce((chosen, candidate) => (resetOf(candidate) > resetOf(chosen) ? candidate : chosen));
  const remaining = Math.max(0, (level.limit ?? 0) - level.used - level.reserved);
  return new QuotaExceededError(`This request needs ${requested} tokens but only ${remaining} remain in ${WHOSE[level.scope]}.`, {
    scope: level.scope,
    limit: level.limit,
    used: level.used,
    reserved: level.reserved,
    requested,
    resetsAt: periodBounds(level.period, now).end,
  });
}

/** What the ledger granted a request: the team it was reserved in and the completion budget it holds. */
interface Grant {
  readonly teamId: string | null;
  readonly completion: number;
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
  /** Reservations group-committed: those that come with maxTokens share a statement under load. */
  private readonly grants: GroupCommit<ReserveRequest, Grant>;

  constructor(
    private readonly db: Database,
    rateLimiter: RateLimiter,
    private readonly clock: Clock,
    private readonly log: Logger,
    /** How long a reservation of an instance from before instances were tracked lives. */
    reservationTtlSeconds: number,
    private readonly metrics: GatewayMetrics,
    private readonly instance: GatewayInstance,
    /** How long an instance must be gone before its requests are settled as interrupted. */
    private readonly orphanAfterMs: number,
  ) {
    this.ledger = {
      db,
      rateLimiter,
      clock,
      log,
      ttlSeconds: reservationTtlSeconds,
      metrics,
      instance,
      pending: new PendingSettlements(log, metrics),
      settlements: settlementsOf(db, metrics),
    };
    this.grants = new GroupCommit<ReserveRequest, Grant>(
      { alone: (request) => this.reserveAlone(request), together: (group) => this.reserveTogether(group) },
      LEDGER_GROUP_MAX,
      (items) => metrics.ledgerStatement('reserve', items),
    );
  }

  /** Settlements and releases waiting for the database to answer again. */
  get pendingSettlements(): PendingSettlements {
    return this.ledger.pending;
  }

  /** The ledger row of a new user, team or key, written in the transaction that creates it (never lazily: that races). */
  async openAccount(sql: Sql, scope: QuotaScope, id: string): Promise<void> {
    const { table, key } = ACCOUNTS[scope];
    await sql.query(`insert into ${table} (${key}) values ($1) on conflict (${key}) do nothing`, [id]);
  }

  /**
   * Reserves prompt + completion budget atomically at every level the request belongs to (its
   * API key, its user, its team), or at none. Without a client maxTokens the completion budget is
   * the least that remains across them (capped by the model), so a request never starts that
   * cannot fit. Under load, requests with maxTokens are group-committed (GroupCommit).
   */
  async reserve(request: ReserveRequest): Promise<Reservation> {
    assertCount(request.promptTokens, 'promptTokens');
    assertCount(request.modelCompletionLimit, 'modelCompletionLimit');
    if (request.maxTokens !== null) assertCount(request.maxTokens, 'maxTokens');
    const grant = await this.grants.submit(request, request.maxTokens !== null);
    const reservation = new Reservation(
      {
        requestId: request.requestId,
        userId: request.userId,
        teamId: grant.teamId,
        promptTokens: request.promptTokens,
        maxCompletionTokens: grant.completion,
        amount: request.promptTokens + grant.completion,
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

  /** RESERVE_SQL for one request: its grant, or the refusal that names the level refusing it. */
  private async reserveAlone(request: ReserveRequest): Promise<Grant> {
    const now = this.clock.now();
    const row = await this.db.one<ReserveRow>(RESERVE_SQL, [
      now,
      request.userId,
      request.maxTokens,
      request.modelCompletionLimit,
      request.promptTokens,
      request.requestId,
      this.ledger.ttlSeconds,
      request.apiKeyId,
      request.minCompletionTokens,
      this.instance.id,
      request.target.model,
      request.target.interface,
      request.target.upstream,
      request.promptCountSource,
    ]);
    if (row === undefined) throw new UnauthenticatedError('The user no longer exists or is disabled.');
    if (!row.key_valid) throw new UnauthenticatedError('The API key is invalid or revoked.');
    if (!row.granted) throw refusalOf(row, request.promptTokens + (request.maxTokens ?? request.minCompletionTokens), now);
    return { teamId: row.team_id, completion: Number(row.completion) };
  }

  /** RESERVE_GROUP_SQL for requests that all come with maxTokens: the grants it made; the rest are decided alone. */
  private async reserveTogether(group: readonly ReserveRequest[]): Promise<ReadonlyArray<Grant | undefined>> {
    const rows = await this.db.query<{ ord: string; team_id: string | null }>(RESERVE_GROUP_SQL, [
      this.clock.now(),
      group.map((request) => request.requestId),
      group.map((request) => request.userId),
      group.map((request) => request.apiKeyId),
      group.map((request) => request.promptTokens),
      group.map((request) => request.maxTokens),
      group.map((request) => request.minCompletionTokens),
      group.map((request) => request.target.model),
      group.map((request) => request.target.interface),
      group.map((request) => request.target.upstream),
      group.map((request) => request.promptCountSource),
      this.ledger.ttlSeconds,
      this.instance.id,
    ]);
    const grants: Array<Grant | undefined> = group.map(() => undefined);
    for (const row of rows) grants[Number(row.ord) - 1] = { teamId: row.team_id, completion: group[Number(row.ord) - 1].maxTokens ?? 0 };
    return grants;
  }

  /**
   * Settles the requests of instances that died: each gets one record charging its prompt and
   * what its stream had delivered at the last checkpoint (`interrupted`, estimated), the rest is
   * given back, and its event is announced. Instances reaping at once settle each request once.
   * Returns how many this call settled. Reservations of instances from before instances were
   * tracked carry nothing to charge from and are given back once their lifetime is over.
   */
  async settleOrphans(): Promise<number> {
    const legacy = await this.db.one<{ reservations: string }>(REAP_SQL);
    const released = Number(legacy?.reservations ?? 0);
    if (released > 0) this.log.warn({ reservations: released }, 'released expired reservations of an instance from before instances were tracked');
    if (!this.instance.steadyFor(this.orphanAfterMs)) return 0;
    const orphans = await this.db.query<{ request_id: string }>(ORPHANS_SQL, [this.instance.id, this.orphanAfterMs / 1000, ADVISORY_LOCK_KEYS.instances]);
    let settled = 0;
    for (const { request_id: requestId } of orphans) {
      const row = await this.db.one<{ charged: number | null }>(SETTLE_ORPHAN_SQL, [this.clock.now(), requestId]);
      if (row?.charged == null) continue;
      settled += 1;
      this.log.warn({ requestId, chargedTokens: row.charged }, 'settled a request of an instance that is gone as interrupted');
    }
    if (settled > 0) this.metrics.orphansSettled(settled);
    return settled;
  }

  /** Forgets instances gone for an hour whose requests are all settled. */
  async forgetGoneInstances(): Promise<void> {
    await this.db.query(
      `delete from gateway_instances i
        where i.id <> $1::uuid and i.seen_at < now() - interval '1 hour'
          and not exists (select 1 from quota_reservations r where r.instance_id = i.id)`,
      [this.instance.id],
    );
  }

  /**
   * After a change of quota period, `used` is recounted from the records of the new current
   * period. The account is locked first, by a statement of its own, so that the count (a later
   * statement, with a later snapshot) includes every record settled before the lock was granted.
   */
  async recountPeriod(sql: Sql, scope: QuotaScope, id: string, period: QuotaPeriod): Promise<void> {
    const { table, key } = ACCOUNTS[scope];
    const { start } = periodBounds(period, this.clock.now());
    await sql.query(`select 1 from ${table} where ${key} = $1 for no key update`, [id]);
    await sql.query(
      `update ${table} set period_start = $2,
              used = (select coalesce(sum(charged_tokens), 0) from usage_records where ${key} = $1 and created_at >= $2),
              updated_at = now()
        where ${key} = $1`,
      [id, start],
    );
  }

  /** Usage of several holders in one query per level (a page of `users { usage }`), in the order given. */
  async usageOfMany(holders: readonly QuotaHolder[]): Promise<QuotaUsage[]> {
    const accounts = new Map<string, { used: string; reserved: string; period_start: string }>();
    for (const scope of new Set(holders.map((holder) => holder.scope))) {
      const { table, key } = ACCOUNTS[scope];
      const rows = await this.db.query<{ id: string; used: string; reserved: string; period_start: string }>(
        `select ${key} as id, used, reserved, period_start from ${table} where ${key} = any($1::uuid[])`,
        [holders.filter((holder) => holder.scope === scope).map((holder) => holder.id)],
      );
      for (const row of rows) accounts.set(`${scope}:${row.id}`, row);
    }
    const now = this.clock.now();
    return holders.map((holder) => {
      const row = accounts.get(`${holder.scope}:${holder.id}`);
      const bounds = periodBounds(holder.quotaPeriod, now);
      const used = row !== undefined && new Date(row.period_start) >= bounds.start ? Number(row.used) : 0;
      const reserved = row === undefined ? 0 : Number(row.reserved);
      return {
        used,
        reserved,
        limit: holder.tokenLimit,
        remaining: holder.tokenLimit === null ? null : Math.max(0, holder.tokenLimit - used - reserved),
        periodStart: bounds.end === null ? null : bounds.start,
        periodEnd: bounds.end,
      };
    });
  }
}
