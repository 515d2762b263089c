import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

import { Generation, generationSeed, type GenerationStep } from './generation';
import {
  ApiError,
  badRequest,
  checkContextLength,
  checkSamplingParams,
  internalServerError,
  malformedJson,
  modelNotFound,
  parseChatCompletionRequest,
  parseTokenizeRequest,
  type ChatCompletionParams,
} from './protocol';
import { countChatTokens, tokenizeChat, tokenizePrompt, type ChatTurn } from './tokenizer';

export interface SimulatorOptions {
  host?: string;
  port?: number;
  /** Served model names; like vLLM's --served-model-name, all name one engine. */
  models?: string[];
  /** LoRA adapters on the base model, listed as vLLM lists `--lora-modules`: their own card, `parent` the base. */
  loras?: string[];
  maxModelLen?: number;
  /** When set, /v1/* needs `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  timeToFirstTokenMs?: number;
  interTokenLatencyMs?: number;
  /** Uniform +/- jitter added to every non-zero delay. */
  jitterMs?: number;
  /** false: /tokenize answers 404, like a server without it. */
  tokenizeEndpoint?: boolean;
}

export interface SimulatorStats {
  /** Chat requests that passed validation and started generation. */
  chatRequests: number;
  completed: number;
  /** Ended by the client going away (vLLM aborts the engine request). */
  aborted: number;
  /** Ended by an injected fault. */
  failed: number;
  /** Prompt tokens of every started chat request. */
  promptTokens: number;
  /** Every token generated, whether or not the request completed. */
  completionTokens: number;
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

/** Pre-renders the constant part of every chunk: the hot path only adds the delta. */
class ChunkFormatter {
  private readonly prefix: string;

  constructor(
    id: string,
    created: number,
    model: string,
    private readonly promptTokens: number,
    private readonly continuousUsage: boolean,
  ) {
    this.prefix =
      `data: {"id":${JSON.stringify(id)},"object":"chat.completion.chunk","created":${created},` +
      `"model":${JSON.stringify(model)},"choices":[`;
  }

  role(role: string): string {
    return (
      `${this.prefix}{"index":0,"delta":{"role":${JSON.stringify(role)},"content":""},` +
      `"logprobs":null,"finish_reason":null}]${this.continuousUsageField(0)}}\n\n`
    );
  }

  token(step: GenerationStep, completionTokens: number): string {
    const ending =
      step.finishReason === null
        ? '"finish_reason":null'
        : `"finish_reason":"${step.finishReason}","stop_reason":${JSON.stringify(step.stopReason)}`;
    return (
      `${this.prefix}{"index":0,"delta":{"content":${JSON.stringify(step.delta)}},"logprobs":null,${ending}}]` +
      `${this.continuousUsageField(completionTokens)}}\n\n`
    );
  }

  finalUsage(completionTokens: number): string {
    return `${this.prefix}],"usage":${this.usage(completionTokens)}}\n\n`;
  }

  private continuousUsageField(completionTokens: number): string {
    return this.continuousUsage ? `,"usage":${this.usage(completionTokens)}` : '';
  }

  private usage(completionTokens: number): string {
    return (
      `{"prompt_tokens":${this.promptTokens},"total_tokens":${this.promptTokens + completionTokens},` +
      `"completion_tokens":${completionTokens}}`
    );
  }
}

type Outcome = 'finished' | 'aborted' | 'failed';

/** A validated chat request on its way through the engine. */
interface Run {
  params: ChatCompletionParams;
  faults: FaultPlan;
  promptTokens: number;
  generation: Generation;
  connection: ClientConnection;
  id: string;
  created: number;
  responseRole: string;
  /** What the answer names: the LoRA asked for, else the first served name (vLLM's model_name()). */
  modelName: string;
}

class VllmSimulator implements Simulator {
  private defaultFault: FaultPlan | null = null;
  readonly stats: SimulatorStats = {
    chatRequests: 0,
    completed: 0,
    aborted: 0,
    failed: 0,
    promptTokens: 0,
    completionTokens: 0,
  };
  url = '';
  origin = '';
  private readonly server: Server;
  private readonly models: readonly string[];
  private readonly loras: readonly string[];
  private readonly maxModelLen: number;
  private readonly apiKeyHash: Buffer | null;
  private readonly tokenizeEndpoint: boolean;
  private readonly latency: Required<LatencySettings>;
  private stopping: Promise<void> | null = null;

