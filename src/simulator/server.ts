import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

import { ChoiceGenerator, type AnswerForm, type ChoiceStep, type ToolDefinition } from './answer';
import { EMBEDDING_DIMENSIONS, base64Floats, embed } from './embeddings';
import { generationSeed } from './generation';
import { PrefixCache } from './prefix-cache';
import {
  ApiError,
  badRequest,
  checkContextLength,
  checkSamplingParams,
  internalServerError,
  malformedJson,
  modelNotFound,
  parseChatCompletionRequest,
  parseCompletionRequest,
  parseEmbeddingRequest,
  parseTokenizeRequest,
  type ChatCompletionParams,
  type PromptInput,
  type ResponseFormat,
  type SamplingFields,
} from './protocol';
import { LogprobMaker, StreamFormatter, WholeAnswer, usageInfo, type Sequence } from './responses';
import { tokenizeChat, tokenizePrompt, type ChatPrompt, type ChatTurn, type TokenizedText } from './tokenizer';

export interface SimulatorOptions {
  host?: string;
  port?: number;
  /** Served model names; like vLLM's --served-model-name, all name one engine. */
  models?: string[];
  /** LoRA adapters on the base model, listed as vLLM lists `--lora-modules`: their own card, `parent` the base. */
  loras?: string[];
  /**
   * Reasoning models (their own engines, served with `--reasoning-parser`): they think before
   * they answer, and the thinking comes back as `reasoning`.
   */
  reasoningModels?: string[];
  /** Embedding models (pooling engines): they serve /v1/embeddings and nothing that generates. */
  embeddingModels?: string[];
  /**
   * Models (servers of their own) whose chat template wraps each non-empty content in
   * <content>…</content>: a template larger than a count of empty turns shows.
   */
  taggedContentModels?: string[];
  maxModelLen?: number;
  /** When set, /v1/* needs `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  timeToFirstTokenMs?: number;
  interTokenLatencyMs?: number;
  /** Uniform +/- jitter added to every non-zero delay. */
  jitterMs?: number;
  /** false: /tokenize answers 404, like a server without it. */
  tokenizeEndpoint?: boolean;
  /** `--enable-auto-tool-choice --tool-call-parser hermes`; false: tool_choice "auto" is refused, as vLLM does without them. */
  autoToolChoice?: boolean;
  /** `--enable-prompt-tokens-details`: usage reports `prompt_tokens_details.cached_tokens`. */
  enablePromptTokensDetails?: boolean;
}

export interface SimulatorStats {
  /** Chat requests that passed validation and started generation. */
  chatRequests: number;
  /** The same for /v1/completions and /v1/embeddings. */
  completionRequests: number;
  embeddingRequests: number;
  completed: number;
  /** Ended by the client going away (vLLM aborts the engine request). */
  aborted: number;
  /** Ended by an injected fault. */
  failed: number;
  /** Prompt tokens of every started request. */
  promptTokens: number;
  /** Of those, the ones the prefix cache held. */
  cachedTokens: number;
  /** Every token generated, whether or not the request completed. */
  completionTokens: number;
  /** /tokenize calls answered, and the tokens they counted. */
  tokenizeRequests: number;
  tokenizedTokens: number;
}

export interface LatencySettings {
  timeToFirstTokenMs?: number;
  interTokenLatencyMs?: number;
  jitterMs?: number;
}

export interface Simulator {
  /** Base URL ending in /v1, for an OpenAI client's baseURL. */
  url: string;
  /** Scheme, host and port, for /tokenize and /health. */
  origin: string;
  stats: SimulatorStats;
  resetStats(): void;
  /** Applies to every token produced after the call, in-flight requests included. */
  setLatency(latency: LatencySettings): void;
  /**
   * A fault spec (see index.ts) for every later request that names none itself, or null to
   * stop: for driving faults through a client, such as the gateway, that forwards no headers.
   */
  setFault(spec: string | null): void;
  /** Empties the prefix cache, as restarting vLLM would. */
  clearPrefixCache(): void;
  stop(): Promise<void>;
}

type Fault = 'fail-before' | 'fail-mid' | 'hang' | 'no-usage';

interface FaultPlan {
  fault: Fault | null;
  /** Tokens generated before fail-mid fails or hang hangs. */
  after: number;
}

