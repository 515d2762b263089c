// Request validation and error bodies, shaped as vLLM's OpenAI-compatible server answers them
// (vllm/entrypoints/openai/engine/serving.py `_validate_input`, `create_error_response`,
// sampling_params.py `_verify_args`, server_utils.py `validation_exception_handler`).
import type { ChatTurn } from './tokenizer';

export interface ErrorInfo {
  message: string;
  type: string;
  param: string | null;
  code: number;
}

export interface ErrorResponseBody {
  error: ErrorInfo;
}

/** A request that vLLM would refuse with the given status and `{error: {...}}` body. */
export class ApiError extends Error {
  readonly body: ErrorResponseBody;

  constructor(
    readonly status: number,
    type: string,
    message: string,
    param: string | null,
  ) {
    super(message);
    this.body = { error: { message, type, param, code: status } };
  }
}

/** Python's repr of a float field's value: `3` arrives as 3.0 after pydantic's coercion. */
function pythonFloat(value: number): string {
  return Number.isInteger(value) ? value.toFixed(1) : String(value);
}

/**
 * vLLM's `VLLMValidationError`: its `str()` appends the parameter and value, and the error
 * response carries the parameter as `param`.
 */
function validationFailure(message: string, parameter: string, value: string): ApiError {
  return new ApiError(400, 'BadRequestError', `${message} (parameter=${parameter}, value=${value})`, parameter);
}

/** A plain `ValueError` raised while serving: 400 BadRequestError without `param`. */
export function badRequest(message: string): ApiError {
  return new ApiError(400, 'BadRequestError', message, null);
}

export function modelNotFound(model: string): ApiError {
  return new ApiError(404, 'NotFoundError', `The model \`${model}\` does not exist.`, 'model');
}

/** What vLLM's `GenerationError` turns into, before or during a stream. */
export function internalServerError(): ApiError {
  return new ApiError(500, 'InternalServerError', 'Internal server error', null);
}

interface SchemaIssue {
  type: string;
  loc: ReadonlyArray<string | number>;
  msg: string;
}

