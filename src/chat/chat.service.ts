import type { Completion } from 'openai/resources/completions';
import type { ChatCompletion, ChatCompletionChunk } from 'openai/resources/chat/completions';
import type { CreateEmbeddingResponse } from 'openai/resources/embeddings';
import { hookIterator } from '../async-iterator';
import type { Config } from '../config';
import type { Logger } from '../logger';
import type { SettledUsage, Usage } from '../quota/reservation';
import type { MeteredCall, MeteredChat, MeteredPrompt } from './chat-admission';
import type { TokenCount } from './chat.types';
import type { PromptCounter } from './prompt-counter';
import { StreamMeter, readUsage, type AnswerChunk, type StreamEnding, type UsageReport } from './stream-meter';
import { ClientGoneError, UpstreamError } from '../errors';
import type { Fleet, UpstreamMember } from '../upstreams/fleet';
import type { MeteredPath } from './upstream';
import { upstreamFailure } from './upstream-failure';
import { outcomeOf } from '../metrics/metrics';

/** Whether a chunk holds something of the answer (a token, a finish, the usage), not only the role. */
function carriesOutput(chunk: AnswerChunk): boolean {
  if ((chunk.usage?.completion_tokens ?? 0) > 0 || chunk.choices.length === 0) return true;
  return chunk.choices.some((choice) => {
    const delta = choice.delta;
    return (
      choice.finish_reason != null ||
      (choice.text ?? '') !== '' ||
      (delta?.content ?? '') !== '' ||
      (delta?.reasoning_content ?? delta?.reasoning ?? '') !== '' ||
      (delta?.tool_calls?.length ?? 0) > 0
    );
  });
}

export type StreamEvent<TChunk extends AnswerChunk = ChatCompletionChunk> =
  | { readonly kind: 'chunk'; readonly chunk: TChunk; readonly delta: string }
  | { readonly kind: 'end'; readonly finishReason: string | null; readonly usage: TokenCount; readonly charged: SettledUsage | null };

/** A whole answer as far as metering reads it: its usage, and the texts to estimate from without one. */
interface WholeAnswer {
  readonly usage?: UsageReport | null;
  readonly choices?: readonly {
    readonly text?: string;
    readonly message?: { readonly content?: string | null; readonly reasoning?: string | null; readonly tool_calls?: readonly unknown[] | null };
  }[];
}

/** The texts a whole answer generated: content, reasoning and tool-call arguments of each choice. */
function generatedTexts(answer: WholeAnswer): string[] {
  const texts: string[] = [];
  for (const choice of answer.choices ?? []) {
    if (choice.text !== undefined) texts.push(choice.text);
    const message = choice.message;
    if (message === undefined) continue;
    texts.push(message.content ?? '', message.reasoning ?? '');
    for (const call of message.tool_calls ?? []) {
      const fn = (call as { function?: { name?: unknown; arguments?: unknown } }).function;
      if (typeof fn?.arguments === 'string') texts.push(fn.arguments);
    }
  }
  return texts;
}

/**
 * Metered chat, once admitted (`ChatAdmission.reserve`): the upstream call and its
 * settlement, for a whole answer and for a stream. Both APIs (GraphQL and `/v1`) are adapters
 * over this; `complete` and `stream` end every reservation they are given, on every path,
 * exactly once.
 */
export class ChatService {
  constructor(
    private readonly config: Config,
    private readonly fleet: Fleet,
    private readonly promptCounter: PromptCounter,
    private readonly log: Logger,
  ) {}

  /** A whole chat answer at once, as the upstream sent it, settled with the usage it reports. */
  complete(metered: MeteredChat, clientGone?: AbortSignal): Promise<{ response: ChatCompletion; usage: TokenCount }> {
    return this.answer<ChatCompletion>(metered, '/chat/completions', clientGone);
  }

