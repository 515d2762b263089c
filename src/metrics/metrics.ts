import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { BadUserInputError, QuotaExceededError, RateLimitedError, UpstreamError } from '../errors';
import type { ChatInterface } from '../quota/reservation';
import type { Fleet } from '../upstreams/fleet';

/** How a chat request ended, as `gateway_requests_total` counts it. */
export type ChatOutcome = 'ok' | 'quota_exceeded' | 'rate_limited' | 'bad_input' | 'upstream_error' | 'aborted';

/** The model label of a request: a model of the catalogue, or `other` (a label never holds what a client typed). */
const UNLISTED_MODEL = 'other';

/** The outcome an admission or upstream failure stands for; null for failures outside the contract's outcomes. */
export function outcomeOf(error: unknown): ChatOutcome | null {
  if (error instanceof QuotaExceededError) return 'quota_exceeded';
  if (error instanceof RateLimitedError) return 'rate_limited';
  if (error instanceof BadUserInputError) return 'bad_input';
  if (error instanceof UpstreamError) return 'upstream_error';
  return null;
}

/**
 * What `GET /metrics` answers: one process's registry, or, with several workers, every worker's
 * summed by the primary (see src/workers).
 */
export interface MetricsExposition {
  readonly contentType: string;
  text(): Promise<string>;
}

/**
 * The gateway's Prometheus metrics, on a registry of its own (two servers in one process, as in
 * tests, keep separate counts). Counters move where the facts are made: tokens when a usage
 * record is written, requests when a chat ends; gauges are read when scraped. With several
 * workers the primary adds their registries up, each metric by its `aggregator` (a sum unless
 * one says otherwise).
 */
export class GatewayMetrics implements MetricsExposition {
  readonly registry = new Registry();
  private readonly requests: Counter<'interface' | 'model' | 'outcome'>;
  private readonly tokens: Counter<'model' | 'kind'>;
  private readonly duration: Histogram<'interface' | 'model'>;
  private readonly overhead: Histogram<'interface'>;
  private readonly firstToken: Histogram<'model'>;
  private readonly reservations: Gauge;
  private readonly interrupted: Counter;
  private readonly ledgerItems: Histogram<'statement'>;
  private webSocketCount: () => number = () => 0;
  private pendingSettlementCount: () => number = () => 0;

