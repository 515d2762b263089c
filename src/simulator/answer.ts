// One choice of an answer, token by token, as a served model with vLLM's parsers writes it:
//
// - a reasoning model first thinks (lorem text, 16..48 tokens, then its </think> token, which
//   counts but adds no text), unless told not to; vLLM's reasoning parser puts that text in
//   `reasoning`;
// - then it calls a tool, or answers in JSON (response_format), or in plain lorem text
//   (generation.ts, which honours stop strings, min_tokens and ignore_eos);
// - a tool call is written like Hermes models do, `<tool_call>{"name": …, "arguments": …}</tool_call>`,
//   and streamed the way vLLM's tool parsers stream it: nothing while the markup and the name
//   are written, one delta `{index, id, type, function: {name, arguments: ""}}` when the name is
//   complete, then one `{index, function: {arguments}}` per token of the arguments, whose
//   fragments join to the final `arguments` (Python's json.dumps of the value);
// - every token counts, the end-of-turn token too; `max_tokens` ends the choice with
//   "length" wherever it falls.
import { randomUUID } from 'node:crypto';
import { Generation, seededRandom, type GenerationStep } from './generation';
import { JsonValueMaker, pythonJsonDumps } from './json-value';
import { SPECIAL_TOKENS, spacedPieces, toolCallText } from './tokenizer';

export type FinishReason = 'stop' | 'length' | 'tool_calls';

export interface ToolDefinition {
  name: string;
  parameters: Record<string, unknown> | null;
}

/** What the model answers with once it has thought (if it does). */
export type AnswerForm =
  | { kind: 'text' }
  /** `schema` null: json_object, any JSON object. */
  | { kind: 'json'; schema: Record<string, unknown> | null }
  /** `choice`: how the tool came to be called (tool_choice auto, required or a named function). */
  | { kind: 'tool'; tool: ToolDefinition; choice: 'auto' | 'required' | 'named' };

export interface ChoicePlan {
  seed: number;
  maxTokens: number;
  minTokens: number;
  ignoreEos: boolean;
  stop: readonly string[];
  includeStopStrInOutput: boolean;
  thinks: boolean;
  form: AnswerForm;
}

export interface ToolCallDelta {
  index: number;
  id?: string;
  type?: 'function';
  function: { name?: string; arguments: string };
}

export interface ChoiceStep {
  /** The generated token's text ('' for a special token), for logprobs. */
  token: string;
  reasoning: string;
  content: string;
  toolCall: ToolCallDelta | null;
  finishReason: FinishReason | null;
  stopReason: string | null;
}

/** One token of a scripted answer (JSON text, a tool call) and what it releases. */
interface ScriptedToken {
  text: string;
  content: string;
  toolCall: ToolCallDelta | null;
}

export interface ToolCall {
  id: string;
  name: string;
  arguments: string;
}

/** vLLM's `make_tool_call_id()`. */
function toolCallId(): string {
  return `chatcmpl-tool-${randomUUID().replace(/-/g, '')}`;
}

export class ChoiceGenerator {
  completionTokens = 0;
  finishReason: FinishReason | null = null;
  stopReason: string | null = null;
  /** The reasoning written so far. */
  reasoning = '';
  /** The call the model writes, when it answers with one. */
  readonly toolCall: ToolCall | null = null;
  private thinking: Generation | null;
  private answer: Generation | null = null;
  private readonly script: ScriptedToken[] | null = null;
  private scripted = 0;
  /** The text of a scripted answer written so far (a tool call's raw text too). */
  private scriptedText = '';

  constructor(private readonly plan: ChoicePlan) {
    this.thinking = plan.thinks
      ? new Generation({ seed: (plan.seed ^ 0x5eed) >>> 0, maxTokens: plan.maxTokens, minTokens: 0, ignoreEos: false, stop: [], includeStopStrInOutput: false })
      : null;
    const random = seededRandom(plan.seed);
    const { form } = plan;
    if (form.kind === 'tool') {
      const value = new JsonValueMaker(form.tool.parameters ?? { type: 'object' }, random).make();
      this.toolCall = { id: toolCallId(), name: form.tool.name, arguments: pythonJsonDumps(value) };
      this.script = toolScript(this.toolCall);
    } else if (form.kind === 'json') {
      const value = new JsonValueMaker(form.schema ?? { type: 'object', properties: { answer: { type: 'string' } } }, random).make();
      this.script = spacedPieces(pythonJsonDumps(value)).map((text) => ({ text, content: text, toolCall: null }));
    }
  }

