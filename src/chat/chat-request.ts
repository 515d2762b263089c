import type { Config } from '../config';
import { BadUserInputError } from '../errors';
import { MAX_TOKEN_COUNT } from '../quota/reservation';
import type { ChatMessage } from './upstream';

const MAX_SESSION_ID_CHARS = 256;

/** A chat request in the service's terms, whichever API it came through. */
export interface ChatRequest {
  readonly model: string | null;
  readonly messages: readonly ChatMessage[];
  readonly maxTokens: number | null;
  readonly temperature?: number | null;
  readonly topP?: number | null;
  readonly stop?: readonly string[] | null;
  readonly seed?: number | null;
  /** Requests of one session go to one upstream while it is healthy, so its prefix cache stays warm. */
  readonly sessionId?: string | null;
  /** Further vLLM sampling parameters, from the OpenAI-compatible endpoint's allow-list. */
  readonly extra?: Readonly<Record<string, unknown>>;
}

/** Sampling parameters as the upstream takes them, already validated. */
export interface UpstreamChatParams {
  readonly model: string;
  readonly messages: ChatMessage[];
  readonly temperature?: number;
  readonly top_p?: number;
  readonly stop?: string[];
  readonly seed?: number;
  readonly extra?: Readonly<Record<string, unknown>>;
}

/** Refuses, before anything is counted or reserved, what no model would accept. */
export function validateChatRequest(request: ChatRequest, limits: Config['chat']): void {
  if (request.messages.length === 0) throw BadUserInputError.about('messages', 'must not be empty.');
  if (request.messages.length > limits.maxMessages) {
    throw new BadUserInputError(`At most ${limits.maxMessages} messages per request.`, 'messages');
  }
  let characters = 0;
  for (const message of request.messages) characters += message.content.length;
  if (characters > limits.maxContentChars) {
    throw new BadUserInputError(`The messages hold ${characters} characters; the limit is ${limits.maxContentChars}.`, 'messages');
  }
  if (request.maxTokens !== null && (!Number.isSafeInteger(request.maxTokens) || request.maxTokens < 1 || request.maxTokens > MAX_TOKEN_COUNT)) {
    throw BadUserInputError.about('maxTokens', 'must be a whole number of at least 1.');
  }
  if (request.temperature != null && !(request.temperature >= 0 && request.temperature <= 2)) {
    throw BadUserInputError.about('temperature', 'must be from 0 to 2.');
  }
  if (request.topP != null && !(request.topP > 0 && request.topP <= 1)) {
    throw BadUserInputError.about('topP', 'must be above 0 and at most 1.');
  }
  if (request.stop != null) {
    if (request.stop.length > limits.maxStopSequences) {
      throw new BadUserInputError(`At most ${limits.maxStopSequences} stop sequences.`, 'stop');
    }
    if (request.stop.some((stop) => stop === '' || stop.length > 256)) {
      throw new BadUserInputError('Each stop sequence must be 1 to 256 characters.', 'stop');
    }
  }
  if (request.seed != null && !Number.isSafeInteger(request.seed)) throw BadUserInputError.about('seed', 'must be a whole number.');
  if (request.sessionId != null && (request.sessionId === '' || request.sessionId.length > MAX_SESSION_ID_CHARS)) {
    throw BadUserInputError.about('sessionId', `must be 1 to ${MAX_SESSION_ID_CHARS} characters.`);
  }
}

export function upstreamParams(model: string, request: ChatRequest): UpstreamChatParams {
  return {
    model,
    messages: [...request.messages],
    ...(request.temperature == null ? {} : { temperature: request.temperature }),
    ...(request.topP == null ? {} : { top_p: request.topP }),
    ...(request.stop == null || request.stop.length === 0 ? {} : { stop: [...request.stop] }),
    ...(request.seed == null ? {} : { seed: request.seed }),
    ...(request.extra === undefined ? {} : { extra: request.extra }),
  };
}