function pythonRepr(value: string | number): string {
  return typeof value === 'number' ? String(value) : `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/**
 * FastAPI's `RequestValidationError` as vLLM reports it: type "Bad Request", a message listing
 * pydantic's errors, and `param` the dotted location of the first one (or the parameter of a
 * `VLLMValidationError` raised by a model validator).
 */
function schemaError(issues: readonly SchemaIssue[], parameter: string | null): ApiError {
  const label = issues.length === 1 ? 'error' : 'errors';
  const lines = issues.map((issue) => {
    const loc = ['body', ...issue.loc].map(pythonRepr);
    const tuple = loc.length === 1 ? `(${loc[0]},)` : `(${loc.join(', ')})`;
    return `  {'type': '${issue.type}', 'loc': ${tuple}, 'msg': ${pythonRepr(issue.msg)}}`;
  });
  const firstLoc = ['body', ...(issues[0]?.loc ?? [])].join('.');
  return new ApiError(
    400,
    'Bad Request',
    `${issues.length} validation ${label}:\n${lines.join('\n')}`,
    parameter ?? firstLoc,
  );
}

export function malformedJson(detail: string): ApiError {
  const position = /position (\d+)/.exec(detail)?.[1];
  return schemaError(
    [{ type: 'json_invalid', loc: [position === undefined ? 0 : Number(position)], msg: 'JSON decode error' }],
    null,
  );
}

type JsonObject = Record<string, unknown>;

function isJsonObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Reads optional fields the lax way pydantic does, collecting every problem before failing. */
class FieldReader {
  readonly issues: SchemaIssue[] = [];

  constructor(private readonly body: JsonObject) {}

  has(key: string): boolean {
    return this.body[key] !== undefined && this.body[key] !== null;
  }

  boolean(key: string, fallback: boolean): boolean {
    const value = this.body[key];
    if (value === undefined || value === null) return fallback;
    if (typeof value === 'boolean') return value;
    this.issues.push({ type: 'bool_type', loc: [key], msg: 'Input should be a valid boolean' });
    return fallback;
  }

  integer(key: string): number | null {
    const value = this.body[key];
    if (value === undefined || value === null) return null;
    if (typeof value === 'number' && Number.isInteger(value)) return value;
    if (typeof value === 'number' && Number.isFinite(value)) {
      this.issues.push({
        type: 'int_from_float',
        loc: [key],
        msg: 'Input should be a valid integer, got a number with a fractional part',
      });
    } else {
      this.issues.push({ type: 'int_type', loc: [key], msg: 'Input should be a valid integer' });
    }
    return null;
  }

  number(key: string): number | null {
    const value = this.body[key];
    if (value === undefined || value === null) return null;
    if (typeof value === 'number' && Number.isFinite(value)) return value;
    this.issues.push({ type: 'float_type', loc: [key], msg: 'Input should be a valid number' });
    return null;
  }

  string(key: string): string | null {
    const value = this.body[key];
    if (value === undefined || value === null) return null;
    if (typeof value === 'string') return value;
    this.issues.push({ type: 'string_type', loc: [key], msg: 'Input should be a valid string' });
    return null;
  }

  stopStrings(key: string): string[] {
    const value = this.body[key];
    if (value === undefined || value === null) return [];
    if (typeof value === 'string') return [value];
    if (Array.isArray(value) && value.every((item): item is string => typeof item === 'string')) return value;
    this.issues.push({ type: 'string_type', loc: [key], msg: 'Input should be a valid string' });
    return [];
  }

  messages(key: string): { turns: ChatTurn[]; nonTextPart: string | null } {
    const value = this.body[key];
    const turns: ChatTurn[] = [];
    let nonTextPart: string | null = null;
    if (value === undefined) {
      this.issues.push({ type: 'missing', loc: [key], msg: 'Field required' });
      return { turns, nonTextPart };
    }
    if (!Array.isArray(value)) {
      this.issues.push({ type: 'list_type', loc: [key], msg: 'Input should be a valid list' });
      return { turns, nonTextPart };
    }
    value.forEach((message: unknown, index) => {
      if (!isJsonObject(message)) {
        this.issues.push({ type: 'dict_type', loc: [key, index], msg: 'Input should be a valid dictionary' });
        return;
      }
      const role = message['role'];
      if (typeof role !== 'string') {
        this.issues.push(
          role === undefined
            ? { type: 'missing', loc: [key, index, 'role'], msg: 'Field required' }
            : { type: 'string_type', loc: [key, index, 'role'], msg: 'Input should be a valid string' },
        );
        return;
      }
      const content = message['content'];
      if (content === undefined || content === null) {
        turns.push({ role, content: '' });
      } else if (typeof content === 'string') {
        turns.push({ role, content });
      } else if (Array.isArray(content)) {
        const texts: string[] = [];
        for (const part of content) {
          if (isJsonObject(part) && part['type'] === 'text' && typeof part['text'] === 'string') {
            texts.push(part['text']);
          } else {
            nonTextPart ??= isJsonObject(part) && typeof part['type'] === 'string' ? part['type'] : 'unknown';
          }
        }
        // vLLM's "string" content format joins text parts with newlines.
        turns.push({ role, content: texts.join('\n') });
      } else {
        this.issues.push({
          type: 'string_type',
          loc: [key, index, 'content'],
          msg: 'Input should be a valid string',
        });
      }
    });
    return { turns, nonTextPart };
  }

  streamOptions(key: string): { includeUsage: boolean; continuousUsageStats: boolean } | null {
    const value = this.body[key];
    if (value === undefined || value === null) return null;
    if (!isJsonObject(value)) {
      this.issues.push({ type: 'model_type', loc: [key], msg: 'Input should be a valid dictionary' });
      return null;
    }
    const nested = new FieldReader(value);
    // StreamOptions.include_usage defaults to True in vLLM: `{}` already asks for usage.
    const includeUsage = nested.boolean('include_usage', true);
    const continuousUsageStats = nested.boolean('continuous_usage_stats', false);
    for (const issue of nested.issues) this.issues.push({ ...issue, loc: [key, ...issue.loc] });
    return { includeUsage, continuousUsageStats };
  }

  fail(parameter: string | null = null): ApiError {
    return schemaError(this.issues, parameter);
  }
}

function requireObjectBody(body: unknown): JsonObject {
  if (isJsonObject(body)) return body;
  throw schemaError(
    [{ type: 'model_attributes_type', loc: [], msg: 'Input should be a valid dictionary or object to extract fields from' }],
    null,
  );
}

export interface ChatCompletionParams {
  model: string | null;
  turns: ChatTurn[];
  stream: boolean;
  includeUsage: boolean;
  continuousUsageStats: boolean;
  /** `max_completion_tokens or max_tokens`, Python's `or`: 0 and null fall through. */
  requestedMaxTokens: number | null;
  temperature: number | null;
  topP: number | null;
  stop: string[];
  seed: number | null;
  ignoreEos: boolean;
  minTokens: number;
  includeStopStrInOutput: boolean;
  addGenerationPrompt: boolean;
  addSpecialTokens: boolean;
}

/** Schema-level checks (pydantic's, in vLLM): they run before the model is even looked up. */
export function parseChatCompletionRequest(body: unknown): ChatCompletionParams {
  const object = requireObjectBody(body);
  const fields = new FieldReader(object);
  const { turns, nonTextPart } = fields.messages('messages');
  const model = fields.string('model');
  const stream = fields.boolean('stream', false);
  const streamOptions = fields.streamOptions('stream_options');
  const maxTokens = fields.integer('max_tokens');
  const maxCompletionTokens = fields.integer('max_completion_tokens');
  const temperature = fields.number('temperature');
  const topP = fields.number('top_p');
  const stop = fields.stopStrings('stop');
  const seed = fields.integer('seed');
  const choices = fields.integer('n');
  const ignoreEos = fields.boolean('ignore_eos', false);
  const minTokens = fields.integer('min_tokens') ?? 0;
  const includeStopStrInOutput = fields.boolean('include_stop_str_in_output', false);
  const addGenerationPrompt = fields.boolean('add_generation_prompt', true);
  const addSpecialTokens = fields.boolean('add_special_tokens', false);
  if (fields.issues.length > 0) throw fields.fail();

  // vLLM's model validator tests the raw dict's truthiness, so `stream_options: {}` passes.
  const rawStreamOptions = object['stream_options'];
  if (!stream && isJsonObject(rawStreamOptions) && Object.keys(rawStreamOptions).length > 0) {
    fields.issues.push({
      type: 'value_error',
      loc: [],
      msg: 'Value error, Stream options can only be defined when `stream=True`. (parameter=stream_options)',
    });
    throw fields.fail('stream_options');
  }
  if (nonTextPart !== null) {
    throw badRequest(`The simulated model is text-only: content part type '${nonTextPart}' is not supported.`);
  }
  if (choices !== null && choices !== 1) {
    throw badRequest(`The simulator generates exactly one choice; got n=${choices}.`);
  }
  return {
    model,
    turns,
    stream,
    includeUsage: streamOptions?.includeUsage ?? false,
    continuousUsageStats: (streamOptions?.includeUsage ?? false) && (streamOptions?.continuousUsageStats ?? false),
    requestedMaxTokens: maxCompletionTokens || maxTokens,
    temperature,
    topP,
    stop,
    seed,
    ignoreEos,
    minTokens,
    includeStopStrInOutput,
    addGenerationPrompt,
    addSpecialTokens,
  };
}

/**
 * vLLM's `_validate_input` for completion-like requests: the prompt may use at most
 * max_model_len - 1 tokens, and prompt + max_tokens may not exceed max_model_len.
 * These are the texts of the vLLM releases that validate there; the newest ones validate in
 * the renderer and say "the model's context length is only N tokens" instead, which a client
 * matching /maximum context length is (\d+)/ would miss.
 */
export function checkContextLength(promptTokens: number, requestedMaxTokens: number | null, maxModelLen: number): void {
  if (promptTokens >= maxModelLen) {
    throw validationFailure(
      `This model's maximum context length is ${maxModelLen} tokens. However, your request has ` +
        `${promptTokens} input tokens. Please reduce the length of the input messages.`,
      'input_tokens',
      String(promptTokens),
    );
  }
  if (requestedMaxTokens !== null && promptTokens + requestedMaxTokens > maxModelLen) {
    throw validationFailure(
      `'max_tokens' or 'max_completion_tokens' is too large: ${requestedMaxTokens}. This model's maximum ` +
        `context length is ${maxModelLen} tokens and your request has ${promptTokens} input tokens ` +
        `(${requestedMaxTokens} > ${maxModelLen} - ${promptTokens}).`,
      'max_tokens',
      String(requestedMaxTokens),
    );
  }
}

