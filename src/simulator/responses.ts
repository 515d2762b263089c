// The bodies and stream chunks of vLLM's chat and completion endpoints, built from the
// choices' steps: field names and order as vLLM's pydantic models serialise them
// (chat_completion/protocol.py, completion/protocol.py, engine/protocol.py UsageInfo).
import type { ChoiceGenerator, ChoiceStep } from './answer';
import { loremWords, seededRandom } from './generation';

/** One generated sequence of a request: choice `index` of the response. */
export interface Sequence {
  readonly index: number;
  readonly generator: ChoiceGenerator;
  readonly logprobs: LogprobMaker | null;
  /** /v1/completions with echo: the prompt text, put before the first token. */
  readonly echo: string;
}

export interface UsageFigures {
  promptTokens: number;
  completionTokens: number;
  /** Reported only with `enablePromptTokensDetails`; null: the field is null. */
  cachedTokens: number | null;
}

/**
 * UsageInfo where it goes: a whole answer's always has prompt_tokens_details (null when not
 * enabled); a stream's final usage chunk drops it when null (vLLM serialises that one with
 * exclude_none); continuous usage on the other chunks never has it.
 */
export function usageInfo({ promptTokens, completionTokens, cachedTokens }: UsageFigures, where: 'whole' | 'final-chunk' | 'chunk'): Record<string, unknown> {
  const usage: Record<string, unknown> = {
    prompt_tokens: promptTokens,
    total_tokens: promptTokens + completionTokens,
    completion_tokens: completionTokens,
  };
  const details = cachedTokens === null ? null : { cached_tokens: cachedTokens };
  if (where === 'whole' || (where === 'final-chunk' && details !== null)) usage['prompt_tokens_details'] = details;
  return usage;
}

/** A token's logprob and its alternatives, made up deterministically. */
interface TokenLogprob {
  token: string;
  logprob: number;
  alternatives: { token: string; logprob: number }[];
}

const round = (value: number): number => Math.round(value * 10_000) / 10_000;

export class LogprobMaker {
  private readonly random: () => number;

  constructor(
    seed: number,
    /** Alternatives per token. */
    private readonly top: number,
  ) {
    this.random = seededRandom((seed ^ 0x1097) >>> 0);
  }

  next(token: string): TokenLogprob {
    const logprob = round(-this.random() * 1.5);
    const alternatives = [{ token, logprob }];
    for (let rank = 1; rank < this.top; rank++) {
      alternatives.push({ token: ` ${loremWords(this.random, 1)}`, logprob: round(logprob - rank - this.random()) });
    }
    return { token, logprob, alternatives: alternatives.slice(0, this.top) };
  }
}

const utf8Bytes = (text: string): number[] => [...Buffer.from(text, 'utf8')];

/** Chat's `ChatCompletionLogProbsContent`. */
function chatLogprob(entry: TokenLogprob): Record<string, unknown> {
  return {
    token: entry.token,
    logprob: entry.logprob,
    bytes: utf8Bytes(entry.token),
    top_logprobs: entry.alternatives.map((alternative) => ({ token: alternative.token, logprob: alternative.logprob, bytes: utf8Bytes(alternative.token) })),
  };
}

/** The legacy `CompletionLogProbs` of /v1/completions, for a run of tokens starting at `offset`. */
function completionLogprobs(entries: readonly TokenLogprob[], offset: number): Record<string, unknown> {
  const textOffset: number[] = [];
  let at = offset;
  for (const entry of entries) {
    textOffset.push(at);
    at += entry.token.length;
  }
  return {
    text_offset: textOffset,
    token_logprobs: entries.map((entry) => entry.logprob),
    tokens: entries.map((entry) => entry.token),
    top_logprobs: entries.map((entry) => Object.fromEntries(entry.alternatives.map((alternative) => [alternative.token, alternative.logprob]))),
  };
}

/** One tool call of a whole answer, as `ToolCall` serialises. */
function wholeToolCalls(generator: ChoiceGenerator): Record<string, unknown>[] {
  const call = generator.toolCall;
  if (call === null || !generator.toolCalled) return [];
  return [{ id: call.id, type: 'function', function: { name: call.name, arguments: call.arguments } }];
}

/** Renders the SSE frames of one streamed response; the constant head of each chunk is rendered once. */
export class StreamFormatter {
  private readonly prefix: string;
  /** Text of each sequence streamed so far (completions' text_offset). */
  private readonly streamed = new Map<number, number>();

  constructor(
    private readonly endpoint: 'chat' | 'completions',
    id: string,
    created: number,
    model: string,
    private readonly promptTokens: number,
    private readonly continuousUsage: boolean,
    /** Chat through a reasoning or tool parser: steps that release nothing send no chunk. */
    private readonly parsed: boolean,
    private readonly includeReasoning: boolean,
  ) {
    const object = endpoint === 'chat' ? 'chat.completion.chunk' : 'text_completion';
    this.prefix = `data: {"id":${JSON.stringify(id)},"object":"${object}","created":${created},"model":${JSON.stringify(model)},"choices":[`;
  }