const DEFAULT_FAULT_AFTER: Record<Fault, number> = { 'fail-before': 0, 'fail-mid': 3, hang: 0, 'no-usage': 0 };
const FAULT_SPEC = /^(fail-before|fail-mid|hang|no-usage)(?::(\d+))?$/;

function parseFaultSpec(spec: string): FaultPlan | null {
  const match = FAULT_SPEC.exec(spec);
  if (match === null) return null;
  const fault = match[1] as Fault;
  return { fault, after: match[2] === undefined ? DEFAULT_FAULT_AFTER[fault] : Number(match[2]) };
}

const JSON_HEADERS = { 'content-type': 'application/json' } as const;
const SSE_HEADERS = { 'content-type': 'text/event-stream; charset=utf-8' } as const;
const STREAM_DONE = 'data: [DONE]\n\n';
/** Zero-latency generation yields this often, so that I/O (a client's disconnect) is seen. */
const TOKENS_BETWEEN_YIELDS = 64;
/** Blocks of 16 tokens the prefix cache holds: 128k tokens' worth. */
const PREFIX_CACHE_BLOCKS = 8192;

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const payload = JSON.stringify(body);
  res.writeHead(status, { ...JSON_HEADERS, 'content-length': Buffer.byteLength(payload) });
  res.end(payload);
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

function unixSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

/** vLLM's `random_uuid()`: uuid4 as 32 hex digits. */
function randomId(): string {
  return randomUUID().replace(/-/g, '');
}

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Watches for the client going away and lets generation wait without missing it. */
class ClientConnection {
  closed = false;
  private wake: (() => void) | null = null;

  constructor(private readonly res: ServerResponse) {
    res.once('close', () => {
      if (res.writableFinished) return;
      this.closed = true;
      this.wake?.();
    });
  }

  sleep(ms: number): Promise<void> {
    return this.park((resume) => {
      const timer = setTimeout(resume, ms);
      return () => clearTimeout(timer);
    });
  }

  drain(): Promise<void> {
    return this.park((resume) => {
      this.res.once('drain', resume);
      return () => this.res.off('drain', resume);
    });
  }

  untilClosed(): Promise<void> {
    return this.park(() => () => undefined);
  }

  /** Waits until `arm`'s event fires or the client goes away, whichever comes first. */
  private park(arm: (resume: () => void) => () => void): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      let disarm = (): void => undefined;
      const resume = (): void => {
        this.wake = null;
        disarm();
        resolve();
      };
      this.wake = resume;
      disarm = arm(resume);
    });
  }
}

type Outcome = 'finished' | 'aborted' | 'failed';

/** What kind of engine a served name runs on. */
type Engine = 'generate' | 'reason' | 'embed';

/** A validated generating request (chat or completions) on its way through the engine. */
interface Run {
  faults: FaultPlan;
  promptTokens: number;
  cachedTokens: number;
  sequences: Sequence[];
  connection: ClientConnection;
  id: string;
  created: number;
  /** What the answer names: the LoRA or dedicated engine asked for, else the first served name (vLLM's model_name()). */
  modelName: string;
}

const EMPTY_STATS: SimulatorStats = {
  chatRequests: 0,
  completionRequests: 0,
  embeddingRequests: 0,
  completed: 0,
  aborted: 0,
  failed: 0,
  promptTokens: 0,
  cachedTokens: 0,
  completionTokens: 0,
  tokenizeRequests: 0,
  tokenizedTokens: 0,
};

class VllmSimulator implements Simulator {
  private defaultFault: FaultPlan | null = null;
  readonly stats: SimulatorStats = { ...EMPTY_STATS };
  url = '';
  origin = '';
  private readonly server: Server;
  private readonly models: readonly string[];
  private readonly loras: readonly string[];
  private readonly reasoningModels: readonly string[];
  private readonly taggedContentModels: readonly string[];
  private readonly embeddingModels: readonly string[];
  private readonly maxModelLen: number;
  private readonly apiKeyHash: Buffer | null;
  private readonly tokenizeEndpoint: boolean;
  private readonly autoToolChoice: boolean;
  private readonly promptTokensDetails: boolean;
  private readonly prefixCache = new PrefixCache(PREFIX_CACHE_BLOCKS);
  private readonly latency: Required<LatencySettings>;
  private stopping: Promise<void> | null = null;

