import { GraphQLError } from 'graphql';

/** The contract's error codes; every GraphQL error the gateway raises carries one of them. */
export type ErrorCode =
  | 'UNAUTHENTICATED'
  | 'FORBIDDEN'
  | 'BAD_USER_INPUT'
  | 'QUOTA_EXCEEDED'
  | 'RATE_LIMITED'
  | 'UPSTREAM_ERROR'
  | 'INTERNAL_SERVER_ERROR';

abstract class GatewayError extends GraphQLError {
  constructor(message: string, code: ErrorCode, extensions: Record<string, unknown> = {}) {
    super(message, { extensions: { ...extensions, code } });
  }
}

export class UnauthenticatedError extends GatewayError {
  /** `reason` USER_DISABLED lets the OpenAI-compatible endpoint answer 403 instead of 401. */
  constructor(message = 'Not signed in, or the credentials are invalid or expired.', reason?: 'USER_DISABLED') {
    super(message, 'UNAUTHENTICATED', reason === undefined ? {} : { reason });
  }
}

export class ForbiddenError extends GatewayError {
  constructor(message = 'You are not allowed to do this.') {
    super(message, 'FORBIDDEN');
  }
}

export class BadUserInputError extends GatewayError {
  /** `field` names the argument at fault, so a form can put the message next to it. */
  constructor(message: string, field?: string) {
    super(message, 'BAD_USER_INPUT', field === undefined ? {} : { field });
  }
}

export class QuotaExceededError extends GatewayError {
  constructor(message: string, details: { limit: number | null; used: number; reserved: number; requested: number }) {
    super(message, 'QUOTA_EXCEEDED', details);
  }
}

export class RateLimitedError extends GatewayError {
  constructor(message: string, retryAfterSeconds: number) {
    super(message, 'RATE_LIMITED', { retryAfter: Math.max(1, Math.ceil(retryAfterSeconds)) });
  }
}

export class UpstreamError extends GatewayError {
  constructor(message: string, details: { status?: number; timeout?: boolean } = {}) {
    super(message, 'UPSTREAM_ERROR', details);
  }
}

export function errorCodeOf(error: unknown): ErrorCode | undefined {
  if (error instanceof GraphQLError) return error.extensions.code as ErrorCode | undefined;
  return undefined;
}
