import type { ChatMessage, ChatRequest } from '../chat/chat-request';
import type { PromptInput, PromptRequest } from '../chat/prompt-request';
import { invalidRequest } from './openai-errors';

/**
 * Fields that would let a client reach past its quota or into another tenant: the queue's
 * order (`priority`), the prefix cache's partition (`cache_salt`), and the internals of
 * disaggregated serving (`kv_transfer_params`, `ec_transfer_params`). Only the gateway may set them.
 */
const REFUSED_FIELDS = ['priority', 'cache_salt', 'kv_transfer_params', 'ec_transfer_params'] as const;

/** What the gateway reads and rewrites of a chat body; everything else reaches vLLM as it came. */
const OWNED_CHAT_FIELDS = new Set(['model', 'messages', 'max_tokens', 'max_completion_tokens', 'temperature', 'top_p', 'stop', 'seed', 'n', 'stream', 'stream_options']);
const OWNED_COMPLETION_FIELDS = new Set(['model', 'max_tokens', 'stream', 'stream_options']);
const OWNED_EMBEDDING_FIELDS = new Set(['model']);

/** OpenAI's (and vLLM's) completions default when the client gives no max_tokens. */
const DEFAULT_COMPLETION_MAX_TOKENS = 16;

type Body = Record<string, unknown>;

