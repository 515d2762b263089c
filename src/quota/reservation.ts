import type { Clock } from '../clock';
import type { Database } from '../db/database';
import type { Logger } from '../logger';
import type { GatewayMetrics } from '../metrics/metrics';
import { encodeUnsettled } from '../usage/usage-wire';
import type { Checkpointed, GatewayInstance } from './gateway-instance';
import { GroupCommit, LEDGER_GROUP_MAX } from './group-commit';
import { SETTLE_GROUP_SQL } from './ledger-group-sql';
import { RELEASE_SQL, SETTLE_SQL } from './ledger-sql';
import type { PendingSettlements } from './pending-settlements';
import type { RateLimiter } from './rate-limiter';

/** Largest count a usage record or a GraphQL Int holds; anything above is refused, never wrapped. */
export const MAX_TOKEN_COUNT = 2_147_483_647;

/**
 * How the reserved prompt was counted: by vLLM's /tokenize, by tiktoken (an upstream without
 * it), or `bound`: an upper bound reserved instead of a count (see PromptBounds).
 */
export type PromptCountSource = 'tokenize' | 'tiktoken' | 'bound';
export type ChatInterface = 'graphql' | 'openai';
/** `interrupted` is written only by the statement that settles the requests of an instance that died. */
export type UsageStatus = 'completed' | 'aborted' | 'upstream_error' | 'timeout' | 'cut' | 'interrupted';

/** What a reservation holds, as the ledger granted it. */
export interface ReservedBudget {
  readonly requestId: string;
  readonly userId: string;
  /** The team it was reserved in (the user's at the time); null when the user has none. */
  readonly teamId: string | null;
  readonly promptTokens: number;
  /** What the upstream may generate: the client's maxTokens, or what remained when it gave none. */
  readonly maxCompletionTokens: number;
  /** promptTokens + maxCompletionTokens. */
  readonly amount: number;
  readonly promptCountSource: PromptCountSource;
}

/** Who is charged and for what, known when the reservation is made. */
export interface ChargeTarget {
  readonly model: string;
  readonly interface: ChatInterface;
  readonly apiKeyId: string | null;
  /** The name of the server that serves the request. */
  readonly upstream: string;
}

