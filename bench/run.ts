// npm run bench [-- --quick] [-- --wait-quiet[=SECONDS]] [-- --render-only]
//
// Added latency and throughput of our gateway against a direct call to the vLLM simulator and
// against Portkey's open-source gateway, on this machine, in one process tree:
//   this process     orchestration and the load generator (undici keep-alive pools, raw
//                    graphql-ws sockets); it runs no target, so it shares no event loop with one
//   simulator        dist/bench/sim-child.js (the project's vLLM simulator; latency over IPC)
//   PostgreSQL       embedded, started here with the gateway's own startEmbeddedPostgres
//   our gateway      node dist/src/main.js, NODE_ENV=production, LOG_LEVEL=warn
//   Portkey          node …/@portkey-ai/gateway/build/start-server.js --headless
// Writes bench/results/latest.json, bench/summary.json, bench/chart.svg and BENCHMARKS.md.
import { randomBytes } from 'node:crypto';
import { execFileSync, fork, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client } from 'pg';
import pino from 'pino';
import type { Pool } from 'undici';
import { startEmbeddedPostgres, type EmbeddedDatabase } from '../src/db/embedded';
import { ForeignCpuMonitor, processCpuNs, serverCpuMsSince, serverCpuSnapshot } from './lib/cpu';
import { GqlWsConnection } from './lib/gql-ws';
import { closedLoop, gqlStreamOnce, httpOnce, makePool, sseOnce, streamLoop, type HttpTarget, type StreamSample } from './lib/load';
import { freePort, findPostmaster, killStartedChildren, peakRss, processTree, spawnChild, treePss, type Child } from './lib/proc';
import { addMetrics, metricsSince, scrapeGatewayMetrics, type GatewayMetricsSample } from './lib/gateway-metrics';
import { summariseProfile } from './lib/profile';
import { distribution, median, round } from './lib/stats';
import { BUDGET_LOAD_LABEL, createLoadAccounts, type BudgetLoadKind } from './budgets';
import { runFleet } from './fleet';
import { runWorkers } from './workers';
import { createApiKey, createUser, login } from './lib/graphql-setup';
import { renderMarkdown, renderSvg, renderTables } from './report';
import {
  OUR_KEYS,
  TARGET_KEYS,
  TARGET_LABEL,
  type BenchSummary,
  type CodeUnderTest,
  type FanOutResult,
  type Goal,
  type GatewayInside,
  type Machine,
  type MemoryResult,
  type NonStreamScenario,
  type NonStreamTargetResult,
  type BudgetLoad,
  type Probes,
  type ProfileResult,
  type StreamScenario,
  type StreamTargetResult,
  type TargetCheck,
  type TargetKey,
} from './types';

const QUICK = process.argv.includes('--quick');
const REPO = path.resolve(__dirname, '..', '..');
const DIST_MAIN = path.join(REPO, 'dist', 'src', 'main.js');
const PORTKEY_DIR = path.join(REPO, 'node_modules', '@portkey-ai', 'gateway');
const PORTKEY_MAIN = path.join(PORTKEY_DIR, 'build', 'start-server.js');
const SHIM = path.join(__dirname, 'portkey-shim.js');

const PLAN = QUICK
  ? {
      rounds: 2,
      roundMs: 400,
      warmMs: 150,
      globalWarmMs: 500,
      streamRoundMs: 700,
      subscribers: 100,
      fanEvents: 10,
      fanIntervalMs: 100,
      profileWarmMs: 500,
      profileMs: 2500,
    }
  : {
      rounds: 4,
      roundMs: 1500,
      warmMs: 300,
      globalWarmMs: 2000,
      streamRoundMs: 2500,
      subscribers: 1000,
      fanEvents: 100,
      fanIntervalMs: 100,
      profileWarmMs: 2000,
      profileMs: 10_000,
    };
const CONCURRENCIES = [1, 8, 32, 64];
const UPSTREAM_MS = [0, 20];
const STREAM_CONCURRENCIES = [1, 32];
/** The runs of each budget load: the ones issue 17's targets are read from. */
const BUDGET_RUNS = [
  { upstreamMs: 0, concurrency: 1 },
  { upstreamMs: 0, concurrency: 32 },
  { upstreamMs: 20, concurrency: 64 },
];
const BUDGET_LOADS: BudgetLoadKind[] = ['finite-users', 'three-levels'];
/** PostgreSQL's PGSTAT_IDLE_INTERVAL (10 s), and a little more. */
const PG_STATS_IDLE_FLUSH_MS = 10_500;
const STREAM_TTFT_MS = 20;
const STREAM_ITL_MS = 10;
const STREAM_TOKENS = 8;
const NONSTREAM_TOKENS = 16;
const WS_PER_ADMIN = 20; // the gateway's default WS_MAX_CONNECTIONS_PER_USER
const PROMPT = 'Write one short sentence about benchmarks.';
const CHAT_MUTATION =
  'mutation BenchChat($input: ChatInput!) { chat(input: $input) { id content finishReason usage { promptTokens completionTokens totalTokens } } }';
const CHAT_STREAM =
  'subscription BenchStream($input: ChatInput!) { chatStream(input: $input) { id delta finishReason usage { totalTokens } } }';
const USAGE_SUBSCRIPTION = 'subscription BenchUsage { usageUpdated { requestId userId totalTokens at } }';
const ADMIN = { email: 'bench-admin@bench.test', password: `bench-${randomBytes(12).toString('hex')}` };
const USER_PASSWORD = `user-${randomBytes(12).toString('hex')}`;
/** Our gateways serve /metrics with it, for what they measure of themselves. */
const METRICS_TOKEN = `metrics-${randomBytes(12).toString('hex')}`;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const started = Date.now();
const elapsed = (): string => `${((Date.now() - started) / 1000).toFixed(0).padStart(3)}s`;
function say(line: string): void {
  process.stdout.write(`[${elapsed()}] ${line}\n`);
}

// ---------------------------------------------------------------- processes

interface Simulator {
  child: ChildProcess;
  url: string;
  origin: string;
  setLatency(ttftMs: number, itlMs: number): Promise<void>;
  /** How many `/tokenize` calls the simulator has answered since it started. */
  tokenizeCalls(): Promise<number>;
  stop(): Promise<void>;
}

async function startSimulatorChild(host = '127.0.0.1'): Promise<Simulator> {
  const child = fork(path.join(__dirname, 'sim-child.js'), [host], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  let nextId = 1;
  const pending = new Map<number, (stats?: { tokenizeRequests: number }) => void>();
  const ready = new Promise<{ url: string; origin: string }>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`simulator exited with ${code}`)));
    child.on('message', (message: { type: string; id?: number; url?: string; origin?: string; stats?: { tokenizeRequests: number } }) => {
      if (message.type === 'ready') resolve({ url: message.url as string, origin: message.origin as string });
      else if (message.id !== undefined) {
        pending.get(message.id)?.(message.stats);
        pending.delete(message.id);
      }
    });
  });
  const { url, origin } = await ready;
  return {
    child,
    url,
    origin,
    setLatency(ttftMs, itlMs) {
      const id = nextId++;
      return new Promise((resolve) => {
        pending.set(id, () => resolve());
        child.send({ id, type: 'latency', timeToFirstTokenMs: ttftMs, interTokenLatencyMs: itlMs, jitterMs: 0 });
      });
    },
    tokenizeCalls() {
      const id = nextId++;
      return new Promise((resolve) => {
        pending.set(id, (stats) => resolve(stats?.tokenizeRequests ?? 0));
        child.send({ id, type: 'stats' });
      });
    },
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.send({ id: nextId++, type: 'stop' });
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

interface Gateway {
  proc: Child;
  origin: string;
  url: string;
  wsUrl: string;
  /** performance.now() just before spawning. */
  spawnedAt: number;
}

function gatewayEnv(databaseUrl: string, upstreamUrl: string, port: number, dataDir: string, jwtSecret: string): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: process.env.HOME ?? os.tmpdir(),
    NODE_ENV: 'production',
    HOST: '127.0.0.1',
    PORT: String(port),
    DATABASE_URL: databaseUrl,
    VLLM_BASE_URL: upstreamUrl,
    JWT_SECRET: jwtSecret,
    LOG_LEVEL: 'warn',
    METRICS_TOKEN,
    ADMIN_EMAIL: ADMIN.email,
    ADMIN_PASSWORD: ADMIN.password,
    DATA_DIR: dataDir,
    // Access tokens must outlive the run; argon2id at OWASP's minimum so that creating the
    // fan-out's admin users is quick. Neither is on the chat path.
    ACCESS_TOKEN_TTL_SECONDS: '7200',
    PASSWORD_HASH_MEMORY_KIB: '19456',
    PASSWORD_HASH_TIME_COST: '2',
    PASSWORD_HASH_PARALLELISM: '1',
  };
}

