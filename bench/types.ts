import type { WorkersResult } from './workers';
import type { FleetResult } from './fleet';
import type { Distribution } from './lib/stats';
import type { ForeignCpu } from './lib/cpu';
import type { ProfileSummary } from './lib/profile';

export type TargetKey = 'direct' | 'portkey' | 'graphql' | 'openai';
export const TARGET_KEYS: readonly TargetKey[] = ['direct', 'portkey', 'graphql', 'openai'];
export type GatewayKey = Exclude<TargetKey, 'direct'>;
export const GATEWAY_KEYS: readonly GatewayKey[] = ['portkey', 'graphql', 'openai'];
/** The targets our gateway serves. */
export const OUR_KEYS: readonly GatewayKey[] = ['graphql', 'openai'];

export const TARGET_LABEL: Record<TargetKey, string> = {
  direct: 'direct (simulator)',
  portkey: 'Portkey',
  graphql: 'ours: GraphQL',
  openai: 'ours: /v1 (OpenAI)',
};

export interface RoundStat {
  rps: number;
  p50: number;
  errors: number;
}

export interface NonStreamTargetResult {
  target: TargetKey;
  requests: number;
  errors: number;
  firstError: string | null;
  rps: number;
  latency: Distribution;
  /** Target minus direct at the same percentile, ms; null for direct. */
  addedP50: number | null;
  addedP99: number | null;
  /** rps / direct rps. */
  throughputRatio: number | null;
  /** CPU of all server-side processes (simulator, PostgreSQL, the gateway under test) per request, ms. */
  serverCpuMsPerRequest: number;
  /** CPU of the gateway process under test alone (ours or Portkey) per request, ms; null for direct. */
  gatewayCpuMsPerRequest: number | null;
  /** CPU of the simulator process per request, ms (ours also calls its /tokenize). */
  simulatorCpuMsPerRequest: number;
  /** CPU of PostgreSQL (postmaster and backends) per request, ms: the ledger's share of the work. */
  postgresCpuMsPerRequest: number;
  /** CPU of the load generator (this process) while this target ran, in cores. */
  clientCores: number;
  /** Our gateway's own /metrics over this target's rounds; absent for direct and Portkey. */
  inside?: GatewayInside;
  rounds: RoundStat[];
}

/** What our gateway measured of itself over a target's rounds. */
export interface GatewayInside {
  /** Mean time per request not spent waiting on vLLM (gateway_overhead_seconds), ms. */
  overheadMs: number;
  /** Requests per group-committed reserve statement, and per settle statement. */
  reserveItemsPerStatement: number;
  settleItemsPerStatement: number;
  /** Reserve statements per second of load. */
  reserveStatementsPerSecond: number;
}

export interface NonStreamScenario {
  kind: 'nonstream';
  upstreamMs: number;
  concurrency: number;
  seconds: number;
  results: NonStreamTargetResult[];
}

export interface StreamTargetResult {
  target: TargetKey;
  streams: number;
  errors: number;
  firstError: string | null;
  ttft: Distribution;
  gap: Distribution;
  addedTtftP50: number | null;
  addedTtftP99: number | null;
  addedGapP50: number | null;
  addedGapP99: number | null;
  streamsPerSecond: number;
}

export interface StreamScenario {
  kind: 'stream';
  upstreamMs: number;
  interTokenMs: number;
  tokens: number;
  concurrency: number;
  seconds: number;
  results: StreamTargetResult[];
}

export interface FanOutResult {
  subscribers: number;
  sockets: number;
  adminUsers: number;
  events: number;
  intervalMs: number;
  expectedDeliveries: number;
  deliveries: number;
  /** Receive time minus the event's `at` (stamped by the gateway just before the settle statement), ms. */
  fromSettle: Distribution;
  /** Receive time minus the arrival of the chat answer that caused the event, ms (may be negative). */
  fromResponse: Distribution;
  /** Per event: last delivery minus first delivery, ms. */
  spread: Distribution;
  connectSeconds: number;
  /** CPU of our gateway process per event (1 settle + delivery to every subscriber), ms. */
  gatewayCpuMsPerEvent: number | null;
  /** CPU of the load generator per delivery received, µs (its share of the measured latency). */
  clientCpuUsPerDelivery: number;
}

