/** Largest count a usage record or a GraphQL Int holds; anything above is refused, never wrapped. */
export const MAX_TOKEN_COUNT = 2_147_483_647;

export type PromptCountSource = 'tokenize' | 'tiktoken';
export type ChatInterface = 'graphql' | 'openai';
export type UsageStatus = 'completed' | 'aborted' | 'upstream_error' | 'timeout' | 'cut';

/** What a reservation holds, as the ledger granted it. */
export interface ReservedBudget {
  readonly requestId: string;
  readonly userId: string;
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
}

/** What the request consumed, as vLLM reported it or as the gateway estimated it. */
export interface Usage {
  readonly promptTokens: number;
  readonly completionTokens: number;
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

/** The ledger's side of a reservation: what `Reservation` calls, once. */
export interface ReservationLedger {
  settle(reservation: Reservation, usage: Usage): Promise<SettledUsage>;
  release(reservation: Reservation): Promise<void>;
  extend(reservation: Reservation): Promise<void>;
}

function clampCount(value: number): number {
  return Math.max(0, Math.min(Math.trunc(value), MAX_TOKEN_COUNT));
}

/**
 * Tokens held for one request in flight. It ends exactly once: `settle` charges what was
 * produced and writes the usage record, `release` gives everything back; whichever comes
 * first takes effect and every later call returns its outcome.
 */
export class Reservation {
  private ended: Promise<SettledUsage | null> | null = null;
  readonly startedAt = performance.now();

  constructor(
    readonly budget: ReservedBudget,
    readonly target: ChargeTarget,
    private readonly ledger: ReservationLedger,
  ) {}

  get requestId(): string {
    return this.budget.requestId;
  }

  get isEnded(): boolean {
    return this.ended !== null;
  }

  /** Charges `usage` (counts clamped to what a record holds). */
  settle(usage: Usage): Promise<SettledUsage | null> {
    this.ended ??= this.ledger.settle(this, {
      ...usage,
      promptTokens: clampCount(usage.promptTokens),
      completionTokens: clampCount(usage.completionTokens),
    });
    return this.ended;
  }

  /** Gives the whole reservation back, unless it has already ended. */
  release(): Promise<SettledUsage | null> {
    this.ended ??= this.ledger.release(this).then(() => null);
    return this.ended;
  }

  /** Keeps a long-running request's reservation from looking abandoned to the reaper. */
  extend(): Promise<void> {
    return this.ended === null ? this.ledger.extend(this) : Promise.resolve();
  }
}
