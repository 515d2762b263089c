import type { ChatCompletion, ChatCompletionChunk, ChatCompletionCreateParamsBase } from 'openai/resources/chat/completions';
import { hookIterator } from '../async-iterator';
import type { Config } from '../config';
import type { Logger } from '../logger';
import type { SettledUsage } from '../quota/reservation';
import type { MeteredChat } from './chat-admission';
import type { TokenCount } from './chat.types';
import type { PromptCounter } from './prompt-counter';
import { StreamMeter, type StreamEnding } from './stream-meter';
import { UpstreamError } from '../errors';
import type { Fleet, UpstreamMember } from '../upstreams/fleet';
import { upstreamFailure } from './upstream-failure';

export type StreamEvent =
  | { readonly kind: 'chunk'; readonly chunk: ChatCompletionChunk; readonly delta: string }
  | { readonly kind: 'end'; readonly finishReason: string | null; readonly usage: TokenCount; readonly charged: SettledUsage | null };

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
    /** How often a running stream keeps its reservation alive. */
    private readonly extendEveryMs: number,
    private readonly log: Logger,
  ) {}

  /** A whole answer at once, as the upstream sent it, settled with the usage it reports. */
  async complete(metered: MeteredChat): Promise<{ response: ChatCompletion; usage: TokenCount }> {
    const { reservation } = metered;
    try {
      const response = await this.withFailover(metered, async (upstream) => {
        const controller = new AbortController();
        const timer = setTimeout(() => controller.abort(), this.config.vllm.timeoutMs);
        try {
          const response = await upstream.client.complete(this.upstreamBody(metered), controller.signal);
          this.fleet.noteSuccess(upstream);
          return response;
        } catch (error) {
          throw this.failure(upstream, error, controller.signal.aborted);
        } finally {
          clearTimeout(timer);
        }
      });
      const reported = response.usage;
      const promptTokens = reported?.prompt_tokens ?? reservation.budget.promptTokens;
      const completionTokens = reported?.completion_tokens ?? this.promptCounter.countText(response.choices[0]?.message?.content ?? '');
      await reservation.settle({ promptTokens, completionTokens, usageSource: reported == null ? 'estimated' : 'reported', status: 'completed' });
      return { response, usage: { promptTokens, completionTokens, totalTokens: promptTokens + completionTokens } };
    } finally {
      metered.upstream.end();
      await reservation.release();
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
    const upstreamCall = new AbortController();
    const leave = (): void => upstreamCall.abort();
    if (clientGone?.aborted === true) leave();
    clientGone?.addEventListener('abort', leave, { once: true });
    const events = this.events(metered, upstreamCall);
    return hookIterator(events, {
      beforeClose: leave,
      onEnd: async () => {
        clientGone?.removeEventListener('abort', leave);
        metered.upstream.end();
        await metered.reservation.release();
      },
    });
  }

  private async *events(metered: MeteredChat, upstreamCall: AbortController): AsyncGenerator<StreamEvent> {
    const { reservation } = metered;
    const meter = new StreamMeter(reservation.budget);
    let timedOut = false;
    let idle: NodeJS.Timeout | undefined;
    const armIdleTimer = (): void => {
      clearTimeout(idle);
      idle = setTimeout(() => {
        timedOut = true;
        upstreamCall.abort();
      }, this.config.vllm.timeoutMs);
    };
    // A stream may produce for longer than a reservation lives; keep it alive while it does.
    const keepReserved = setInterval(() => {
      reservation.extend().catch((error: unknown) => this.log.warn({ err: error }, 'could not extend a reservation'));
    }, this.extendEveryMs);
    keepReserved.unref();

    let ending: StreamEnding = 'client_gone';
    let failure: unknown = null;
    armIdleTimer();
    try {
      const chunks = await this.withFailover(metered, async (candidate) => {
        try {
          return await candidate.client.stream(this.upstreamBody(metered), upstreamCall.signal);
        } catch (error) {
          // An abort (client gone, idle timeout) is not the server's failure, and no other server should take it.
          if (upstreamCall.signal.aborted) throw error;
          throw this.failure(candidate, error, false);
        }
      });
      for await (const chunk of chunks) {
        armIdleTimer();
        const delta = meter.observe(chunk);
        yield { kind: 'chunk', chunk, delta };
        if (meter.cut) break;
      }
      // The SDK's stream ends quietly, without throwing, when its signal aborts (client gone,
      // idle timeout): that is not a finished answer.
      if (upstreamCall.signal.aborted && !meter.cut) throw new Error('upstream stream aborted');
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
      clearInterval(keepReserved);
      // Runs also when the consumer leaves mid-stream: the upstream is stopped and what was
      // generated so far is charged, once.
      upstreamCall.abort();
      if (ending !== 'finished') {
        const usage = meter.usage(ending);
        await (usage === null ? reservation.release() : reservation.settle(usage));
      }
    }
    if (ending === 'timeout' || ending === 'upstream_error') throw this.failure(metered.upstream.member, failure, ending === 'timeout');
    if (ending === 'client_gone') return;
    const usage = meter.usage('finished');
    const charged = usage === null ? null : await reservation.settle(usage);
    yield { kind: 'end', finishReason: meter.finishReason, usage: meter.tokens, charged };
  }

  private upstreamBody(metered: MeteredChat): Omit<ChatCompletionCreateParamsBase, 'stream' | 'stream_options'> {
    const { extra, ...params } = metered.params;
    return { ...extra, ...params, max_tokens: metered.reservation.budget.maxCompletionTokens } as Omit<
      ChatCompletionCreateParamsBase,
      'stream' | 'stream_options'
    >;
  }

  /**
   * Runs `call` on the request's upstream and, when it fails with UPSTREAM_ERROR before anything
   * was received, on another healthy one serving the model, up to UPSTREAM_MAX_ATTEMPTS tries.
   * The reservation stays as it is; its record names the server that answered.
   */
  private async withFailover<T>(metered: MeteredChat, call: (upstream: UpstreamMember) => Promise<T>): Promise<T> {
    const tried = new Set<UpstreamMember>();
    for (;;) {
      const upstream = metered.upstream.member;
      tried.add(upstream);
      try {
        const result = await call(upstream);
        metered.reservation.servedBy(upstream.name);
        return result;
      } catch (error) {
        const next = error instanceof UpstreamError && tried.size < this.config.fleet.maxAttempts ? this.fleet.pick(metered.params.model, tried) : null;
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
