import { randomUUID } from 'node:crypto';
import type { Viewer } from '../auth/viewer';
import type { Config } from '../config';
import { BadUserInputError, QuotaExceededError, UpstreamError } from '../errors';
import type { Logger } from '../logger';
import { ChatObservation, outcomeOf, type GatewayMetrics } from '../metrics/metrics';
import type { QuotaService } from '../quota/quota.service';
import type { RateLimiter } from '../quota/rate-limiter';
import { MAX_TOKEN_COUNT, type ChatInterface, type PromptCountSource, type Reservation } from '../quota/reservation';
import { upstreamParams, validateChatRequest, type ChatRequest, type UpstreamChatParams } from './chat-request';
import type { Model } from './chat.types';
import { boundInputsOf, type BoundInputs, type PromptBounds } from './prompt-bound';
import type { PromptCount, PromptCounter } from './prompt-counter';
import { upstreamPromptParams, validatePromptRequest, type PromptRequest, type UpstreamPromptParams } from './prompt-request';
import { UpstreamLease, type Fleet, type UpstreamMember } from '../upstreams/fleet';
import type { Upstream, UpstreamModel } from './upstream';
import { upstreamFailure } from './upstream-failure';

/** One admitted request with its reservation: what `ChatService` runs, and ends. */
export interface MeteredCall<TParams extends { readonly model: string }> {
  readonly viewer: Viewer;
  /** The body for vLLM, but for what the call adds (the completion budget, stream options). */
  readonly params: TParams;
  readonly reservation: Reservation;
  /** The server that counted the prompt and will answer (another one after a failover). */
  readonly upstream: UpstreamLease;
  /** The request's clock, for the metrics; ended by the chat service. */
  readonly observation: ChatObservation;
  /** The session's routing key (per user, so that two users' session ids never meet), or null. */
  readonly sessionKey: string | null;
  /** Sequences vLLM generates (n, for each prompt); the completion budget is shared out among them. */
  readonly choices: number;
  readonly prompt: AdmittedPrompt;
}

/** The prompt as admission reserved it, for the settlement: counted, or only bounded. */
export interface AdmittedPrompt {
  /**
   * What to charge for the prompt when vLLM reports none: the count it was reserved with, or
   * when that was a bound, an exact count made now (the bound itself if that fails, so that the
   * user is over- rather than undercharged).
   */
  unreported(): Promise<number>;
  /** vLLM's prompt_tokens for the request, which checks the bound it was reserved with. */
  reported(promptTokens: number): void;
}

/** A prompt reserved with its count: that is what it is charged when vLLM reports none. */
function countedPrompt(tokens: number): AdmittedPrompt {
  return { unreported: () => Promise.resolve(tokens), reported: () => undefined };
}

/** The prompt of a reservation: its count, or its bound (`source` 'bound'). */
interface ReservedPrompt {
  readonly tokens: number;
  readonly longest: number;
  readonly source: PromptCountSource;
}

/** One chat request with its reservation: what `ChatService.complete` and `stream` run. */
export type MeteredChat = MeteredCall<UpstreamChatParams>;

/** A `/v1/completions` or `/v1/embeddings` request with its reservation. */
export type MeteredPrompt = MeteredCall<UpstreamPromptParams> & { readonly endpoint: PromptRequest['endpoint'] };

/** What a request may generate: `maxTokens` per choice (null: what remains), and how many choices. */
interface CompletionBudget {
  readonly maxTokens: number | null;
  readonly choices: number;
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
    private readonly promptBounds: PromptBounds,
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
  reserve(viewer: Viewer, request: ChatRequest, iface: ChatInterface, receivedAt = performance.now()): Promise<MeteredChat> {
    return this.observed(iface, receivedAt, request.model, (observation) => this.admit(viewer, request, iface, observation));
  }

  /** The same for `/v1/completions` (n choices of each prompt) and `/v1/embeddings` (prompt tokens only). */
  reservePrompts(viewer: Viewer, request: PromptRequest, iface: ChatInterface, receivedAt = performance.now()): Promise<MeteredPrompt> {
    return this.observed(iface, receivedAt, request.model, (observation) => this.admitPrompts(viewer, request, iface, observation));
  }