  constructor(options: SimulatorOptions) {
    this.models = options.models !== undefined && options.models.length > 0 ? [...options.models] : ['sim-llama-3-8b'];
    this.loras = options.loras ?? [];
    this.reasoningModels = options.reasoningModels ?? [];
    this.taggedContentModels = options.taggedContentModels ?? [];
    this.embeddingModels = options.embeddingModels ?? [];
    this.maxModelLen = options.maxModelLen ?? 4096;
    this.apiKeyHash = options.apiKey === undefined ? null : sha256(options.apiKey);
    this.tokenizeEndpoint = options.tokenizeEndpoint ?? true;
    this.autoToolChoice = options.autoToolChoice ?? true;
    this.promptTokensDetails = options.enablePromptTokensDetails ?? false;
    this.latency = {
      timeToFirstTokenMs: options.timeToFirstTokenMs ?? 0,
      interTokenLatencyMs: options.interTokenLatencyMs ?? 0,
      jitterMs: options.jitterMs ?? 0,
    };
    this.server = createServer({ noDelay: true }, (req, res) => {
      void this.handle(req, res);
    });
  }

  async listen(host: string, port: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const address = this.server.address() as AddressInfo;
    const hostPart = address.address.includes(':') ? `[${address.address}]` : address.address;
    this.origin = `http://${hostPart}:${address.port}`;
    this.url = `${this.origin}/v1`;
  }

  setFault(spec: string | null): void {
    if (spec === null) {
      this.defaultFault = null;
      return;
    }
    const parsed = parseFaultSpec(spec);
    if (parsed === null) throw new Error(`unknown fault spec '${spec}'`);
    this.defaultFault = parsed;
  }

  resetStats(): void {
    Object.assign(this.stats, EMPTY_STATS);
  }

  clearPrefixCache(): void {
    this.prefixCache.clear();
  }

  setLatency(latency: LatencySettings): void {
    if (latency.timeToFirstTokenMs !== undefined) this.latency.timeToFirstTokenMs = latency.timeToFirstTokenMs;
    if (latency.interTokenLatencyMs !== undefined) this.latency.interTokenLatencyMs = latency.interTokenLatencyMs;
    if (latency.jitterMs !== undefined) this.latency.jitterMs = latency.jitterMs;
  }

