import type { Config } from '../config';
import { BadUserInputError } from '../errors';
import { MAX_TOKEN_COUNT } from '../quota/reservation';
import { validateChoices, validateSessionId } from './chat-request';

/** One prompt of a completion or one input of an embedding: text, or token ids the client made. */
export type PromptInput = { readonly text: string } | { readonly tokenIds: readonly number[] };

/** A `/v1/completions` or `/v1/embeddings` request: prompts instead of messages. */
export interface PromptRequest {
  readonly endpoint: 'completions' | 'embeddings';
  readonly model: string | null;
  readonly prompts: readonly PromptInput[];
  /**
   * Per choice. Completions: 16 when the client gives none, as vLLM and OpenAI default; null
   * (the client's explicit null) lets the gateway cap it to what remains. Embeddings: 0.
   */
  readonly maxTokens: number | null;
  /** `n` for each prompt. */
  readonly choices: number;
  /** `add_special_tokens` (vLLM's default true): /tokenize must be told the same. */
  readonly addSpecialTokens: boolean;
  /** Requests of one session go to one upstream while it is healthy (`x-session-id`). */
  readonly sessionId?: string | null;
  /** The body as the client sent it (prompts included) but for what the gateway owns, for vLLM as it came. */
  readonly extra: Readonly<Record<string, unknown>>;
}

/** The body of vLLM's completions or embeddings call but for the completion budget and stream options. */
export interface UpstreamPromptParams {
  readonly model: string;
  readonly [field: string]: unknown;
}

/** Refuses, before anything is counted or reserved, what the limits do not allow. */
export function validatePromptRequest(request: PromptRequest, limits: Config['chat']): void {
  validateSessionId(request.sessionId);
  const what = request.endpoint === 'completions' ? 'prompt' : 'input';
  if (request.prompts.length === 0) throw BadUserInputError.about(what, 'must not be empty.');
  if (request.prompts.length > limits.maxMessages) {
    throw new BadUserInputError(`At most ${limits.maxMessages} ${what}s per request.`, what);
  }
  let characters = 0;
  for (const prompt of request.prompts) {
    if ('text' in prompt ? prompt.text === '' : prompt.tokenIds.length === 0) throw new BadUserInputError(`An empty ${what} cannot be sent.`, what);
    // A token id stands for at least a character of text.
    characters += 'text' in prompt ? prompt.text.length : prompt.tokenIds.length;
  }
  if (characters > limits.maxContentChars) {
    throw new BadUserInputError(`The ${what}s hold ${characters} characters; the limit is ${limits.maxContentChars}.`, what);
  }
  if (request.endpoint === 'completions') {
    if (request.maxTokens !== null && (!Number.isSafeInteger(request.maxTokens) || request.maxTokens < 1 || request.maxTokens > MAX_TOKEN_COUNT)) {
      throw BadUserInputError.about('maxTokens', 'must be a whole number of at least 1.');
    }
    validateChoices(request.choices * request.prompts.length, request.maxTokens, limits.maxChoices);
  }
}

export function upstreamPromptParams(model: string, request: PromptRequest): UpstreamPromptParams {
  return { ...request.extra, model };
}
