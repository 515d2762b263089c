import { get_encoding, type Tiktoken } from 'tiktoken';
import { messageText, type UpstreamChatParams } from './chat-request';
import type { PromptInput } from './prompt-request';
import type { Upstream } from './upstream';

export interface PromptCount {
  readonly tokens: number;
  /** The longest single prompt (of several in a completion or an embedding): what must fit the context. */
  readonly longest: number;
  /** `tokenize` also for prompts the client sent as token ids: those are counted exactly too. */
  readonly source: 'tokenize' | 'tiktoken';
}

/** Per-message overhead of common chat templates, in tokens, for the tiktoken estimate. */
const TEMPLATE_TOKENS_PER_MESSAGE = 4;
const TEMPLATE_TOKENS_PER_PROMPT = 3;

/**
 * The fields of a chat call that vLLM's chat template renders, all of which /tokenize takes:
 * given the same, it counts what the chat call will report as prompt_tokens.
 */
export const TEMPLATE_FIELDS = [
  'messages',
  'tools',
  'chat_template',
  'add_generation_prompt',
  'continue_final_message',
  'add_special_tokens',
  'mm_processor_kwargs',
  'media_io_kwargs',
] as const;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * The chat template's kwargs as vLLM's chat call ends up with them (build_chat_params):
 * `reasoning_effort` goes into them, and turns thinking off when it is "none" unless the
 * client's kwargs say otherwise. /tokenize takes no reasoning_effort, so it is told this way.
 */
function templateKwargs(body: UpstreamChatParams): Record<string, unknown> | undefined {
  const own = isRecord(body['chat_template_kwargs']) ? body['chat_template_kwargs'] : undefined;
  const effort = body['reasoning_effort'];
  if (typeof effort !== 'string') return own;
  return { reasoning_effort: effort, ...(own !== undefined && 'enable_thinking' in own ? {} : { enable_thinking: effort !== 'none' }), ...own };
}

/**
 * Counts a prompt before anything is reserved: exactly, with the upstream's /tokenize, or
 * when the upstream has none, with tiktoken plus a safety margin (an estimate of another
 * tokenizer, so it leans high).
 */
export class PromptCounter {
  /** Built once: constructing an encoder costs milliseconds. */
  private encoder: Tiktoken | null = null;

  constructor(private readonly margin: number) {}

  /** A chat's prompt, counted by `upstream`, which serves its model. */
  async countChat(upstream: Upstream, body: UpstreamChatParams): Promise<PromptCount> {
    const request: Record<string, unknown> = { model: body.model };
    for (const field of TEMPLATE_FIELDS) if (body[field] !== undefined) request[field] = body[field];
    const kwargs = templateKwargs(body);
    if (kwargs !== undefined) request['chat_template_kwargs'] = kwargs;
    const exact = await upstream.tokenize(request);
    if (exact !== null) return { tokens: exact, longest: exact, source: 'tokenize' };
    const estimate = this.estimateChat(body);
    return { tokens: estimate, longest: estimate, source: 'tiktoken' };
  }

  /** The prompts of a completion or the inputs of an embedding, each as vLLM tokenizes it, summed. */
  async countPrompts(upstream: Upstream, model: string, prompts: readonly PromptInput[], addSpecialTokens: boolean): Promise<PromptCount> {
    const counts = await Promise.all(
      prompts.map((prompt) =>
        'text' in prompt ? upstream.tokenize({ model, prompt: prompt.text, add_special_tokens: addSpecialTokens }) : Promise.resolve(prompt.tokenIds.length),
      ),
    );
    let tokens = 0;
    let longest = 0;
    let estimated = false;
    counts.forEach((count, index) => {
      const prompt = prompts[index];
      let counted = count ?? 0;
      if (count === null && 'text' in prompt) {
        estimated = true;
        counted = Math.ceil((this.countText(prompt.text) + (addSpecialTokens ? 1 : 0)) * (1 + this.margin));
      }
      tokens += counted;
      longest = Math.max(longest, counted);
    });
    return { tokens, longest, source: estimated ? 'tiktoken' : 'tokenize' };
  }

  estimateChat(body: UpstreamChatParams): number {
    let tokens = TEMPLATE_TOKENS_PER_PROMPT;
    for (const message of body.messages) {
      tokens += TEMPLATE_TOKENS_PER_MESSAGE;
      for (const text of messageText(message)) tokens += this.countText(text);
    }
    if (Array.isArray(body['tools'])) tokens += this.countText(JSON.stringify(body['tools']));
    return Math.ceil(tokens * (1 + this.margin));
  }

  countText(text: string): number {
    this.encoder ??= get_encoding('cl100k_base');
    return this.encoder.encode_ordinary(text).length;
  }
}
