// The simulator's tokenizer and chat template.
//
// Deliberately unlike any real BPE (and unlike tiktoken's cl100k_base), so that a test can
// tell whether a gateway charged the upstream's count or its own estimate:
// - a token is a run of letters, digits and underscores, or any single other non-space
//   character; whitespace is never a token ("Hello, world!" is 4 tokens);
// - the chat template is shaped like Llama 3's: <|begin_of_text|>, then per message
//   <|start_header_id|> role <|end_header_id|> content... <|eot_id|> (4 tokens + content),
//   then the generation prompt <|start_header_id|> assistant <|end_header_id|> (3 tokens).
//   So a plain chat prompt costs 1 + sum(4 + countTokens(content)) + 3.
// - `tools` are listed first, in a header block of their own: 4 + the tokens of each tool's
//   JSON. An assistant turn's tool calls follow its content, each as <tool_call>, the tokens
//   of `{"name": NAME, "arguments": ARGUMENTS}`, </tool_call> (2 + tokens).
// - a reasoning model's template told not to think (`enable_thinking: false`) closes the
//   generation prompt with an empty <think></think> (2 more tokens), as Qwen3's does.
// - `continue_final_message` leaves the last turn open (no <|eot_id|>, no generation prompt).
// - a template that tags content (`taggedContentModels`) wraps each non-empty content in
//   <content>…</content>: 2 tokens a turn that a count of empty turns never shows.

const PIECE_PATTERN = /[\p{L}\p{N}_]+|[^\s\p{L}\p{N}_]/gu;
/** A token with the whitespace before it: how generated text is released, piece by piece. */
const SPACED_PIECE_PATTERN = /\s*(?:[\p{L}\p{N}_]+|[^\s\p{L}\p{N}_])/gu;

// Llama 3's ids for its special tokens (and reserved ones for the rest), so that dumps look familiar.
export const SPECIAL_TOKENS = {
  beginOfText: { id: 128000, text: '<|begin_of_text|>' },
  startHeader: { id: 128006, text: '<|start_header_id|>' },
  endHeader: { id: 128007, text: '<|end_header_id|>' },
  endOfTurn: { id: 128009, text: '<|eot_id|>' },
  toolCallStart: { id: 128010, text: '<tool_call>' },
  toolCallEnd: { id: 128011, text: '</tool_call>' },
  thinkStart: { id: 128012, text: '<think>' },
  thinkEnd: { id: 128013, text: '</think>' },
  contentStart: { id: 128014, text: '<content>' },
  contentEnd: { id: 128015, text: '</content>' },
} as const;

type SpecialToken = (typeof SPECIAL_TOKENS)[keyof typeof SPECIAL_TOKENS];

const ORDINARY_VOCABULARY_SIZE = 128000;

export interface ChatTurn {
  role: string;
  content: string;
  /** An assistant turn's tool calls, as the model wrote them. */
  toolCalls: readonly { name: string; arguments: string }[];
}

/** Everything the chat template renders. */
export interface ChatPrompt {
  turns: readonly ChatTurn[];
  /** The JSON of each tool definition, listed before the conversation. */
  tools: readonly string[];
  addGenerationPrompt: boolean;
  continueFinalMessage: boolean;
  /** A BOS in front of the template's own. */
  addSpecialTokens: boolean;
  /** A reasoning model told not to think: the generation prompt ends with an empty think block. */
  thinkingSkipped: boolean;
  /** The template wraps each non-empty content in <content>…</content>. */
  tagsContent: boolean;
}

export interface TokenizedText {
  ids: number[];
  pieces: string[];
}

/** The number of tokens the simulator's tokenizer makes of `text` (no special tokens). */
export function countTokens(text: string): number {
  PIECE_PATTERN.lastIndex = 0;
  let count = 0;
  while (PIECE_PATTERN.exec(text) !== null) count++;
  return count;
}

/**
 * `text` as the tokens a model would generate it in, each with the whitespace before it, so
 * that the pieces join back to `text` (trailing whitespace rides on the last piece).
 */
