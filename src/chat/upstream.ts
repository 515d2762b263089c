import OpenAI from 'openai';
import type { ChatCompletionCreateParamsStreaming } from 'openai/resources/chat/completions';
import type { Stream } from 'openai/streaming';
import { Agent, request } from 'undici';
import type { Logger } from '../logger';
import { undiciFetch } from './undici-fetch';

export interface UpstreamModel {
  readonly id: string;
  readonly ownedBy: string;
  readonly created: number;
  /** Context length: prompt + completion can never exceed it. */
  readonly maxModelLen: number;
}

export interface UpstreamOptions {
  readonly baseUrl: string;
  readonly apiKey: string | null;
  readonly timeoutMs: number;
  readonly log: Logger;
}

/** A 4xx from vLLM that is the client's fault (context length, validation): its message is safe to show. */
export class UpstreamRejectedError extends Error {
  override name = 'UpstreamRejectedError';
  constructor(
    message: string,
    readonly status: number,
    /** The request field vLLM names (`param`), when it names one. */
    readonly param: string | null,
  ) {
    super(message);
  }
}

/** vLLM's endpoints that the gateway meters, under /v1. */
export type MeteredPath = '/chat/completions' | '/completions' | '/embeddings';

/** vLLM's error body: `{error: {message, type, param, code}}`, or the older flat `{object: "error", message, …}`. */
interface VllmErrorBody {
  error?: { message?: unknown; param?: unknown } | string;
  object?: unknown;
  message?: unknown;
  param?: unknown;
}

function isVllmError(body: unknown): body is VllmErrorBody {
  if (typeof body !== 'object' || body === null) return false;
  const { error, object } = body as VllmErrorBody;
  return (typeof error === 'object' && error !== null) || object === 'error';
}

const DEFAULT_MAX_MODEL_LEN = 4096;

/** vLLM's extension: cumulative usage on every chunk, so a cut stream is still charged exactly. */
type VllmStreamOptions = ChatCompletionCreateParamsStreaming['stream_options'] & { continuous_usage_stats?: boolean };

/**
 * The one client of vLLM: the openai SDK on undici's request() over one keep-alive connection
 * pool, no automatic retries (a retried chat would be generated, and paid for, twice), a timeout on every call.
 */
export class Upstream {
  readonly client: OpenAI;
  private readonly agent: Agent;
  private readonly origin: string;
  private modelsLoading: Promise<UpstreamModel[]> | null = null;
  /** null until the first /tokenize answer says whether the server has it. */
  private tokenizeAvailable: boolean | null = null;

  constructor(private readonly options: UpstreamOptions) {
    this.agent = new Agent({ keepAliveTimeout: 30_000, connections: 256, pipelining: 1 });
    this.client = new OpenAI({
      baseURL: options.baseUrl,
      apiKey: options.apiKey ?? 'none',
      timeout: options.timeoutMs,
      maxRetries: 0,
      fetch: undiciFetch(this.agent),
    });
    // vLLM serves /tokenize beside /v1, at the server's root.
    this.origin = options.baseUrl.replace(/\/v1\/?$/, '');
  }

  /** vLLM's `GET /health` at the server's root: 200 while its engine runs. */
  async healthy(timeoutMs: number): Promise<boolean> {
    try {
      const response = await request(`${this.origin}/health`, { method: 'GET', dispatcher: this.agent, signal: AbortSignal.timeout(timeoutMs) });
      await response.body.dump();
      return response.statusCode === 200;
    } catch {
      return false;
    }
  }

  /** What the server lists now; concurrent askers share one request. */
  listModels(): Promise<UpstreamModel[]> {
    this.modelsLoading ??= this.fetchModels().finally(() => {
      this.modelsLoading = null;
    });
    return this.modelsLoading;
  }