async function startGateway(env: Record<string, string>, nodeArgs: string[] = []): Promise<Gateway> {
  const spawnedAt = performance.now();
  const proc = spawnChild('gateway', process.execPath, [...nodeArgs, DIST_MAIN], { cwd: REPO, env });
  const match = await proc.waitFor(/GraphiQL:\s+(http:\/\/\S+)/, 60_000);
  const url = match[1] as string;
  const origin = new URL(url).origin;
  return { proc, origin, url, wsUrl: url.replace(/^http/, 'ws'), spawnedAt };
}

async function startPortkey(port: number): Promise<Child> {
  if (!existsSync(PORTKEY_MAIN)) throw new Error(`${PORTKEY_MAIN} is missing: run npm install (it is a devDependency)`);
  const proc = spawnChild('portkey', process.execPath, ['-r', SHIM, PORTKEY_MAIN, '--headless', `--port=${port}`], {
    cwd: REPO,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? os.tmpdir(), NODE_ENV: 'production' },
  });
  await proc.waitFor(/Ready for connections/, 30_000);
  return proc;
}

// ---------------------------------------------------------------- targets

interface Targets {
  http: Map<TargetKey, HttpTarget>;
  sse: Map<TargetKey, HttpTarget>;
  pools: Pool[];
  /** The process that serves each gateway target, for its own CPU time. */
  pids: Map<TargetKey, number>;
  simulatorPid: number;
  /** The postmaster, whose tree (it and its backends) is PostgreSQL's CPU. */
  postgresPid: number | null;
  /** Our gateway's origin, whose /metrics the rounds of our targets read. */
  ourOrigin: string;
}

/** What a load worker sends to a target: by default the same request from every worker. */
type TargetOf = (key: TargetKey, worker: number) => HttpTarget;

function treeCpuNs(pid: number | null): number {
  if (pid === null) return 0;
  let total = 0;
  for (const member of processTree(pid)) total += processCpuNs(member) ?? 0;
  return total;
}

function buildTargets(model: string, sim: Simulator, gateway: Gateway, portkeyOrigin: string | null, token: string, apiKey: string, postgresPid: number | null): Targets {
  const openaiBody = (stream: boolean): string =>
    JSON.stringify({
      model,
      messages: [{ role: 'user', content: PROMPT }],
      max_tokens: stream ? STREAM_TOKENS : NONSTREAM_TOKENS,
      seed: 7,
      ...(stream ? { stream: true } : {}),
    });
  const openaiAccept = (body: unknown): boolean => Array.isArray((body as { choices?: unknown }).choices);
  const graphqlAccept = (body: unknown): boolean => {
    const parsed = body as { data?: { chat?: { id?: unknown } }; errors?: unknown };
    return parsed.errors === undefined && typeof parsed.data?.chat?.id === 'string';
  };
  const json = { 'content-type': 'application/json' };
  const pools: Pool[] = [];
  const pool = (origin: string): Pool => {
    const created = makePool(origin);
    pools.push(created);
    return created;
  };
  const http = new Map<TargetKey, HttpTarget>();
  const sse = new Map<TargetKey, HttpTarget>();
  const portkeyHeaders = {
    ...json,
    authorization: 'Bearer sk-bench-unused',
    'x-portkey-provider': 'openai',
    'x-portkey-custom-host': sim.url,
  };
  for (const stream of [false, true]) {
    const map = stream ? sse : http;
    const body = openaiBody(stream);
    map.set('direct', { pool: pool(sim.origin), path: '/v1/chat/completions', headers: json, body, accept: openaiAccept });
    if (portkeyOrigin !== null) {
      map.set('portkey', { pool: pool(portkeyOrigin), path: '/v1/chat/completions', headers: portkeyHeaders, body, accept: openaiAccept });
    }
    map.set('openai', {
      pool: pool(gateway.origin),
      path: '/v1/chat/completions',
      headers: { ...json, authorization: `Bearer ${apiKey}` },
      body,
      accept: openaiAccept,
    });
  }
  http.set('graphql', {
    pool: pool(gateway.origin),
    path: '/graphql',
    headers: { ...json, authorization: `Bearer ${token}` },
    body: graphqlChatBody(model),
    accept: graphqlAccept,
  });
  return { http, sse, pools, pids: new Map(), simulatorPid: sim.child.pid ?? -1, postgresPid, ourOrigin: gateway.origin };
}

function rotate<T>(items: readonly T[], by: number): T[] {
  const shift = by % items.length;
  return [...items.slice(shift), ...items.slice(0, shift)];
}

// ---------------------------------------------------------------- non-streaming

/** Our gateway's figures of itself over rounds that lasted `elapsedMs` in all. */
function insideOf(sample: GatewayMetricsSample, elapsedMs: number): GatewayInside {
  return {
    overheadMs: (1000 * sample.overheadSeconds) / Math.max(1, sample.requests),
    reserveItemsPerStatement: sample.reserveItems / Math.max(1, sample.reserveStatements),
    settleItemsPerStatement: sample.settleItems / Math.max(1, sample.settleStatements),
    reserveStatementsPerSecond: sample.reserveStatements / Math.max(0.001, elapsedMs / 1000),
  };
}

