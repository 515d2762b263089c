import OpenAI from 'openai';
import type { ChatCompletion, ChatCompletionChunk, ChatCompletionCreateParamsNonStreaming, ChatCompletionCreateParamsStreaming } from 'openai/resources/chat/completions';
import { Agent, request } from 'undici';
import type { Logger } from '../logger';

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

export interface ChatMessage {
  readonly role: 'system' | 'user' | 'assistant';
  readonly content: string;
}

/** A 4xx from vLLM that is the client's fault (context length, validation): its message is safe to show. */
export class UpstreamRejectedError extends Error {
  override name = 'UpstreamRejectedError';
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

const DEFAULT_MAX_MODEL_LEN = 4096;

/** vLLM's extension: cumulative usage on every chunk, so a cut stream is still charged exactly. */
type VllmStreamOptions = ChatCompletionCreateParamsStreaming['stream_options'] & { continuous_usage_stats?: boolean };

/**
 * The one client of vLLM: the openai SDK on one keep-alive connection pool, no automatic
 * retries (a retried chat would be generated, and paid for, twice), a timeout on every call.
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
      fetchOptions: { dispatcher: this.agent },
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
   * The exact prompt count from vLLM's /tokenize (the number it will report as prompt_tokens),
   * or null when the server has no /tokenize.
   */
  async tokenize(model: string, messages: readonly ChatMessage[], signal?: AbortSignal): Promise<number | null> {
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
      body: JSON.stringify({ model, messages, add_generation_prompt: true }),
    });
    if (response.statusCode === 404 || response.statusCode === 405) {
      await response.body.dump();
      this.tokenizeAvailable = false;
      this.options.log.warn('the upstream has no /tokenize: prompt counts fall back to tiktoken with a safety margin');
      return null;
    }
    const body = (await response.body.json()) as { count?: unknown; error?: { message?: unknown } | string; message?: unknown };
    if (response.statusCode >= 400) {
      const message = typeof body.error === 'object' && typeof body.error?.message === 'string' ? body.error.message : String(body.message ?? '');
      if (response.statusCode === 400) throw new UpstreamRejectedError(message || 'The upstream refused the prompt.', 400);
      throw new OpenAI.APIError(response.statusCode, body, message || 'tokenize failed', undefined);
    }
    this.tokenizeAvailable = true;
    if (typeof body.count !== 'number' || !Number.isSafeInteger(body.count) || body.count < 0) {
      throw new Error('the upstream /tokenize answered without a valid count');
    }
    return body.count;
  }

  complete(params: Omit<ChatCompletionCreateParamsNonStreaming, 'stream'>, signal: AbortSignal): Promise<ChatCompletion> {
    return this.client.chat.completions.create({ ...params, stream: false }, { signal });
  }

  /** A stream that always carries usage: on every chunk (vLLM) and in a final chunk. */
  async stream(params: Omit<ChatCompletionCreateParamsStreaming, 'stream' | 'stream_options'>, signal: AbortSignal): Promise<AsyncIterable<ChatCompletionChunk>> {
    const streamOptions: VllmStreamOptions = { include_usage: true, continuous_usage_stats: true };
    return this.client.chat.completions.create({ ...params, stream: true, stream_options: streamOptions }, { signal });
  }

  async close(): Promise<void> {
    await this.agent.close();
  }
}
