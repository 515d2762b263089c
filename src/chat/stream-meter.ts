import type { ReservedBudget, Usage } from '../quota/reservation';
import type { TokenCount } from './chat.types';

/** How a stream ended, as far as charging goes. */
export type StreamEnding = 'finished' | 'timeout' | 'upstream_error' | 'client_gone';

/** vLLM's `usage`, on a chunk or a whole answer. */
export interface UsageReport {
  readonly prompt_tokens: number;
  /** Absent from an embedding's usage in OpenAI's shape (vLLM sends 0). */
  readonly completion_tokens?: number;
  readonly prompt_tokens_details?: { readonly cached_tokens?: number | null } | null;
}

/** What metering reads of a choice's stream delta: chat's `delta` or completions' `text`. */
interface ChoiceDelta {
  readonly content?: string | null;
  readonly reasoning?: string | null;
  /** The name older vLLM releases stream reasoning under. */
  readonly reasoning_content?: string | null;
  readonly tool_calls?: readonly { readonly function?: { readonly name?: string | null; readonly arguments?: string | null } | null }[] | null;
}

/** A chunk of vLLM's chat or completions stream, as far as metering reads it. */
export interface AnswerChunk {
  readonly choices: readonly { readonly index: number; readonly finish_reason?: string | null; readonly text?: string; readonly delta?: ChoiceDelta }[];
  readonly usage?: UsageReport | null;
}

/** A count the upstream sent, if it is one a record can hold. */
function count(value: unknown): number | null {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : null;
}

/** The usage of a whole answer or a chunk, or null when there is none or it is malformed. */
export function readUsage(usage: UsageReport | null | undefined): { prompt: number; completion: number; cached: number | null } | null {
  if (usage == null) return null;
  const prompt = count(usage.prompt_tokens);
  const completion = usage.completion_tokens === undefined ? 0 : count(usage.completion_tokens);
  if (prompt === null || completion === null) return null;
  return { prompt, completion, cached: count(usage.prompt_tokens_details?.cached_tokens) };
}

/** Whether a choice's delta carries generated text: content, reasoning, or a tool call's name or arguments. */
function generatesText(choice: AnswerChunk['choices'][number]): boolean {
  if ((choice.text ?? '') !== '') return true;
  const delta = choice.delta;
  if (delta === undefined) return false;
  if ((delta.content ?? '') !== '' || (delta.reasoning ?? delta.reasoning_content ?? '') !== '') return true;
  return (delta.tool_calls ?? []).some((call) => (call.function?.arguments ?? '') !== '' || (call.function?.name ?? '') !== '');
}

interface ChoiceCount {
  /** Chunks that carried generated text: the estimate when vLLM reports nothing. */
  deltas: number;
  /** vLLM's continuous usage for this choice: its own tokens so far. */
  reported: number | null;
  finished: boolean;
}

/**
 * Counts what a stream produced, chunk by chunk, and decides what its usage record says: the
 * final usage vLLM sent, or else its continuous usage of each choice (it puts each choice's
 * own count on that choice's chunks), or else one token per chunk of generated text of every
 * choice (content, reasoning, tool-call arguments), marked estimated; never more than the
 * reservation allows.
 */
export class StreamMeter {
  private readonly choices = new Map<number, ChoiceCount>();
  private final: { prompt: number; completion: number; cached: number | null } | null = null;
  /** vLLM's prompt count, from the first chunk that carried usage. */
  private prompt: number | null = null;
  /** What the prompt is charged when vLLM reports none: the reserved count, or a count made since. */
  private unreportedPrompt: number;
  private cached: number | null = null;
  /** The finish reason of choice 0. */
  finishReason: string | null = null;
  /** The upstream produced past max_tokens and the gateway stopped it. */
  cut = false;

  constructor(private readonly budget: ReservedBudget) {
    this.unreportedPrompt = budget.promptTokens;
  }

  /** vLLM's prompt count, or null when no chunk carried usage. */
  get reportedPrompt(): number | null {
    return this.prompt;
  }

  /** The prompt's exact count, for a stream vLLM reported none for whose reservation held only a bound of it. */
  promptCounted(tokens: number): void {
    this.unreportedPrompt = tokens;
  }

  /** Takes one upstream chunk into account; returns choice 0's content delta ('' for none). */
  observe(chunk: AnswerChunk): string {
    const usage = readUsage(chunk.usage);
    if (usage !== null) {
      this.prompt = usage.prompt;
      this.cached = usage.cached ?? this.cached;
      if (chunk.choices.length === 0) this.final = usage;
    }
    let delta = '';
    for (const choice of chunk.choices) {
      const counted = this.choices.get(choice.index) ?? { deltas: 0, reported: null, finished: false };
      this.choices.set(choice.index, counted);
      if (generatesText(choice)) counted.deltas += 1;
      // Usage riding on a choice's chunk is that choice's own count (vLLM's continuous usage).
      if (usage !== null && chunk.choices.length === 1) counted.reported = usage.completion;
      if (choice.finish_reason != null) {
        counted.finished = true;
        if (choice.index === 0) this.finishReason = choice.finish_reason;
      }
      if (choice.index === 0) delta += choice.delta?.content ?? choice.text ?? '';
    }
    // The upstream was given max_tokens within the reservation; this guards against one that ignores it.
    const unfinished = [...this.choices.values()].some((choice) => !choice.finished);
    if (this.counted > this.budget.maxCompletionTokens && (unfinished || this.choices.size === 0)) {
      this.cut = true;
      if (this.finishReason === null) this.finishReason = 'length';
    }
    return delta;
  }

  private get counted(): number {
    if (this.final !== null) return this.final.completion;
    let total = 0;
    for (const choice of this.choices.values()) total += choice.reported ?? choice.deltas;
    return total;
  }

  private get reported(): boolean {
    return this.final !== null || (this.choices.size > 0 && [...this.choices.values()].every((choice) => choice.reported !== null));
  }

  get generated(): number {
    return Math.min(this.counted, this.budget.maxCompletionTokens);
  }

  get tokens(): TokenCount {
    const prompt = this.prompt ?? this.unreportedPrompt;
    return { promptTokens: prompt, completionTokens: this.generated, totalTokens: prompt + this.generated, cachedTokens: this.cached ?? 0 };
  }

  /** What to charge for a stream that ended this way; null: nothing was generated, release it all. */
  usage(ending: StreamEnding): Usage | null {
    if (ending !== 'finished' && this.generated === 0) return null;
    const status = this.cut ? 'cut' : ending === 'finished' ? 'completed' : ending === 'client_gone' ? 'aborted' : ending;
    return {
      promptTokens: this.prompt ?? this.unreportedPrompt,
      completionTokens: this.generated,
      cachedTokens: this.cached ?? 0,
      usageSource: this.reported ? 'reported' : 'estimated',
      status,
    };
  }
}