async function runNonStream(
  sim: Simulator,
  targets: Targets,
  upstreamMs: number,
  concurrency: number,
  targetOf: TargetOf = (key) => targets.http.get(key) as HttpTarget,
): Promise<NonStreamScenario> {
  await sim.setLatency(upstreamMs, 0);
  const keys = TARGET_KEYS.filter((key) => targets.http.has(key));
  const begin = performance.now();
  for (const key of keys) await closedLoop(concurrency, PLAN.warmMs, (worker) => httpOnce(targetOf(key, worker)));
  const acc = new Map<
    TargetKey,
    {
      latencies: number[];
      errors: number;
      firstError: string | null;
      elapsedMs: number;
      serverMs: number;
      gatewayMs: number;
      simulatorMs: number;
      postgresMs: number;
      clientMs: number;
      inside: GatewayMetricsSample | null;
      rounds: { rps: number; p50: number; errors: number }[];
    }
  >();
  for (const key of keys) acc.set(key, { latencies: [], errors: 0, firstError: null, elapsedMs: 0, serverMs: 0, gatewayMs: 0, simulatorMs: 0, postgresMs: 0, clientMs: 0, inside: null, rounds: [] });
  for (let r = 0; r < PLAN.rounds; r++) {
    for (const key of rotate(keys, r)) {
      // Read before the CPU snapshots and after the readings, so that the scrapes cost the round nothing.
      const metrics0 = (OUR_KEYS as readonly TargetKey[]).includes(key) ? await scrapeGatewayMetrics(targets.ourOrigin, METRICS_TOKEN) : null;
      const server0 = serverCpuSnapshot();
      const pid = targets.pids.get(key);
      const gateway0 = pid === undefined ? null : processCpuNs(pid);
      const simulator0 = processCpuNs(targets.simulatorPid);
      const postgres0 = treeCpuNs(targets.postgresPid);
      const client0 = process.cpuUsage();
      const result = await closedLoop(concurrency, PLAN.roundMs, (worker) => httpOnce(targetOf(key, worker)));
      const client = process.cpuUsage(client0);
      const into = acc.get(key);
      if (into === undefined) continue;
      into.serverMs += serverCpuMsSince(server0);
      if (pid !== undefined && gateway0 !== null) into.gatewayMs += ((processCpuNs(pid) ?? gateway0) - gateway0) / 1e6;
      if (simulator0 !== null) into.simulatorMs += ((processCpuNs(targets.simulatorPid) ?? simulator0) - simulator0) / 1e6;
      into.postgresMs += Math.max(0, treeCpuNs(targets.postgresPid) - postgres0) / 1e6;
      into.clientMs += (client.user + client.system) / 1000;
      if (metrics0 !== null) {
        const delta = metricsSince(metrics0, await scrapeGatewayMetrics(targets.ourOrigin, METRICS_TOKEN));
        into.inside = into.inside === null ? delta : addMetrics(into.inside, delta);
      }
      for (const latency of result.latencies) into.latencies.push(latency);
      into.errors += result.errors;
      into.firstError ??= result.firstError;
      into.elapsedMs += result.elapsedMs;
      into.rounds.push({ rps: round(result.latencies.length / (result.elapsedMs / 1000), 1), p50: round(median(result.latencies), 3), errors: result.errors });
    }
  }
  const results: NonStreamTargetResult[] = keys.map((key) => {
    const into = acc.get(key) as NonNullable<ReturnType<typeof acc.get>>;
    return {
      target: key,
      requests: into.latencies.length,
      errors: into.errors,
      firstError: into.firstError,
      rps: into.latencies.length / (into.elapsedMs / 1000),
      latency: distribution(into.latencies),
      addedP50: null,
      addedP99: null,
      throughputRatio: null,
      serverCpuMsPerRequest: into.serverMs / Math.max(1, into.latencies.length),
      gatewayCpuMsPerRequest: targets.pids.has(key) ? into.gatewayMs / Math.max(1, into.latencies.length) : null,
      simulatorCpuMsPerRequest: into.simulatorMs / Math.max(1, into.latencies.length),
      postgresCpuMsPerRequest: into.postgresMs / Math.max(1, into.latencies.length),
      clientCores: into.clientMs / Math.max(1, into.elapsedMs),
      ...(into.inside === null ? {} : { inside: insideOf(into.inside, into.elapsedMs) }),
      rounds: into.rounds,
    };
  });
  const direct = results.find((result) => result.target === 'direct');
  if (direct !== undefined) {
    for (const result of results) {
      if (result.target === 'direct') continue;
      result.addedP50 = result.latency.p50 - direct.latency.p50;
      result.addedP99 = result.latency.p99 - direct.latency.p99;
      result.throughputRatio = result.rps / direct.rps;
    }
  }
  return { kind: 'nonstream', upstreamMs, concurrency, seconds: (performance.now() - begin) / 1000, results };
}

// ---------------------------------------------------------------- streaming

async function runStream(
  sim: Simulator,
  targets: Targets,
  sockets: GqlWsConnection[],
  model: string,
  concurrency: number,
): Promise<StreamScenario> {
  await sim.setLatency(STREAM_TTFT_MS, STREAM_ITL_MS);
  const variables = { input: { model, messages: [{ role: 'USER', content: PROMPT }], maxTokens: STREAM_TOKENS, seed: 7 } };
  const runners = new Map<TargetKey, (worker: number) => Promise<StreamSample>>();
  for (const key of TARGET_KEYS) {
    const sse = targets.sse.get(key);
    if (sse !== undefined) runners.set(key, () => sseOnce(sse));
  }
  if (sockets.length >= concurrency) {
    runners.set('graphql', (worker) => gqlStreamOnce(sockets[worker] as GqlWsConnection, CHAT_STREAM, variables));
  }
  const keys = TARGET_KEYS.filter((key) => runners.has(key));
  const begin = performance.now();
  for (const key of keys) await streamLoop(concurrency, PLAN.warmMs * 2, runners.get(key) as (worker: number) => Promise<StreamSample>);
  const acc = new Map<TargetKey, { ttfts: number[]; gaps: number[]; errors: number; firstError: string | null; elapsedMs: number }>();
  for (const key of keys) acc.set(key, { ttfts: [], gaps: [], errors: 0, firstError: null, elapsedMs: 0 });
  for (let r = 0; r < PLAN.rounds; r++) {
    for (const key of rotate(keys, r)) {
      const result = await streamLoop(concurrency, PLAN.streamRoundMs, runners.get(key) as (worker: number) => Promise<StreamSample>);
      const into = acc.get(key);
      if (into === undefined) continue;
      for (const value of result.ttfts) into.ttfts.push(value);
      for (const value of result.gaps) into.gaps.push(value);
      into.errors += result.errors;
      into.firstError ??= result.firstError;
      into.elapsedMs += result.elapsedMs;
    }
  }
  const results: StreamTargetResult[] = keys.map((key) => {
    const into = acc.get(key) as NonNullable<ReturnType<typeof acc.get>>;
    return {
      target: key,
      streams: into.ttfts.length,
      errors: into.errors,
      firstError: into.firstError,
      ttft: distribution(into.ttfts),
      gap: distribution(into.gaps),
      addedTtftP50: null,
      addedTtftP99: null,
      addedGapP50: null,
      addedGapP99: null,
      streamsPerSecond: into.ttfts.length / (into.elapsedMs / 1000),
    };
  });
  const direct = results.find((result) => result.target === 'direct');
  if (direct !== undefined) {
    for (const result of results) {
      if (result.target === 'direct') continue;
      result.addedTtftP50 = result.ttft.p50 - direct.ttft.p50;
      result.addedTtftP99 = result.ttft.p99 - direct.ttft.p99;
      result.addedGapP50 = result.gap.p50 - direct.gap.p50;
      result.addedGapP99 = result.gap.p99 - direct.gap.p99;
    }
  }
  return {
    kind: 'stream',
    upstreamMs: STREAM_TTFT_MS,
    interTokenMs: STREAM_ITL_MS,
    tokens: STREAM_TOKENS,
    concurrency,
    seconds: (performance.now() - begin) / 1000,
    results,
  };
}

// ---------------------------------------------------------------- live usage fan-out