  /** Admission under the request's observation, which a refusal ends. */
  private async observed<T>(iface: ChatInterface, receivedAt: number, model: string | null, admit: (observation: ChatObservation) => Promise<T>): Promise<T> {
    const observation = new ChatObservation(this.metrics, iface, receivedAt);
    observation.model = model;
    try {
      return await admit(observation);
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
    this.checkMaxTokens(request.maxTokens, model);
    const params = upstreamParams(model.id, request);
    const sessionKey = this.sessionKeyOf(viewer, request.sessionId);
    const budget = { maxTokens: request.maxTokens, choices: request.choices ?? 1 };
    // Without maxTokens the completion is capped to context - prompt: the exact count decides it.
    const inputs = this.config.vllm.promptCount === 'bound' && request.maxTokens !== null ? boundInputsOf(params) : null;
    if (inputs !== null) {
      const bounded = await this.admitByBound(viewer, iface, model, params, inputs, sessionKey, observation, budget);
      if (bounded !== null) return bounded;
    }
    const { upstream, prompt } = await observation.waitingOnUpstream(() =>
      this.countPrompt(model.id, sessionKey, (client) => this.promptCounter.countChat(client, params)),
    );
    if (inputs !== null && prompt.source === 'tokenize') {
      this.promptBounds.observe(model.id, inputs, prompt.tokens);
      this.promptBounds.calibrate(model.id, upstream.member.client);
    }
    try {
      const reservation = await this.reserveFor(viewer, iface, model, prompt, upstream.member, budget, 'messages');
      return { viewer, params, upstream, sessionKey, observation, choices: budget.choices, reservation, prompt: countedPrompt(reservation.budget.promptTokens) };
    } catch (error) {
      upstream.end();
      throw error;
    }
  }

  /**
   * Admission without counting the prompt: its bound is reserved when the model is calibrated,
   * the bound and maxTokens fit the context, and the quota has room for them. Null when the
   * prompt must be counted: then a request that fits by its exact count is still admitted.
   * A quota's refusal of the bound writes nothing (the ledger reserves at every level or none).
   */
  private async admitByBound(
    viewer: Viewer,
    iface: ChatInterface,
    model: UpstreamModel,
    params: UpstreamChatParams,
    inputs: BoundInputs,
    sessionKey: string | null,
    observation: ChatObservation,
    budget: CompletionBudget,
  ): Promise<MeteredChat | null> {
    const bound = this.promptBounds.bound(model.id, inputs);
    // The bound fits the context, so the exact count does too; beyond it, the exact count must decide.
    if (bound === null || budget.maxTokens === null || bound + budget.maxTokens > model.maxModelLen) return null;
    const upstream = new UpstreamLease(this.firstUpstream(model.id, sessionKey));
    try {
      const reservation = await this.reserveFor(viewer, iface, model, { tokens: bound, longest: bound, source: 'bound' }, upstream.member, budget, 'messages');
      return { viewer, params, upstream, sessionKey, observation, choices: budget.choices, reservation, prompt: this.boundedPrompt(model.id, params, inputs, upstream, bound) };
    } catch (error) {
      upstream.end();
      // The token window's refusal is not retried: it refuses by what the minute spent before, whatever this request holds.
      if (error instanceof QuotaExceededError) return null;
      throw error;
    }
  }

  /** A prompt reserved by its bound: counted exactly only when vLLM reports none; what vLLM reports checks the bound. */
  private boundedPrompt(model: string, params: UpstreamChatParams, inputs: BoundInputs, upstream: UpstreamLease, bound: number): AdmittedPrompt {
    return {
      unreported: async () => {
        try {
          const exact = await this.promptCounter.countChat(upstream.member.client, params);
          if (exact.source !== 'tokenize') return bound;
          this.promptBounds.observe(model, inputs, exact.tokens);
          return exact.tokens;
        } catch (error) {
          this.log.warn({ err: error, model }, 'could not count a prompt vLLM reported nothing for: charging its bound');
          return bound;
        }
      },
      reported: (promptTokens) => this.promptBounds.observe(model, inputs, promptTokens),
    };
  }

  private async admitPrompts(viewer: Viewer, request: PromptRequest, iface: ChatInterface, observation: ChatObservation): Promise<MeteredPrompt> {
    validatePromptRequest(request, this.config.chat);
    await this.rateLimiter.admit(viewer.userId);
    const model = await this.resolveModel(request.model);
    observation.model = model.id;
    const generates = request.endpoint === 'completions';
    if (generates) this.checkMaxTokens(request.maxTokens, model);
    const params = upstreamPromptParams(model.id, request);
    const sessionKey = this.sessionKeyOf(viewer, request.sessionId);
    const budget = { maxTokens: request.maxTokens, choices: generates ? request.choices * request.prompts.length : 0 };
    const { upstream, prompt } = await observation.waitingOnUpstream(() =>
      this.countPrompt(model.id, sessionKey, (client) => this.promptCounter.countPrompts(client, model.id, request.prompts, request.addSpecialTokens)),
    );
    try {
      const reservation = await this.reserveFor(viewer, iface, model, prompt, upstream.member, budget, generates ? 'prompt' : 'input');
      return {
        endpoint: request.endpoint,
        viewer,
        params,
        upstream,
        sessionKey,
        observation,
        choices: budget.choices,
        reservation,
        prompt: countedPrompt(reservation.budget.promptTokens),
      };
    } catch (error) {
      upstream.end();
      throw error;
    }
  }

  /** Refused before the prompt is counted: no prompt makes it fit. */
  private checkMaxTokens(maxTokens: number | null, model: UpstreamModel): void {
    if (maxTokens !== null && maxTokens > model.maxModelLen) {
      throw BadUserInputError.about('maxTokens', `must be at most ${model.maxModelLen} for ${model.id}.`);
    }
  }

  private sessionKeyOf(viewer: Viewer, sessionId: string | null | undefined): string | null {
    return sessionId == null ? null : `${viewer.userId}:${sessionId}`;
  }

  /**
   * Reserves the prompt and `maxTokens` for each choice (when the client gives none, what
   * remains, shared out among the choices). A request with no choices (an embedding)
   * reserves its prompt alone.
   */
  private async reserveFor(
    viewer: Viewer,
    iface: ChatInterface,
    model: UpstreamModel,
    prompt: ReservedPrompt,
    upstream: UpstreamMember,
    budget: CompletionBudget,
    promptField: 'messages' | 'prompt' | 'input',
  ): Promise<Reservation> {
    const generates = budget.choices > 0;
    const completionLimit = model.maxModelLen - prompt.longest;
    if (generates ? completionLimit < 1 : completionLimit < 0) {
      throw new BadUserInputError(
        `The ${promptField} take${promptField === 'messages' ? '' : 's'} ${prompt.longest} tokens; ${model.id} holds at most ${model.maxModelLen} tokens${generates ? ', answer included' : ''}.`,
        promptField,
      );
    }
    if (budget.maxTokens !== null && generates && budget.maxTokens > completionLimit) {
      throw BadUserInputError.about(
        'maxTokens',
        `${budget.maxTokens} plus the ${prompt.longest} prompt tokens exceeds the context length of ${model.id} (${model.maxModelLen}).`,
      );
    }
    return this.quota.reserve({
      requestId: randomUUID(),
      userId: viewer.userId,
      apiKeyId: viewer.apiKeyId,
      // A prompt of no tokens at all (whitespace without special tokens) still holds one: a reservation is never empty.
      promptTokens: Math.max(prompt.tokens, 1),
      promptCountSource: prompt.source,
      maxTokens: !generates ? 0 : budget.maxTokens === null ? null : budget.maxTokens * budget.choices,
      modelCompletionLimit: Math.min(Math.max(completionLimit, 0) * budget.choices, MAX_TOKEN_COUNT),
      minCompletionTokens: budget.choices,
      target: { model: model.id, interface: iface, apiKeyId: viewer.apiKeyId, upstream: upstream.name },
    });
  }

  /**
   * The prompt counted by a server that serves the model, which then answers it too. A server
   * that fails here leaves the rotation, and the next one is asked (up to UPSTREAM_MAX_ATTEMPTS).
   */
  private async countPrompt(
    model: string,
    sessionKey: string | null,
    count: (client: Upstream) => Promise<PromptCount>,
  ): Promise<{ upstream: UpstreamLease; prompt: PromptCount }> {
    const tried = new Set<UpstreamMember>();
    const lease = new UpstreamLease(this.firstUpstream(model, sessionKey));
    for (;;) {
      const upstream = lease.member;
      tried.add(upstream);
      try {
        return { upstream: lease, prompt: await count(upstream.client) };
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

  private firstUpstream(model: string, sessionKey: string | null): UpstreamMember {
    const first = this.fleet.pick(model, new Set(), sessionKey);
    if (first === null) throw new UpstreamError(`No upstream serving ${model} is reachable right now.`, { unavailable: true });
    return first;
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