export interface MemoryResult {
  target: GatewayKey | 'postgres';
  label: string;
  /** VmHWM after the chat and streaming load (before the fan-out), bytes. */
  peakBeforeFanOut: number | null;
  /** VmHWM at the end of the run, bytes. */
  peakEnd: number | null;
  note: string;
}

export interface ProfileResult {
  summary: ProfileSummary;
  /** How the profiled gateway exited after one SIGTERM. */
  exitCode: number | null;
  /** It printed "second signal: exiting without waiting" after the one SIGTERM it got. */
  secondSignal: boolean;
  requests: number;
  p50Ms: number;
  busyMsPerRequest: number;
  transactionsPerRequest: number | null;
  rowsWrittenPerRequest: number | null;
  /** Calls of the simulator's `/tokenize` per measured request (after the warm-up); absent in results from before it was counted. */
  tokenizeCallsPerRequest?: number;
  /** pg_stat_user_tables activity per measured request (from after the warm-up to the gateway's exit). */
  tables: { table: string; inserts: number; updates: number; deletes: number; scans: number }[];
}

export interface Probes {
  /** One autocommitted single-row insert on this PostgreSQL, round trip, ms. */
  commitP50: number;
  /** `select 1`, round trip, ms. */
  selectP50: number;
  /** POST /tokenize on the simulator, ms. */
  tokenizeP50: number;
}

export interface TargetCheck {
  target: TargetKey;
  ok: boolean;
  detail: string;
}

export interface CodeUnderTest {
  /** git HEAD when the run started (the build just before it compiled the work tree). */
  commit: string;
  /** Files under src/ and migrations/ that differed from HEAD. */
  uncommitted: string[];
}

export interface Machine {
  cpus: number;
  cpuModel: string;
  memoryGiB: number;
  node: string;
  os: string;
  postgres: string;
  portkeyVersion: string;
}

/** The non-streaming runs of one budget load (bench/budgets.ts), the same targets side by side. */
export interface BudgetLoad {
  kind: 'finite-users' | 'three-levels';
  label: string;
  users: number;
  runs: NonStreamScenario[];
}

export interface Goal {
  /** The load it was measured under: the main scenario's one user, or a budget scenario. */
  scenario: string;
  name: string;
  target: GatewayKey;
  upstreamMs: number;
  value: number | null;
  /** How value and portkey read: added ms, CPU ms per request, or a ratio to direct. */
  unit: 'ms' | 'cpu' | 'ratio';
  pass: boolean | null;
  missBy: string;
  portkey: number | null;
  /** What the issue asks to see next to the figure (PostgreSQL's CPU, the aim, the ratio needed). */
  beside: string | null;
}

export interface BenchSummary {
  generatedAt: string;
  quick: boolean;
  durationSeconds: number;
  machine: Machine;
  code: CodeUnderTest | null;
  settings: Record<string, unknown>;
  checks: TargetCheck[];
  notes: string[];
  probes: Probes | null;
  nonStream: NonStreamScenario[];
  stream: StreamScenario[];
  fanOut: FanOutResult | null;
  fanOutError: string | null;
  memory: MemoryResult[];
  profile: ProfileResult | null;
  profileError: string | null;
  /** Absent in runs from before the fleet scenarios. */
  fleet?: FleetResult | null;
  fleetError?: string | null;
  /** Absent in runs from before the budget loads. */
  budgetLoads?: BudgetLoad[];
  budgetLoadError?: string | null;
  /** Absent in runs from before WORKERS. */
  workers?: WorkersResult | null;
  workersError?: string | null;
  goals: Goal[];
  /** Cores used by other processes in the 2 s before the run. */
  foreignCoresBefore: number | null;
  foreignCpu: ForeignCpu | null;
}