/** SamplingParams._verify_args, in its order, for the parameters the simulator honours. */
export function checkSamplingParams(params: ChatCompletionParams, maxTokens: number): void {
  const { temperature, topP } = params;
  if (temperature !== null && temperature < 0) {
    throw validationFailure(
      `temperature must be non-negative, got ${pythonFloat(temperature)}.`,
      'temperature',
      pythonFloat(temperature),
    );
  }
  if (temperature !== null && temperature > 2) {
    throw validationFailure(
      `temperature must be in [0, 2], got ${pythonFloat(temperature)}.`,
      'temperature',
      pythonFloat(temperature),
    );
  }
  if (topP !== null && !(topP > 0 && topP <= 1)) {
    throw validationFailure(`top_p must be in (0, 1], got ${pythonFloat(topP)}.`, 'top_p', pythonFloat(topP));
  }
  if (maxTokens < 1) {
    throw validationFailure(`max_tokens must be at least 1, got ${maxTokens}.`, 'max_tokens', String(maxTokens));
  }
  if (params.minTokens < 0) {
    throw badRequest(`min_tokens must be greater than or equal to 0, got ${params.minTokens}.`);
  }
  if (params.minTokens > maxTokens) {
    throw badRequest(`min_tokens must be less than or equal to max_tokens=${maxTokens}, got ${params.minTokens}.`);
  }
  if (params.stop.some((stop) => stop.length === 0)) {
    throw badRequest('stop cannot contain an empty string.');
  }
}