async function runFanOut(gateway: Gateway, adminToken: string, chat: HttpTarget): Promise<FanOutResult> {
  const subscribers = PLAN.subscribers;
  const adminCount = Math.ceil(subscribers / WS_PER_ADMIN);
  const connectStart = performance.now();
  const adminTokens: string[] = [];
  const runId = randomBytes(3).toString('hex');
  for (let i = 0; i < adminCount; i += 4) {
    const batch = Array.from({ length: Math.min(4, adminCount - i) }, (_, j) =>
      createUser(gateway.url, adminToken, { email: `watcher-${runId}-${i + j}@bench.test`, password: USER_PASSWORD, role: 'ADMIN' }),
    );
    adminTokens.push(...(await Promise.all(batch)));
  }
  interface Delivery {
    subscriber: number;
    requestId: string;
    at: string;
    receivedAt: number;
  }
  const deliveries: Delivery[] = [];
  const seenBy = new Set<number>();
  let probing = true;
  const sockets: GqlWsConnection[] = [];
  for (let i = 0; i < subscribers; i += 50) {
    const batch = Array.from({ length: Math.min(50, subscribers - i) }, async (_, j) => {
      const index = i + j;
      const connection = await GqlWsConnection.open(gateway.wsUrl, adminTokens[Math.floor(index / WS_PER_ADMIN)] as string);
      connection.subscribe(USAGE_SUBSCRIPTION, {}, {
        next(payload, at) {
          const event = (payload.data as { usageUpdated?: { requestId: string; at: string } } | undefined)?.usageUpdated;
          if (event === undefined) return;
          if (probing) seenBy.add(index);
          else deliveries.push({ subscriber: index, requestId: event.requestId, at: event.at, receivedAt: performance.timeOrigin + at });
        },
        error: () => undefined,
        complete: () => undefined,
      });
      return connection;
    });
    sockets.push(...(await Promise.all(batch)));
  }
  // Subscriptions are live once an event reaches every subscriber.
  const probeDeadline = Date.now() + 20_000;
  while (seenBy.size < subscribers && Date.now() < probeDeadline) {
    await httpOnce(chat);
    await sleep(300);
  }
  if (seenBy.size < subscribers) throw new Error(`only ${seenBy.size} of ${subscribers} subscribers received the probe event`);
  await sleep(500);
  probing = false;
  const connectSeconds = (performance.now() - connectStart) / 1000;

  const answeredAt = new Map<string, number>();
  const gatewayCpu0 = processCpuNs(gateway.proc.pid);
  const clientCpu0 = process.cpuUsage();
  const begin = performance.now();
  for (let i = 0; i < PLAN.fanEvents; i++) {
    const response = await chat.pool.request({ method: 'POST', path: chat.path, headers: chat.headers, body: chat.body });
    const text = await response.body.text();
    const arrived = performance.timeOrigin + performance.now();
    const id = (JSON.parse(text) as { data?: { chat?: { id?: string } } }).data?.chat?.id;
    if (id !== undefined) answeredAt.set(id, arrived);
    const next = begin + (i + 1) * PLAN.fanIntervalMs;
    const wait = next - performance.now();
    if (wait > 0) await sleep(wait);
  }
  const expected = answeredAt.size * subscribers;
  const settleDeadline = Date.now() + 15_000;
  const counted = (): number => deliveries.filter((delivery) => answeredAt.has(delivery.requestId)).length;
  while (counted() < expected && Date.now() < settleDeadline) await sleep(100);
  const gatewayCpu1 = processCpuNs(gateway.proc.pid);
  const clientCpu = process.cpuUsage(clientCpu0);
  await Promise.all(sockets.map((socket) => socket.close()));

  const fromSettle: number[] = [];
  const fromResponse: number[] = [];
  const perEvent = new Map<string, { first: number; last: number }>();
  for (const delivery of deliveries) {
    const answered = answeredAt.get(delivery.requestId);
    if (answered === undefined) continue;
    fromSettle.push(delivery.receivedAt - Date.parse(delivery.at));
    fromResponse.push(delivery.receivedAt - answered);
    const span = perEvent.get(delivery.requestId);
    if (span === undefined) perEvent.set(delivery.requestId, { first: delivery.receivedAt, last: delivery.receivedAt });
    else {
      span.first = Math.min(span.first, delivery.receivedAt);
      span.last = Math.max(span.last, delivery.receivedAt);
    }
  }
  return {
    subscribers,
    sockets: sockets.length,
    adminUsers: adminCount,
    events: answeredAt.size,
    intervalMs: PLAN.fanIntervalMs,
    expectedDeliveries: expected,
    deliveries: fromSettle.length,
    fromSettle: distribution(fromSettle),
    fromResponse: distribution(fromResponse),
    spread: distribution([...perEvent.values()].map((span) => span.last - span.first)),
    connectSeconds,
    gatewayCpuMsPerEvent: gatewayCpu0 === null || gatewayCpu1 === null ? null : (gatewayCpu1 - gatewayCpu0) / 1e6 / Math.max(1, answeredAt.size),
    clientCpuUsPerDelivery: (clientCpu.user + clientCpu.system) / Math.max(1, fromSettle.length),
  };
}

// ---------------------------------------------------------------- probes and profile

interface TableStat {
  ins: number;
  upd: number;
  del: number;
  scans: number;
}

async function pgStats(databaseUrl: string): Promise<{ xacts: number; written: number; tables: Map<string, TableStat> }> {
  const client = new Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const { rows } = await client.query<{ xacts: string; written: string }>(
      `select xact_commit + xact_rollback as xacts, tup_inserted + tup_updated + tup_deleted as written
         from pg_stat_database where datname = current_database()`,
    );
    const tables = new Map<string, TableStat>();
    const perTable = await client.query<{ relname: string; ins: string; upd: string; del: string; scans: string }>(
      `select relname, n_tup_ins as ins, n_tup_upd as upd, n_tup_del as del, coalesce(seq_scan, 0) + coalesce(idx_scan, 0) as scans
         from pg_stat_user_tables`,
    );
    for (const row of perTable.rows) {
      tables.set(row.relname, { ins: Number(row.ins), upd: Number(row.upd), del: Number(row.del), scans: Number(row.scans) });
    }
    return { xacts: Number(rows[0]?.xacts ?? 0), written: Number(rows[0]?.written ?? 0), tables };
  } finally {
    await client.end();
  }
}

async function runProbes(databaseUrl: string, sim: Simulator, model: string): Promise<Probes> {
  const client = new Client({ connectionString: databaseUrl });
  await client.connect();
  const commits: number[] = [];
  const selects: number[] = [];
  try {
    await client.query('create table if not exists bench_commit_probe (id bigserial primary key, at timestamptz not null default now())');
    for (let i = 0; i < 200; i++) {
      let t0 = performance.now();
      await client.query('select 1');
      selects.push(performance.now() - t0);
      t0 = performance.now();
      await client.query('insert into bench_commit_probe default values');
      commits.push(performance.now() - t0);
    }
    await client.query('drop table bench_commit_probe');
  } finally {
    await client.end();
  }
  const pool = makePool(sim.origin);
  const tokenize: number[] = [];
  const body = JSON.stringify({ model, messages: [{ role: 'user', content: PROMPT }], add_generation_prompt: true });
  for (let i = 0; i < 200; i++) {
    const t0 = performance.now();
    const response = await pool.request({ method: 'POST', path: '/tokenize', headers: { 'content-type': 'application/json' }, body });
    await response.body.text();
    tokenize.push(performance.now() - t0);
  }
  await pool.close();
  return { commitP50: median(commits), selectP50: median(selects), tokenizeP50: median(tokenize) };
}

