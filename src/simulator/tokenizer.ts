// The simulator's tokenizer and chat template.
//
// Deliberately unlike any real BPE (and unlike tiktoken's cl100k_base), so that a test can
// tell whether a gateway charged the upstream's count or its own estimate:
// - a token is a run of letters, digits and underscores, or any single other non-space
//   character; whitespace is never a token ("Hello, world!" is 4 tokens);
// - the chat template is shaped like Llama 3's: <|begin_of_text|>, then per message
//   <|start_header_id|> role <|end_header_id|> content... <|eot_id|> (4 tokens + content),
//   then the generation prompt <|start_header_id|> assistant <|end_header_id|> (3 tokens).
//   So a chat prompt costs 1 + sum(4 + countTokens(content)) + 3.

const PIECE_PATTERN = /[\p{L}\p{N}_]+|[^\s\p{L}\p{N}_]/gu;

// Llama 3's ids for its special tokens, so that dumps look familiar.
const SPECIAL_TOKENS = {
  beginOfText: { id: 128000, text: '<|begin_of_text|>' },
  startHeader: { id: 128006, text: '<|start_header_id|>' },
  endHeader: { id: 128007, text: '<|end_header_id|>' },
  endOfTurn: { id: 128009, text: '<|eot_id|>' },
} as const;

const ORDINARY_VOCABULARY_SIZE = 128000;

const TEMPLATE_TOKENS_PER_MESSAGE = 4;
const GENERATION_PROMPT_TOKENS = 3;
const BEGIN_OF_TEXT_TOKENS = 1;

export interface ChatTurn {
  role: string;
  content: string;
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

/** 32-bit FNV-1a: stable across runs and platforms, which token ids and seeds need. */
export function fnv1a(text: string, seed = 0x811c9dc5): number {
  let hash = seed;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

function pieceId(piece: string): number {
  return fnv1a(piece) % ORDINARY_VOCABULARY_SIZE;
}

function appendText(text: string, into: TokenizedText): void {
  PIECE_PATTERN.lastIndex = 0;
  let match: RegExpExecArray | null;
  while ((match = PIECE_PATTERN.exec(text)) !== null) {
    into.ids.push(pieceId(match[0]));
    into.pieces.push(match[0]);
  }
}

function appendSpecial(token: { id: number; text: string }, into: TokenizedText): void {
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

/**
 * The chat template rendered to tokens. `addSpecialTokens` puts a second BOS in front, as vLLM
 * does when a client asks for special tokens on top of a template that already has one.
 */
export function tokenizeChat(
  turns: readonly ChatTurn[],
  addGenerationPrompt: boolean,
  addSpecialTokens: boolean,
): TokenizedText {
  const result: TokenizedText = { ids: [], pieces: [] };
  if (addSpecialTokens) appendSpecial(SPECIAL_TOKENS.beginOfText, result);
  appendSpecial(SPECIAL_TOKENS.beginOfText, result);
  for (const turn of turns) {
    appendSpecial(SPECIAL_TOKENS.startHeader, result);
    result.ids.push(pieceId(turn.role));
    result.pieces.push(turn.role);
    appendSpecial(SPECIAL_TOKENS.endHeader, result);
    appendText(turn.content, result);
    appendSpecial(SPECIAL_TOKENS.endOfTurn, result);
  }
  if (addGenerationPrompt) {
    appendSpecial(SPECIAL_TOKENS.startHeader, result);
    result.ids.push(pieceId('assistant'));
    result.pieces.push('assistant');
    appendSpecial(SPECIAL_TOKENS.endHeader, result);
  }
  return result;
}

/** Same number as `tokenizeChat(...).ids.length`, without building the token list. */
export function countChatTokens(
  turns: readonly ChatTurn[],
  addGenerationPrompt: boolean,
  addSpecialTokens: boolean,
): number {
  let count = BEGIN_OF_TEXT_TOKENS + (addSpecialTokens ? BEGIN_OF_TEXT_TOKENS : 0);
  for (const turn of turns) count += TEMPLATE_TOKENS_PER_MESSAGE + countTokens(turn.content);
  if (addGenerationPrompt) count += GENERATION_PROMPT_TOKENS;
  return count;
}
