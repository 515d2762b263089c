import { randomUUID } from 'node:crypto';
import type { EntityManager } from '@mikro-orm/postgresql';
import OpenAI from 'openai';
import type {
  ChatCompletion as OpenAIChatCompletion,
  ChatCompletionChunk,
  ChatCompletionCreateParamsBase,
} from 'openai/resources/chat/completions';
import { hookIterator } from '../async-iterator';
import type { Viewer } from '../auth/viewer';
import type { Config } from '../config';
import { BadUserInputError, UpstreamError } from '../errors';
import type { Logger } from '../logger';
import { MAX_TOKEN_COUNT, type QuotaService, type Reservation, type Settlement, type SettledUsage } from '../quota/quota.service';
import type { RateLimiter } from '../quota/rate-limiter';
import type { UsageBus } from '../usage/usage-bus';
import { ChatRole, type ChatCompletion, type ChatChunk, type ChatInput, type Model, type TokenCount } from './chat.types';
import type { PromptCounter } from './prompt-counter';
import { UpstreamRejectedError, type ChatMessage, type Upstream, type UpstreamModel } from './upstream';

export type ChatInterface = 'graphql' | 'openai';

/** Sampling parameters as the upstream takes them, already validated. */
export interface UpstreamChatParams {
  readonly model: string;
  readonly messages: ChatMessage[];
  readonly temperature?: number;
  readonly top_p?: number;
  readonly stop?: string[];
  readonly seed?: number;
  /** Further vLLM sampling parameters, from the OpenAI-compatible endpoint's allow-list. */
  readonly extra?: Readonly<Record<string, unknown>>;
}

export interface ChatRequest {
  readonly model: string | null;
  readonly messages: readonly ChatMessage[];
  readonly maxTokens: number | null;
  readonly temperature?: number | null;
  readonly topP?: number | null;
  readonly stop?: readonly string[] | null;
  readonly seed?: number | null;
  readonly extra?: Readonly<Record<string, unknown>>;
}

/**
 * One metered upstream call: created with its reservation, ended exactly once by settlement
 * (charging what was produced) or release (charging nothing).
 */
export class MeteredChat {
  private ended: Promise<SettledUsage | null> | null = null;
  readonly startedAt = performance.now();

  constructor(
    readonly requestId: string,
    readonly viewer: Viewer,
    readonly iface: ChatInterface,
    readonly params: UpstreamChatParams,
    readonly reservation: Reservation,
    private readonly service: ChatService,
  ) {}

  get isEnded(): boolean {
    return this.ended !== null;
  }

  /** Charges `usage` (once; later calls return the first outcome). */
  settle(em: EntityManager, usage: Omit<Settlement, 'model' | 'interface' | 'apiKeyId' | 'latencyMs'>): Promise<SettledUsage | null> {
    this.ended ??= this.service.settleMetered(em, this, usage);
    return this.ended;
  }

  /** Gives the whole reservation back, unless already settled. */
  release(em: EntityManager): Promise<SettledUsage | null> {
    this.ended ??= this.service.releaseMetered(em, this).then(() => null);
    return this.ended;
  }
}

const ROLE_OF: Record<ChatRole, ChatMessage['role']> = {
  [ChatRole.SYSTEM]: 'system',
  [ChatRole.USER]: 'user',
  [ChatRole.ASSISTANT]: 'assistant',
};

function tokenCount(prompt: number, completion: number): TokenCount {
  return { promptTokens: prompt, completionTokens: completion, totalTokens: prompt + completion };
}

/** The upstream's 4xx message, trimmed: vLLM's validation messages are meant for the client. */
function upstreamMessage(error: unknown): string {
  const raw = error instanceof Error ? error.message : String(error);
  return raw.replace(/^\d{3}\s+/, '').slice(0, 500);
}

/**
 * Metered chat: validation, prompt count, reservation, the upstream call and settlement on
 * every exit path. GraphQL and the OpenAI-compatible endpoint both go through here.
 */