async function runProfile(
  env: Record<string, string>,
  databaseUrl: string,
  sim: Simulator,
  profileDir: string,
  token: string,
  graphqlBody: string,
): Promise<ProfileResult> {
  rmSync(profileDir, { recursive: true, force: true });
  mkdirSync(profileDir, { recursive: true });
  const port = await freePort();
  const gateway = await startGateway({ ...env, PORT: String(port) }, ['--cpu-prof', '--cpu-prof-dir', profileDir, '--cpu-prof-interval', '250']);
  const pool = makePool(gateway.origin);
  const target: HttpTarget = {
    pool,
    path: '/graphql',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: graphqlBody,
    accept: (body) => typeof (body as { data?: { chat?: { id?: unknown } } }).data?.chat?.id === 'string',
  };
  await closedLoop(1, PLAN.profileWarmMs, () => httpOnce(target));
  // A backend publishes its statistics when idle at most once a second, else after 10 s idle:
  // this pause lets the start's and the warm-up's transactions (migrations, seeding) be counted
  // before the snapshot, so that only the measured requests fall between the two.
  await sleep(PG_STATS_IDLE_FLUSH_MS);
  const before = await pgStats(databaseUrl);
  const tokenizeBefore = await sim.tokenizeCalls();
  const from = performance.now() - gateway.spawnedAt;
  const result = await closedLoop(1, PLAN.profileMs, () => httpOnce(target));
  const to = performance.now() - gateway.spawnedAt;
  await pool.close();
  // V8 writes the profile on any orderly exit, process.exit(1) included.
  const exitCode = await gateway.proc.stop();
  await sleep(300);
  const after = await pgStats(databaseUrl);
  const tokenizeAfter = await sim.tokenizeCalls();
  const files = readdirSync(profileDir).filter((name) => name.endsWith('.cpuprofile'));
  if (files.length === 0) throw new Error(`no .cpuprofile in ${profileDir} (gateway exit code ${exitCode}): ${gateway.proc.output().slice(-2000)}`);
  if (result.errors > 0) throw new Error(`profile load had ${result.errors} errors: ${result.firstError}`);
  const summary = summariseProfile(path.join(profileDir, files[0] as string), from + 100, to - 100, 60);
  const requests = result.latencies.length;
  const totalRequests = requests + 1; // +1: the first pgStats read is a transaction too
  return {
    summary,
    exitCode,
    secondSignal: gateway.proc.output().includes('second signal: exiting without waiting'),
    requests,
    p50Ms: median(result.latencies),
    busyMsPerRequest: summary.busyMs / Math.max(1, requests * ((PLAN.profileMs - 200) / PLAN.profileMs)),
    transactionsPerRequest: (after.xacts - before.xacts) / totalRequests,
    rowsWrittenPerRequest: (after.written - before.written) / totalRequests,
    tokenizeCallsPerRequest: (tokenizeAfter - tokenizeBefore) / requests,
    tables: [...after.tables.entries()]
      .map(([table, now]) => {
        const then = before.tables.get(table) ?? { ins: 0, upd: 0, del: 0, scans: 0 };
        return {
          table,
          inserts: round((now.ins - then.ins) / totalRequests, 2),
          updates: round((now.upd - then.upd) / totalRequests, 2),
          deletes: round((now.del - then.del) / totalRequests, 2),
          scans: round((now.scans - then.scans) / totalRequests, 2),
        };
      })
      .filter((t) => t.inserts + t.updates + t.deletes + t.scans >= 0.05)
      .sort((a, b) => a.table.localeCompare(b.table)),
  };
}

// ---------------------------------------------------------------- goals

/**
 * Issue 17's targets for one load scenario, each against Portkey's figure in the same run
 * (Portkey's from the main scenario when the scenario ran without it).
 */
function goals(scenario: string, nonStream: NonStreamScenario[], portkeyFrom: NonStreamScenario[] = nonStream): Goal[] {
  const find = (runs: NonStreamScenario[], upstreamMs: number, concurrency: number, target: TargetKey): NonStreamTargetResult | undefined =>
    runs.find((s) => s.upstreamMs === upstreamMs && s.concurrency === concurrency)?.results.find((r) => r.target === target);
  const portkey = (upstreamMs: number, concurrency: number): NonStreamTargetResult | undefined =>
    find(nonStream, upstreamMs, concurrency, 'portkey') ?? find(portkeyFrom, upstreamMs, concurrency, 'portkey');
  const atMost = (value: number | null, limit: number | null, unit: string): Pick<Goal, 'pass' | 'missBy'> =>
    value === null || limit === null
      ? { pass: null, missBy: '' }
      : { pass: value <= limit, missBy: value <= limit ? '' : `${(value - limit).toFixed(2)}${unit} over` };
  const out: Goal[] = [];
  for (const target of OUR_KEYS) {
    const c1 = find(nonStream, 0, 1, target);
    const portkeyC1 = portkey(0, 1);
    const added = c1?.addedP50 ?? null;
    out.push({
      scenario,
      name: "added p50 at concurrency 1 <= Portkey's",
      target,
      upstreamMs: 0,
      value: added,
      portkey: portkeyC1?.addedP50 ?? null,
      unit: 'ms',
      beside: added === null ? null : `aim 1.0 ms: ${added <= 1 ? 'met' : `${(added - 1).toFixed(2)} ms over`}`,
      ...atMost(added, portkeyC1?.addedP50 ?? null, ' ms'),
    });
    const cpuLimit = target === 'graphql' ? 1.0 : 0.8;
    const cpu = c1?.gatewayCpuMsPerRequest ?? null;
    out.push({
      scenario,
      name: `gateway CPU per request at concurrency 1 <= ${cpuLimit.toFixed(1)} ms`,
      target,
      upstreamMs: 0,
      value: cpu,
      portkey: portkeyC1?.gatewayCpuMsPerRequest ?? null,
      unit: 'cpu',
      beside: c1 === undefined ? null : `PostgreSQL ${c1.postgresCpuMsPerRequest.toFixed(2)} ms, simulator ${c1.simulatorCpuMsPerRequest.toFixed(2)} ms`,
      ...atMost(cpu, cpuLimit, ' ms'),
    });
    for (const upstreamMs of [...new Set(nonStream.filter((s) => s.concurrency === 32).map((s) => s.upstreamMs))]) {
      const p99 = find(nonStream, upstreamMs, 32, target)?.addedP99 ?? null;
      const limit = portkey(upstreamMs, 32)?.addedP99 ?? null;
      out.push({ scenario, name: "added p99 at concurrency 32 <= Portkey's", target, upstreamMs, value: p99, portkey: limit, unit: 'ms', beside: null, ...atMost(p99, limit, ' ms') });
    }
    const ratio = find(nonStream, 20, 64, target)?.throughputRatio ?? null;
    const portkeyRatio = portkey(20, 64)?.throughputRatio ?? null;
    const needed = portkeyRatio === null ? null : 1.5 * portkeyRatio;
    out.push({
      scenario,
      name: "throughput at concurrency 64, 20 ms upstream >= 1.5x Portkey's ratio",
      target,
      upstreamMs: 20,
      value: ratio,
      portkey: portkeyRatio,
      unit: 'ratio',
      beside: needed === null ? null : `needs ${needed.toFixed(2)}x direct`,
      pass: ratio === null || needed === null ? null : ratio >= needed,
      missBy: ratio === null || needed === null || ratio >= needed ? '' : `${(needed - ratio).toFixed(2)} short`,
    });
  }
  return out;
}

// ---------------------------------------------------------------- main

async function postgresVersion(databaseUrl: string): Promise<string> {
  const client = new Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const { rows } = await client.query<{ server_version: string }>('show server_version');
    return rows[0]?.server_version ?? 'unknown';
  } finally {
    await client.end();
  }
}