export type TokenizeRequest =
  | { kind: 'chat'; model: string | null; turns: ChatTurn[]; addGenerationPrompt: boolean; addSpecialTokens: boolean; returnTokenStrs: boolean }
  | { kind: 'prompt'; model: string | null; prompt: string; addSpecialTokens: boolean; returnTokenStrs: boolean };

/** `/tokenize` takes either the chat form (`messages`) or the completion form (`prompt`). */
export function parseTokenizeRequest(body: unknown): TokenizeRequest {
  const object = requireObjectBody(body);
  const fields = new FieldReader(object);
  const model = fields.string('model');
  const returnTokenStrs = fields.boolean('return_token_strs', false);
  if (object['messages'] !== undefined) {
    const { turns, nonTextPart } = fields.messages('messages');
    const addGenerationPrompt = fields.boolean('add_generation_prompt', true);
    const addSpecialTokens = fields.boolean('add_special_tokens', false);
    if (fields.issues.length > 0) throw fields.fail();
    if (nonTextPart !== null) {
      throw badRequest(`The simulated model is text-only: content part type '${nonTextPart}' is not supported.`);
    }
    return { kind: 'chat', model, turns, addGenerationPrompt, addSpecialTokens, returnTokenStrs };
  }
  const prompt = fields.string('prompt');
  const addSpecialTokens = fields.boolean('add_special_tokens', true);
  if (!fields.has('prompt')) fields.issues.push({ type: 'missing', loc: ['prompt'], msg: 'Field required' });
  if (fields.issues.length > 0 || prompt === null) throw fields.fail();
  return { kind: 'prompt', model, prompt, addSpecialTokens, returnTokenStrs };
}
