import type { Config } from '../config';
import { BadUserInputError } from '../errors';
import { MAX_TOKEN_COUNT } from '../quota/reservation';

const MAX_SESSION_ID_CHARS = 256;

/** A tool call of an earlier assistant turn, as OpenAI's API spells it. */
export interface ToolCallParam {
  readonly id: string;
  readonly type: 'function';
  readonly function: { readonly name: string; readonly arguments: string };
}

/**
 * A chat message as OpenAI's API spells it, of any role (system, developer, user, assistant,
 * tool, or one a chat template knows); it reaches vLLM as it came. Content is a string, an
 * array of parts, or null on an assistant turn that only calls tools.
 */
export interface ChatMessage {
  readonly role: string;
  readonly content?: string | readonly Readonly<Record<string, unknown>>[] | null;
  readonly name?: string;
  readonly tool_call_id?: string;
  readonly tool_calls?: readonly ToolCallParam[];
  /** vLLM's own message fields (an earlier turn's `reasoning`…), passed on as they are. */
  readonly [field: string]: unknown;
}

/** A chat request in the service's terms, whichever API it came through. */
export interface ChatRequest {
  readonly model: string | null;
  readonly messages: readonly ChatMessage[];
  /** Per choice; null lets the gateway cap it to what remains of the quota. */
  readonly maxTokens: number | null;
  /** `n`: answers generated; the reservation holds maxTokens for each. */
  readonly choices?: number | null;
  readonly temperature?: number | null;
  readonly topP?: number | null;
  readonly stop?: readonly string[] | null;
  readonly seed?: number | null;
  /** OpenAI's `tools`, `tool_choice` and `response_format`, as they are. */
  readonly tools?: readonly unknown[] | null;
  readonly toolChoice?: unknown;
  readonly responseFormat?: unknown;
  /** Requests of one session go to one upstream while it is healthy, so its prefix cache stays warm. */
  readonly sessionId?: string | null;
  /** Every other field of a `/v1` body, for vLLM as it came. */
  readonly extra?: Readonly<Record<string, unknown>>;
}

/**
 * The body of vLLM's chat call but for what the call itself adds (the completion budget,
 * `stream`, `stream_options`); /tokenize is given the same template inputs from it.
 */
export interface UpstreamChatParams {
  readonly model: string;
  readonly messages: readonly ChatMessage[];
  readonly [field: string]: unknown;
}

/** The characters of a message's text: its content, text parts, and the tool calls it made. */
export function messageText(message: ChatMessage): string[] {
  const texts: string[] = [];
  const { content } = message;
  if (typeof content === 'string') texts.push(content);
  else if (Array.isArray(content)) {
    for (const part of content) if (typeof part['text'] === 'string') texts.push(part['text']);
  }
  for (const call of message.tool_calls ?? []) texts.push(call.function.name, call.function.arguments);
  return texts;
}

/** Refuses, before anything is counted or reserved, what no model would accept. */
export function validateChatRequest(request: ChatRequest, limits: Config['chat']): void {
  if (request.messages.length === 0) throw BadUserInputError.about('messages', 'must not be empty.');
  if (request.messages.length > limits.maxMessages) {
    throw new BadUserInputError(`At most ${limits.maxMessages} messages per request.`, 'messages');
  }
  let characters = 0;
  request.messages.forEach((message, index) => {
    for (const text of messageText(message)) characters += text.length;
    // What OpenAI's API (and vLLM) require of a turn, refused before anything is counted.
    if (message.role === 'tool' && typeof message.tool_call_id !== 'string') {
      throw new BadUserInputError(`Message ${index} is a tool result without the id of the call it answers (toolCallId).`, 'messages');
    }
    if (message.content == null && message.role !== 'assistant') {
      throw new BadUserInputError(`Message ${index} has no content; only an assistant turn may go without.`, 'messages');
    }
  });
  if (characters > limits.maxContentChars) {
    throw new BadUserInputError(`The messages hold ${characters} characters; the limit is ${limits.maxContentChars}.`, 'messages');
  }
  if (request.maxTokens !== null && (!Number.isSafeInteger(request.maxTokens) || request.maxTokens < 1 || request.maxTokens > MAX_TOKEN_COUNT)) {
    throw BadUserInputError.about('maxTokens', 'must be a whole number of at least 1.');
  }
  validateChoices(request.choices ?? 1, request.maxTokens, limits.maxChoices);
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
  if (request.tools != null && !request.tools.every((tool) => typeof tool === 'object' && tool !== null && !Array.isArray(tool))) {
    throw BadUserInputError.about('tools', 'must be objects: {type: "function", function: {name, parameters}}.');
  }
  validateSessionId(request.sessionId);
}

export function validateSessionId(sessionId: string | null | undefined): void {
  if (sessionId != null && (sessionId === '' || sessionId.length > MAX_SESSION_ID_CHARS)) {
    throw BadUserInputError.about('sessionId', `must be 1 to ${MAX_SESSION_ID_CHARS} characters.`);
  }
}

/** `n` within the limit, and n × maxTokens within what a count holds. */
export function validateChoices(choices: number, maxTokens: number | null, maxChoices: number): void {
  if (!Number.isSafeInteger(choices) || choices < 1 || choices > maxChoices) {
    throw new BadUserInputError(`n must be a whole number from 1 to ${maxChoices}.`, 'n');
  }
  if (maxTokens !== null && choices * maxTokens > MAX_TOKEN_COUNT) {
    throw new BadUserInputError(`n × max_tokens must be at most ${MAX_TOKEN_COUNT}.`, 'n');
  }
}

export function upstreamParams(model: string, request: ChatRequest): UpstreamChatParams {
  return {
    ...request.extra,
    model,
    messages: request.messages,
    ...(request.temperature == null ? {} : { temperature: request.temperature }),
    ...(request.topP == null ? {} : { top_p: request.topP }),
    ...(request.stop == null || request.stop.length === 0 ? {} : { stop: [...request.stop] }),
    ...(request.seed == null ? {} : { seed: request.seed }),
    ...(request.choices == null ? {} : { n: request.choices }),
    ...(request.tools == null ? {} : { tools: request.tools }),
    ...(request.toolChoice == null ? {} : { tool_choice: request.toolChoice }),
    ...(request.responseFormat == null ? {} : { response_format: request.responseFormat }),
  };
}
