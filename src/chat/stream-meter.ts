import type { ChatCompletionChunk } from 'openai/resources/chat/completions';
import type { ReservedBudget, Usage } from '../quota/reservation';
import type { TokenCount } from './chat.types';

/** How a stream ended, as far as charging goes. */
export type StreamEnding = 'finished' | 'timeout' | 'upstream_error' | 'client_gone';

/**
 * Counts what a stream produced, chunk by chunk, and decides what its usage record says: the
 * last cumulative usage vLLM sent (it sends some on every chunk when asked), or else the
 * number of content deltas, marked estimated; never more than the reservation allows.
 */
export class StreamMeter {
  private deltas = 0;
  private lastUsage: { prompt: number; completion: number } | null = null;
  finishReason: string | null = null;
  /** The upstream produced past max_tokens and the gateway stopped it. */
  cut = false;

  constructor(private readonly budget: ReservedBudget) {}

  /** Takes one upstream chunk into account; returns its content delta ('' for none). */
  observe(chunk: ChatCompletionChunk): string {
    const usage = readUsage(chunk);
    if (usage !== null) this.lastUsage = usage;
    const choice = chunk.choices[0];
    const delta = choice?.delta?.content ?? '';
    if (delta !== '') this.deltas += 1;
    if (choice?.finish_reason != null) this.finishReason = choice.finish_reason;
    // The upstream was given max_tokens within the reservation; this guards against one that ignores it.
    if ((this.lastUsage?.completion ?? this.deltas) > this.budget.maxCompletionTokens && this.finishReason === null) {
      this.cut = true;
      this.finishReason = 'length';
    }
    return delta;
  }

  get generated(): number {
    return Math.min(this.lastUsage?.completion ?? this.deltas, this.budget.maxCompletionTokens);
  }

  get tokens(): TokenCount {
    const prompt = this.lastUsage?.prompt ?? this.budget.promptTokens;
    return { promptTokens: prompt, completionTokens: this.generated, totalTokens: prompt + this.generated };
  }

  /** What to charge for a stream that ended this way; null: nothing was generated, release it all. */
  usage(ending: StreamEnding): Usage | null {
    if (ending !== 'finished' && this.generated === 0) return null;
    const status = this.cut ? 'cut' : ending === 'finished' ? 'completed' : ending === 'client_gone' ? 'aborted' : ending;
    return {
      promptTokens: this.lastUsage?.prompt ?? this.budget.promptTokens,
      completionTokens: this.generated,
      usageSource: this.lastUsage !== null ? 'reported' : 'estimated',
      status,
    };
  }
}

function readUsage(chunk: ChatCompletionChunk): { prompt: number; completion: number } | null {
  const usage = chunk.usage;
  if (usage == null) return null;
  const prompt = usage.prompt_tokens;
  const completion = usage.completion_tokens;
  if (!Number.isSafeInteger(prompt) || !Number.isSafeInteger(completion) || prompt < 0 || completion < 0) return null;
  return { prompt, completion };
}