  /** The first chunk of a chat choice: its role, with an empty content. */
  role(sequence: Sequence, role: string): string {
    const choice = { index: sequence.index, delta: { role, content: '' }, logprobs: null, finish_reason: null };
    return `${this.prefix}${JSON.stringify(choice)}]${this.usageField(0)}}\n\n`;
  }

  /** The chunk of one step of one sequence; '' when vLLM would send none. */
  step(sequence: Sequence, step: ChoiceStep): string {
    const logprob = sequence.logprobs?.next(step.token) ?? null;
    const finish = step.finishReason === null ? { finish_reason: null } : { finish_reason: step.finishReason, stop_reason: step.stopReason };
    let choice: Record<string, unknown>;
    if (this.endpoint === 'completions') {
      const text = this.streamed.has(sequence.index) ? step.content : sequence.echo + step.content;
      const offset = this.streamed.get(sequence.index) ?? 0;
      this.streamed.set(sequence.index, offset + text.length);
      choice = { index: sequence.index, text, logprobs: logprob === null ? null : completionLogprobs([logprob], offset), ...finish, ...(step.finishReason === null ? { stop_reason: null } : {}) };
    } else {
      const delta = this.delta(step);
      if (delta === null && step.finishReason === null && logprob === null) return '';
      choice = { index: sequence.index, delta: delta ?? {}, logprobs: logprob === null ? null : { content: [chatLogprob(logprob)] }, ...finish };
    }
    return `${this.prefix}${JSON.stringify(choice)}]${this.usageField(sequence.generator.completionTokens)}}\n\n`;
  }

  /** The usage chunk that ends a stream with `include_usage`: empty choices, the totals. */
  finalUsage(figures: UsageFigures): string {
    return `${this.prefix}],"usage":${JSON.stringify(usageInfo(figures, 'final-chunk'))}}\n\n`;
  }

  private delta(step: ChoiceStep): Record<string, unknown> | null {
    if (!this.parsed) return { content: step.content };
    const delta: Record<string, unknown> = {};
    if (step.reasoning !== '' && this.includeReasoning) delta['reasoning'] = step.reasoning;
    if (step.content !== '') delta['content'] = step.content;
    if (step.toolCall !== null) delta['tool_calls'] = [step.toolCall];
    return Object.keys(delta).length === 0 ? null : delta;
  }

  /** vLLM's continuous usage stats: on each chunk, the prompt and that choice's tokens so far. */
  private usageField(completionTokens: number): string {
    return this.continuousUsage ? `,"usage":${JSON.stringify(usageInfo({ promptTokens: this.promptTokens, completionTokens, cachedTokens: null }, 'chunk'))}` : '';
  }
}

/** Collects each sequence's logprobs over a whole (non-streamed) answer. */
export class WholeAnswer {
  private readonly logprobs = new Map<number, TokenLogprob[]>();

  record(sequence: Sequence, step: ChoiceStep): void {
    if (sequence.logprobs === null) return;
    const entries = this.logprobs.get(sequence.index) ?? [];
    entries.push(sequence.logprobs.next(step.token));
    this.logprobs.set(sequence.index, entries);
  }

  chatChoice(sequence: Sequence, role: string, includeReasoning: boolean): Record<string, unknown> {
    const { generator } = sequence;
    const toolCalls = wholeToolCalls(generator);
    const entries = this.logprobs.get(sequence.index);
    return {
      index: sequence.index,
      message: {
        role,
        content: generator.content,
        refusal: null,
        annotations: null,
        audio: null,
        function_call: null,
        // vLLM's ChatMessage drops an empty tool_calls list when it serialises.
        ...(toolCalls.length === 0 ? {} : { tool_calls: toolCalls }),
        reasoning: includeReasoning && generator.reasoning !== '' ? generator.reasoning : null,
      },
      logprobs: entries === undefined ? null : { content: entries.map(chatLogprob) },
      finish_reason: generator.finishReason,
      stop_reason: generator.stopReason,
      token_ids: null,
    };
  }

  completionChoice(sequence: Sequence): Record<string, unknown> {
    const { generator } = sequence;
    const entries = this.logprobs.get(sequence.index);
    return {
      index: sequence.index,
      text: sequence.echo + (generator.content ?? ''),
      logprobs: entries === undefined ? null : completionLogprobs(entries, sequence.echo.length),
      finish_reason: generator.finishReason,
      stop_reason: generator.stopReason,
      prompt_logprobs: null,
    };
  }
}
