import type { IncomingMessage, ServerResponse } from 'node:http';
import type { EntityManager, MikroORM } from '@mikro-orm/postgresql';
import { GraphQLError } from 'graphql';
import type { ChatCompletionChunk } from 'openai/resources/chat/completions';
import type { Viewer } from '../auth/viewer';
import type { ChatRequest, MeteredChat } from '../chat/chat.service';
import type { ChatMessage } from '../chat/upstream';
import { errorCodeOf } from '../errors';
import type { Logger } from '../logger';
import { periodBounds } from '../quota/periods';
import { BodyTooLargeError, readBody, sendJson } from '../server/http';
import type { Services } from '../services';
import { QuotaPeriod } from '../users/user.entity';

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

/** GraphQL argument names → OpenAI request fields, for error messages and `param`. */
const OPENAI_PARAMETER_OF: Record<string, string> = { maxTokens: 'max_tokens', topP: 'top_p' };

const ROLES = new Set(['system', 'user', 'assistant', 'developer']);

interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

class OpenAIHttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: OpenAIErrorBody,
    readonly headers: Record<string, string> = {},
  ) {
    super(body.error.message);
  }
}

function invalid(message: string, param: string | null = null): OpenAIHttpError {
  return new OpenAIHttpError(400, { error: { message, type: 'invalid_request_error', param, code: null } });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function optionalNumber(body: Record<string, unknown>, name: string): number | null {
  const value = body[name];
  if (value === undefined || value === null) return null;
  if (typeof value !== 'number' || !Number.isFinite(value)) throw invalid(`${name} must be a number.`, name);
  return value;
}

function messageContent(content: unknown, index: number): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    const texts = content.map((part) => {
      if (isRecord(part) && part.type === 'text' && typeof part.text === 'string') return part.text;
      throw invalid('Only text content parts are supported.', `messages[${index}].content`);
    });
    return texts.join('\n');
  }
  throw invalid('Each message needs a string content.', `messages[${index}].content`);
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
  if (!isRecord(body)) throw invalid('The body must be a JSON object.');
  for (const key of Object.keys(body)) {
    if (!HANDLED_PARAMETERS.has(key) && !PASSTHROUGH_PARAMETERS.has(key)) {
      throw invalid(`Unrecognized request argument supplied: ${key}`, key);
    }
  }
  if (!Array.isArray(body.messages)) throw invalid('messages must be an array.', 'messages');
  const messages: ChatMessage[] = body.messages.map((message, index) => {
    if (!isRecord(message) || typeof message.role !== 'string' || !ROLES.has(message.role)) {
      throw invalid('Each message needs a role of system, user, assistant or developer.', `messages[${index}].role`);
    }
    const role = message.role === 'developer' ? 'system' : (message.role as ChatMessage['role']);
    return { role, content: messageContent(message.content, index) };
  });
  if (body.model !== undefined && typeof body.model !== 'string') throw invalid('model must be a string.', 'model');
  if (body.n !== undefined && body.n !== null && body.n !== 1) throw invalid('Only n = 1 is supported.', 'n');
  const maxTokens = optionalNumber(body, 'max_completion_tokens') ?? optionalNumber(body, 'max_tokens');
  const seed = optionalNumber(body, 'seed');
  let stop: string[] | null = null;
  if (typeof body.stop === 'string') stop = [body.stop];
  else if (Array.isArray(body.stop) && body.stop.every((item) => typeof item === 'string')) stop = body.stop as string[];
  else if (body.stop !== undefined && body.stop !== null) throw invalid('stop must be a string or an array of strings.', 'stop');
  if (body.stream !== undefined && typeof body.stream !== 'boolean') throw invalid('stream must be a boolean.', 'stream');
  const streamOptions = body.stream_options;
  if (streamOptions !== undefined && streamOptions !== null && !isRecord(streamOptions)) throw invalid('stream_options must be an object.', 'stream_options');

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