  constructor(private readonly fleet: Fleet) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.requests = new Counter({
      name: 'gateway_requests_total',
      help: 'Chat requests by how they ended.',
      labelNames: ['interface', 'model', 'outcome'],
      registers,
    });
    this.tokens = new Counter({
      name: 'gateway_tokens_total',
      help: 'Tokens in the usage records this instance wrote.',
      labelNames: ['model', 'kind'],
      registers,
    });
    this.duration = new Histogram({
      name: 'gateway_request_duration_seconds',
      help: 'Chat requests from arrival to their last byte.',
      labelNames: ['interface', 'model'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
      registers,
    });
    this.overhead = new Histogram({
      name: 'gateway_overhead_seconds',
      help: "A chat request's time minus the time spent waiting on vLLM.",
      labelNames: ['interface'],
      buckets: [0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1],
      registers,
    });
    this.firstToken = new Histogram({
      name: 'gateway_time_to_first_token_seconds',
      help: "A stream's time from arrival to its first token sent to the client.",
      labelNames: ['model'],
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.reservations = new Gauge({ name: 'gateway_reservations_in_flight', help: 'Reservations of this instance not yet settled or released.', registers });
    this.interrupted = new Counter({
      name: 'gateway_interrupted_requests_total',
      help: 'Requests of instances that died, settled by this instance from their last checkpoint.',
      registers,
    });
    this.ledgerItems = new Histogram({
      name: 'gateway_ledger_statement_items',
      help: 'Reservations or settlements per ledger statement: above 1 when concurrent ones were group-committed.',
      labelNames: ['statement'],
      buckets: [1, 2, 4, 8, 16, 32, 64],
      registers,
    });
    const countSockets = (): number => this.webSocketCount();
    const countPendingSettlements = (): number => this.pendingSettlementCount();
    new Gauge({
      name: 'gateway_pending_settlements',
      help: 'Settlements and releases of reservations waiting for the database to answer again.',
      registers,
      collect() {
        this.set(countPendingSettlements());
      },
    });
    const fleetStatus = (): ReturnType<Fleet['status']> => this.fleet.status();
    new Gauge({
      name: 'gateway_websocket_connections',
      help: 'Open graphql-ws connections.',
      registers,
      collect() {
        this.set(countSockets());
      },
    });
    new Gauge({
      name: 'gateway_upstream_up',
      help: '1 while the upstream is in rotation (of every worker: each judges for itself).',
      labelNames: ['upstream'],
      aggregator: 'min',
      registers,
      collect() {
        for (const upstream of fleetStatus()) this.set({ upstream: upstream.name }, upstream.healthy ? 1 : 0);
      },
    });
    new Gauge({
      name: 'gateway_upstream_in_flight',
      help: "This instance's requests waiting on the upstream.",
      labelNames: ['upstream'],
      registers,
      collect() {
        for (const upstream of fleetStatus()) this.set({ upstream: upstream.name }, upstream.inFlight);
      },
    });
  }

  /** The open sockets' count, read at each scrape. */
  countWebSocketsWith(count: () => number): void {
    this.webSocketCount = count;
  }

  /** The count of reservation endings waiting for the database, read at each scrape. */
  countPendingSettlementsWith(count: () => number): void {
    this.pendingSettlementCount = count;
  }

  modelLabel(model: string | null): string {
    return model !== null && this.fleet.knows(model) ? model : UNLISTED_MODEL;
  }

  reservationOpened(): void {
    this.reservations.inc();
  }

  reservationEnded(): void {
    this.reservations.dec();
  }

  /** One statement of the ledger ran for `items` reservations or settlements. */
  ledgerStatement(statement: 'reserve' | 'settle', items: number): void {
    this.ledgerItems.observe({ statement }, items);
  }

  orphansSettled(count: number): void {
    this.interrupted.inc(count);
  }

  /** A usage record this instance wrote. */
  recorded(model: string, promptTokens: number, completionTokens: number, cachedTokens = 0): void {
    const label = this.modelLabel(model);
    this.tokens.inc({ model: label, kind: 'prompt' }, promptTokens);
    this.tokens.inc({ model: label, kind: 'completion' }, completionTokens);
    this.tokens.inc({ model: label, kind: 'cached' }, cachedTokens);
  }

  /** A chat request that ended, with what it spent waiting on vLLM. */
  chatEnded(ended: { iface: ChatInterface; model: string | null; outcome: ChatOutcome; seconds: number; upstreamSeconds: number }): void {
    const model = this.modelLabel(ended.model);
    this.requests.inc({ interface: ended.iface, model, outcome: ended.outcome });
    this.duration.observe({ interface: ended.iface, model }, ended.seconds);
    this.overhead.observe({ interface: ended.iface }, Math.max(0, ended.seconds - ended.upstreamSeconds));
  }

  firstTokenSent(model: string, seconds: number): void {
    this.firstToken.observe({ model: this.modelLabel(model) }, seconds);
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

/**
 * One chat request's clock, from its arrival: what it waited on vLLM, when its first token left,
 * and its end, told to the metrics exactly once.
 */
export class ChatObservation {
  private upstreamMs = 0;
  private firstTokenSeen = false;
  private done = false;
  model: string | null = null;
  /** How the request ended, once known; told to the metrics by `end`. */
  outcome: ChatOutcome | null = null;

  constructor(
    private readonly metrics: GatewayMetrics,
    readonly iface: ChatInterface,
    private readonly receivedAt: number,
  ) {}

  /** Runs `wait`, counting its time as time spent on vLLM. */
  async waitingOnUpstream<T>(wait: () => Promise<T>): Promise<T> {
    const started = performance.now();
    try {
      return await wait();
    } finally {
      this.upstreamMs += performance.now() - started;
    }
  }

  firstToken(): void {
    if (this.firstTokenSeen || this.model === null) return;
    this.firstTokenSeen = true;
    this.metrics.firstTokenSent(this.model, (performance.now() - this.receivedAt) / 1000);
  }

  end(outcome: ChatOutcome | null): void {
    if (this.done) return;
    this.done = true;
    if (outcome === null) return;
    this.metrics.chatEnded({
      iface: this.iface,
      model: this.model,
      outcome,
      seconds: (performance.now() - this.receivedAt) / 1000,
      upstreamSeconds: this.upstreamMs / 1000,
    });
  }
}