  private async fetchModels(): Promise<UpstreamModel[]> {
    const page = await this.client.models.list({ timeout: Math.min(this.options.timeoutMs, 10_000) });
    const cards = page.data.map((model) => {
      // vLLM's card extensions; a LoRA adapter's card names its base in `parent` and has max_model_len null.
      const extra = model as unknown as { max_model_len?: unknown; parent?: unknown };
      return {
        model,
        maxModelLen: typeof extra.max_model_len === 'number' && extra.max_model_len > 0 ? extra.max_model_len : null,
        parent: typeof extra.parent === 'string' ? extra.parent : null,
      };
    });
    const ownLength = new Map(cards.map((card) => [card.model.id, card.maxModelLen]));
    return cards.map((card) => ({
      id: card.model.id,
      ownedBy: card.model.owned_by,
      created: card.model.created,
      maxModelLen: card.maxModelLen ?? (card.parent === null ? null : ownLength.get(card.parent)) ?? DEFAULT_MAX_MODEL_LEN,
    }));
  }

  /**
   * The exact prompt count from vLLM's /tokenize (the number it will report as prompt_tokens)
   * for a body of its chat form (`messages` with the template's inputs) or its plain form
   * (`prompt`); null when the server has no /tokenize.
   */
  async tokenize(body: Readonly<Record<string, unknown>>, signal?: AbortSignal): Promise<number | null> {
    if (this.tokenizeAvailable === false) return null;
    // undici's request(), not fetch: this call is on every chat's path, and fetch's web streams cost CPU.
    const response = await request(`${this.origin}/tokenize`, {
      method: 'POST',
      dispatcher: this.agent,
      signal: signal ?? AbortSignal.timeout(Math.min(this.options.timeoutMs, 10_000)),
      headers: {
        'content-type': 'application/json',
        ...(this.options.apiKey === null ? {} : { authorization: `Bearer ${this.options.apiKey}` }),
      },
      body: JSON.stringify(body),
    });
    const text = await response.body.text();
    let answer: unknown = null;
    try {
      answer = JSON.parse(text) as unknown;
    } catch {
      // Not JSON: a proxy's page, or nothing; judged by the status alone.
    }
    // A server without the route answers FastAPI's `{"detail":"Not Found"}` (or a proxy's page);
    // a 404 in vLLM's error shape is about the request (an unknown model), and says nothing of the route.
    if ((response.statusCode === 404 || response.statusCode === 405) && !isVllmError(answer)) {
      this.tokenizeAvailable = false;
      this.options.log.warn('the upstream has no /tokenize: prompt counts fall back to tiktoken with a safety margin');
      return null;
    }
    if (response.statusCode >= 400) {
      const error = isVllmError(answer) ? answer : {};
      const detail = typeof error.error === 'object' ? error.error : error;
      const message = typeof detail.message === 'string' ? detail.message : '';
      const param = typeof detail.param === 'string' ? detail.param : null;
      if (response.statusCode === 400) throw new UpstreamRejectedError(message || 'The upstream refused the prompt.', 400, param);
      throw new OpenAI.APIError(response.statusCode, detail, message || 'tokenize failed', undefined);
    }
    this.tokenizeAvailable = true;
    const count = (answer as { count?: unknown } | null)?.count;
    if (typeof count !== 'number' || !Number.isSafeInteger(count) || count < 0) {
      throw new Error('the upstream /tokenize answered without a valid count');
    }
    return count;
  }

  /** A whole answer of one of vLLM's metered endpoints, through the SDK, as vLLM sent it. */
  answer<TAnswer>(path: MeteredPath, body: Readonly<Record<string, unknown>>, signal: AbortSignal): Promise<TAnswer> {
    return this.client.post<TAnswer>(path, { body: { ...body, stream: false }, signal });
  }

  /** A stream that always carries usage: on every chunk (vLLM) and in a final chunk. */
  async stream<TChunk>(path: MeteredPath, body: Readonly<Record<string, unknown>>, signal: AbortSignal): Promise<AsyncIterable<TChunk>> {
    const streamOptions: VllmStreamOptions = { include_usage: true, continuous_usage_stats: true };
    return this.client.post<Stream<TChunk>>(path, { body: { ...body, stream: true, stream_options: streamOptions }, signal, stream: true });
  }

  async close(): Promise<void> {
    await this.agent.close();
  }
}