  /** The same for `/v1/completions` and `/v1/embeddings`. */
  completePrompts(metered: MeteredPrompt, clientGone?: AbortSignal): Promise<{ response: Completion | CreateEmbeddingResponse; usage: TokenCount }> {
    return metered.endpoint === 'completions'
      ? this.answer<Completion>(metered, '/completions', clientGone)
      : this.answer<CreateEmbeddingResponse>(metered, '/embeddings', clientGone);
  }

  /**
   * One call for a whole answer. A client that leaves (`clientGone`) aborts the upstream at
   * once; it is charged its prompt, estimated (vLLM reports nothing for an aborted request),
   * unless it left before anything was sent; then it gets ClientGoneError.
   */
  private async answer<TAnswer extends WholeAnswer>(
    metered: MeteredCall<{ readonly model: string }>,
    path: MeteredPath,
    clientGone: AbortSignal | undefined,
  ): Promise<{ response: TAnswer; usage: TokenCount }> {
    const { reservation, observation } = metered;
    let failed: unknown = null;
    try {
      if (clientGone?.aborted === true) throw new ClientGoneError();
      const response = await this.withFailover(metered, async (upstream) => {
        const controller = new AbortController();
        const leave = (): void => controller.abort();
        clientGone?.addEventListener('abort', leave, { once: true });
        const timer = setTimeout(() => controller.abort(), this.config.vllm.timeoutMs);
        try {
          const response = await observation.waitingOnUpstream(() => upstream.client.answer<TAnswer>(path, this.upstreamBody(metered), controller.signal));
          this.fleet.noteSuccess(upstream);
          return response;
        } catch (error) {
          if (clientGone?.aborted === true) {
            const promptTokens = await metered.prompt.unreported();
            await reservation.settle({ promptTokens, completionTokens: 0, cachedTokens: 0, usageSource: 'estimated', status: 'aborted' });
            throw new ClientGoneError();
          }
          throw this.failure(upstream, error, controller.signal.aborted);
        } finally {
          clearTimeout(timer);
          clientGone?.removeEventListener('abort', leave);
        }
      });
      const reported = readUsage(response.usage);
      if (reported !== null) metered.prompt.reported(reported.prompt);
      const promptTokens = reported?.prompt ?? (await metered.prompt.unreported());
      const completionTokens = reported?.completion ?? generatedTexts(response).reduce((sum, text) => sum + this.promptCounter.countText(text), 0);
      const cachedTokens = reported?.cached ?? 0;
      await reservation.settle({ promptTokens, completionTokens, cachedTokens, usageSource: reported === null ? 'estimated' : 'reported', status: 'completed' });
      return { response, usage: { promptTokens, completionTokens, totalTokens: promptTokens + completionTokens, cachedTokens } };
    } catch (error) {
      failed = error;
      throw error;
    } finally {
      metered.upstream.end();
      await reservation.release();
      observation.end(failed === null ? 'ok' : failed instanceof ClientGoneError ? 'aborted' : outcomeOf(failed));
    }
  }

  /**
   * The answer as the upstream produces it: every upstream chunk (with its content delta), then
   * an `end` event with what was charged. Always settled: at the end with the reported usage;
   * when cut short with what the stream meter saw. Closing the iterator, or `clientGone`
   * aborting, stops the upstream at once, even while it hangs; an iterator closed before it
   * started releases the reservation.
   */
  stream(metered: MeteredChat, clientGone?: AbortSignal): AsyncIterableIterator<StreamEvent> {
    return this.streamOf<ChatCompletionChunk>(metered, '/chat/completions', clientGone);
  }

  /** The same for `/v1/completions`. */
  streamCompletion(metered: MeteredPrompt, clientGone?: AbortSignal): AsyncIterableIterator<StreamEvent<Completion>> {
    return this.streamOf<Completion>(metered, '/completions', clientGone);
  }