  constructor(options: SimulatorOptions) {
    this.models = options.models !== undefined && options.models.length > 0 ? [...options.models] : ['sim-llama-3-8b'];
    this.loras = options.loras ?? [];
    this.maxModelLen = options.maxModelLen ?? 4096;
    this.apiKeyHash = options.apiKey === undefined ? null : sha256(options.apiKey);
    this.tokenizeEndpoint = options.tokenizeEndpoint ?? true;
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
    this.stats.chatRequests = 0;
    this.stats.completed = 0;
    this.stats.aborted = 0;
    this.stats.failed = 0;
    this.stats.promptTokens = 0;
    this.stats.completionTokens = 0;
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
      ],
    };
  }

  /** Resolves `model` (fault suffix allowed, see index.ts) or answers 404 like vLLM. */
  private resolveModel(model: string | null): FaultPlan {
    if (model === null || this.serves(model)) return { fault: null, after: 0 };
    const at = model.lastIndexOf('@');
    if (at > 0 && this.serves(model.slice(0, at))) {
      const faults = parseFaultSpec(model.slice(at + 1));
      if (faults !== null) return faults;
    }
    throw modelNotFound(model);
  }

  private answeringName(model: string | null): string {
    const requested = model === null ? null : model.replace(/@[^@]*$/, '');
    return requested !== null && this.loras.includes(requested) ? requested : this.models[0];
  }

  private serves(model: string): boolean {
    return this.models.includes(model) || this.loras.includes(model);
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

  private tokenize(res: ServerResponse, body: unknown): void {
    const params = parseTokenizeRequest(body);
    this.resolveModel(params.model);
    const tokens =
      params.kind === 'chat'
        ? tokenizeChat(params.turns, params.addGenerationPrompt, params.addSpecialTokens)
        : tokenizePrompt(params.prompt, params.addSpecialTokens);
    sendJson(res, 200, {
      count: tokens.ids.length,
      max_model_len: this.maxModelLen,
      tokens: tokens.ids,
      token_strs: params.returnTokenStrs ? tokens.pieces : null,
    });
  }

  private async chatCompletion(req: IncomingMessage, res: ServerResponse, body: unknown): Promise<void> {
    const params = parseChatCompletionRequest(body);
    const faults = this.resolveFaults(req, this.resolveModel(params.model));
    const promptTokens = countChatTokens(params.turns, params.addGenerationPrompt, params.addSpecialTokens);
    checkContextLength(promptTokens, params.requestedMaxTokens, this.maxModelLen);
    const maxTokens = params.requestedMaxTokens ?? this.maxModelLen - promptTokens;
    checkSamplingParams(params, maxTokens);

    this.stats.chatRequests++;
    this.stats.promptTokens += promptTokens;
    if (faults.fault === 'fail-before') {
      this.stats.failed++;
      throw internalServerError();
    }
    const requestId = req.headers['x-request-id'];
    const run: Run = {
      params,
      faults,
      promptTokens,
      generation: new Generation({
        seed: generationSeed(params.seed, promptFingerprint(params.turns)),
        maxTokens,
        minTokens: params.minTokens,
        ignoreEos: params.ignoreEos,
        stop: params.stop,
        includeStopStrInOutput: params.includeStopStrInOutput,
      }),
      connection: new ClientConnection(res),
      // vLLM names the request after X-Request-Id when the client sends one.
      id: `chatcmpl-${typeof requestId === 'string' && requestId !== '' ? requestId : randomId()}`,
      created: unixSeconds(),
      modelName: this.answeringName(params.model),
      responseRole: params.addGenerationPrompt ? 'assistant' : (params.turns.at(-1)?.role ?? 'assistant'),
    };
    const outcome = params.stream ? await this.stream(run, res) : await this.respondWhole(run, res);
    this.stats[outcome === 'finished' ? 'completed' : outcome]++;
  }

  private async respondWhole(run: Run, res: ServerResponse): Promise<Outcome> {
    const outcome = await this.generate(run, () => true);
    if (outcome === 'failed') {
      sendJson(res, 500, internalServerError().body);
    } else if (outcome === 'finished') {
      sendJson(res, 200, this.completionBody(run));
    }
    return outcome;
  }

  private async stream(run: Run, res: ServerResponse): Promise<Outcome> {
    const withUsage = run.faults.fault !== 'no-usage';
    const chunks = new ChunkFormatter(
      run.id,
      run.created,
      run.modelName,
      run.promptTokens,
      withUsage && run.params.continuousUsageStats,
    );
    res.writeHead(200, SSE_HEADERS);
    res.flushHeaders();
    let roleSent = false;
    const outcome = await this.generate(run, (step) => {
      // vLLM sends the role chunk together with the first engine output, not before it.
      if (!roleSent) {
        res.write(chunks.role(run.responseRole));
        roleSent = true;
      }
      return res.write(chunks.token(step, run.generation.completionTokens));
    });
    if (outcome === 'failed') {
      res.end(`data: ${JSON.stringify(internalServerError().body)}\n\n${STREAM_DONE}`);
    } else if (outcome === 'finished') {
      const usage = withUsage && run.params.includeUsage ? chunks.finalUsage(run.generation.completionTokens) : '';
      res.end(usage + STREAM_DONE);
    }
    return outcome;
  }

  /**
   * The decode loop. `emit` receives every step and returns false when the response buffer
   * is full, which pauses generation until it drains.
   */
  private async generate(run: Run, emit: (step: GenerationStep) => boolean): Promise<Outcome> {
    const { generation, connection, faults } = run;
    for (;;) {
      await this.paceToken(connection, generation.completionTokens);
      if (connection.closed) return 'aborted';
      if (generation.completionTokens === faults.after) {
        if (faults.fault === 'fail-mid') return 'failed';
        if (faults.fault === 'hang') {
          await connection.untilClosed();
          return 'aborted';
        }
      }
      const step = generation.step();
      this.stats.completionTokens++;
      const hasRoom = emit(step);
      if (step.finishReason !== null) return 'finished';
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

  private completionBody(run: Run): unknown {
    const { generation } = run;
    return {
      id: run.id,
      object: 'chat.completion',
      created: run.created,
      model: run.modelName,
      choices: [
        {
          index: 0,
          message: {
            role: run.responseRole,
            content: generation.content,
            refusal: null,
            annotations: null,
            audio: null,
            function_call: null,
            tool_calls: [],
            reasoning_content: null,
          },
          logprobs: null,
          finish_reason: generation.finishReason,
          stop_reason: generation.stopReason,
        },
      ],
      service_tier: null,
      system_fingerprint: null,
      usage: {
        prompt_tokens: run.promptTokens,
        total_tokens: run.promptTokens + generation.completionTokens,
        completion_tokens: generation.completionTokens,
        prompt_tokens_details: null,
      },
      prompt_logprobs: null,
      kv_transfer_params: null,
    };
  }
}

function promptFingerprint(turns: readonly ChatTurn[]): string {
  return turns.map((turn) => `${turn.role}\u0000${turn.content}`).join('\u0001');
}

export async function startSimulator(options: SimulatorOptions = {}): Promise<Simulator> {
  const simulator = new VllmSimulator(options);
  await simulator.listen(options.host ?? '127.0.0.1', options.port ?? 0);
  return simulator;
}