  stop(): Promise<void> {
    this.stopping ??= new Promise<void>((resolve, reject) => {
      this.server.close((error) => (error === undefined ? resolve() : reject(error)));
      // Hung and streaming requests would otherwise keep close() waiting forever.
      this.server.closeAllConnections();
    });
    return this.stopping;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      await this.route(req, res);
    } catch (error) {
      if (res.headersSent) {
        res.destroy();
      } else if (error instanceof ApiError) {
        sendJson(res, error.status, error.body);
      } else {
        sendJson(res, 500, internalServerError().body);
      }
    }
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const rawUrl = req.url ?? '/';
    const queryAt = rawUrl.indexOf('?');
    const path = queryAt === -1 ? rawUrl : rawUrl.slice(0, queryAt);
    // vLLM's AuthenticationMiddleware guards only paths under /v1, before routing.
    if (this.apiKeyHash !== null && path.startsWith('/v1') && !this.authorized(req)) {
      sendJson(res, 401, { error: 'Unauthorized' });
      return;
    }
    if (path === '/v1/chat/completions') {
      if (!this.allowMethod(req, res, 'POST')) return;
      await this.chatCompletion(req, res, await this.readJson(req));
    } else if (path === '/v1/completions') {
      if (!this.allowMethod(req, res, 'POST')) return;
      await this.completion(req, res, await this.readJson(req));
    } else if (path === '/v1/embeddings') {
      if (!this.allowMethod(req, res, 'POST')) return;
      await this.embeddings(req, res, await this.readJson(req));
    } else if (path === '/v1/models') {
      if (!this.allowMethod(req, res, 'GET')) return;
      sendJson(res, 200, this.modelList());
    } else if (path === '/health') {
      if (!this.allowMethod(req, res, 'GET')) return;
      res.writeHead(200, { 'content-length': 0 });
      res.end();
    } else if (path === '/tokenize' && this.tokenizeEndpoint) {
      if (!this.allowMethod(req, res, 'POST')) return;
      this.tokenize(res, await this.readJson(req));
    } else {
      // FastAPI's own answer for a route that does not exist.
      sendJson(res, 404, { detail: 'Not Found' });
    }
  }

  private allowMethod(req: IncomingMessage, res: ServerResponse, method: string): boolean {
    if (req.method === method) return true;
    res.setHeader('allow', method);
    sendJson(res, 405, { detail: 'Method Not Allowed' });
    return false;
  }

  private authorized(req: IncomingMessage): boolean {
    const header = req.headers.authorization;
    if (this.apiKeyHash === null || header === undefined) return false;
    const space = header.indexOf(' ');
    const scheme = space === -1 ? header : header.slice(0, space);
    if (scheme.toLowerCase() !== 'bearer') return false;
    return timingSafeEqual(sha256(space === -1 ? '' : header.slice(space + 1)), this.apiKeyHash);
  }

  private async readJson(req: IncomingMessage): Promise<unknown> {
    const text = await readBody(req);
    try {
      return JSON.parse(text) as unknown;
    } catch (error) {
      throw malformedJson(error instanceof Error ? error.message : String(error));
    }
  }

  private modelList(): unknown {
    const created = unixSeconds();
    const card = (id: string, root: string, parent: string | null, maxModelLen: number | null): unknown => ({
      id,
      object: 'model',
      created,
      owned_by: 'vllm',
      root,
      parent,
      max_model_len: maxModelLen,
      permission: [
        {
          id: `modelperm-${randomId()}`,
          object: 'model_permission',
          created,
          allow_create_engine: false,
          allow_sampling: true,
          allow_logprobs: true,
          allow_search_indices: false,
          allow_view: true,
          allow_fine_tuning: false,
          organization: '*',
          group: null,
          is_blocking: false,
        },
      ],
    });
    const base = this.models[0];
    return {
      object: 'list',
      data: [
        ...this.models.map((id) => card(id, base, null, this.maxModelLen)),
        // vLLM's show_available_models: a LoRA card's root is the adapter's path and its max_model_len null.
        ...this.loras.map((id) => card(id, `/adapters/${id}`, base, null)),
        // Reasoning, tagged-content and embedding models stand for servers of their own.
        ...[...this.reasoningModels, ...this.taggedContentModels, ...this.embeddingModels].map((id) => card(id, id, null, this.maxModelLen)),
      ],
    };
  }

  /** Resolves `model` (fault suffix allowed, see index.ts) or answers 404 like vLLM; null: the default model. */
  private resolveModel(model: string | null): { name: string | null; faults: FaultPlan } {
    if (model === null || this.serves(model)) return { name: model, faults: { fault: null, after: 0 } };
    const at = model.lastIndexOf('@');
    if (at > 0 && this.serves(model.slice(0, at))) {
      const faults = parseFaultSpec(model.slice(at + 1));
      if (faults !== null) return { name: model.slice(0, at), faults };
    }
    throw modelNotFound(model);
  }

  private engineOf(name: string | null): Engine {
    if (name !== null && this.reasoningModels.includes(name)) return 'reason';
    if (name !== null && this.embeddingModels.includes(name)) return 'embed';
    return 'generate';
  }

  /** LoRAs and dedicated engines answer in their own name; the base engine's aliases in its first name. */
  private answeringName(name: string | null): string {
    if (name === null) return this.models[0];
    return this.models.includes(name) ? this.models[0] : name;
  }

  private serves(model: string): boolean {
    return [this.models, this.loras, this.reasoningModels, this.taggedContentModels, this.embeddingModels].some((names) => names.includes(model));
  }

  private resolveFaults(req: IncomingMessage, fromModel: FaultPlan): FaultPlan {
    const header = req.headers['x-sim-fault'];
    const afterHeader = req.headers['x-sim-fault-after'];
    let faults = fromModel.fault === null && this.defaultFault !== null ? this.defaultFault : fromModel;
    if (typeof header === 'string') {
      const parsed = parseFaultSpec(header.trim());
      if (parsed === null) throw badRequest(`Unknown x-sim-fault '${header}'.`);
      faults = parsed;
    }
    if (typeof afterHeader === 'string') {
      if (!/^\d+$/.test(afterHeader.trim())) throw badRequest(`x-sim-fault-after must be a whole number, got '${afterHeader}'.`);
      faults = { ...faults, after: Number(afterHeader.trim()) };
    }
    return faults;
  }

  /** Only engines that generate serve chat and completions, and only pooling ones embeddings. */
  private requireEngine(engine: Engine, api: 'Chat Completions' | 'Completions' | 'Embeddings'): void {
    if ((engine === 'embed') !== (api === 'Embeddings')) throw badRequest(`The model does not support ${api} API`);
  }

  /**
   * The prompt as `name`'s template renders it; `thinkingSkipped`: a reasoning model told not to
   * think closes its generation prompt with an empty think block.
   */
  private chatPrompt(
    name: string | null,
    params: { turns: ChatTurn[]; tools: { json: string }[]; addGenerationPrompt: boolean; continueFinalMessage: boolean; addSpecialTokens: boolean },
    thinkingSkipped: boolean,
  ): ChatPrompt {
    return {
      tagsContent: name !== null && this.taggedContentModels.includes(name),
      turns: params.turns,
      tools: params.tools.map((tool) => tool.json),
      addGenerationPrompt: params.addGenerationPrompt,
      continueFinalMessage: params.continueFinalMessage,
      addSpecialTokens: params.addSpecialTokens,
      thinkingSkipped,
    };
  }

  private tokenize(res: ServerResponse, body: unknown): void {
    const params = parseTokenizeRequest(body);
    const { name } = this.resolveModel(params.model);
    let tokens: TokenizedText;
    if (params.kind === 'chat') {
      // /tokenize takes no reasoning_effort: only the kwargs can turn thinking off here.
      const thinkingSkipped = this.engineOf(name) === 'reason' && params.chatTemplateKwargs['enable_thinking'] === false;
      tokens = tokenizeChat(this.chatPrompt(name, params, thinkingSkipped));
    } else {
      tokens = tokenizePrompt(params.prompt, params.addSpecialTokens);
    }
    this.stats.tokenizeRequests++;
    this.stats.tokenizedTokens += tokens.ids.length;
    sendJson(res, 200, {
      count: tokens.ids.length,
      max_model_len: this.maxModelLen,
      tokens: tokens.ids,
      token_strs: params.returnTokenStrs ? tokens.pieces : null,
    });
  }

  private async chatCompletion(req: IncomingMessage, res: ServerResponse, body: unknown): Promise<void> {
    const params = parseChatCompletionRequest(body);
    const { name, faults: fromModel } = this.resolveModel(params.model);
    const faults = this.resolveFaults(req, fromModel);
    const engine = this.engineOf(name);
    this.requireEngine(engine, 'Chat Completions');
    const reasoning = engine === 'reason';
    // vLLM's build_chat_params: reasoning_effort "none" turns thinking off unless the kwargs say otherwise.
    const enableThinking = params.chatTemplateKwargs['enable_thinking'];
    const thinks = reasoning && (enableThinking === undefined ? params.reasoningEffort !== 'none' : enableThinking !== false);
    const prompt = tokenizeChat(this.chatPrompt(name, params, reasoning && !thinks));
    const promptTokens = prompt.ids.length;
    checkContextLength(promptTokens, params.requestedMaxTokens, this.maxModelLen);
    const maxTokens = params.requestedMaxTokens ?? this.maxModelLen - promptTokens;
    checkSamplingParams(params, maxTokens, params.topLogprobs);
    if (params.toolChoice === 'auto' && !this.autoToolChoice) {
      throw badRequest('"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set');
    }

    this.stats.chatRequests++;
    const form = answerForm(params);
    const fingerprint = promptFingerprint(params.turns);
    const run = this.startRun(req, res, 'chatcmpl', faults, name, [prompt.ids], params.cacheSalt, (index) => ({
      index,
      generator: new ChoiceGenerator({ ...generationPlan(params, maxTokens, fingerprint, index), thinks, form }),
      logprobs: params.topLogprobs === null ? null : new LogprobMaker(generationSeed(params.seed, fingerprint, index), Math.max(0, Math.min(params.topLogprobs, 20))),
      echo: '',
    }), params.n);
    const role = params.addGenerationPrompt ? 'assistant' : (params.turns.at(-1)?.role ?? 'assistant');
    const parsed = reasoning || (params.tools.length > 0 && params.toolChoice !== 'none');
    const outcome = params.stream
      ? await this.streamRun(run, res, 'chat', params, { parsed, includeReasoning: params.includeReasoning, role })
      : await this.respondWhole(run, res, (answer) => ({
          id: run.id,
          object: 'chat.completion',
          created: run.created,
          model: run.modelName,
          choices: run.sequences.map((sequence) => answer.chatChoice(sequence, role, params.includeReasoning)),
          service_tier: null,
          system_fingerprint: null,
          usage: usageInfo(this.usageOf(run), 'whole'),
          prompt_logprobs: null,
          prompt_token_ids: null,
          kv_transfer_params: null,
        }));
    this.stats[outcome === 'finished' ? 'completed' : outcome]++;
  }

  private async completion(req: IncomingMessage, res: ServerResponse, body: unknown): Promise<void> {
    const params = parseCompletionRequest(body);
    const { name, faults: fromModel } = this.resolveModel(params.model);
    const faults = this.resolveFaults(req, fromModel);
    this.requireEngine(this.engineOf(name), 'Completions');
    const prompts = params.prompts.map((input) => promptTokenIds(input, params.addSpecialTokens));
    const longest = Math.max(...prompts.map((ids) => ids.length));
    for (const ids of prompts) checkContextLength(ids.length, params.requestedMaxTokens, this.maxModelLen);
    const maxTokens = params.requestedMaxTokens ?? this.maxModelLen - longest;
    checkSamplingParams(params, maxTokens, params.logprobs);

    this.stats.completionRequests++;
    const form: AnswerForm = formatForm(params.responseFormat);
    const run = this.startRun(req, res, 'cmpl', faults, name, prompts, params.cacheSalt, (index) => {
      const input = params.prompts[Math.floor(index / params.n)];
      const fingerprint = 'text' in input ? input.text : input.tokenIds.join(',');
      const choice = index % params.n;
      return {
        index,
        generator: new ChoiceGenerator({ ...generationPlan(params, maxTokens, fingerprint, choice), thinks: false, form }),
        logprobs: params.logprobs === null ? null : new LogprobMaker(generationSeed(params.seed, fingerprint, choice), Math.max(1, params.logprobs)),
        // Token-id prompts have no text to echo here: the simulator's ids do not decode.
        echo: params.echo && 'text' in input ? input.text : '',
      };
    }, params.n * params.prompts.length);
    const outcome = params.stream
      ? await this.streamRun(run, res, 'completions', params, { parsed: false, includeReasoning: false, role: '' })
      : await this.respondWhole(run, res, (answer) => ({
          id: run.id,
          object: 'text_completion',
          created: run.created,
          model: run.modelName,
          choices: run.sequences.map((sequence) => answer.completionChoice(sequence)),
          service_tier: null,
          system_fingerprint: null,
          usage: usageInfo(this.usageOf(run), 'whole'),
          kv_transfer_params: null,
        }));
    this.stats[outcome === 'finished' ? 'completed' : outcome]++;
  }

  private async embeddings(req: IncomingMessage, res: ServerResponse, body: unknown): Promise<void> {
    const params = parseEmbeddingRequest(body);
    const { name, faults: fromModel } = this.resolveModel(params.model);
    const faults = this.resolveFaults(req, fromModel);
    this.requireEngine(this.engineOf(name), 'Embeddings');
    const inputs = params.inputs.map((input) => promptTokenIds(input, params.addSpecialTokens));
    for (const ids of inputs) {
      if (ids.length > this.maxModelLen) {
        throw badRequest(
          `This model's maximum context length is ${this.maxModelLen} tokens. However, you requested ${ids.length} tokens in the input for embedding generation. Please reduce the length of the input.`,
        );
      }
    }
    const dimensions = params.dimensions ?? EMBEDDING_DIMENSIONS;
    if (dimensions > EMBEDDING_DIMENSIONS) throw badRequest(`Dimensions must be at most ${EMBEDDING_DIMENSIONS}`);
    const promptTokens = inputs.reduce((sum, ids) => sum + ids.length, 0);
    this.stats.embeddingRequests++;
    this.stats.promptTokens += promptTokens;
    if (faults.fault === 'fail-before' || faults.fault === 'fail-mid') {
      this.stats.failed++;
      throw internalServerError();
    }
    if (faults.fault === 'hang') {
      await new ClientConnection(res).untilClosed();
      this.stats.aborted++;
      return;
    }
    this.stats.completed++;
    sendJson(res, 200, {
      id: `embd-${randomId()}`,
      object: 'list',
      created: unixSeconds(),
      model: this.answeringName(name),
      data: inputs.map((ids, index) => {
        const vector = embed(ids, dimensions);
        return { index, object: 'embedding', embedding: params.encodingFormat === 'base64' ? base64Floats(vector) : vector };
      }),
      usage: { prompt_tokens: promptTokens, total_tokens: promptTokens, completion_tokens: 0, prompt_tokens_details: null },
    });
  }

  /**
   * Counts the request in, looks its prompts up in the prefix cache, and sets its sequences
   * up; an injected fail-before throws its 500 here.
   */
  private startRun(
    req: IncomingMessage,
    res: ServerResponse,
    idPrefix: 'chatcmpl' | 'cmpl',
    faults: FaultPlan,
    name: string | null,
    prompts: readonly (readonly number[])[],
    cacheSalt: string | null,
    sequence: (index: number) => Sequence,
    sequences: number,
  ): Run {
    const promptTokens = prompts.reduce((sum, ids) => sum + ids.length, 0);
    this.stats.promptTokens += promptTokens;
    if (faults.fault === 'fail-before') {
      this.stats.failed++;
      throw internalServerError();
    }
    const cachedTokens = prompts.reduce((sum, ids) => sum + this.prefixCache.admit(ids, cacheSalt), 0);
    this.stats.cachedTokens += cachedTokens;
    const requestId = req.headers['x-request-id'];
    return {
      faults,
      promptTokens,
      cachedTokens,
      sequences: Array.from({ length: sequences }, (_, index) => sequence(index)),
      connection: new ClientConnection(res),
      // vLLM names the request after X-Request-Id when the client sends one.
      id: `${idPrefix}-${typeof requestId === 'string' && requestId !== '' ? requestId : randomId()}`,
      created: unixSeconds(),
      modelName: this.answeringName(name),
    };
  }

  private usageOf(run: Run): { promptTokens: number; completionTokens: number; cachedTokens: number | null } {
    return {
      promptTokens: run.promptTokens,
      completionTokens: run.sequences.reduce((sum, sequence) => sum + sequence.generator.completionTokens, 0),
      cachedTokens: this.promptTokensDetails ? run.cachedTokens : null,
    };
  }

  private async respondWhole(run: Run, res: ServerResponse, body: (answer: WholeAnswer) => unknown): Promise<Outcome> {
    const answer = new WholeAnswer();
    const outcome = await this.generate(run, (sequence, step) => {
      answer.record(sequence, step);
      return true;
    });
    if (outcome === 'failed') {
      sendJson(res, 500, internalServerError().body);
    } else if (outcome === 'finished') {
      sendJson(res, 200, body(answer));
    }
    return outcome;
  }

  private async streamRun(
    run: Run,
    res: ServerResponse,
    endpoint: 'chat' | 'completions',
    params: SamplingFields,
    chat: { parsed: boolean; includeReasoning: boolean; role: string },
  ): Promise<Outcome> {
    const withUsage = run.faults.fault !== 'no-usage';
    const chunks = new StreamFormatter(
      endpoint,
      run.id,
      run.created,
      run.modelName,
      run.promptTokens,
      withUsage && params.continuousUsageStats,
      chat.parsed,
      chat.includeReasoning,
    );
    res.writeHead(200, SSE_HEADERS);
    res.flushHeaders();
    let rolesSent = endpoint !== 'chat';
    const outcome = await this.generate(run, (sequence, step) => {
      // vLLM sends the role chunks together with the first engine output, not before it.
      if (!rolesSent) {
        for (const each of run.sequences) res.write(chunks.role(each, chat.role));
        rolesSent = true;
      }
      const chunk = chunks.step(sequence, step);
      return chunk === '' || res.write(chunk);
    });
    if (outcome === 'failed') {
      res.end(`data: ${JSON.stringify(internalServerError().body)}\n\n${STREAM_DONE}`);
    } else if (outcome === 'finished') {
      const usage = withUsage && params.includeUsage ? chunks.finalUsage(this.usageOf(run)) : '';
      res.end(usage + STREAM_DONE);
    }
    return outcome;
  }

  /**
   * The decode loop: each engine step gives every unfinished sequence one token. `emit`
   * receives each step and returns false when the response buffer is full, which pauses
   * generation until it drains.
   */
  private async generate(run: Run, emit: (sequence: Sequence, step: ChoiceStep) => boolean): Promise<Outcome> {
    const { connection, faults } = run;
    for (let steps = 0; ; steps++) {
      await this.paceToken(connection, steps);
      if (connection.closed) return 'aborted';
      if (steps === faults.after) {
        if (faults.fault === 'fail-mid') return 'failed';
        if (faults.fault === 'hang') {
          await connection.untilClosed();
          return 'aborted';
        }
      }
      let hasRoom = true;
      let running = 0;
      for (const sequence of run.sequences) {
        if (sequence.generator.finishReason !== null) continue;
        const step = sequence.generator.step();
        this.stats.completionTokens++;
        hasRoom = emit(sequence, step) && hasRoom;
        if (step.finishReason === null) running++;
      }
      if (running === 0) return 'finished';
      if (!hasRoom) await connection.drain();
    }
  }

  private async paceToken(connection: ClientConnection, tokenIndex: number): Promise<void> {
    const base = tokenIndex === 0 ? this.latency.timeToFirstTokenMs : this.latency.interTokenLatencyMs;
    if (base > 0) {
      const jitter = this.latency.jitterMs;
      await connection.sleep(jitter > 0 ? Math.max(0, base + (Math.random() * 2 - 1) * jitter) : base);
    } else if (tokenIndex % TOKENS_BETWEEN_YIELDS === TOKENS_BETWEEN_YIELDS - 1) {
      await yieldToEventLoop();
    }
  }
}

