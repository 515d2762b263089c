// The fleet scenarios of `npm run bench`: one simulator against two behind the gateway, and
// the cost of routing with 1 and with 20 configured upstreams. Each compares gateways started
// side by side on one PostgreSQL, measured in alternating rounds.
import { closedLoop, httpOnce, makePool, type HttpTarget } from './lib/load';
import { processCpuNs } from './lib/cpu';
import { distribution, round } from './lib/stats';
import type { Distribution } from './lib/stats';

export interface FleetSimulator {
  readonly url: string;
  readonly origin: string;
  setLatency(ttftMs: number, itlMs: number): Promise<void>;
  stop(): Promise<void>;
}

export interface FleetGateway {
  readonly origin: string;
  readonly proc: { readonly pid: number; stop(): Promise<unknown> };
}

/** What the bench's main run lends these scenarios. */
export interface FleetDeps {
  readonly rounds: number;
  readonly roundMs: number;
  readonly warmMs: number;
  readonly model: string;
  readonly token: string;
  /** The first simulator (already running); the scenarios start and stop the others. */
  readonly simulator: FleetSimulator;
  /** `host` 0.0.0.0: reachable at every loopback address. */
  startSimulator(host?: string): Promise<FleetSimulator>;
  /** A gateway over these upstream base URLs (comma-separated into VLLM_BASE_URL). */
  startGateway(upstreamUrls: readonly string[]): Promise<FleetGateway>;
  chatBody(model: string): string;
  say(line: string): void;
}

export interface FleetTargetResult {
  readonly label: string;
  readonly upstreams: number;
  readonly requests: number;
  readonly errors: number;
  readonly rps: number;
  readonly latency: Distribution;
  /** p50 minus the direct call's p50 in the same scenario; null for the direct call. */
  readonly addedP50: number | null;
  readonly throughputRatio: number | null;
  readonly gatewayCpuMsPerRequest: number | null;
}

export interface FleetScenario {
  readonly name: string;
  readonly concurrency: number;
  readonly upstreamMs: number;
  readonly results: FleetTargetResult[];
}

export interface FleetResult {
  readonly throughput: FleetScenario;
  readonly routingCost: FleetScenario;
}

const FLEET_CONCURRENCY = 64;
const FLEET_UPSTREAM_MS = 20;
const ROUTING_UPSTREAMS = 20;

interface Target {
  readonly label: string;
  readonly upstreams: number;
  readonly http: HttpTarget;
  readonly pid: number | null;
}