/** The contract's errors in OpenAI's shape and status. */
export function toOpenAIError(error: unknown, retryAfterSeconds: number | null): OpenAIHttpError {
  if (error instanceof OpenAIHttpError) return error;
  const code = errorCodeOf(error);
  const message = error instanceof GraphQLError ? error.message : 'Internal server error.';
  const extensions = error instanceof GraphQLError ? error.extensions : {};
  switch (code) {
    case 'UNAUTHENTICATED':
      return extensions.reason === 'USER_DISABLED'
        ? new OpenAIHttpError(403, { error: { message, type: 'permission_error', param: null, code: 'user_disabled' } })
        : new OpenAIHttpError(401, { error: { message, type: 'authentication_error', param: null, code: 'invalid_api_key' } });
    case 'FORBIDDEN':
      return new OpenAIHttpError(403, { error: { message, type: 'permission_error', param: null, code: null } });
    case 'BAD_USER_INPUT': {
      // The chat service names GraphQL's arguments; an OpenAI client knows them by their REST names.
      const field = typeof extensions.field === 'string' ? (OPENAI_PARAMETER_OF[extensions.field] ?? extensions.field) : null;
      return invalid(field === null ? message : message.replace(/^\w+\b/, (word) => OPENAI_PARAMETER_OF[word] ?? word), field);
    }
    case 'QUOTA_EXCEEDED':
      return new OpenAIHttpError(
        429,
        { error: { message, type: 'insufficient_quota', param: null, code: 'insufficient_quota' } },
        // Retrying cannot help before the period resets: tell SDKs not to retry.
        { 'x-should-retry': 'false', ...(retryAfterSeconds === null ? {} : { 'retry-after': String(retryAfterSeconds) }) },
      );
    case 'RATE_LIMITED': {
      const retryAfter = typeof extensions.retryAfter === 'number' ? extensions.retryAfter : 1;
      return new OpenAIHttpError(429, { error: { message, type: 'rate_limit_exceeded', param: null, code: 'rate_limit_exceeded' } }, { 'retry-after': String(retryAfter) });
    }
    case 'UPSTREAM_ERROR':
      return extensions.timeout === true
        ? new OpenAIHttpError(504, { error: { message, type: 'timeout', param: null, code: 'upstream_timeout' } })
        : new OpenAIHttpError(502, { error: { message, type: 'upstream_error', param: null, code: 'upstream_error' } });
    default:
      return new OpenAIHttpError(500, { error: { message: 'Internal server error.', type: 'server_error', param: null, code: null } });
  }
}

/**
 * `/v1/models` and `/v1/chat/completions` for existing OpenAI clients: authenticated like
 * GraphQL, metered by the same ChatService (same quota, records and usage events).
 */
export class OpenAICompatibleEndpoint {
  constructor(
    private readonly services: Services,
    private readonly orm: MikroORM,
    private readonly log: Logger,
  ) {}

