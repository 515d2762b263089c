import { isDatabaseUnreachable } from '../db/unreachable';
import { BadUserInputError, DomainError, QuotaExceededError, RateLimitedError, ServiceUnavailableError, UnauthenticatedError, UpstreamError } from '../errors';

export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** An answer of the OpenAI-compatible API that is an error: its status, body and headers. */
export class OpenAIHttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: OpenAIErrorBody,
    readonly headers: Record<string, string> = {},
  ) {
    super(body.error.message);
  }
}

function openAIError(status: number, message: string, type: string, code: string | null, param: string | null = null): OpenAIHttpError {
  return new OpenAIHttpError(status, { error: { message, type, param, code } });
}

export function invalidRequest(message: string, param: string | null = null): OpenAIHttpError {
  return openAIError(400, message, 'invalid_request_error', null, param);
}

export function methodNotAllowed(allowed: 'GET' | 'POST'): OpenAIHttpError {
  return new OpenAIHttpError(405, { error: { message: `Use ${allowed}.`, type: 'invalid_request_error', param: null, code: null } }, { allow: allowed });
}

/** The neutral field names the services use, as an OpenAI client knows them. */
const OPENAI_PARAMETER_OF: Readonly<Record<string, string>> = { maxTokens: 'max_tokens', topP: 'top_p' };
const openAIName = (field: string): string => OPENAI_PARAMETER_OF[field] ?? field;

function secondsUntil(when: Date, now: Date): string {
  return String(Math.max(1, Math.ceil((when.getTime() - now.getTime()) / 1000)));
}

/** The one error mapper of the OpenAI-compatible API: the contract's errors in OpenAI's shape and status. */
export function toOpenAIError(error: unknown, now: Date = new Date()): OpenAIHttpError {
  if (error instanceof OpenAIHttpError) return error;
  if (!(error instanceof DomainError)) {
    // The ORM's failures reach here as the driver reported them (the Database's are domain errors already).
    if (isDatabaseUnreachable(error)) return toOpenAIError(new ServiceUnavailableError(), now);
    return openAIError(500, 'Internal server error.', 'server_error', null);
  }
  const { message } = error;
  if (error instanceof UnauthenticatedError) {
    return error.details.reason === 'USER_DISABLED'
      ? openAIError(403, message, 'permission_error', 'user_disabled')
      : openAIError(401, message, 'authentication_error', 'invalid_api_key');
  }
  if (error instanceof BadUserInputError) {
    return invalidRequest(error.messageNaming(openAIName), error.field === undefined ? null : openAIName(error.field));
  }
  if (error instanceof QuotaExceededError) {
    const { resetsAt } = error.refusal;
    return new OpenAIHttpError(
      429,
      { error: { message, type: 'insufficient_quota', param: null, code: 'insufficient_quota' } },
      // Retrying cannot help before the period resets: tell SDKs not to retry.
      { 'x-should-retry': 'false', ...(resetsAt === null ? {} : { 'retry-after': secondsUntil(resetsAt, now) }) },
    );
  }
  if (error instanceof RateLimitedError) {
    return new OpenAIHttpError(
      429,
      { error: { message, type: 'rate_limit_exceeded', param: null, code: 'rate_limit_exceeded' } },
      { 'retry-after': String(error.retryAfterSeconds) },
    );
  }
  if (error instanceof UpstreamError) {
    if (error.failure.timeout === true) return openAIError(504, message, 'timeout', 'upstream_timeout');
    if (error.failure.unavailable === true) return openAIError(503, message, 'service_unavailable', 'upstream_unavailable');
    return openAIError(502, message, 'upstream_error', 'upstream_error');
  }
  if (error.code === 'FORBIDDEN') return openAIError(403, message, 'permission_error', null);
  if (error.code === 'SERVICE_UNAVAILABLE') return openAIError(503, message, 'service_unavailable', null);
  return openAIError(500, 'Internal server error.', 'server_error', null);
}
