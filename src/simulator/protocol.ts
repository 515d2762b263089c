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
      const toolCalls = this.toolCalls(message['tool_calls'], [key, index, 'tool_calls']);
      if (role === 'tool' && typeof message['tool_call_id'] !== 'string') {
        this.issues.push({ type: 'missing', loc: [key, index, 'tool_call_id'], msg: 'Field required' });
      }
      const content = message['content'];
      if (content === undefined || content === null) {
        turns.push({ role, content: '', toolCalls });
      } else if (typeof content === 'string') {
        turns.push({ role, content, toolCalls });
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
        turns.push({ role, content: texts.join('\n'), toolCalls });
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

  /** An assistant turn's `tool_calls`: `[{id, type: "function", function: {name, arguments}}]`. */
  private toolCalls(value: unknown, loc: ReadonlyArray<string | number>): ChatTurn['toolCalls'] {
    if (value === undefined || value === null) return [];
    if (!Array.isArray(value)) {
      this.issues.push({ type: 'list_type', loc, msg: 'Input should be a valid list' });
      return [];
    }
    const calls: { name: string; arguments: string }[] = [];
    value.forEach((call: unknown, index) => {
      const fn = isJsonObject(call) ? call['function'] : undefined;
      if (!isJsonObject(fn)) {
        this.issues.push({ type: 'missing', loc: [...loc, index, 'function'], msg: 'Field required' });
      } else if (typeof fn['name'] !== 'string' || typeof fn['arguments'] !== 'string') {
        const field = typeof fn['name'] !== 'string' ? 'name' : 'arguments';
        this.issues.push({ type: 'missing', loc: [...loc, index, 'function', field], msg: 'Field required' });
      } else {
        calls.push({ name: fn['name'], arguments: fn['arguments'] });
      }
    });
    return calls;
  }

  /** `tools`: `[{type: "function", function: {name, description?, parameters?}}]`, each also as the JSON the template lists. */
  tools(key: string): ToolParam[] | null {
    const value = this.body[key];
    if (value === undefined || value === null) return null;
    if (!Array.isArray(value)) {
      this.issues.push({ type: 'list_type', loc: [key], msg: 'Input should be a valid list' });
      return null;
    }
    const tools: ToolParam[] = [];
    value.forEach((tool: unknown, index) => {
      const fn = isJsonObject(tool) ? tool['function'] : undefined;
      if (!isJsonObject(fn)) {
        this.issues.push({ type: 'missing', loc: [key, index, 'function'], msg: 'Field required' });
      } else if (typeof fn['name'] !== 'string') {
        this.issues.push({ type: 'missing', loc: [key, index, 'function', 'name'], msg: 'Field required' });
      } else if (fn['parameters'] !== undefined && fn['parameters'] !== null && !isJsonObject(fn['parameters'])) {
        this.issues.push({ type: 'dict_type', loc: [key, index, 'function', 'parameters'], msg: 'Input should be a valid dictionary' });
      } else {
        const parameters = isJsonObject(fn['parameters']) ? fn['parameters'] : null;
        tools.push({ name: fn['name'], parameters, json: JSON.stringify(tool) });
      }
    });
    return tools;
  }

  object(key: string): JsonObject | null {
    const value = this.body[key];
    if (value === undefined || value === null) return null;
    if (isJsonObject(value)) return value;
    this.issues.push({ type: 'dict_type', loc: [key], msg: 'Input should be a valid dictionary' });
    return null;
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

/** One entry of `tools`. */
export interface ToolParam {
  name: string;
  parameters: JsonObject | null;
  /** The entry as sent, for the chat template to list. */
  json: string;
}

export type ToolChoice = 'none' | 'auto' | 'required' | { name: string };

/** `response_format`, as far as the simulator follows it. */
export type ResponseFormat = { type: 'text' } | { type: 'json_object' } | { type: 'json_schema'; schema: JsonObject };

/** What every generating endpoint (chat, completions) reads the same way. */
export interface SamplingFields {
  model: string | null;
  stream: boolean;
  includeUsage: boolean;
  continuousUsageStats: boolean;
  /** Choices per prompt. */
  n: number;
  temperature: number | null;
  topP: number | null;
  stop: string[];
  seed: number | null;
  ignoreEos: boolean;
  minTokens: number;
  includeStopStrInOutput: boolean;
  responseFormat: ResponseFormat;
  cacheSalt: string | null;
}

export interface ChatCompletionParams extends SamplingFields {
  turns: ChatTurn[];
  /** `max_completion_tokens or max_tokens`, Python's `or`: 0 and null fall through. */
  requestedMaxTokens: number | null;
  addGenerationPrompt: boolean;
  continueFinalMessage: boolean;
  addSpecialTokens: boolean;
  tools: ToolParam[];
  toolChoice: ToolChoice;
  /** Logprobs of each generated token, with this many alternatives; null: none. */
  topLogprobs: number | null;
  chatTemplateKwargs: JsonObject;
  reasoningEffort: string | null;
  includeReasoning: boolean;
}

/** vLLM's `max_logprobs` default. */
const MAX_LOGPROBS = 20;

/** A model validator's `VLLMValidationError`, raised inside pydantic: a schema error carrying its parameter. */
function validatorFailure(fields: FieldReader, message: string, parameter: string): ApiError {
  fields.issues.push({ type: 'value_error', loc: [], msg: `Value error, ${message} (parameter=${parameter})` });
  return fields.fail(parameter);
}

/** `check_tool_usage`: the tool_choice a request may have, given its tools. */
function toolChoiceOf(object: JsonObject, tools: ToolParam[] | null, fields: FieldReader): ToolChoice {
  if (Array.isArray(object['tools']) && object['tools'].length === 0) {
    throw validatorFailure(fields, '`tools` must not be an empty array. Either provide at least one tool or omit the field entirely.', 'tools');
  }
  const raw = object['tool_choice'] === undefined && tools !== null ? 'auto' : object['tool_choice'];
  if (raw === undefined || raw === null || raw === 'none') return 'none';
  if (tools === null) throw validatorFailure(fields, 'When using `tool_choice`, `tools` must be set.', 'tool_choice');
  if (raw === 'auto' || raw === 'required') return raw;
  if (!isJsonObject(raw)) {
    throw validatorFailure(fields, `Invalid value for \`tool_choice\`: ${String(raw)}! Only named tools, "none", "auto" or "required" are supported.`, 'tool_choice');
  }
  const usage = 'Correct usage: `{"type": "function", "function": {"name": "my_function"}}`';
  const fn = raw['function'];
  if (!isJsonObject(fn)) throw validatorFailure(fields, `Invalid value for \`function\`: \`${String(fn)}\` in \`tool_choice\`! ${usage}`, 'tool_choice.function');
  if (typeof fn['name'] !== 'string' || fn['name'] === '') {
    throw validatorFailure(fields, `Invalid \`name\` in \`function\`: \`${String(fn['name'])}\` in \`tool_choice\`! ${usage}`, 'tool_choice.function.name');
  }
  const name = fn['name'];
  if (!tools.some((tool) => tool.name === name)) {
    throw validatorFailure(fields, 'The tool specified in `tool_choice` does not match any of the specified `tools`', 'tool_choice');
  }
  return { name };
}

function responseFormatOf(object: JsonObject, fields: FieldReader): ResponseFormat {
  const raw = object['response_format'];
  if (raw === undefined || raw === null) return { type: 'text' };
  const type = isJsonObject(raw) ? raw['type'] : undefined;
  if (type === 'text' || type === 'json_object') return { type };
  if (type === 'json_schema' && isJsonObject(raw)) {
    const jsonSchema = raw['json_schema'];
    if (!isJsonObject(jsonSchema)) {
      throw validatorFailure(fields, "When response_format type is 'json_schema', the 'json_schema' field must be provided.", 'response_format');
    }
    return { type: 'json_schema', schema: isJsonObject(jsonSchema['schema']) ? jsonSchema['schema'] : { type: 'object' } };
  }
  fields.issues.push({ type: 'literal_error', loc: ['response_format', 'type'], msg: "Input should be 'text', 'json_object' or 'json_schema'" });
  throw fields.fail();
}

/** `validate_cache_salt`. */
function cacheSaltOf(object: JsonObject, fields: FieldReader): string | null {
  const salt = object['cache_salt'];
  if (salt === undefined || salt === null) return null;
  if (typeof salt !== 'string' || salt === '') {
    throw validatorFailure(fields, "Parameter 'cache_salt' must be a non-empty string if provided.", 'cache_salt');
  }
  if (salt.length > 128 || /[@/\\\0]/.test(salt)) {
    throw validatorFailure(fields, "Parameter 'cache_salt' must be at most 128 characters and must not contain '@', '/', '\\\\', or NUL.", 'cache_salt');
  }
  return salt;
}

/** `stream_options` without `stream`: vLLM's model validator tests the raw dict's truthiness, so `{}` passes. */
function checkStreamOptions(object: JsonObject, stream: boolean, fields: FieldReader): void {
  const raw = object['stream_options'];
  if (!stream && isJsonObject(raw) && Object.keys(raw).length > 0) {
    throw validatorFailure(fields, 'Stream options can only be defined when `stream=True`.', 'stream_options');
  }
}

/** The fields chat and completions share, read in pydantic's lax way. */
function samplingFields(fields: FieldReader): SamplingFields {
  const stream = fields.boolean('stream', false);
  const streamOptions = fields.streamOptions('stream_options');
  return {
    model: fields.string('model'),
    stream,
    includeUsage: streamOptions?.includeUsage ?? false,
    continuousUsageStats: (streamOptions?.includeUsage ?? false) && (streamOptions?.continuousUsageStats ?? false),
    n: fields.integer('n') ?? 1,
    temperature: fields.number('temperature'),
    topP: fields.number('top_p'),
    stop: fields.stopStrings('stop'),
    seed: fields.integer('seed'),
    ignoreEos: fields.boolean('ignore_eos', false),
    minTokens: fields.integer('min_tokens') ?? 0,
    includeStopStrInOutput: fields.boolean('include_stop_str_in_output', false),
    responseFormat: { type: 'text' },
    cacheSalt: null,
  };
}

/** Schema-level checks (pydantic's, in vLLM): they run before the model is even looked up. */
export function parseChatCompletionRequest(body: unknown): ChatCompletionParams {
  const object = requireObjectBody(body);
  const fields = new FieldReader(object);
  const { turns, nonTextPart } = fields.messages('messages');
  const sampling = samplingFields(fields);
  const maxTokens = fields.integer('max_tokens');
  const maxCompletionTokens = fields.integer('max_completion_tokens');
  const addGenerationPrompt = fields.boolean('add_generation_prompt', true);
  const continueFinalMessage = fields.boolean('continue_final_message', false);
  const addSpecialTokens = fields.boolean('add_special_tokens', false);
  const tools = fields.tools('tools');
  const logprobs = fields.boolean('logprobs', false);
  const topLogprobs = fields.integer('top_logprobs') ?? 0;
  const chatTemplateKwargs = fields.object('chat_template_kwargs') ?? {};
  const reasoningEffort = fields.string('reasoning_effort');
  const includeReasoning = fields.boolean('include_reasoning', true);
  if (fields.issues.length > 0) throw fields.fail();

  checkStreamOptions(object, sampling.stream, fields);
  if (topLogprobs < 0 && topLogprobs !== -1) throw validatorFailure(fields, '`top_logprobs` must be a positive value or -1.', 'top_logprobs');
  if (topLogprobs !== 0 && !logprobs) throw validatorFailure(fields, 'when using `top_logprobs`, `logprobs` must be set to true.', 'top_logprobs');
  const toolChoice = toolChoiceOf(object, tools, fields);
  if (continueFinalMessage && addGenerationPrompt) {
    throw validatorFailure(fields, 'Cannot set both `continue_final_message` and `add_generation_prompt` to True.', 'continue_final_message');
  }
  const responseFormat = responseFormatOf(object, fields);
  const cacheSalt = cacheSaltOf(object, fields);
  if (nonTextPart !== null) {
    throw badRequest(`The simulated model is text-only: content part type '${nonTextPart}' is not supported.`);
  }
  return {
    ...sampling,
    turns,
    requestedMaxTokens: maxCompletionTokens || maxTokens,
    addGenerationPrompt,
    continueFinalMessage,
    addSpecialTokens,
    tools: tools ?? [],
    toolChoice,
    topLogprobs: logprobs ? topLogprobs : null,
    chatTemplateKwargs,
    reasoningEffort,
    includeReasoning,
    responseFormat,
    cacheSalt,
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
export function checkSamplingParams(params: SamplingFields, maxTokens: number, logprobs: number | null): void {
  const { temperature, topP } = params;
  if (params.n < 1) throw validationFailure(`n must be at least 1, got ${params.n}.`, 'n', String(params.n));
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
  if (logprobs !== null && logprobs > MAX_LOGPROBS) {
    throw badRequest(`Requested sample logprobs of ${logprobs}, which is greater than max allowed: ${MAX_LOGPROBS}`);
  }
}

export type TokenizeRequest =
  | {
      kind: 'chat';
      model: string | null;
      turns: ChatTurn[];
      tools: ToolParam[];
      addGenerationPrompt: boolean;
      continueFinalMessage: boolean;
      addSpecialTokens: boolean;
      chatTemplateKwargs: JsonObject;
      returnTokenStrs: boolean;
    }
  | { kind: 'prompt'; model: string | null; prompt: string; addSpecialTokens: boolean; returnTokenStrs: boolean };

/**
 * `/tokenize` takes either the chat form (`messages`, with the template's inputs: `tools`,
 * `chat_template_kwargs`, `add_generation_prompt`, `continue_final_message`) or the completion
 * form (`prompt`).
 */
export function parseTokenizeRequest(body: unknown): TokenizeRequest {
  const object = requireObjectBody(body);
  const fields = new FieldReader(object);
  const model = fields.string('model');
  const returnTokenStrs = fields.boolean('return_token_strs', false);
  if (object['messages'] !== undefined) {
    const { turns, nonTextPart } = fields.messages('messages');
    const tools = fields.tools('tools') ?? [];
    const addGenerationPrompt = fields.boolean('add_generation_prompt', true);
    const continueFinalMessage = fields.boolean('continue_final_message', false);
    const addSpecialTokens = fields.boolean('add_special_tokens', false);
    const chatTemplateKwargs = fields.object('chat_template_kwargs') ?? {};
    if (fields.issues.length > 0) throw fields.fail();
    if (continueFinalMessage && addGenerationPrompt) {
      throw validatorFailure(fields, 'Cannot set both `continue_final_message` and `add_generation_prompt` to True.', 'continue_final_message');
    }
    if (nonTextPart !== null) {
      throw badRequest(`The simulated model is text-only: content part type '${nonTextPart}' is not supported.`);
    }
    return { kind: 'chat', model, turns, tools, addGenerationPrompt, continueFinalMessage, addSpecialTokens, chatTemplateKwargs, returnTokenStrs };
  }
  const prompt = fields.string('prompt');
  const addSpecialTokens = fields.boolean('add_special_tokens', true);
  if (!fields.has('prompt')) fields.issues.push({ type: 'missing', loc: ['prompt'], msg: 'Field required' });
  if (fields.issues.length > 0 || prompt === null) throw fields.fail();
  return { kind: 'prompt', model, prompt, addSpecialTokens, returnTokenStrs };
}

/** One prompt of a completion or an embedding: text, or token ids as the client tokenized them. */
export type PromptInput = { text: string } | { tokenIds: number[] };

/** `prompt` of /v1/completions and `input` of /v1/embeddings: a string, strings, token ids, or lists of them. */
function promptInputs(object: JsonObject, key: string, fields: FieldReader): PromptInput[] {
  const value = object[key];
  const isTokenIds = (item: unknown): item is number[] =>
    Array.isArray(item) && item.every((id) => typeof id === 'number' && Number.isInteger(id) && id >= 0);
  if (typeof value === 'string') return [{ text: value }];
  if (Array.isArray(value) && value.length > 0) {
    if (value.every((item): item is string => typeof item === 'string')) return value.map((text) => ({ text }));
    if (isTokenIds(value)) return [{ tokenIds: value }];
    if (value.every(isTokenIds)) return value.map((tokenIds) => ({ tokenIds }));
  }
  if (value === undefined || value === null) fields.issues.push({ type: 'missing', loc: [key], msg: 'Field required' });
  else if (Array.isArray(value) && value.length === 0) throw badRequest(`${key} cannot be empty.`);
  else fields.issues.push({ type: 'string_type', loc: [key], msg: 'Input should be a valid string' });
  return [];
}

export interface CompletionParams extends SamplingFields {
  prompts: PromptInput[];
  /** vLLM's default is 16; an explicit null leaves the rest of the context. */
  requestedMaxTokens: number | null;
  echo: boolean;
  /** Alternatives per token in `logprobs`; null: none. */
  logprobs: number | null;
  addSpecialTokens: boolean;
}

const DEFAULT_COMPLETION_MAX_TOKENS = 16;

export function parseCompletionRequest(body: unknown): CompletionParams {
  const object = requireObjectBody(body);
  const fields = new FieldReader(object);
  const prompts = promptInputs(object, 'prompt', fields);
  const sampling = samplingFields(fields);
  const maxTokens = object['max_tokens'] === undefined ? DEFAULT_COMPLETION_MAX_TOKENS : fields.integer('max_tokens');
  const echo = fields.boolean('echo', false);
  const logprobs = fields.integer('logprobs');
  const addSpecialTokens = fields.boolean('add_special_tokens', true);
  const suffix = fields.string('suffix');
  if (fields.issues.length > 0) throw fields.fail();
  checkStreamOptions(object, sampling.stream, fields);
  if (logprobs !== null && logprobs < 0) throw validatorFailure(fields, '`logprobs` must be a positive value.', 'logprobs');
  if (suffix !== null) throw badRequest('suffix is not currently supported');
  return {
    ...sampling,
    prompts,
    requestedMaxTokens: maxTokens,
    echo,
    logprobs,
    addSpecialTokens,
    responseFormat: responseFormatOf(object, fields),
    cacheSalt: cacheSaltOf(object, fields),
  };
}

export interface EmbeddingParams {
  model: string | null;
  inputs: PromptInput[];
  encodingFormat: 'float' | 'base64';
  dimensions: number | null;
  addSpecialTokens: boolean;
}

export function parseEmbeddingRequest(body: unknown): EmbeddingParams {
  const object = requireObjectBody(body);
  const fields = new FieldReader(object);
  const inputs = promptInputs(object, 'input', fields);
  const model = fields.string('model');
  const encodingFormat = fields.string('encoding_format') ?? 'float';
  const dimensions = fields.integer('dimensions');
  const addSpecialTokens = fields.boolean('add_special_tokens', true);
  if (encodingFormat !== 'float' && encodingFormat !== 'base64') {
    fields.issues.push({ type: 'literal_error', loc: ['encoding_format'], msg: "Input should be 'float' or 'base64'" });
  }
  if (fields.issues.length > 0) throw fields.fail();
  if (dimensions !== null && dimensions < 1) throw badRequest('Dimensions must be greater than 0');
  return { model, inputs, encodingFormat: encodingFormat === 'base64' ? 'base64' : 'float', dimensions, addSpecialTokens };
}
