// The workers scenario of `npm run bench`: the same gateway with WORKERS=1 and WORKERS=2, side
// by side on one PostgreSQL and the bench's simulator, measured in alternating rounds at
// concurrency 64 with a 20 ms upstream, through the GraphQL `chat` mutation and /v1/chat/completions.
// On this machine the load generator, the simulator and PostgreSQL share the same cores as the
// workers, so the figures are bounded by the cores there are, which the result states.
import os from 'node:os';
import { processCpuNs, serverCpuMsSince, serverCpuSnapshot } from './lib/cpu';
import { closedLoop, httpOnce, makePool, type HttpTarget } from './lib/load';
import { processTree } from './lib/proc';
import { distribution, round, type Distribution } from './lib/stats';

export interface WorkersSimulator {
  setLatency(ttftMs: number, itlMs: number): Promise<void>;
}

export interface WorkersGateway {
  readonly origin: string;
  /** The gateway's first process: with WORKERS above 1, the primary (the workers are its children). */
  readonly proc: { readonly pid: number; stop(): Promise<unknown> };
}

/** What the bench's main run lends this scenario. */
export interface WorkersDeps {
  readonly rounds: number;
  readonly roundMs: number;
  readonly warmMs: number;
  readonly model: string;
  /** An access token, for the GraphQL `chat` mutation. */
  readonly token: string;
  /** An API key, for /v1/chat/completions. */
  readonly apiKey: string;
  /** The simulator every gateway is pointed at; set to the scenario's upstream latency here. */
  readonly simulator: WorkersSimulator;
  /** node dist/src/main.js with WORKERS=`workers`, on the bench's PostgreSQL and simulator. */
  startGateway(workers: number): Promise<WorkersGateway>;
  /** The body of a GraphQL `chat` mutation for `model`. */
  graphqlBody(model: string): string;
  /** The body of a non-streaming /v1/chat/completions call for `model`. */
  openaiBody(model: string): string;
  say(line: string): void;
}

export type WorkersInterface = 'graphql' | 'openai';

export interface WorkersTargetResult {
  readonly workers: number;
  readonly iface: WorkersInterface;
  readonly label: string;
  readonly requests: number;
  readonly errors: number;
  readonly firstError: string | null;
  readonly rps: number;
  readonly latency: Distribution;
  /** rps over the same interface's with one worker; null for one worker. */
  readonly speedup: number | null;
  /** Cores the gateway's processes (its primary and workers) used while measured. */
  readonly gatewayCores: number;
  /** Cores the load generator used while measured. */
  readonly clientCores: number;
  /**
   * Cores everything on the machine that the bench runs used while measured: every process it
   * started (the gateways, the simulator, PostgreSQL) and the load generator.
   */
  readonly benchCores: number;
}

export interface WorkersResult {
  /** os.availableParallelism() of this machine. */
  readonly cores: number;
  readonly concurrency: number;
  readonly upstreamMs: number;
  readonly workerCounts: readonly number[];
  readonly results: WorkersTargetResult[];
}

const WORKER_COUNTS = [1, 2] as const;
const CONCURRENCY = 64;
const UPSTREAM_MS = 20;
const INTERFACE_LABEL: Record<WorkersInterface, string> = { graphql: 'GraphQL chat', openai: 'OpenAI /v1/chat/completions' };

interface Target {
  readonly workers: number;
  readonly iface: WorkersInterface;
  readonly http: HttpTarget;
  readonly pid: number;
}

/** CPU time (ns) of a gateway: its first process and every process under it. */
function gatewayCpuNs(pid: number): number {
  return processTree(pid).reduce((sum, member) => sum + (processCpuNs(member) ?? 0), 0);
}

function targetsOf(gateway: WorkersGateway, workers: number, deps: WorkersDeps): Target[] {
  const json = { 'content-type': 'application/json' };
  return [
    {
      workers,
      iface: 'graphql',
      pid: gateway.proc.pid,
      http: {
        pool: makePool(gateway.origin),
        path: '/graphql',
        headers: { ...json, authorization: `Bearer ${deps.token}` },
        body: deps.graphqlBody(deps.model),
        accept: (body) => (body as { errors?: unknown }).errors === undefined,
      },
    },
    {
      workers,
      iface: 'openai',
      pid: gateway.proc.pid,
      http: {
        pool: makePool(gateway.origin),
        path: '/v1/chat/completions',
        headers: { ...json, authorization: `Bearer ${deps.apiKey}` },
        body: deps.openaiBody(deps.model),
        accept: (body) => Array.isArray((body as { choices?: unknown }).choices),
      },
    },
  ];
}