/** What the request consumed, as vLLM reported it or as the gateway estimated it. */
export interface Usage {
  readonly promptTokens: number;
  readonly completionTokens: number;
  /** Of the prompt tokens, those vLLM's prefix cache held (`prompt_tokens_details.cached_tokens`); 0 when not reported. */
  readonly cachedTokens: number;
  readonly usageSource: 'reported' | 'estimated';
  readonly status: UsageStatus;
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

/** What a reservation needs to end itself; the same for all of them. */
export interface LedgerAccess {
  readonly db: Database;
  readonly rateLimiter: RateLimiter;
  readonly clock: Clock;
  readonly log: Logger;
  /** How long the row of a reservation of an instance from before instances were tracked would live. */
  readonly ttlSeconds: number;
  readonly metrics: GatewayMetrics;
  /** This process: it checkpoints every reservation in flight. */
  readonly instance: GatewayInstance;
  /** Where an ending that met an unreachable database waits to be tried again. */
  readonly pending: PendingSettlements;
  /** Settlements group-committed: those charging no more than they reserved share a statement under load. */
  readonly settlements: GroupCommit<Settlement, SettlementRow>;
}

/** One settlement's values, as SETTLE_SQL and SETTLE_GROUP_SQL take them. */
export interface Settlement {
  readonly now: Date;
  readonly requestId: string;
  readonly userId: string;
  readonly apiKeyId: string | null;
  readonly teamId: string | null;
  readonly model: string;
  readonly interface: ChatInterface;
  readonly promptTokens: number;
  readonly completionTokens: number;
  readonly totalTokens: number;
  readonly cachedTokens: number;
  readonly usageSource: Usage['usageSource'];
  readonly promptCountSource: PromptCountSource;
  readonly status: UsageStatus;
  readonly latencyMs: number;
  /** The usage event's JSON before the figures the statement adds. */
  readonly notice: string;
  readonly upstream: string;
}

/** The user's figures after a settlement, and what it charged (null: the request had been settled already). */
export interface SettlementRow {
  readonly used: string;
  readonly reserved: string;
  readonly token_limit: number | null;
  readonly charged: number | null;
}

/** The group commit of settlements on `db`. */
export function settlementsOf(db: Database, metrics: GatewayMetrics): GroupCommit<Settlement, SettlementRow> {
  return new GroupCommit<Settlement, SettlementRow>(
    {
      alone: async (settlement) => {
        const row = await db.one<SettlementRow>(SETTLE_SQL, [
          settlement.now,
          settlement.userId,
          settlement.requestId,
          settlement.apiKeyId,
          settlement.model,
          settlement.interface,
          settlement.promptTokens,
          settlement.completionTokens,
          settlement.totalTokens,
          settlement.usageSource,
          settlement.promptCountSource,
          settlement.status,
          settlement.latencyMs,
          settlement.notice,
          settlement.upstream,
          settlement.teamId,
          settlement.cachedTokens,
        ]);
        if (row === undefined) throw new Error(`quota account of user ${settlement.userId} is missing`);
        return row;
      },
      together: async (group) => {
        const column = <T>(value: (settlement: Settlement) => T): T[] => group.map(value);
        const rows = await db.query<SettlementRow & { ord: string }>(SETTLE_GROUP_SQL, [
          // One clock reading for the group: its records and events say when the group committed.
          group[0].now,
          column((settlement) => settlement.requestId),
          column((settlement) => settlement.userId),
          column((settlement) => settlement.apiKeyId),
          column((settlement) => settlement.teamId),
          column((settlement) => settlement.model),
          column((settlement) => settlement.interface),
          column((settlement) => settlement.promptTokens),
          column((settlement) => settlement.completionTokens),
          column((settlement) => settlement.totalTokens),
          column((settlement) => settlement.usageSource),
          column((settlement) => settlement.promptCountSource),
          column((settlement) => settlement.status),
          column((settlement) => settlement.latencyMs),
          column((settlement) => settlement.notice),
          column((settlement) => settlement.upstream),
          column((settlement) => settlement.cachedTokens),
        ]);
        const outcomes: Array<SettlementRow | undefined> = group.map(() => undefined);
        for (const row of rows) outcomes[Number(row.ord) - 1] = row;
        return outcomes;
      },
    },
    LEDGER_GROUP_MAX,
    (items) => metrics.ledgerStatement('settle', items),
  );
}

function clampCount(value: number): number {
  return Math.max(0, Math.min(Math.trunc(value), MAX_TOKEN_COUNT));
}

/**
 * Tokens held for one request in flight, from `QuotaService.reserve`. It ends exactly once:
 * `settle` charges what was produced, writes the usage record and announces it; `release`
 * gives everything back. Whichever comes first takes effect; every later call returns its outcome.
 * While the database cannot be reached, either resolves with null at once (the client is not
 * kept waiting) and is applied when the database answers again (see PendingSettlements).
 */
export class Reservation implements Checkpointed {
  private ended: Promise<SettledUsage | null> | null = null;
  /** The server that answers: the one admitted with, or the one a failover moved to. */
  private upstream: string;
  /** Whether the minute's token window holds this reservation (and must be corrected when it ends). */
  private inRateWindow = false;
  readonly startedAt = performance.now();
  /** Completion tokens delivered to the client so far: what a crash would still charge. */
  delivered = 0;

  constructor(
    readonly budget: ReservedBudget,
    readonly target: ChargeTarget,
    private readonly ledger: LedgerAccess,
  ) {
    this.upstream = target.upstream;
    ledger.metrics.reservationOpened();
    ledger.instance.track(this);
  }

  /** Names the server that answered, for the usage record. */
  servedBy(upstream: string): void {
    this.upstream = upstream;
  }

  get requestId(): string {
    return this.budget.requestId;
  }

  /** Notes what the client has received, for the next checkpoint (never more than was reserved). */
  deliver(completionTokens: number): void {
    this.delivered = Math.min(clampCount(completionTokens), this.budget.maxCompletionTokens);
  }