export class ChatService {
  constructor(
    private readonly config: Config,
    private readonly upstream: Upstream,
    private readonly promptCounter: PromptCounter,
    private readonly quota: QuotaService,
    private readonly usageBus: UsageBus,
    private readonly rateLimiter: RateLimiter,
    private readonly log: Logger,
  ) {}

  async models(): Promise<Model[]> {
    try {
      return (await this.upstream.listModels()).map(({ id, maxModelLen, ownedBy }) => ({ id, maxModelLen, ownedBy }));
    } catch (error) {
      throw this.upstreamFailure(error);
    }
  }

  /** GraphQL's ChatInput in the service's terms. */
  static requestFromInput(input: ChatInput): ChatRequest {
    return {
      model: input.model ?? null,
      messages: (input.messages ?? []).map((message) => ({ role: ROLE_OF[message.role], content: message.content })),
      maxTokens: input.maxTokens ?? null,
      temperature: input.temperature,
      topP: input.topP,
      stop: input.stop,
      seed: input.seed,
    };
  }

  /**
   * Validates, counts the prompt and reserves prompt + completion budget. Throws
   * BAD_USER_INPUT or QUOTA_EXCEEDED before anything reaches the upstream's chat endpoint.
   */
  async reserve(em: EntityManager, viewer: Viewer, request: ChatRequest, iface: ChatInterface): Promise<MeteredChat> {
    this.validateShape(request);
    // Before the prompt is counted: a user over the limit must not keep the tokenizer busy either.
    await this.rateLimiter.admit(viewer.userId);
    const model = await this.resolveModel(request.model);
    if (request.maxTokens !== null && request.maxTokens > model.maxModelLen) {
      throw new BadUserInputError(`maxTokens must be at most ${model.maxModelLen} for ${model.id}.`, 'maxTokens');
    }
    const messages = [...request.messages];
    let prompt;
    try {
      prompt = await this.promptCounter.count(model.id, messages);
    } catch (error) {
      throw this.upstreamFailure(error);
    }
    const completionLimit = model.maxModelLen - prompt.tokens;
    if (completionLimit < 1) {
      throw new BadUserInputError(
        `The messages take ${prompt.tokens} tokens; ${model.id} holds at most ${model.maxModelLen} tokens, answer included.`,
        'messages',
      );
    }
    if (request.maxTokens !== null && request.maxTokens > completionLimit) {
      throw new BadUserInputError(
        `maxTokens ${request.maxTokens} plus the ${prompt.tokens} prompt tokens exceeds the context length of ${model.id} (${model.maxModelLen}).`,
        'maxTokens',
      );
    }
    const requestId = randomUUID();
    const reservation = await this.quota.reserve(em, {
      requestId,
      userId: viewer.userId,
      promptTokens: prompt.tokens,
      promptCountSource: prompt.source,
      maxTokens: request.maxTokens,
      modelCompletionLimit: completionLimit,
    });
    try {
      await this.rateLimiter.holdTokens(viewer.userId, reservation.amount);
    } catch (error) {
      await this.quota.release(em, reservation);
      throw error;
    }
    const params: UpstreamChatParams = {
      model: model.id,
      messages,
      ...(request.temperature == null ? {} : { temperature: request.temperature }),
      ...(request.topP == null ? {} : { top_p: request.topP }),
      ...(request.stop == null || request.stop.length === 0 ? {} : { stop: [...request.stop] }),
      ...(request.seed == null ? {} : { seed: request.seed }),
      ...(request.extra === undefined ? {} : { extra: request.extra }),
    };
    return new MeteredChat(requestId, viewer, iface, params, reservation, this);
  }

  /** A whole answer at once; settled with the usage vLLM reports. */
  async complete(em: EntityManager, metered: MeteredChat): Promise<ChatCompletion> {
    const { response, usage } = await this.completeRaw(em, metered);
    const choice = response.choices[0];
    return {
      id: metered.requestId,
      model: response.model,
      content: choice?.message?.content ?? '',
      finishReason: choice?.finish_reason ?? null,
      usage,
    };
  }

