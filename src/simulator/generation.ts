// Deterministic "model output": one call to `step()` is one decode step of the engine.
//
// - The answer's natural length is 16..48 content tokens, derived from the request's `seed`
//   or else from the prompt; after them the model emits its end-of-turn token. Like vLLM,
//   that EOS token counts as a completion token but adds no text, so a natural answer of N
//   content tokens reports N + 1 completion tokens with finish_reason "stop".
// - Reaching `maxTokens` first ends with finish_reason "length" after exactly maxTokens tokens.
// - Stop strings end the answer with finish_reason "stop" and stop_reason = the stop string;
//   the text is cut before it (after it with include_stop_str_in_output), and the token that
//   completed it counts. While stop strings are active, the last (longest stop - 1) characters
//   are held back from the stream, as vLLM's detokenizer does, so deltas can be empty.
// - Every content token is a single token of the simulator's tokenizer: a word with a
//   leading space (none for the very first) or a punctuation mark.
import { fnv1a } from './tokenizer';

export type FinishReason = 'stop' | 'length';

export interface GenerationPlan {
  seed: number;
  maxTokens: number;
  minTokens: number;
  ignoreEos: boolean;
  stop: readonly string[];
  includeStopStrInOutput: boolean;
}

export interface GenerationStep {
  /** Text this step releases to the client; may be empty. */
  delta: string;
  /** The text of the token generated ('' for the end-of-turn token), for logprobs. */
  token: string;
  finishReason: FinishReason | null;
  /** The stop string that ended the answer, as vLLM reports it; null otherwise. */
  stopReason: string | null;
}

const MIN_NATURAL_LENGTH = 16;
const NATURAL_LENGTH_SPREAD = 33;

const WORDS = [
  'lorem', 'ipsum', 'dolor', 'sit', 'amet', 'consectetur', 'adipiscing', 'elit', 'sed', 'do',
  'eiusmod', 'tempor', 'incididunt', 'ut', 'labore', 'et', 'dolore', 'magna', 'aliqua', 'enim',
  'ad', 'minim', 'veniam', 'quis', 'nostrud', 'exercitation', 'ullamco', 'laboris', 'nisi',
  'aliquip', 'ex', 'ea', 'commodo', 'consequat', 'duis', 'aute', 'irure', 'in', 'reprehenderit',
  'voluptate', 'velit', 'esse', 'cillum', 'eu', 'fugiat', 'nulla', 'pariatur', 'excepteur',
  'sint', 'occaecat', 'cupidatat', 'non', 'proident', 'sunt', 'culpa', 'qui', 'officia',
  'deserunt', 'mollit', 'anim', 'id', 'est', 'laborum',
];

/** mulberry32: tiny, fast and good enough to pick words reproducibly. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The generation seed: the request's `seed` when given, else a hash of the prompt. Choice 0
 * of `n` keeps the plain seed; the others draw their own from it.
 */
export function generationSeed(requestSeed: number | null, promptFingerprint: string, choice = 0): number {
  const seed = requestSeed === null ? fnv1a(promptFingerprint) : fnv1a(String(requestSeed));
  return choice === 0 ? seed : fnv1a(`${seed}:${choice}`);
}

/** `count` lorem words, lower case and space-separated, for values in structured output. */
export function loremWords(random: () => number, count: number): string {
  const words: string[] = [];
  for (let i = 0; i < count; i++) words.push(WORDS[Math.floor(random() * WORDS.length)]);
  return words.join(' ');
}

export class Generation {
  completionTokens = 0;
  /** Set by the step that ends the answer. */
  finishReason: FinishReason | null = null;
  stopReason: string | null = null;
  readonly naturalLength: number;
  private readonly random: () => number;
  private readonly holdBack: number;
  private readonly longestStop: number;
  private text = '';
  private released = 0;
  private sentenceStart = true;
  private previousWasPunctuation = true;

  constructor(private readonly plan: GenerationPlan) {
    this.naturalLength = MIN_NATURAL_LENGTH + (plan.seed % NATURAL_LENGTH_SPREAD);
    this.random = seededRandom(plan.seed);
    this.longestStop = plan.stop.reduce((longest, stop) => Math.max(longest, stop.length), 0);
    this.holdBack = plan.includeStopStrInOutput || this.longestStop === 0 ? 0 : this.longestStop - 1;
  }

  /** The whole answer text released so far (all of it once finished). */
  get content(): string {
    return this.text.slice(0, this.released);
  }

  step(): GenerationStep {
    const index = this.completionTokens++;
    const { plan } = this;
    if (!plan.ignoreEos && index >= plan.minTokens && index >= this.naturalLength) {
      return this.finish('stop', null, '');
    }
    const previousLength = this.text.length;
    const token = this.nextPiece(index);
    this.text += token;
    // vLLM does not look for stop strings before min_tokens have been generated.
    if (this.longestStop > 0 && this.completionTokens >= plan.minTokens) {
      const stopped = this.cutAtStopString(previousLength);
      if (stopped !== null) return this.finish('stop', stopped, token);
    }
    if (this.completionTokens >= plan.maxTokens) return this.finish('length', null, token);
    const releasable = Math.max(this.released, this.text.length - this.holdBack);
    const delta = this.text.slice(this.released, releasable);
    this.released = releasable;
    return { delta, token, finishReason: null, stopReason: null };
  }

  private finish(finishReason: FinishReason, stopReason: string | null, token: string): GenerationStep {
    this.finishReason = finishReason;
    this.stopReason = stopReason;
    const delta = this.text.slice(this.released);
    this.released = this.text.length;
    return { delta, token, finishReason, stopReason };
  }

  /** Like vLLM, only the tail that the new token could have completed is searched. */
  private cutAtStopString(previousLength: number): string | null {
    for (const stop of this.plan.stop) {
      const at = this.text.indexOf(stop, Math.max(0, previousLength - stop.length + 1));
      if (at !== -1) {
        this.text = this.text.slice(0, this.plan.includeStopStrInOutput ? at + stop.length : at);
        return stop;
      }
    }
    return null;
  }

  private nextPiece(index: number): string {
    const roll = this.random();
    if (!this.previousWasPunctuation && index > 2 && roll < 0.12) {
      this.previousWasPunctuation = true;
      this.sentenceStart = roll < 0.05;
      return this.sentenceStart ? '.' : ',';
    }
    const word = WORDS[Math.floor(this.random() * WORDS.length)];
    const spelled = this.sentenceStart ? word.charAt(0).toUpperCase() + word.slice(1) : word;
    this.previousWasPunctuation = false;
    this.sentenceStart = false;
    return index === 0 ? spelled : ` ${spelled}`;
  }
}
