/** The contract's error codes; every error the gateway reports carries one of them. */
export type ErrorCode =
  | 'UNAUTHENTICATED'
  | 'FORBIDDEN'
  | 'BAD_USER_INPUT'
  | 'QUOTA_EXCEEDED'
  | 'RATE_LIMITED'
  | 'UPSTREAM_ERROR'
  | 'SERVICE_UNAVAILABLE'
  | 'INTERNAL_SERVER_ERROR';

/**
 * An error the gateway raises on purpose: its message is meant for the client. Each API turns
 * it into its own shape with one mapper (`src/graphql/errors.ts`, `src/openai/openai-errors.ts`);
 * services never know which API they serve.
 */
export abstract class DomainError extends Error {
  abstract readonly code: ErrorCode;

  constructor(
    message: string,
    /** Facts a client can act on (`retryAfter`, `resetsAt`…), sent as they are. */
    readonly details: Readonly<Record<string, unknown>> = {},
  ) {
    super(message);
    this.name = new.target.name;
  }

  /** What graphql-js copies onto the GraphQL error that wraps this one. */
  get extensions(): Record<string, unknown> {
    return { ...this.details, code: this.code };
  }
}

export class UnauthenticatedError extends DomainError {
  readonly code = 'UNAUTHENTICATED';
  /** `reason` USER_DISABLED lets the OpenAI-compatible endpoint answer 403 instead of 401. */
  constructor(message = 'Not signed in, or the credentials are invalid or expired.', reason?: 'USER_DISABLED') {
    super(message, reason === undefined ? {} : { reason });
  }
}

export class ForbiddenError extends DomainError {
  readonly code = 'FORBIDDEN';
  constructor(message = 'You are not allowed to do this.') {
    super(message);
  }
}

/**
 * Input out of range or malformed. `field` is the neutral name of the input at fault (the
 * GraphQL argument's name, such as `maxTokens`), which each API spells its own way.
 */
export class BadUserInputError extends DomainError {
  readonly code = 'BAD_USER_INPUT';
  /** Set when the message is "<field> <problem>", so an API can put its own name for the field first. */
  readonly problem: string | null = null;

  constructor(
    message: string,
    readonly field?: string,
  ) {
    super(message, field === undefined ? {} : { field });
  }

  /** "<field> <problem>", e.g. `BadUserInputError.about('maxTokens', 'must be at least 1.')`. */
  static about(field: string, problem: string): BadUserInputError {
    return Object.assign(new BadUserInputError(`${field} ${problem}`, field), { problem });
  }

  /** The message with the field spelt as an API names it. */
  messageNaming(nameOf: (field: string) => string): string {
    return this.problem === null || this.field === undefined ? this.message : `${nameOf(this.field)} ${this.problem}`;
  }
}

/** The level of a budget: a request must fit in its API key's, its user's and its team's. */
export type QuotaScope = 'API_KEY' | 'USER' | 'TEAM';

export interface QuotaRefusal {
  /** The level that refused. */
  readonly scope: QuotaScope;
  readonly limit: number | null;
  readonly used: number;
  readonly reserved: number;
  readonly requested: number;
  /** When the period that refused ends; null for a lifetime quota. */
  readonly resetsAt: Date | null;
}

export class QuotaExceededError extends DomainError {
  readonly code = 'QUOTA_EXCEEDED';
  constructor(
    message: string,
    readonly refusal: QuotaRefusal,
  ) {
    const { resetsAt, ...figures } = refusal;
    super(message, { ...figures, resetsAt: resetsAt?.toISOString() ?? null });
  }
}

export class RateLimitedError extends DomainError {
  readonly code = 'RATE_LIMITED';
  readonly retryAfterSeconds: number;
  constructor(message: string, retryAfterSeconds: number) {
    const retryAfter = Math.max(1, Math.ceil(retryAfterSeconds));
    super(message, { retryAfter });
    this.retryAfterSeconds = retryAfter;
  }
}

export class UpstreamError extends DomainError {
  readonly code = 'UPSTREAM_ERROR';
  constructor(
    message: string,
    /** `unavailable`: no server serves the model right now (nothing was tried). */
    readonly failure: { readonly status?: number; readonly timeout?: boolean; readonly unavailable?: boolean } = {},
  ) {
    super(message, failure);
  }
}

/**
 * The database cannot be reached (refused, cut off, or too slow to answer): the request was
 * refused before anything was charged or sent to vLLM for an answer. Retrying shortly may work.
 */
export class ServiceUnavailableError extends DomainError {
  readonly code = 'SERVICE_UNAVAILABLE';
  constructor(message = 'The database cannot be reached right now; nothing was charged. Try again shortly.', options: { cause?: unknown } = {}) {
    super(message);
    // What the driver said, for the log; never sent to the client.
    if (options.cause !== undefined) this.cause = options.cause;
  }
}

/**
 * The client left before its answer was ready. Not a DomainError: nobody is there to be told,
 * so it has no code and the APIs drop it without logging it as a failure.
 */
export class ClientGoneError extends Error {
  override name = 'ClientGoneError';
  constructor() {
    super('The client went away before the answer was ready.');
  }
}