  /** The upstream's own answer (for the OpenAI-compatible endpoint) and what was charged for it. */
  async completeRaw(em: EntityManager, metered: MeteredChat): Promise<{ response: OpenAIChatCompletion; usage: TokenCount }> {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.config.vllm.timeoutMs);
    let response: OpenAIChatCompletion;
    try {
      response = await this.upstream.complete(this.upstreamBody(metered), controller.signal);
    } catch (error) {
      await metered.release(em);
      throw this.upstreamFailure(error, controller.signal.aborted);
    } finally {
      clearTimeout(timer);
    }
    const content = response.choices[0]?.message?.content ?? '';
    const reported = response.usage;
    const promptTokens = reported?.prompt_tokens ?? metered.reservation.promptTokens;
    const completionTokens = reported?.completion_tokens ?? this.promptCounter.countText(content);
    await metered.settle(em, {
      promptTokens,
      completionTokens,
      usageSource: reported == null ? 'estimated' : 'reported',
      status: 'completed',
    });
    return { response, usage: tokenCount(promptTokens, completionTokens) };
  }

  /**
   * The answer as the upstream produces it. Always settled: at the end with the reported
   * usage; when cut short (client gone, upstream failure, timeout) with the last cumulative
   * usage seen, or else a count of the deltas received, marked estimated.
   */
  stream(em: EntityManager, metered: MeteredChat): AsyncIterableIterator<ChatChunk> {
    const clientGone = new AbortController();
    const chunks = this.chunks(em, metered, clientGone.signal);
    // Closing the subscription stops the upstream at once, even while it hangs.
    return hookIterator(chunks, { beforeClose: () => clientGone.abort() });
  }

  private async *chunks(em: EntityManager, metered: MeteredChat, clientGone: AbortSignal): AsyncGenerator<ChatChunk> {
    for await (const event of this.streamRaw(em, metered, clientGone)) {
      if (event.kind === 'delta') {
        yield { id: metered.requestId, delta: event.delta, finishReason: null, usage: null };
      } else if (event.kind === 'end') {
        yield { id: metered.requestId, delta: '', finishReason: event.finishReason, usage: event.usage };
      }
    }
  }

  /**
   * The stream below both interfaces: upstream chunks as they come (for the OpenAI endpoint,
   * which passes them through) plus the gateway's own view (deltas, the final usage).
   */
  async *streamRaw(em: EntityManager, metered: MeteredChat, clientGone?: AbortSignal): AsyncGenerator<StreamEvent> {
    const controller = new AbortController();
    let clientLeft = false;
    const onClientGone = (): void => {
      clientLeft = true;
      controller.abort();
    };
    if (clientGone?.aborted === true) onClientGone();
    clientGone?.addEventListener('abort', onClientGone, { once: true });
    let timedOut = false;
    let idle: NodeJS.Timeout | undefined;
    const armIdleTimer = (): void => {
      clearTimeout(idle);
      idle = setTimeout(() => {
        timedOut = true;
        controller.abort();
      }, this.config.vllm.timeoutMs);
    };
    const limit = metered.reservation.maxCompletionTokens;
    let deltas = 0;
    let lastUsage: { prompt: number; completion: number } | null = null;
    let finishReason: string | null = null;
    let failure: unknown = null;
    let cut = false;

    armIdleTimer();
    // A stream may produce for longer than a reservation lives; keep it alive while it does.
    const keepReserved = setInterval(() => {
      this.quota.extend(em.fork(), metered.reservation).catch((error: unknown) => this.log.warn({ err: error }, 'could not extend a reservation'));
    }, this.quota.extendEveryMs);
    keepReserved.unref();
    const settle = (finished: boolean): Promise<SettledUsage | null> => {
      const generated = Math.min(lastUsage?.completion ?? deltas, limit);
      // Nothing generated and not finished: the upstream produced nothing to charge.
      if (!finished && generated === 0) return metered.release(em);
      const status: Settlement['status'] = cut
        ? 'cut'
        : finished
          ? 'completed'
          : timedOut
            ? 'timeout'
            : failure !== null
              ? 'upstream_error'
              : 'aborted';
      return metered.settle(em, {
        promptTokens: lastUsage?.prompt ?? metered.reservation.promptTokens,
        completionTokens: generated,
        usageSource: lastUsage !== null ? 'reported' : 'estimated',
        status,
      });
    };

    let finished = false;
    try {
      const chunks = await this.upstream.stream(this.upstreamBody(metered), controller.signal);
      for await (const chunk of chunks) {
        armIdleTimer();
        const usage = readUsage(chunk);
        if (usage !== null) lastUsage = usage;
        const choice = chunk.choices[0];
        const delta = choice?.delta?.content ?? '';
        if (delta !== '') deltas += 1;
        if (choice?.finish_reason != null) finishReason = choice.finish_reason;
        yield { kind: 'chunk', chunk };
        if (delta !== '') yield { kind: 'delta', delta };
        // The upstream was given max_tokens within the reservation; this guards against one that ignores it.
        if ((lastUsage?.completion ?? deltas) > limit && finishReason === null) {
          cut = true;
          finishReason = 'length';
          break;
        }
      }
      // The SDK's stream ends quietly, without throwing, when its signal aborts (client gone,
      // idle timeout): that is not a finished answer.
      if (controller.signal.aborted && !cut) throw new Error('upstream stream aborted');
      finished = true;
    } catch (error) {
      if (!clientLeft) failure = error;
    } finally {
      clearTimeout(idle);
      clearInterval(keepReserved);
      clientGone?.removeEventListener('abort', onClientGone);
      // Runs also when the consumer leaves mid-stream (client gone, subscription closed): the
      // upstream is stopped and what was generated so far is charged, once.
      controller.abort();
      if (!finished) await settle(false);
    }
    if (failure !== null) throw this.upstreamFailure(failure, timedOut);
    if (clientLeft) return;

    const settled = await settle(true);
    yield {
      kind: 'end',
      finishReason,
      usage: tokenCount(lastUsage?.prompt ?? metered.reservation.promptTokens, Math.min(lastUsage?.completion ?? deltas, limit)),
      charged: settled,
    };
  }

  /** Called by MeteredChat.settle: writes the record, publishes the event. */
  async settleMetered(
    em: EntityManager,
    metered: MeteredChat,
    usage: Omit<Settlement, 'model' | 'interface' | 'apiKeyId' | 'latencyMs'>,
  ): Promise<SettledUsage> {
    const promptTokens = clampCount(usage.promptTokens);
    const completionTokens = clampCount(usage.completionTokens);
    const settled = await this.quota.settle(
      em,
      metered.reservation,
      {
        ...usage,
        promptTokens,
        completionTokens,
        model: metered.params.model,
        interface: metered.iface,
        apiKeyId: metered.viewer.apiKeyId,
        latencyMs: performance.now() - metered.startedAt,
      },
      this.usageBus.notice({
        requestId: metered.requestId,
        userId: metered.viewer.userId,
        model: metered.params.model,
        promptTokens,
        completionTokens,
      }),
    );
    // The minute's token count held the whole reservation; it keeps what was charged. The
    // charge is committed and announced (by the same statement) already: a failure here must not undo either.
    await this.rateLimiter
      .adjust(metered.viewer.userId, settled.chargedTokens - metered.reservation.amount)
      .catch((error: unknown) => this.log.warn({ err: error }, 'could not adjust the rate window'));
    return settled;
  }

  async releaseMetered(em: EntityManager, metered: MeteredChat): Promise<void> {
    await this.quota.release(em, metered.reservation);
    await this.rateLimiter.adjust(metered.viewer.userId, -metered.reservation.amount);
  }

  private upstreamBody(metered: MeteredChat): Omit<ChatCompletionCreateParamsBase, 'stream' | 'stream_options'> {
    const { extra, ...params } = metered.params;
    return { ...extra, ...params, max_tokens: metered.reservation.maxCompletionTokens } as Omit<
      ChatCompletionCreateParamsBase,
      'stream' | 'stream_options'
    >;
  }

  private validateShape(request: ChatRequest): void {
    const limits = this.config.chat;
    if (request.messages.length === 0) throw new BadUserInputError('messages must not be empty.', 'messages');
    if (request.messages.length > limits.maxMessages) {
      throw new BadUserInputError(`At most ${limits.maxMessages} messages per request.`, 'messages');
    }
    let characters = 0;
    for (const message of request.messages) characters += message.content.length;
    if (characters > limits.maxContentChars) {
      throw new BadUserInputError(`The messages hold ${characters} characters; the limit is ${limits.maxContentChars}.`, 'messages');
    }
    if (request.maxTokens !== null && (!Number.isSafeInteger(request.maxTokens) || request.maxTokens < 1 || request.maxTokens > MAX_TOKEN_COUNT)) {
      throw new BadUserInputError('maxTokens must be a whole number of at least 1.', 'maxTokens');
    }
    if (request.temperature != null && !(request.temperature >= 0 && request.temperature <= 2)) {
      throw new BadUserInputError('temperature must be from 0 to 2.', 'temperature');
    }
    if (request.topP != null && !(request.topP > 0 && request.topP <= 1)) {
      throw new BadUserInputError('topP must be above 0 and at most 1.', 'topP');
    }
    if (request.stop != null) {
      if (request.stop.length > limits.maxStopSequences) {
        throw new BadUserInputError(`At most ${limits.maxStopSequences} stop sequences.`, 'stop');
      }
      if (request.stop.some((stop) => stop === '' || stop.length > 256)) {
        throw new BadUserInputError('Each stop sequence must be 1 to 256 characters.', 'stop');
      }
    }
    if (request.seed != null && !Number.isSafeInteger(request.seed)) throw new BadUserInputError('seed must be a whole number.', 'seed');
  }

  private async resolveModel(requested: string | null): Promise<UpstreamModel> {
    let models: UpstreamModel[];
    try {
      models = await this.upstream.listModels();
    } catch (error) {
      throw this.upstreamFailure(error);
    }
    if (models.length === 0) throw new UpstreamError('The upstream serves no model.');
    if (requested === null) return models[0];
    const model = models.find((candidate) => candidate.id === requested);
    if (model === undefined) {
      throw new BadUserInputError(`Unknown model "${requested.slice(0, 200)}". Ask \`models\` for what is served.`, 'model');
    }
    return model;
  }

  /** Maps a failure of the upstream to the contract: its 4xx (the client's fault) or UPSTREAM_ERROR. */
  upstreamFailure(error: unknown, timedOut = false): Error {
    if (error instanceof BadUserInputError || error instanceof UpstreamError) return error;
    if (error instanceof UpstreamRejectedError) return new BadUserInputError(upstreamMessage(error), 'messages');
    if (timedOut || error instanceof OpenAI.APIConnectionTimeoutError) {
      this.log.warn('upstream timed out');
      return new UpstreamError(`The model did not answer within ${this.config.vllm.timeoutMs} ms.`, { timeout: true });
    }
    if (error instanceof OpenAI.APIError && error.status !== undefined) {
      if (error.status === 400) return new BadUserInputError(upstreamMessage(error), 'messages');
      if (error.status === 404) return new BadUserInputError(upstreamMessage(error), 'model');
      this.log.warn({ status: error.status }, 'upstream refused a request');
      return new UpstreamError(`The model server answered ${error.status}.`, { status: error.status });
    }
    this.log.warn({ err: error }, 'upstream failed');
    return new UpstreamError('The model server failed or could not be reached.');
  }
}

export type StreamEvent =
  | { kind: 'chunk'; chunk: ChatCompletionChunk }
  | { kind: 'delta'; delta: string }
  | { kind: 'end'; finishReason: string | null; usage: TokenCount; charged: SettledUsage | null };

function readUsage(chunk: ChatCompletionChunk): { prompt: number; completion: number } | null {
  const usage = chunk.usage;
  if (usage == null) return null;
  const prompt = usage.prompt_tokens;
  const completion = usage.completion_tokens;
  if (!Number.isSafeInteger(prompt) || !Number.isSafeInteger(completion) || prompt < 0 || completion < 0) return null;
  return { prompt, completion };
}

function clampCount(value: number): number {
  return Math.max(0, Math.min(Math.trunc(value), MAX_TOKEN_COUNT));
}