  private streamOf<TChunk extends AnswerChunk>(
    metered: MeteredCall<{ readonly model: string }>,
    path: MeteredPath,
    clientGone: AbortSignal | undefined,
  ): AsyncIterableIterator<StreamEvent<TChunk>> {
    const upstreamCall = new AbortController();
    const leave = (): void => upstreamCall.abort();
    if (clientGone?.aborted === true) leave();
    clientGone?.addEventListener('abort', leave, { once: true });
    const events = this.events<TChunk>(metered, path, upstreamCall);
    return hookIterator(events, {
      beforeClose: leave,
      onEnd: async () => {
        clientGone?.removeEventListener('abort', leave);
        metered.upstream.end();
        await metered.reservation.release();
        // A stream closed before it began was left by its client.
        metered.observation.end(metered.observation.outcome ?? 'aborted');
      },
    });
  }

  private async *events<TChunk extends AnswerChunk>(
    metered: MeteredCall<{ readonly model: string }>,
    path: MeteredPath,
    upstreamCall: AbortController,
  ): AsyncGenerator<StreamEvent<TChunk>> {
    const { reservation, observation } = metered;
    const meter = new StreamMeter(reservation.budget);
    // One controller per try: an idle try is aborted and another server may still take the request.
    let attempt = new AbortController();
    const leave = (): void => attempt.abort();
    upstreamCall.signal.addEventListener('abort', leave, { once: true });
    let timedOut = false;
    let idle: NodeJS.Timeout | undefined;
    const armIdleTimer = (): void => {
      clearTimeout(idle);
      idle = setTimeout(() => {
        timedOut = true;
        attempt.abort();
      }, this.config.vllm.timeoutMs);
    };
    let ending: StreamEnding = 'client_gone';
    let failure: unknown = null;
    try {
      const opened = await this.withFailover(metered, async (candidate) => {
        attempt = new AbortController();
        if (upstreamCall.signal.aborted) attempt.abort();
        timedOut = false;
        armIdleTimer();
        let opened: { head: TChunk[]; rest: AsyncIterator<TChunk> };
        try {
          opened = await observation.waitingOnUpstream(async () =>
            this.openStream(await candidate.client.stream<TChunk>(path, this.upstreamBody(metered), attempt.signal), armIdleTimer),
          );
        } catch (error) {
          // The client gone is not the server's failure, and no other server should take it.
          if (upstreamCall.signal.aborted) throw error;
          throw this.failure(candidate, error, timedOut);
        }
        // The SDK's stream ends quietly, without throwing, when its signal aborts: an idle try is a failed one.
        if (timedOut && !upstreamCall.signal.aborted) throw this.failure(candidate, new Error('idle'), true);
        return opened;
      });
      for (let next = opened.head.shift(); next !== undefined; next = opened.head.shift()) {
        if (carriesOutput(next)) observation.firstToken();
        const delta = meter.observe(next);
        reservation.deliver(meter.generated);
        yield { kind: 'chunk', chunk: next, delta };
        if (meter.cut) break;
      }
      while (!meter.cut) {
        const next = await observation.waitingOnUpstream(() => opened.rest.next());
        if (next.done === true) break;
        armIdleTimer();
        observation.firstToken();
        const delta = meter.observe(next.value);
        reservation.deliver(meter.generated);
        yield { kind: 'chunk', chunk: next.value, delta };
      }
      // Ended quietly by an abort (client gone, idle timeout): that is not a finished answer.
      if (attempt.signal.aborted && !meter.cut) throw new Error('upstream stream aborted');
      ending = 'finished';
      this.fleet.noteSuccess(metered.upstream.member);
    } catch (error) {
      if (timedOut) ending = 'timeout';
      else if (!upstreamCall.signal.aborted) {
        ending = 'upstream_error';
        failure = error;
      }
    } finally {
      clearTimeout(idle);
      upstreamCall.signal.removeEventListener('abort', leave);
      observation.outcome = ending === 'finished' ? 'ok' : ending === 'client_gone' ? 'aborted' : 'upstream_error';
      // Runs also when the consumer leaves mid-stream: the upstream is stopped and what was
      // generated so far is charged, once.
      attempt.abort();
      if (ending !== 'finished') {
        const usage = await this.streamUsage(metered, meter, ending);
        await (usage === null ? reservation.release() : reservation.settle(usage));
      }
    }
    if (ending === 'timeout' || ending === 'upstream_error') throw this.failure(metered.upstream.member, failure, ending === 'timeout');
    if (ending === 'client_gone') return;
    const usage = await this.streamUsage(metered, meter, 'finished');
    const charged = usage === null ? null : await reservation.settle(usage);
    yield { kind: 'end', finishReason: meter.finishReason, usage: meter.tokens, charged };
  }

