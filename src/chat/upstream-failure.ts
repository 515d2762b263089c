import OpenAI from 'openai';
import { BadUserInputError, DomainError, UpstreamError } from '../errors';
import type { Logger } from '../logger';
import { UpstreamRejectedError } from './upstream';

/** The upstream's 4xx message, trimmed: vLLM's validation messages are meant for the client. */
function upstreamMessage(error: unknown): string {
  const raw = error instanceof Error ? error.message : String(error);
  return raw.replace(/^\d{3}\s+/, '').slice(0, 500);
}

/** A failure of the upstream in the contract's terms: its 4xx (the client's fault) or UPSTREAM_ERROR. */
export function upstreamFailure(error: unknown, options: { timedOut: boolean; timeoutMs: number; log: Logger }): DomainError {
  if (error instanceof DomainError) return error;
  // vLLM names the field at fault in `param` (tool_choice, top_logprobs, input_tokens…): it stays.
  if (error instanceof UpstreamRejectedError) return new BadUserInputError(upstreamMessage(error), error.param ?? undefined);
  if (options.timedOut || error instanceof OpenAI.APIConnectionTimeoutError) {
    options.log.warn('upstream timed out');
    return new UpstreamError(`The model did not answer within ${options.timeoutMs} ms.`, { timeout: true });
  }
  if (error instanceof OpenAI.APIError && error.status !== undefined) {
    if (error.status === 400) return new BadUserInputError(upstreamMessage(error), typeof error.param === 'string' ? error.param : undefined);
    if (error.status === 404) return new BadUserInputError(upstreamMessage(error), 'model');
    options.log.warn({ status: error.status }, 'upstream refused a request');
    return new UpstreamError(`The model server answered ${error.status}.`, { status: error.status });
  }
  options.log.warn({ err: error }, 'upstream failed');
  return new UpstreamError('The model server failed or could not be reached.');
}
