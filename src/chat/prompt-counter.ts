import { get_encoding, type Tiktoken } from 'tiktoken';
import type { ChatMessage, Upstream } from './upstream';

export interface PromptCount {
  readonly tokens: number;
  readonly source: 'tokenize' | 'tiktoken';
}

/** Per-message overhead of common chat templates, in tokens, for the tiktoken estimate. */
const TEMPLATE_TOKENS_PER_MESSAGE = 4;
const TEMPLATE_TOKENS_PER_PROMPT = 3;

/**
 * Counts a prompt before anything is reserved: exactly, with the upstream's /tokenize, or
 * when the upstream has none, with tiktoken plus a safety margin (an estimate of another
 * tokenizer, so it leans high).
 */
export class PromptCounter {
  /** Built once: constructing an encoder costs milliseconds. */
  private encoder: Tiktoken | null = null;

  constructor(private readonly margin: number) {}

  /** Counted by `upstream`, which serves `model`. */
  async count(upstream: Upstream, model: string, messages: readonly ChatMessage[]): Promise<PromptCount> {
    const exact = await upstream.tokenize(model, messages);
    if (exact !== null) return { tokens: exact, source: 'tokenize' };
    return { tokens: this.estimate(messages), source: 'tiktoken' };
  }

  estimate(messages: readonly ChatMessage[]): number {
    let tokens = TEMPLATE_TOKENS_PER_PROMPT;
    for (const message of messages) tokens += TEMPLATE_TOKENS_PER_MESSAGE + this.countText(message.content);
    return Math.ceil(tokens * (1 + this.margin));
  }

  countText(text: string): number {
    this.encoder ??= get_encoding('cl100k_base');
    return this.encoder.encode_ordinary(text).length;
  }
}