  /**
   * What to charge for a stream that ended this way (null: nothing, release it), its prompt as
   * vLLM reported it, or else as admission reserved it (counted exactly now if that was a bound).
   */
  private async streamUsage(metered: MeteredCall<{ readonly model: string }>, meter: StreamMeter, ending: StreamEnding): Promise<Usage | null> {
    if (meter.usage(ending) === null) return null;
    const reported = meter.reportedPrompt;
    if (reported === null) meter.promptCounted(await metered.prompt.unreported());
    else metered.prompt.reported(reported);
    return meter.usage(ending);
  }

  /**
   * Reads a new stream up to its first chunk that carries output, holding the chunks before it
   * back: until then nothing of this server's answer reached the client, so when it fails
   * another server may still answer in its place.
   */
  private async openStream<TChunk extends AnswerChunk>(
    chunks: AsyncIterable<TChunk>,
    armIdleTimer: () => void,
  ): Promise<{ head: TChunk[]; rest: AsyncIterator<TChunk> }> {
    const rest = chunks[Symbol.asyncIterator]();
    const head: TChunk[] = [];
    for (;;) {
      const next = await rest.next();
      if (next.done === true) return { head, rest };
      armIdleTimer();
      head.push(next.value);
      if (carriesOutput(next.value)) return { head, rest };
    }
  }

  /**
   * The client's body with what the gateway owns: the completion budget, shared out among the
   * choices (n of each prompt); a request that generates nothing (an embedding) has none.
   */
  private upstreamBody(metered: MeteredCall<{ readonly model: string }>): Record<string, unknown> {
    const { max_completion_tokens: _client, max_tokens: _alsoClient, ...body } = metered.params as Record<string, unknown>;
    if (metered.choices === 0) return body;
    return { ...body, max_tokens: Math.floor(metered.reservation.budget.maxCompletionTokens / metered.choices) };
  }

  /**
   * Runs `call` on the request's upstream and, when it fails with UPSTREAM_ERROR before anything
   * was received, on another healthy one serving the model, up to UPSTREAM_MAX_ATTEMPTS tries.
   * The reservation stays as it is; its record names the server that answered.
   */
  private async withFailover<T>(metered: MeteredCall<{ readonly model: string }>, call: (upstream: UpstreamMember) => Promise<T>): Promise<T> {
    const tried = new Set<UpstreamMember>();
    for (;;) {
      const upstream = metered.upstream.member;
      tried.add(upstream);
      try {
        const result = await call(upstream);
        metered.reservation.servedBy(upstream.name);
        return result;
      } catch (error) {
        const next = error instanceof UpstreamError && tried.size < this.config.fleet.maxAttempts ? this.fleet.pick(metered.params.model, tried, metered.sessionKey) : null;
        if (next === null) throw error;
        this.log.warn({ from: upstream.name, to: next.name, requestId: metered.reservation.requestId }, 'retrying on another upstream');
        metered.upstream.moveTo(next);
      }
    }
  }

  /** The failure in the contract's terms; one that is the server's, not the request's, is noted against it. */
  private failure(upstream: UpstreamMember, error: unknown, timedOut: boolean): Error {
    const mapped = upstreamFailure(error, { timedOut, timeoutMs: this.config.vllm.timeoutMs, log: this.log });
    this.fleet.noteFailure(upstream, mapped);
    return mapped;
  }
}