export async function runWorkers(deps: WorkersDeps): Promise<WorkersResult> {
  const started: WorkersGateway[] = [];
  const targets: Target[] = [];
  try {
    await deps.simulator.setLatency(UPSTREAM_MS, 0);
    for (const workers of WORKER_COUNTS) {
      const gateway = await deps.startGateway(workers);
      started.push(gateway);
      targets.push(...targetsOf(gateway, workers, deps));
    }
    for (const target of targets) await closedLoop(CONCURRENCY, deps.warmMs, () => httpOnce(target.http));
    const acc = targets.map(() => ({ latencies: [] as number[], errors: 0, firstError: null as string | null, elapsedMs: 0, gatewayNs: 0, clientMs: 0, serverMs: 0 }));
    for (let r = 0; r < deps.rounds; r++) {
      for (let i = 0; i < targets.length; i++) {
        const index = (i + r) % targets.length;
        const target = targets[index];
        const into = acc[index];
        const gateway0 = gatewayCpuNs(target.pid);
        const server0 = serverCpuSnapshot();
        const client0 = process.cpuUsage();
        const result = await closedLoop(CONCURRENCY, deps.roundMs, () => httpOnce(target.http));
        const client = process.cpuUsage(client0);
        into.serverMs += serverCpuMsSince(server0);
        into.gatewayNs += Math.max(0, gatewayCpuNs(target.pid) - gateway0);
        into.clientMs += (client.user + client.system) / 1000;
        into.latencies.push(...result.latencies);
        into.errors += result.errors;
        into.firstError ??= result.firstError;
        into.elapsedMs += result.elapsedMs;
      }
    }
    const rpsOf = (index: number): number => acc[index].latencies.length / (acc[index].elapsedMs / 1000);
    const results = targets.map((target, index): WorkersTargetResult => {
      const into = acc[index];
      const single = targets.findIndex((other) => other.workers === 1 && other.iface === target.iface);
      return {
        workers: target.workers,
        iface: target.iface,
        label: `${INTERFACE_LABEL[target.iface]}, WORKERS=${target.workers}`,
        requests: into.latencies.length,
        errors: into.errors,
        firstError: into.firstError,
        rps: round(rpsOf(index), 1),
        latency: distribution(into.latencies),
        speedup: target.workers === 1 ? null : round(rpsOf(index) / rpsOf(single), 3),
        gatewayCores: round(into.gatewayNs / 1e6 / into.elapsedMs, 2),
        clientCores: round(into.clientMs / into.elapsedMs, 2),
        benchCores: round((into.serverMs + into.clientMs) / into.elapsedMs, 2),
      };
    });
    deps.say(`workers c=${CONCURRENCY} ${UPSTREAM_MS} ms: ${results.map((r) => `${r.label} ${r.rps.toFixed(0)} rps${r.errors > 0 ? ` ERR ${r.errors}` : ''}`).join(' | ')}`);
    return { cores: os.availableParallelism(), concurrency: CONCURRENCY, upstreamMs: UPSTREAM_MS, workerCounts: WORKER_COUNTS, results };
  } finally {
    for (const target of targets) await target.http.pool.close();
    for (const gateway of started) await gateway.proc.stop().catch(() => undefined);
  }
}

type TableRenderer = (header: string[], rows: string[][], align: ('l' | 'r')[]) => string;

function figure(value: number | null, digits = 2): string {
  return value === null || !Number.isFinite(value) ? '–' : value.toFixed(digits);
}

/** The workers section of the report: a paragraph on what bounds the figures, and the table. */
export function renderWorkers(result: WorkersResult | null | undefined, error: string | null | undefined, table: TableRenderer): string[] {
  if (result === undefined) return ['Not measured in this run.'];
  if (result === null) return [`The workers step failed: ${error ?? 'unknown'}.`];
  const cores = result.cores === 1 ? '1 core' : `${result.cores} cores`;
  const header = ['target', 'rps', 'p50 ms', 'p99 ms', 'speedup over WORKERS=1', 'gateway cores', 'all cores used', 'errors'];
  const align: ('l' | 'r')[] = ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r'];
  const rows = result.results.map((r) => [
    r.label,
    figure(r.rps, 0),
    figure(r.latency.p50),
    figure(r.latency.p99),
    figure(r.speedup),
    figure(r.gatewayCores),
    figure(r.benchCores),
    String(r.errors),
  ]);
  const speedups = result.results
    .filter((r) => r.speedup !== null)
    .map((r) => `${figure(r.speedup)}× with ${r.label}`)
    .join(', ');
  return [
    `The same gateway with ${result.workerCounts.map((count) => `WORKERS=${count}`).join(' and ')}, side by side, in alternating rounds at concurrency ` +
      `${result.concurrency} with a ${result.upstreamMs} ms upstream. This machine has ${cores} (os.availableParallelism()), and everything ` +
      'measured here shares them: the workers and their primary, the load generator, the simulator and PostgreSQL, so the ' +
      `throughput is bounded by those ${cores}, whatever the number of workers. "gateway cores" is the CPU the gateway's processes ` +
      '(primary and workers) used per second of measuring; "all cores used" adds PostgreSQL, the simulator and the load generator, ' +
      `and near ${result.cores} it means the machine was full. Throughput relative to WORKERS=1: ${speedups}. What more workers give ` +
      'on a host whose cores are the gateway\'s alone (PostgreSQL, vLLM and the clients elsewhere) is not measured here.',
    '',
    table(header, rows, align),
  ];
}
