import { randomUUID } from 'node:crypto';
import type { Viewer } from '../auth/viewer';
import type { Config } from '../config';
import { BadUserInputError, UpstreamError } from '../errors';
import type { Logger } from '../logger';
import { ChatObservation, outcomeOf, type GatewayMetrics } from '../metrics/metrics';
import type { QuotaService } from '../quota/quota.service';
import type { RateLimiter } from '../quota/rate-limiter';
import type { ChatInterface, Reservation } from '../quota/reservation';
import { upstreamParams, validateChatRequest, type ChatRequest, type UpstreamChatParams } from './chat-request';
import type { Model } from './chat.types';
import type { PromptCount, PromptCounter } from './prompt-counter';
import { UpstreamLease, type Fleet, type UpstreamMember } from '../upstreams/fleet';
import type { ChatMessage, UpstreamModel } from './upstream';
import { upstreamFailure } from './upstream-failure';

/** One chat request with its reservation: what `ChatService.complete` and `stream` run. */
export interface MeteredChat {
  readonly viewer: Viewer;
  readonly params: UpstreamChatParams;
  readonly reservation: Reservation;
  /** The server that counted the prompt and will answer (another one after a failover). */
  readonly upstream: UpstreamLease;
  /** The request's clock, for the metrics; ended by the chat service. */
  readonly observation: ChatObservation;
  /** The session's routing key (per user, so that two users' session ids never meet), or null. */
  readonly sessionKey: string | null;
}

/**
 * The way in to metered chat, before anything reaches the upstream's chat endpoint: the
 * request is validated, rate-limited, its model resolved, its prompt counted and its budget
 * reserved. Both APIs admit through here (GraphQL's `@quota`, `/v1`).
 */
export class ChatAdmission {
  constructor(
    private readonly config: Config,
    private readonly fleet: Fleet,
    private readonly promptCounter: PromptCounter,
    private readonly quota: QuotaService,
    private readonly rateLimiter: RateLimiter,
    private readonly metrics: GatewayMetrics,
    private readonly log: Logger,
  ) {}

  async models(): Promise<Model[]> {
    const models = await this.upstreamModels();
    return models.map(({ id, maxModelLen, ownedBy }) => ({ id, maxModelLen, ownedBy }));
  }

  /**
   * Throws BAD_USER_INPUT, RATE_LIMITED or QUOTA_EXCEEDED when the request may not start.
   * `receivedAt` (performance.now()) is when the request arrived, for its duration and overhead.
   */
  async reserve(viewer: Viewer, request: ChatRequest, iface: ChatInterface, receivedAt = performance.now()): Promise<MeteredChat> {
    const observation = new ChatObservation(this.metrics, iface, receivedAt);
    observation.model = request.model;
    try {
      return await this.admit(viewer, request, iface, observation);
    } catch (error) {
      observation.end(outcomeOf(error));
      throw error;
    }
  }

  private async admit(viewer: Viewer, request: ChatRequest, iface: ChatInterface, observation: ChatObservation): Promise<MeteredChat> {
    validateChatRequest(request, this.config.chat);
    // Before the prompt is counted: a user over the limit must not keep the tokenizer busy either.
    await this.rateLimiter.admit(viewer.userId);
    const model = await this.resolveModel(request.model);
    observation.model = model.id;
    if (request.maxTokens !== null && request.maxTokens > model.maxModelLen) {
      throw BadUserInputError.about('maxTokens', `must be at most ${model.maxModelLen} for ${model.id}.`);
    }
    const params = upstreamParams(model.id, request);
    const sessionKey = request.sessionId == null ? null : `${viewer.userId}:${request.sessionId}`;
    const { upstream, prompt } = await observation.waitingOnUpstream(() => this.countPrompt(model.id, params.messages, sessionKey));
    try {
      return { viewer, params, upstream, sessionKey, observation, reservation: await this.reserveFor(viewer, request, iface, model, prompt, upstream.member) };
    } catch (error) {
      upstream.end();
      throw error;
    }
  }

  private async reserveFor(viewer: Viewer, request: ChatRequest, iface: ChatInterface, model: UpstreamModel, prompt: PromptCount, upstream: UpstreamMember): Promise<Reservation> {
    const completionLimit = model.maxModelLen - prompt.tokens;
    if (completionLimit < 1) {
      throw new BadUserInputError(
        `The messages take ${prompt.tokens} tokens; ${model.id} holds at most ${model.maxModelLen} tokens, answer included.`,
        'messages',
      );
    }
    if (request.maxTokens !== null && request.maxTokens > completionLimit) {
      throw BadUserInputError.about(
        'maxTokens',
        `${request.maxTokens} plus the ${prompt.tokens} prompt tokens exceeds the context length of ${model.id} (${model.maxModelLen}).`,
      );
    }
    return this.quota.reserve({
      requestId: randomUUID(),
      userId: viewer.userId,
      apiKeyId: viewer.apiKeyId,
      promptTokens: prompt.tokens,
      promptCountSource: prompt.source,
      maxTokens: request.maxTokens,
      modelCompletionLimit: completionLimit,
      target: { model: model.id, interface: iface, apiKeyId: viewer.apiKeyId, upstream: upstream.name },
    });
  }

  /**
   * The prompt counted by a server that serves the model, which then answers it too. A server
   * that fails here leaves the rotation, and the next one is asked (up to UPSTREAM_MAX_ATTEMPTS).
   */
  private async countPrompt(model: string, messages: readonly ChatMessage[], sessionKey: string | null): Promise<{ upstream: UpstreamLease; prompt: PromptCount }> {
    const tried = new Set<UpstreamMember>();
    const first = this.fleet.pick(model, tried, sessionKey);
    if (first === null) throw new UpstreamError(`No upstream serving ${model} is reachable right now.`, { unavailable: true });
    const lease = new UpstreamLease(first);
    for (;;) {
      const upstream = lease.member;
      tried.add(upstream);
      try {
        return { upstream: lease, prompt: await this.promptCounter.count(upstream.client, model, messages) };
      } catch (error) {
        const failure = upstreamFailure(error, { timedOut: false, timeoutMs: this.config.vllm.timeoutMs, log: this.log });
        this.fleet.noteFailure(upstream, failure);
        const next = failure instanceof UpstreamError && tried.size < this.config.fleet.maxAttempts ? this.fleet.pick(model, tried, sessionKey) : null;
        if (next === null) {
          lease.end();
          throw failure;
        }
        lease.moveTo(next);
      }
    }
  }

  private async upstreamModels(): Promise<UpstreamModel[]> {
    try {
      return await this.fleet.models();
    } catch (error) {
      throw upstreamFailure(error, { timedOut: false, timeoutMs: this.config.vllm.timeoutMs, log: this.log });
    }
  }

  private async resolveModel(requested: string | null): Promise<UpstreamModel> {
    const models = await this.upstreamModels();
    if (models.length === 0) throw new UpstreamError('The upstream serves no model.');
    if (requested === null) return models[0];
    const model = models.find((candidate) => candidate.id === requested);
    if (model === undefined) {
      throw new BadUserInputError(`Unknown model "${requested.slice(0, 200)}". Ask \`models\` for what is served.`, 'model');
    }
    return model;
  }
}