function isRecord(value: unknown): value is Body {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function objectBody(body: unknown): Body {
  if (!isRecord(body)) throw invalidRequest('The body must be a JSON object.');
  for (const field of REFUSED_FIELDS) {
    if (body[field] !== undefined && body[field] !== null) throw invalidRequest(`${field} is set by the gateway, not by clients.`, field);
  }
  if (body.model !== undefined && body.model !== null && typeof body.model !== 'string') throw invalidRequest('model must be a string.', 'model');
  return body;
}

function optionalNumber(body: Body, name: string): number | null {
  const value = body[name];
  if (value === undefined || value === null) return null;
  if (typeof value !== 'number' || !Number.isFinite(value)) throw invalidRequest(`${name} must be a number.`, name);
  return value;
}

/** The body without the fields the gateway owns: for vLLM as it came. */
function passedThrough(body: Body, owned: ReadonlySet<string>): Body {
  const extra: Body = {};
  for (const [field, value] of Object.entries(body)) if (!owned.has(field)) extra[field] = value;
  return extra;
}

/** How the client wants a stream: vLLM's rules, which the gateway enforces since it owns stream_options. */
export interface StreamWish {
  readonly stream: boolean;
  /** Forward the final usage chunk: `stream_options` given, `include_usage` not false (`{}` turns it on, as in vLLM). */
  readonly includeUsage: boolean;
  /** stream_options.continuous_usage_stats (vLLM): forward usage on every chunk. */
  readonly continuousUsage: boolean;
}

function streamWish(body: Body): StreamWish {
  if (body.stream !== undefined && body.stream !== null && typeof body.stream !== 'boolean') throw invalidRequest('stream must be a boolean.', 'stream');
  const stream = body.stream === true;
  const options = body.stream_options;
  if (options === undefined || options === null) return { stream, includeUsage: false, continuousUsage: false };
  if (!isRecord(options)) throw invalidRequest('stream_options must be an object.', 'stream_options');
  // vLLM tests the dict's truthiness: an empty one passes without a stream.
  if (!stream && Object.keys(options).length > 0) throw invalidRequest('Stream options can only be defined when `stream=True`.', 'stream_options');
  const includeUsage = options.include_usage === undefined || options.include_usage === true;
  return { stream, includeUsage, continuousUsage: includeUsage && options.continuous_usage_stats === true };
}

function messagesOf(value: unknown): ChatMessage[] {
  if (!Array.isArray(value)) throw invalidRequest('messages must be an array.', 'messages');
  return value.map((message: unknown, index) => {
    if (!isRecord(message) || typeof message.role !== 'string') throw invalidRequest('Each message needs a role.', `messages[${index}].role`);
    const { content } = message;
    const parts = Array.isArray(content) && content.every(isRecord);
    if (content !== undefined && content !== null && typeof content !== 'string' && !parts) {
      throw invalidRequest('A message content is a string, an array of content parts, or null.', `messages[${index}].content`);
    }
    if (message.tool_calls !== undefined && message.tool_calls !== null) {
      const calls = message.tool_calls;
      const wellFormed =
        Array.isArray(calls) &&
        calls.every((call) => isRecord(call) && isRecord(call.function) && typeof call.function.name === 'string' && typeof call.function.arguments === 'string');
      if (!wellFormed) throw invalidRequest('tool_calls must be [{id, type: "function", function: {name, arguments}}].', `messages[${index}].tool_calls`);
    }
    return message as ChatMessage;
  });
}

/** An OpenAI chat request in the gateway's terms: what it owns read, the rest kept for vLLM. */
export interface ParsedChatRequest extends StreamWish {
  readonly request: ChatRequest;
}

export function parseChatRequest(body: unknown): ParsedChatRequest {
  const object = objectBody(body);
  const messages = messagesOf(object.messages);
  let stop: string[] | null = null;
  if (typeof object.stop === 'string') stop = [object.stop];
  else if (Array.isArray(object.stop) && object.stop.every((item) => typeof item === 'string')) stop = object.stop as string[];
  else if (object.stop !== undefined && object.stop !== null) throw invalidRequest('stop must be a string or an array of strings.', 'stop');
  return {
    request: {
      model: typeof object.model === 'string' ? object.model : null,
      messages,
      maxTokens: optionalNumber(object, 'max_completion_tokens') ?? optionalNumber(object, 'max_tokens'),
      choices: optionalNumber(object, 'n'),
      temperature: optionalNumber(object, 'temperature'),
      topP: optionalNumber(object, 'top_p'),
      stop,
      seed: optionalNumber(object, 'seed'),
      extra: passedThrough(object, OWNED_CHAT_FIELDS),
    },
    ...streamWish(object),
  };
}

const isTokenIds = (value: unknown): value is number[] =>
  Array.isArray(value) && value.length > 0 && value.every((id) => typeof id === 'number' && Number.isSafeInteger(id) && id >= 0);

/** A completion's `prompt` or an embedding's `input`: a string, strings, token ids, or lists of token ids. */
function promptsOf(value: unknown, field: 'prompt' | 'input'): PromptInput[] {
  if (typeof value === 'string') return [{ text: value }];
  if (Array.isArray(value) && value.length > 0) {
    if (value.every((item): item is string => typeof item === 'string')) return value.map((text) => ({ text }));
    if (isTokenIds(value)) return [{ tokenIds: value }];
    if (value.every(isTokenIds)) return value.map((tokenIds) => ({ tokenIds }));
  }
  throw invalidRequest(`${field} must be a string, an array of strings, or token ids (an array of them, or of arrays).`, field);
}

function addSpecialTokens(body: Body): boolean {
  const value = body.add_special_tokens;
  if (value === undefined || value === null) return true;
  if (typeof value !== 'boolean') throw invalidRequest('add_special_tokens must be a boolean.', 'add_special_tokens');
  return value;
}

export interface ParsedPromptRequest extends StreamWish {
  readonly request: PromptRequest;
}

export function parseCompletionRequest(body: unknown): ParsedPromptRequest {
  const object = objectBody(body);
  const maxTokens = object.max_tokens === undefined ? DEFAULT_COMPLETION_MAX_TOKENS : optionalNumber(object, 'max_tokens');
  return {
    request: {
      endpoint: 'completions',
      model: typeof object.model === 'string' ? object.model : null,
      prompts: promptsOf(object.prompt, 'prompt'),
      maxTokens,
      choices: optionalNumber(object, 'n') ?? 1,
      addSpecialTokens: addSpecialTokens(object),
      extra: passedThrough(object, OWNED_COMPLETION_FIELDS),
    },
    ...streamWish(object),
  };
}

export function parseEmbeddingRequest(body: unknown): PromptRequest {
  const object = objectBody(body);
  if (object.messages !== undefined) throw invalidRequest('Embeddings of messages are not served here; send input.', 'messages');
  if (object.stream !== undefined && object.stream !== null && object.stream !== false) throw invalidRequest('Embeddings do not stream.', 'stream');
  return {
    endpoint: 'embeddings',
    model: typeof object.model === 'string' ? object.model : null,
    prompts: promptsOf(object.input, 'input'),
    maxTokens: 0,
    choices: 1,
    addSpecialTokens: addSpecialTokens(object),
    extra: passedThrough(object, OWNED_EMBEDDING_FIELDS),
  };
}
