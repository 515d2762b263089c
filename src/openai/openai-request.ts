import type { ChatRequest } from '../chat/chat-request';
import type { ChatMessage } from '../chat/upstream';
import { invalidRequest } from './openai-errors';

/**
 * vLLM sampling parameters a client may pass through. Anything else is refused, so clients
 * cannot reach upstream features the operator did not expose.
 */
const PASSTHROUGH_PARAMETERS = new Set([
  'presence_penalty',
  'frequency_penalty',
  'repetition_penalty',
  'top_k',
  'min_p',
  'min_tokens',
  'logit_bias',
  'logprobs',
  'top_logprobs',
  'ignore_eos',
  'skip_special_tokens',
  'spaces_between_special_tokens',
  'include_stop_str_in_output',
  'stop_token_ids',
  'length_penalty',
  'user',
]);

/** Parameters the gateway reads itself. */
const HANDLED_PARAMETERS = new Set([
  'model',
  'messages',
  'max_tokens',
  'max_completion_tokens',
  'temperature',
  'top_p',
  'stop',
  'seed',
  'stream',
  'stream_options',
  'n',
]);

const ROLES = new Set(['system', 'user', 'assistant', 'developer']);

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function optionalNumber(body: Record<string, unknown>, name: string): number | null {
  const value = body[name];
  if (value === undefined || value === null) return null;
  if (typeof value !== 'number' || !Number.isFinite(value)) throw invalidRequest(`${name} must be a number.`, name);
  return value;
}

function messageContent(content: unknown, index: number): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    const texts = content.map((part) => {
      if (isRecord(part) && part.type === 'text' && typeof part.text === 'string') return part.text;
      throw invalidRequest('Only text content parts are supported.', `messages[${index}].content`);
    });
    return texts.join('\n');
  }
  throw invalidRequest('Each message needs a string content.', `messages[${index}].content`);
}

/** An OpenAI chat request in the gateway's terms, refusing what the gateway does not expose. */
export interface ParsedChatRequest {
  readonly request: ChatRequest;
  readonly stream: boolean;
  /** stream_options.include_usage: forward the final usage chunk. */
  readonly includeUsage: boolean;
  /** stream_options.continuous_usage_stats (vLLM): forward usage on every chunk. */
  readonly continuousUsage: boolean;
}

export function parseChatRequest(body: unknown): ParsedChatRequest {
  if (!isRecord(body)) throw invalidRequest('The body must be a JSON object.');
  for (const key of Object.keys(body)) {
    if (!HANDLED_PARAMETERS.has(key) && !PASSTHROUGH_PARAMETERS.has(key)) {
      throw invalidRequest(`Unrecognized request argument supplied: ${key}`, key);
    }
  }
  if (!Array.isArray(body.messages)) throw invalidRequest('messages must be an array.', 'messages');
  const messages: ChatMessage[] = body.messages.map((message, index) => {
    if (!isRecord(message) || typeof message.role !== 'string' || !ROLES.has(message.role)) {
      throw invalidRequest('Each message needs a role of system, user, assistant or developer.', `messages[${index}].role`);
    }
    const role = message.role === 'developer' ? 'system' : (message.role as ChatMessage['role']);
    return { role, content: messageContent(message.content, index) };
  });
  if (body.model !== undefined && typeof body.model !== 'string') throw invalidRequest('model must be a string.', 'model');
  if (body.n !== undefined && body.n !== null && body.n !== 1) throw invalidRequest('Only n = 1 is supported.', 'n');
  const maxTokens = optionalNumber(body, 'max_completion_tokens') ?? optionalNumber(body, 'max_tokens');
  const seed = optionalNumber(body, 'seed');
  let stop: string[] | null = null;
  if (typeof body.stop === 'string') stop = [body.stop];
  else if (Array.isArray(body.stop) && body.stop.every((item) => typeof item === 'string')) stop = body.stop as string[];
  else if (body.stop !== undefined && body.stop !== null) throw invalidRequest('stop must be a string or an array of strings.', 'stop');
  if (body.stream !== undefined && typeof body.stream !== 'boolean') throw invalidRequest('stream must be a boolean.', 'stream');
  const streamOptions = body.stream_options;
  if (streamOptions !== undefined && streamOptions !== null && !isRecord(streamOptions)) throw invalidRequest('stream_options must be an object.', 'stream_options');

  const extra: Record<string, unknown> = {};
  for (const key of PASSTHROUGH_PARAMETERS) if (body[key] !== undefined) extra[key] = body[key];
  return {
    request: {
      model: typeof body.model === 'string' ? body.model : null,
      messages,
      maxTokens,
      temperature: optionalNumber(body, 'temperature'),
      topP: optionalNumber(body, 'top_p'),
      stop,
      seed,
      extra,
    },
    stream: body.stream === true,
    includeUsage: isRecord(streamOptions) && streamOptions.include_usage === true,
    continuousUsage: isRecord(streamOptions) && streamOptions.continuous_usage_stats === true,
  };
}