export function spacedPieces(text: string): string[] {
  SPACED_PIECE_PATTERN.lastIndex = 0;
  const pieces = text.match(SPACED_PIECE_PATTERN) ?? [];
  const joined = pieces.join('');
  if (joined.length < text.length && pieces.length > 0) pieces[pieces.length - 1] += text.slice(joined.length);
  return pieces;
}

/** 32-bit FNV-1a: stable across runs and platforms, which token ids and seeds need. */
export function fnv1a(text: string, seed = 0x811c9dc5): number {
  let hash = seed;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

export function pieceId(piece: string): number {
  return fnv1a(piece.trim()) % ORDINARY_VOCABULARY_SIZE;
}

function appendText(text: string, into: TokenizedText): void {
  PIECE_PATTERN.lastIndex = 0;
  let match: RegExpExecArray | null;
  while ((match = PIECE_PATTERN.exec(text)) !== null) {
    into.ids.push(pieceId(match[0]));
    into.pieces.push(match[0]);
  }
}

function appendSpecial(token: SpecialToken, into: TokenizedText): void {
  into.ids.push(token.id);
  into.pieces.push(token.text);
}

/** Plain-prompt tokenization, as `/tokenize {prompt}` does it (BOS when `addSpecialTokens`). */
export function tokenizePrompt(prompt: string, addSpecialTokens: boolean): TokenizedText {
  const result: TokenizedText = { ids: [], pieces: [] };
  if (addSpecialTokens) appendSpecial(SPECIAL_TOKENS.beginOfText, result);
  appendText(prompt, result);
  return result;
}

/** How a model writes one tool call, and how the template renders it back. */
export function toolCallText(name: string, argumentsJson: string): string {
  return `{"name": ${JSON.stringify(name)}, "arguments": ${argumentsJson}}`;
}

function appendHeader(role: string, into: TokenizedText): void {
  appendSpecial(SPECIAL_TOKENS.startHeader, into);
  into.ids.push(pieceId(role));
  into.pieces.push(role);
  appendSpecial(SPECIAL_TOKENS.endHeader, into);
}

/**
 * The chat template rendered to tokens. `addSpecialTokens` puts a second BOS in front, as vLLM
 * does when a client asks for special tokens on top of a template that already has one.
 */
export function tokenizeChat(prompt: ChatPrompt): TokenizedText {
  const result: TokenizedText = { ids: [], pieces: [] };
  if (prompt.addSpecialTokens) appendSpecial(SPECIAL_TOKENS.beginOfText, result);
  appendSpecial(SPECIAL_TOKENS.beginOfText, result);
  if (prompt.tools.length > 0) {
    appendHeader('tools', result);
    for (const tool of prompt.tools) appendText(tool, result);
    appendSpecial(SPECIAL_TOKENS.endOfTurn, result);
  }
  prompt.turns.forEach((turn, index) => {
    appendHeader(turn.role, result);
    const tagged = prompt.tagsContent && turn.content !== '';
    if (tagged) appendSpecial(SPECIAL_TOKENS.contentStart, result);
    appendText(turn.content, result);
    if (tagged) appendSpecial(SPECIAL_TOKENS.contentEnd, result);
    for (const call of turn.toolCalls) {
      appendSpecial(SPECIAL_TOKENS.toolCallStart, result);
      appendText(toolCallText(call.name, call.arguments), result);
      appendSpecial(SPECIAL_TOKENS.toolCallEnd, result);
    }
    const open = prompt.continueFinalMessage && index === prompt.turns.length - 1;
    if (!open) appendSpecial(SPECIAL_TOKENS.endOfTurn, result);
  });
  if (prompt.addGenerationPrompt) {
    appendHeader('assistant', result);
    if (prompt.thinkingSkipped) {
      appendSpecial(SPECIAL_TOKENS.thinkStart, result);
      appendSpecial(SPECIAL_TOKENS.thinkEnd, result);
    }
  }
  return result;
}