  /** False when the path is not one of this endpoint's. */
  async handle(req: IncomingMessage, res: ServerResponse, pathname: string, requestId: string): Promise<boolean> {
    if (pathname !== '/v1/models' && pathname !== '/v1/chat/completions') return false;
    const em = this.orm.em.fork();
    let viewer: Viewer | null = null;
    try {
      viewer = await this.services.auth.authenticate(req.headers.authorization ?? null);
      if (pathname === '/v1/models') {
        if (req.method !== 'GET') throw new OpenAIHttpError(405, { error: { message: 'Use GET.', type: 'invalid_request_error', param: null, code: null } });
        const models = await this.services.chat.models();
        sendJson(res, 200, {
          object: 'list',
          data: models.map((model) => ({ id: model.id, object: 'model', created: 0, owned_by: model.ownedBy, max_model_len: model.maxModelLen })),
        });
        return true;
      }
      if (req.method !== 'POST') throw new OpenAIHttpError(405, { error: { message: 'Use POST.', type: 'invalid_request_error', param: null, code: null } });
      let body: unknown;
      try {
        body = JSON.parse(await readBody(req, this.services.config.http.maxBodyBytes));
      } catch (error) {
        if (error instanceof BodyTooLargeError) {
          throw new OpenAIHttpError(413, { error: { message: 'The request body is too large.', type: 'invalid_request_error', param: null, code: null } });
        }
        throw invalid('The body is not valid JSON.');
      }
      const parsed = parseChatRequest(body);
      const metered = await this.services.chat.reserve(em, viewer, parsed.request, 'openai');
      try {
        if (parsed.stream) await this.stream(res, em, metered, parsed);
        else {
          const { response } = await this.services.chat.completeRaw(em, metered);
          sendJson(res, 200, response, { 'x-usage-request-id': metered.requestId });
        }
      } finally {
        await metered.release(em);
      }
    } catch (error) {
      const retryAfter = viewer === null ? null : await this.secondsUntilQuotaReset(viewer, error);
      const mapped = toOpenAIError(error, retryAfter);
      if (mapped.status >= 500) this.log.warn({ requestId, status: mapped.status }, 'OpenAI-compatible request failed');
      if (res.writableEnded) {
        // The answer was already complete (a failure while cleaning up): nothing more to say.
      } else if (res.headersSent) {
        // The stream had started: report in-band, as vLLM does.
        res.end(`data: ${JSON.stringify(mapped.body)}\n\ndata: [DONE]\n\n`);
      } else {
        sendJson(res, mapped.status, mapped.body, mapped.headers);
      }
    }
    return true;
  }

  private async stream(
    res: ServerResponse,
    em: EntityManager,
    metered: MeteredChat,
    parsed: ParsedChatRequest,
  ): Promise<void> {
    const clientGone = new AbortController();
    // The upstream is aborted at once and what was generated so far is charged.
    const onClose = (): void => {
      if (!res.writableEnded) clientGone.abort();
    };
    res.on('close', onClose);
    // The client may have gone while the request was being reserved: 'close' has fired already.
    if (res.destroyed) onClose();
    const events = this.services.chat.streamRaw(em, metered, clientGone.signal);
    try {
      let started = false;
      for await (const event of events) {
        if (event.kind !== 'chunk') continue;
        if (!started) {
          res.writeHead(200, {
            'content-type': 'text/event-stream; charset=utf-8',
            'cache-control': 'no-cache',
            connection: 'keep-alive',
            'x-usage-request-id': metered.requestId,
          });
          started = true;
        }
        const chunk = this.forClient(event.chunk, parsed);
        if (chunk !== null) res.write(`data: ${JSON.stringify(chunk)}\n\n`);
      }
      if (!clientGone.signal.aborted) {
        if (!started) {
          res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' });
        }
        res.end('data: [DONE]\n\n');
      }
    } finally {
      res.off('close', onClose);
    }
  }

  /** Usage is always asked of vLLM; the client sees only what it asked for. */
  private forClient(chunk: ChatCompletionChunk, parsed: ParsedChatRequest): ChatCompletionChunk | null {
    if (chunk.choices.length === 0) return parsed.includeUsage ? chunk : null;
    if (parsed.continuousUsage) return chunk;
    if (chunk.usage === undefined) return chunk;
    const { usage: _usage, ...rest } = chunk;
    return rest as ChatCompletionChunk;
  }

  private async secondsUntilQuotaReset(viewer: Viewer, error: unknown): Promise<number | null> {
    if (errorCodeOf(error) !== 'QUOTA_EXCEEDED') return null;
    const user = await this.services.users.get(viewer.userId);
    if (user === null || user.quotaPeriod === QuotaPeriod.NONE) return null;
    const { end } = periodBounds(user.quotaPeriod, this.services.clock.now());
    return end === null ? null : Math.max(1, Math.ceil((end.getTime() - this.services.clock.now().getTime()) / 1000));
  }
}