  /**
   * The content as a whole: null while the model never got past thinking, or when it called a
   * tool it chose itself; "" for a forced call (as vLLM answers); a tool call cut short is no
   * call, and its raw text is the content, as a tool parser gives it back.
   */
  get content(): string | null {
    if (this.thinking !== null) return null;
    if (this.toolCall !== null && this.toolCalled) return this.plan.form.kind === 'tool' && this.plan.form.choice === 'auto' ? null : '';
    return this.script !== null ? this.scriptedText : (this.answer?.content ?? '');
  }

  /** Whether the tool call was written whole. */
  get toolCalled(): boolean {
    return this.toolCall !== null && this.script !== null && this.scripted >= this.script.length;
  }

  step(): ChoiceStep {
    this.completionTokens++;
    if (this.thinking !== null) return this.think(this.thinking);
    if (this.script !== null) return this.scriptStep(this.script);
    const used = this.completionTokens - 1;
    this.answer ??= new Generation({
      ...this.plan,
      maxTokens: this.plan.maxTokens - used,
      minTokens: Math.max(0, this.plan.minTokens - used),
    });
    return this.fromGeneration(this.answer.step(), 'content');
  }

  private think(thinking: Generation): ChoiceStep {
    const step = thinking.step();
    this.reasoning += step.delta;
    if (step.finishReason !== 'stop') return this.fromGeneration(step, 'reasoning');
    // Its end-of-turn token is the model's </think>: the answer follows.
    this.thinking = null;
    const ended = this.completionTokens >= this.plan.maxTokens;
    if (ended) this.finishReason = 'length';
    return { token: '', reasoning: step.delta, content: '', toolCall: null, finishReason: ended ? 'length' : null, stopReason: null };
  }

  private fromGeneration(step: GenerationStep, into: 'content' | 'reasoning'): ChoiceStep {
    if (step.finishReason !== null) {
      this.finishReason = step.finishReason;
      this.stopReason = step.stopReason;
    }
    return {
      token: step.token,
      reasoning: into === 'reasoning' ? step.delta : '',
      content: into === 'content' ? step.delta : '',
      toolCall: null,
      finishReason: step.finishReason,
      stopReason: step.stopReason,
    };
  }

  private scriptStep(script: readonly ScriptedToken[]): ChoiceStep {
    if (this.scripted >= script.length) {
      // The end-of-turn token. vLLM reports a call the model chose (auto, required) as
      // "tool_calls", and one it was told to make (a named function) as "stop".
      const { form } = this.plan;
      this.finishReason = form.kind === 'tool' && form.choice !== 'named' ? 'tool_calls' : 'stop';
      return { token: '', reasoning: '', content: '', toolCall: null, finishReason: this.finishReason, stopReason: null };
    }
    const next = script[this.scripted++];
    this.scriptedText += next.text;
    if (this.completionTokens >= this.plan.maxTokens) this.finishReason = 'length';
    return { token: next.text, reasoning: '', content: next.content, toolCall: next.toolCall, finishReason: this.finishReason, stopReason: null };
  }
}

function toolScript(call: ToolCall): ScriptedToken[] {
  const full = toolCallText(call.name, call.arguments);
  // Everything up to the arguments, then the arguments, then the closing brace.
  const head = spacedPieces(full.slice(0, full.length - call.arguments.length - 1));
  const script: ScriptedToken[] = [{ text: SPECIAL_TOKENS.toolCallStart.text, content: '', toolCall: null }];
  head.forEach((text, index) => {
    const header: ToolCallDelta = { index: 0, id: call.id, type: 'function', function: { name: call.name, arguments: '' } };
    script.push({ text, content: '', toolCall: index === head.length - 1 ? header : null });
  });
  for (const text of spacedPieces(call.arguments)) script.push({ text, content: '', toolCall: { index: 0, function: { arguments: text } } });
  script.push({ text: '}', content: '', toolCall: null });
  script.push({ text: SPECIAL_TOKENS.toolCallEnd.text, content: '', toolCall: null });
  return script;
}