function graphqlTarget(label: string, upstreams: number, gateway: FleetGateway, deps: FleetDeps): Target {
  return {
    label,
    upstreams,
    pid: gateway.proc.pid,
    http: {
      pool: makePool(gateway.origin),
      path: '/graphql',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${deps.token}` },
      body: deps.chatBody(deps.model),
      accept: (body) => (body as { errors?: unknown }).errors === undefined,
    },
  };
}

/** Alternating rounds of each target at `concurrency`; ratios against the first target when `againstFirst`. */
async function measure(name: string, targets: readonly Target[], concurrency: number, upstreamMs: number, deps: FleetDeps, againstFirst: boolean): Promise<FleetScenario> {
  for (const target of targets) await closedLoop(concurrency, deps.warmMs, () => httpOnce(target.http));
  const acc = targets.map(() => ({ latencies: [] as number[], errors: 0, elapsedMs: 0, cpuMs: 0 }));
  for (let r = 0; r < deps.rounds; r++) {
    for (let i = 0; i < targets.length; i++) {
      const index = (i + r) % targets.length;
      const target = targets[index];
      const into = acc[index];
      const cpu0 = target.pid === null ? null : processCpuNs(target.pid);
      const result = await closedLoop(concurrency, deps.roundMs, () => httpOnce(target.http));
      if (target.pid !== null && cpu0 !== null) into.cpuMs += ((processCpuNs(target.pid) ?? cpu0) - cpu0) / 1e6;
      into.latencies.push(...result.latencies);
      into.errors += result.errors;
      into.elapsedMs += result.elapsedMs;
    }
  }
  const base = acc[0];
  const baseP50 = distribution(base.latencies).p50;
  const baseRps = base.latencies.length / (base.elapsedMs / 1000);
  return {
    name,
    concurrency,
    upstreamMs,
    results: targets.map((target, i) => {
      const into = acc[i];
      const latency = distribution(into.latencies);
      const rps = into.latencies.length / (into.elapsedMs / 1000);
      const compared = againstFirst && i > 0;
      return {
        label: target.label,
        upstreams: target.upstreams,
        requests: into.latencies.length,
        errors: into.errors,
        rps: round(rps, 1),
        latency,
        addedP50: compared ? round(latency.p50 - baseP50, 3) : null,
        throughputRatio: compared ? round(rps / baseRps, 3) : null,
        gatewayCpuMsPerRequest: target.pid === null ? null : round(into.cpuMs / Math.max(1, into.latencies.length), 3),
      };
    }),
  };
}

export async function runFleet(deps: FleetDeps): Promise<FleetResult> {
  const second = await deps.startSimulator();
  let everywhere: FleetSimulator | null = null;
  const started: FleetGateway[] = [];
  const targets: Target[] = [];
  try {
    await deps.simulator.setLatency(FLEET_UPSTREAM_MS, 0);
    await second.setLatency(FLEET_UPSTREAM_MS, 0);
    const one = await deps.startGateway([deps.simulator.url]);
    started.push(one);
    const two = await deps.startGateway([deps.simulator.url, second.url]);
    started.push(two);
    const direct: Target = {
      label: 'direct to one simulator',
      upstreams: 1,
      pid: null,
      http: {
        pool: makePool(deps.simulator.origin),
        path: '/v1/chat/completions',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: deps.model, messages: [{ role: 'user', content: 'Write one short sentence about benchmarks.' }], max_tokens: 16, seed: 7 }),
        accept: (body) => Array.isArray((body as { choices?: unknown }).choices),
      },
    };
    targets.push(direct, graphqlTarget('GraphQL chat, 1 upstream', 1, one, deps), graphqlTarget('GraphQL chat, 2 upstreams', 2, two, deps));
    const throughput = await measure('one simulator vs two behind the gateway', targets, FLEET_CONCURRENCY, FLEET_UPSTREAM_MS, deps, true);
    deps.say(
      `fleet c=${FLEET_CONCURRENCY} ${FLEET_UPSTREAM_MS} ms: ${throughput.results.map((r) => `${r.label} ${r.rps.toFixed(0)} rps p50 ${r.latency.p50.toFixed(2)} ms`).join(' | ')}`,
    );

    await deps.simulator.setLatency(0, 0);
    // Twenty distinct upstreams (a URL may be configured once) that are one simulator process, at 0 ms like the first gateway's.
    everywhere = await deps.startSimulator('0.0.0.0');
    const port = new URL(everywhere.url).port;
    const many = await deps.startGateway(Array.from({ length: ROUTING_UPSTREAMS }, (_, i) => `http://127.0.0.${i + 1}:${port}/v1`));
    started.push(many);
    const routing = [graphqlTarget('GraphQL chat, 1 upstream', 1, one, deps), graphqlTarget(`GraphQL chat, ${ROUTING_UPSTREAMS} upstreams`, ROUTING_UPSTREAMS, many, deps)];
    targets.push(...routing);
    const routingCost = await measure('cost of routing', routing, 1, 0, deps, true);
    deps.say(`routing cost c=1 0 ms: ${routingCost.results.map((r) => `${r.label} ${r.gatewayCpuMsPerRequest?.toFixed(3)} ms CPU/request`).join(' | ')}`);
    return { throughput, routingCost };
  } finally {
    for (const target of targets) await target.http.pool.close();
    for (const gateway of started) await gateway.proc.stop().catch(() => undefined);
    await second.stop();
    await everywhere?.stop();
  }
}