  /**
   * Charges `usage` (counts clamped to what a record holds). Null: the database cannot be
   * reached, and the charge waits for it.
   */
  settle(usage: Usage): Promise<SettledUsage | null> {
    const promptTokens = clampCount(usage.promptTokens);
    const clamped = {
      ...usage,
      promptTokens,
      completionTokens: clampCount(usage.completionTokens),
      cachedTokens: Math.min(clampCount(usage.cachedTokens), promptTokens),
    };
    // The request's own latency, however long the database keeps its charge waiting.
    const latencyMs = Math.max(0, Math.min(Math.round(performance.now() - this.startedAt), MAX_TOKEN_COUNT));
    this.ended ??= this.ending(this.ledger.pending.apply(this.requestId, 'settlement', () => this.charge(clamped, latencyMs)));
    return this.ended;
  }

  /** Gives the whole reservation back, unless it has already ended. */
  release(): Promise<SettledUsage | null> {
    this.ended ??= this.ending(this.ledger.pending.apply(this.requestId, 'release', () => this.giveBack()).then(() => null));
    return this.ended;
  }

  private ending<T>(end: Promise<T>): Promise<T> {
    this.ledger.metrics.reservationEnded();
    this.ledger.instance.untrack(this);
    return end;
  }

  /**
   * Counts the whole reservation in the current minute's token window, so requests in flight
   * count against the tokens-per-minute limit too; RATE_LIMITED when the minute is spent (the
   * limiter has then taken its count back itself).
   */
  async holdInRateWindow(): Promise<void> {
    await this.ledger.rateLimiter.holdTokens(this.budget.userId, this.budget.amount);
    this.inRateWindow = true;
  }

  /**
   * One statement charges what the upstream reported at every level, writes the usage record,
   * sends its NOTIFY and releases the rest, so a crash leaves either all of it or none, and the event
   * is heard exactly when the record commits.
   */
  private async charge(usage: Usage, latencyMs: number): Promise<SettledUsage> {
    const { budget, target, ledger } = this;
    const total = usage.promptTokens + usage.completionTokens;
    if (total > MAX_TOKEN_COUNT) throw new RangeError(`totalTokens out of range: ${total}`);
    if (total > budget.amount) {
      ledger.log.warn(
        { requestId: budget.requestId, reported: total, reserved: budget.amount },
        'upstream reported more tokens than were reserved; charging what fits in the limit',
      );
    }
    // Taken at each attempt: a charge the database took late counts in the period it was applied to, as its record says.
    const now = ledger.clock.now();
    const notice = encodeUnsettled({
      requestId: budget.requestId,
      userId: budget.userId,
      apiKeyId: target.apiKeyId,
      teamId: budget.teamId,
      model: target.model,
      promptTokens: usage.promptTokens,
      completionTokens: usage.completionTokens,
      cachedTokens: usage.cachedTokens,
    });
    const row = await ledger.settlements.submit(
      {
        now,
        requestId: budget.requestId,
        userId: budget.userId,
        apiKeyId: target.apiKeyId,
        teamId: budget.teamId,
        model: target.model,
        interface: target.interface,
        promptTokens: usage.promptTokens,
        completionTokens: usage.completionTokens,
        totalTokens: total,
        cachedTokens: usage.cachedTokens,
        usageSource: usage.usageSource,
        promptCountSource: budget.promptCountSource,
        status: usage.status,
        latencyMs,
        notice,
        upstream: this.upstream,
      },
      total <= budget.amount,
    );
    const used = Number(row.used);
    const reserved = Number(row.reserved);
    const chargedTokens = row.charged ?? 0;
    if (row.charged !== null) ledger.metrics.recorded(target.model, usage.promptTokens, usage.completionTokens, usage.cachedTokens);
    // The minute's token count held the whole reservation; it keeps what was charged. The charge
    // is committed and announced already: a failure here must not undo either.
    if (this.inRateWindow) {
      await ledger.rateLimiter
        .adjust(budget.userId, chargedTokens - budget.amount)
        .catch((error: unknown) => ledger.log.warn({ err: error }, 'could not adjust the rate window'));
    }
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

  private async giveBack(): Promise<void> {
    await this.ledger.db.query(RELEASE_SQL, [this.requestId]);
    if (this.inRateWindow) await this.ledger.rateLimiter.adjust(this.budget.userId, -this.budget.amount);
  }
}
