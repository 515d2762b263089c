import { get_encoding } from 'tiktoken';
import { countTokens } from '../../src/simulator';

/**
 * The prompt the simulator counts (and vLLM would report): its own tokenizer and its Llama-3
 * shaped template, 1 BOS + per message (4 + content tokens) + 3 for the generation prompt.
 */
export function simulatorPromptTokens(messages: readonly { content: string }[]): number {
  return 1 + messages.reduce((sum, message) => sum + 4 + countTokens(message.content), 0) + 3;
}

/** tiktoken's cl100k_base count of a text: what the gateway would guess on its own. */
export function tiktokenCount(text: string): number {
  const encoder = get_encoding('cl100k_base');
  try {
    return encoder.encode_ordinary(text).length;
  } finally {
    encoder.free();
  }
}