function promptTokenIds(input: PromptInput, addSpecialTokens: boolean): number[] {
  return 'text' in input ? tokenizePrompt(input.text, addSpecialTokens).ids : input.tokenIds;
}

function generationPlan(params: SamplingFields, maxTokens: number, fingerprint: string, choice: number) {
  return {
    seed: generationSeed(params.seed, fingerprint, choice),
    maxTokens,
    minTokens: params.minTokens,
    ignoreEos: params.ignoreEos,
    stop: params.stop,
    includeStopStrInOutput: params.includeStopStrInOutput,
  };
}

function formatForm(format: ResponseFormat): AnswerForm {
  if (format.type === 'json_object') return { kind: 'json', schema: null };
  if (format.type === 'json_schema') return { kind: 'json', schema: format.schema };
  return { kind: 'text' };
}

/**
 * What the model answers with. Told to call a tool, it does; left to choose ("auto"), it
 * calls one unless the conversation ends with a tool's result, which it then answers. The
 * tool it picks is the one the last user message names, else the first.
 */
function answerForm(params: ChatCompletionParams): AnswerForm {
  const { toolChoice, tools, turns } = params;
  if (toolChoice === 'none' || tools.length === 0) return formatForm(params.responseFormat);
  const pick = (): ToolDefinition => {
    const asked = [...turns].reverse().find((turn) => turn.role === 'user')?.content ?? '';
    return tools.find((tool) => asked.includes(tool.name)) ?? tools[0];
  };
  if (typeof toolChoice === 'object') {
    const named = tools.find((tool) => tool.name === toolChoice.name) ?? tools[0];
    return { kind: 'tool', tool: named, choice: 'named' };
  }
  if (toolChoice === 'required') return { kind: 'tool', tool: pick(), choice: 'required' };
  if (turns.at(-1)?.role === 'tool') return formatForm(params.responseFormat);
  return { kind: 'tool', tool: pick(), choice: 'auto' };
}

function promptFingerprint(turns: readonly ChatTurn[]): string {
  return turns.map((turn) => `${turn.role}\u0000${turn.content}`).join('\u0001');
}

export async function startSimulator(options: SimulatorOptions = {}): Promise<Simulator> {
  const simulator = new VllmSimulator(options);
  await simulator.listen(options.host ?? '127.0.0.1', options.port ?? 0);
  return simulator;
}