function codeUnderTest(): CodeUnderTest | null {
  try {
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO, encoding: 'utf8' }).trim();
    const status = execFileSync('git', ['status', '--porcelain', '--', 'src', 'migrations'], { cwd: REPO, encoding: 'utf8' });
    return { commit, uncommitted: status.split('\n').filter((line) => line.trim() !== '').map((line) => line.slice(3)) };
  } catch {
    return null;
  }
}

function machine(postgres: string): Machine {
  const cpus = os.cpus();
  let portkeyVersion = 'not installed';
  try {
    portkeyVersion = (JSON.parse(readFileSync(path.join(PORTKEY_DIR, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    // reported as missing
  }
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    memoryGiB: round(os.totalmem() / 2 ** 30, 1),
    node: process.version,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    postgres,
    portkeyVersion,
  };
}

/** --render-only: BENCHMARKS.md, bench/chart.svg and bench/summary.json again from bench/results/latest.json. */
function renderOnly(): void {
  const summary = JSON.parse(readFileSync(path.join(REPO, 'bench', 'results', 'latest.json'), 'utf8')) as BenchSummary;
  if (summary.quick) throw new Error('bench/results/latest.json is from a --quick run: BENCHMARKS.md keeps full runs only');
  summary.code ??= null;
  writeFileSync(path.join(REPO, 'bench', 'summary.json'), `${JSON.stringify(stripRounds(summary), null, 2)}\n`);
  writeFileSync(path.join(REPO, 'bench', 'chart.svg'), renderSvg(summary));
  writeFileSync(path.join(REPO, 'BENCHMARKS.md'), renderMarkdown(summary));
  process.stdout.write(`${renderTables(summary)}\nre-rendered BENCHMARKS.md, bench/chart.svg and bench/summary.json from the run of ${summary.generatedAt}\n`);
}

async function main(): Promise<void> {
  if (process.argv.includes('--render-only')) {
    renderOnly();
    return;
  }
  if (!existsSync(DIST_MAIN)) throw new Error(`${DIST_MAIN} is missing: run through "npm run bench", which builds first`);
  say(`vLLM gateway benchmark${QUICK ? ' (--quick: a short smoke run, numbers are rough)' : ''}`);
  const waitArg = process.argv.find((arg) => arg.startsWith('--wait-quiet'));
  if (waitArg !== undefined) {
    // Others' jobs on a shared machine skew every figure: wait (bounded) for a quiet spell.
    const limitSeconds = Number(waitArg.split('=')[1] ?? 300);
    const deadline = Date.now() + limitSeconds * 1000;
    let quietFor = 0;
    while (quietFor < 5 && Date.now() < deadline) {
      const cores = (await ForeignCpuMonitor.probe(1000)) ?? 0;
      quietFor = cores < 0.2 ? quietFor + 1 : 0;
    }
    say(quietFor >= 5 ? 'the machine has been quiet for 5 s' : `no quiet spell within ${limitSeconds} s: running anyway`);
  }
  const foreignCoresBefore = await ForeignCpuMonitor.probe(2000);
  say(
    `other processes on this machine are using ${foreignCoresBefore === null ? '?' : foreignCoresBefore.toFixed(2)} of ${os.cpus().length} cores` +
      (foreignCoresBefore !== null && foreignCoresBefore > 0.25 ? ' — WARNING: the figures will be skewed by that load' : ''),
  );
  const monitor = new ForeignCpuMonitor();
  const notes: string[] = [];
  const checks: TargetCheck[] = [];
  const code = codeUnderTest();
  const root = mkdtempSync(path.join(os.tmpdir(), 'vllm-gateway-bench-'));
  chmodSync(root, 0o755); // as root, PostgreSQL runs as `postgres`, which must enter it
  const resultsDir = path.join(REPO, 'bench', 'results');
  mkdirSync(resultsDir, { recursive: true });

  let db: EmbeddedDatabase | null = null;
  let sim: Simulator | null = null;
  let gateway: Gateway | null = null;
  let portkey: Child | null = null;
  const cleanup = async (): Promise<void> => {
    await gateway?.proc.stop().catch(() => undefined);
    await portkey?.stop().catch(() => undefined);
    await sim?.stop().catch(() => undefined);
    await db?.stop().catch(() => undefined);
    rmSync(root, { recursive: true, force: true });
  };
  const onSignal = (): void => {
    killStartedChildren();
    sim?.child.kill('SIGKILL');
    void (db?.stop() ?? Promise.resolve()).finally(() => {
      rmSync(root, { recursive: true, force: true });
      process.exit(130);
    });
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    say('starting PostgreSQL (embedded), the simulator, our gateway and Portkey…');
    const pgDir = path.join(root, 'pg');
    db = await startEmbeddedPostgres(pgDir, pino({ level: 'warn' }));
    const postmaster = findPostmaster(path.join(pgDir, 'postgres'));
    sim = await startSimulatorChild();
    const jwtSecret = randomBytes(48).toString('base64url');
    const env = gatewayEnv(db.url, sim.url, await freePort(), path.join(root, 'gateway-data'), jwtSecret);
    gateway = await startGateway(env);
    let portkeyOrigin: string | null = null;
    try {
      const port = await freePort();
      portkey = await startPortkey(port);
      portkeyOrigin = `http://127.0.0.1:${port}`;
    } catch (error) {
      const reason = error instanceof Error ? error.message.split('\n')[0] : String(error);
      notes.push(`Portkey did not start (${reason}); the bench ran without it.`);
      checks.push({ target: 'portkey', ok: false, detail: `did not start: ${reason}` });
      await portkey?.stop().catch(() => undefined);
      portkey = null;
    }
    const modelList = (await (await fetch(`${sim.url}/models`)).json()) as { data: { id: string }[] };
    const model = modelList.data[0]?.id ?? 'sim-llama-3-8b';

    monitor.start();
    say('creating the load users and an API key through GraphQL…');
    const adminToken = await login(gateway.url, ADMIN.email, ADMIN.password);
    const tokens = [
      await createUser(gateway.url, adminToken, { email: 'load-1@bench.test', password: USER_PASSWORD, role: 'USER' }),
      await createUser(gateway.url, adminToken, { email: 'load-2@bench.test', password: USER_PASSWORD, role: 'USER' }),
    ];
    const apiKey = await createApiKey(gateway.url, tokens[0] as string, 'bench');

    const targets = buildTargets(model, sim, gateway, portkeyOrigin, tokens[0] as string, apiKey, postmaster);
    targets.pids.set('graphql', gateway.proc.pid);
    targets.pids.set('openai', gateway.proc.pid);
    if (portkey !== null) targets.pids.set('portkey', portkey.pid);
    // Every target answers correctly once, streaming too, before any load.
    for (const key of TARGET_KEYS) {
      const http = targets.http.get(key);
      if (http === undefined) continue;
      const outcome = await httpOnce(http).catch((error: unknown) => ({ ok: false, error: String(error) }));
      let detail = outcome.ok ? 'non-streaming OK' : `non-streaming failed: ${outcome.error ?? ''}`;
      const ok = outcome.ok;
      const sse = targets.sse.get(key);
      if (sse !== undefined) {
        try {
          await sseOnce(sse);
          detail += '; SSE streaming OK';
        } catch (error) {
          detail += `; SSE streaming failed: ${error instanceof Error ? error.message : String(error)}`;
          targets.sse.delete(key);
          notes.push(`${TARGET_LABEL[key]} streaming failed its check and was left out of the streaming scenarios: ${detail}`);
        }
      }
      if (!ok) {
        targets.http.delete(key);
        targets.sse.delete(key);
        notes.push(`${TARGET_LABEL[key]} failed its check and was left out: ${detail}`);
      }
      checks.push({ target: key, ok, detail });
    }
    const streamSockets: GqlWsConnection[] = [];
    for (let i = 0; i < Math.max(...STREAM_CONCURRENCIES); i++) {
      streamSockets.push(await GqlWsConnection.open(gateway.wsUrl, tokens[i % tokens.length] as string));
    }
    try {
      await sim.setLatency(0, 0);
      await gqlStreamOnce(streamSockets[0] as GqlWsConnection, CHAT_STREAM, {
        input: { model, messages: [{ role: 'USER', content: PROMPT }], maxTokens: STREAM_TOKENS, seed: 7 },
      });
      const graphqlCheck = checks.find((check) => check.target === 'graphql');
      if (graphqlCheck !== undefined) graphqlCheck.detail += '; chatStream over graphql-ws OK';
    } catch (error) {
      notes.push(`Our chatStream failed its check and was left out: ${error instanceof Error ? error.message : String(error)}`);
      streamSockets.length = 0;
    }
    for (const check of checks) say(`  check ${TARGET_LABEL[check.target].padEnd(20)} ${check.ok ? 'ok  ' : 'FAIL'} ${check.detail}`);

    say('probing PostgreSQL commit and /tokenize round trips…');
    const probes = await runProbes(db.url, sim, model);
    say(`  select 1: ${probes.selectP50.toFixed(3)} ms, one-row autocommit insert: ${probes.commitP50.toFixed(3)} ms, simulator /tokenize: ${probes.tokenizeP50.toFixed(3)} ms (p50)`);

    say(`warm-up: ${PLAN.globalWarmMs} ms per target at concurrency 8…`);
    await sim.setLatency(0, 0);
    for (const target of targets.http.values()) await closedLoop(8, PLAN.globalWarmMs, () => httpOnce(target));
    for (const target of targets.sse.values()) await streamLoop(4, PLAN.globalWarmMs / 2, () => sseOnce(target));

    const scenarioCount = UPSTREAM_MS.length * CONCURRENCIES.length + STREAM_CONCURRENCIES.length + BUDGET_LOADS.length * BUDGET_RUNS.length + 5;
    let scenarioIndex = 0;
    const progress = (text: string): void => {
      scenarioIndex += 1;
      say(`[${String(scenarioIndex).padStart(2)}/${scenarioCount}] ${text}`);
    };
    const nonStream: NonStreamScenario[] = [];
    for (const upstreamMs of UPSTREAM_MS) {
      for (const concurrency of CONCURRENCIES) {
        const scenario = await runNonStream(sim, targets, upstreamMs, concurrency);
        nonStream.push(scenario);
        const direct = scenario.results.find((r) => r.target === 'direct');
        const parts = scenario.results
          .filter((r) => r.target !== 'direct')
          .map((r) => `${r.target} +${fmt(r.addedP50)}/+${fmt(r.addedP99)} ms ${fmt(r.throughputRatio)}x${r.errors > 0 ? ` ERR ${r.errors}` : ''}`);
        progress(
          `non-stream upstream ${upstreamMs} ms c=${concurrency} (${scenario.seconds.toFixed(1)} s): direct ${direct?.rps.toFixed(0)} rps p50 ${fmt(direct?.latency.p50)} ms | ${parts.join(' | ')}`,
        );
      }
    }
    const stream: StreamScenario[] = [];
    for (const concurrency of STREAM_CONCURRENCIES) {
      const scenario = await runStream(sim, targets, streamSockets, model, concurrency);
      stream.push(scenario);
      const direct = scenario.results.find((r) => r.target === 'direct');
      const parts = scenario.results
        .filter((r) => r.target !== 'direct')
        .map((r) => `${r.target} TTFT +${fmt(r.addedTtftP50)}/+${fmt(r.addedTtftP99)} gap +${fmt(r.addedGapP50)}/+${fmt(r.addedGapP99)}${r.errors > 0 ? ` ERR ${r.errors}` : ''}`);
      progress(
        `stream c=${concurrency} (${scenario.seconds.toFixed(1)} s): direct TTFT p50 ${fmt(direct?.ttft.p50)} gap p50 ${fmt(direct?.gap.p50)} ms | ${parts.join(' | ')}`,
      );
    }
    await Promise.all(streamSockets.map((socket) => socket.close()));

    const budgetLoads: BudgetLoad[] = [];
    let budgetLoadError: string | null = null;
    try {
      for (const kind of BUDGET_LOADS) {
        const accounts = await createLoadAccounts(gateway.url, adminToken, kind, randomBytes(3).toString('hex'), USER_PASSWORD);
        const as = (base: HttpTarget, secret: string): HttpTarget => ({ ...base, headers: { ...base.headers, authorization: `Bearer ${secret}` } });
        const graphqlTargets = accounts.map((account) => as(targets.http.get('graphql') as HttpTarget, account.token));
        const openaiTargets = accounts.map((account) => as(targets.http.get('openai') as HttpTarget, account.apiKey));
        const targetOf: TargetOf = (key, worker) =>
          (key === 'graphql' ? graphqlTargets[worker % graphqlTargets.length] : key === 'openai' ? openaiTargets[worker % openaiTargets.length] : targets.http.get(key)) as HttpTarget;
        const runs: NonStreamScenario[] = [];
        for (const { upstreamMs, concurrency } of BUDGET_RUNS) {
          const scenario = await runNonStream(sim, targets, upstreamMs, concurrency, targetOf);
          runs.push(scenario);
          const parts = scenario.results
            .filter((r) => r.target !== 'direct')
            .map((r) => `${r.target} +${fmt(r.addedP50)}/+${fmt(r.addedP99)} ms ${fmt(r.throughputRatio)}x${r.errors > 0 ? ` ERR ${r.errors} (${r.firstError ?? ''})` : ''}`);
          progress(`${BUDGET_LOAD_LABEL[kind]}: upstream ${upstreamMs} ms c=${concurrency}: ${parts.join(' | ')}`);
        }
        budgetLoads.push({ kind, label: BUDGET_LOAD_LABEL[kind], users: accounts.length, runs });
      }
    } catch (error) {
      budgetLoadError = error instanceof Error ? error.message : String(error);
      progress(`budget loads FAILED: ${budgetLoadError}`);
    }

    const memory: MemoryResult[] = [
      { target: 'graphql', label: 'our gateway (node dist/src/main.js)', peakBeforeFanOut: peakRss(gateway.proc.pid), peakEnd: null, note: 'one process serves GraphQL, graphql-ws and /v1' },
    ];
    if (portkey !== null) {
      memory.push({ target: 'portkey', label: `Portkey ${machine('').portkeyVersion} (node)`, peakBeforeFanOut: peakRss(portkey.pid), peakEnd: null, note: 'gets no fan-out load' });
    }

    let fanOut: FanOutResult | null = null;
    let fanOutError: string | null = null;
    await sim.setLatency(0, 0);
    try {
      fanOut = await runFanOut(gateway, adminToken, targets.http.get('graphql') as HttpTarget);
      progress(
        `fan-out: ${fanOut.subscribers} usageUpdated subscribers, ${fanOut.events} events, ${fanOut.deliveries}/${fanOut.expectedDeliveries} delivered; settle→delivery p50 ${fmt(fanOut.fromSettle.p50)} p99 ${fmt(fanOut.fromSettle.p99)} ms`,
      );
    } catch (error) {
      fanOutError = error instanceof Error ? error.message : String(error);
      progress(`fan-out FAILED: ${fanOutError}`);
    }
    const gatewayMemory = memory[0];
    if (gatewayMemory !== undefined) gatewayMemory.peakEnd = peakRss(gateway.proc.pid);
    const portkeyMemory = memory.find((m) => m.target === 'portkey');
    if (portkeyMemory !== undefined && portkey !== null) portkeyMemory.peakEnd = peakRss(portkey.pid);
    if (postmaster !== null) {
      memory.push({
        target: 'postgres',
        label: 'PostgreSQL (postmaster and backends, PSS now)',
        peakBeforeFanOut: null,
        peakEnd: treePss(postmaster),
        note: 'our gateway needs it; PSS at the end of the run, not a peak',
      });
    }

    for (const pool of targets.pools) await pool.close();
    await gateway.proc.stop();
    gateway = null;
    await portkey?.stop();
    portkey = null;

    let profile: ProfileResult | null = null;
    let profileError: string | null = null;
    await sim.setLatency(0, 0);
    try {
      profile = await runProfile(env, db.url, sim, path.join(resultsDir, 'profile'), tokens[0] as string, (targets.http.get('graphql') as HttpTarget).body);
      progress(
        `profile: GraphQL chat at c=1, 0 ms upstream, ${profile.requests} requests; gateway CPU ${profile.busyMsPerRequest.toFixed(3)} ms/request; top: ${profile.summary.topAreas
          .slice(0, 3)
          .map((a) => `${a.name} ${a.pct.toFixed(0)}%`)
          .join(', ')}`,
      );
    } catch (error) {
      profileError = error instanceof Error ? error.message : String(error);
      progress(`profile FAILED: ${profileError}`);
    }

    let fleetGateways = 0;
    const currentSim = sim;
    const { result: fleet, error: fleetError } = await optionalStep('fleet', progress, () =>
      runFleet({
        rounds: PLAN.rounds,
        roundMs: PLAN.roundMs,
        warmMs: PLAN.warmMs,
        model,
        token: tokens[0] as string,
        simulator: currentSim,
        startSimulator: startSimulatorChild,
        startGateway: async (upstreamUrls) => {
          fleetGateways += 1;
          return startGateway(gatewayEnv(db?.url ?? '', upstreamUrls.join(','), await freePort(), path.join(root, `fleet-gateway-${fleetGateways}`), jwtSecret));
        },
        chatBody: graphqlChatBody,
        say: progress,
      }),
    );

    let workerGateways = 0;
    const { result: workers, error: workersError } = await optionalStep('workers', progress, () =>
      runWorkers({
        rounds: PLAN.rounds,
        roundMs: PLAN.roundMs,
        warmMs: PLAN.warmMs,
        model,
        token: tokens[0] as string,
        apiKey,
        simulator: currentSim,
        startGateway: async (count) => {
          workerGateways += 1;
          return startGateway({
            ...gatewayEnv(db?.url ?? '', currentSim.url, await freePort(), path.join(root, `workers-gateway-${workerGateways}`), jwtSecret),
            WORKERS: String(count),
          });
        },
        graphqlBody: graphqlChatBody,
        openaiBody: (chatModel) => JSON.stringify({ model: chatModel, messages: [{ role: 'user', content: PROMPT }], max_tokens: NONSTREAM_TOKENS, seed: 7 }),
        say: progress,
      }),
    );

    const summary: BenchSummary = {
      generatedAt: new Date().toISOString(),
      quick: QUICK,
      durationSeconds: 0,
      machine: machine(await postgresVersion(db.url)),
      code,
      settings: {
        ...PLAN,
        concurrencies: CONCURRENCIES,
        upstreamMs: UPSTREAM_MS,
        nonStreamTokens: NONSTREAM_TOKENS,
        streamConcurrencies: STREAM_CONCURRENCIES,
        streamTtftMs: STREAM_TTFT_MS,
        streamInterTokenMs: STREAM_ITL_MS,
        streamTokens: STREAM_TOKENS,
        prompt: PROMPT,
      },
      checks,
      notes,
      probes,
      nonStream,
      stream,
      fanOut,
      fanOutError,
      memory,
      profile,
      profileError,
      fleet,
      fleetError,
      goals: [goals('one unlimited user', nonStream), ...budgetLoads.map((load) => goals(load.label, load.runs, nonStream))].flat(),
      budgetLoads,
      budgetLoadError,
      workers,
      workersError,
      foreignCoresBefore,
      foreignCpu: monitor.stop(),
    };
    if (profile !== null && profile.exitCode !== 0) {
      notes.push(
        `The profiled gateway exited with code ${profile.exitCode} after one SIGTERM` +
          (profile.secondSignal
            ? ': Apollo Server\'s stopOnTerminationSignals (on unless NODE_ENV=test) stops Apollo and re-sends the signal to the process, so main.ts takes it for a second signal ("second signal: exiting without waiting") and exits without draining. Passing stopOnTerminationSignals: false to ApolloServer would fix it. The profile is written all the same.'
            : '.'),
      );
    }
    await sim.stop();
    sim = null;
    await db.stop();
    db = null;
    summary.durationSeconds = (Date.now() - started) / 1000;

    process.stdout.write(`\n${renderTables(summary)}\n`);
    const json = `${JSON.stringify(summary, null, 2)}\n`;
    writeFileSync(path.join(resultsDir, 'latest.json'), json);
    writeFileSync(path.join(resultsDir, `run-${summary.generatedAt.replace(/[:.]/g, '-')}.json`), json);
    if (QUICK) {
      writeFileSync(path.join(resultsDir, 'BENCHMARKS.quick.md'), renderMarkdown(summary, 'chart.quick.svg'));
      writeFileSync(path.join(resultsDir, 'chart.quick.svg'), renderSvg(summary));
      say('--quick: wrote bench/results/ only (latest.json, BENCHMARKS.quick.md, chart.quick.svg); BENCHMARKS.md keeps the last full run');
    } else {
      writeFileSync(path.join(REPO, 'bench', 'summary.json'), `${JSON.stringify(stripRounds(summary), null, 2)}\n`);
      writeFileSync(path.join(REPO, 'bench', 'chart.svg'), renderSvg(summary));
      writeFileSync(path.join(REPO, 'BENCHMARKS.md'), renderMarkdown(summary));
      say('wrote BENCHMARKS.md, bench/chart.svg, bench/summary.json and bench/results/latest.json');
    }
    say(`done in ${summary.durationSeconds.toFixed(0)} s`);
  } finally {
    await cleanup();
  }
}

function graphqlChatBody(chatModel: string): string {
  return JSON.stringify({ query: CHAT_MUTATION, variables: { input: { model: chatModel, messages: [{ role: 'USER', content: PROMPT }], maxTokens: NONSTREAM_TOKENS, seed: 7 } } });
}

/** A step whose failure is reported in BENCHMARKS.md instead of ending the run. */
async function optionalStep<T>(name: string, progress: (text: string) => void, run: () => Promise<T>): Promise<{ result: T | null; error: string | null }> {
  try {
    return { result: await run(), error: null };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    progress(`${name} FAILED: ${message}`);
    return { result: null, error: message };
  }
}

function stripRounds(summary: BenchSummary): BenchSummary {
  return { ...summary, nonStream: summary.nonStream.map((s) => ({ ...s, results: s.results.map((r) => ({ ...r, rounds: [] })) })) };
}

function fmt(value: number | null | undefined, digits = 2): string {
  return value === null || value === undefined || !Number.isFinite(value) ? '–' : value.toFixed(digits);
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    killStartedChildren();
    process.exit(1);
  },
);
