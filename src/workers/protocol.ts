import type { MetricObjectWithValues, MetricValue } from 'prom-client';
import type { Banner } from '../server/banner';

/**
 * What the primary and its workers say to each other over node:cluster's IPC channel. Every
 * message carries `channel`, so that nothing else sent on it (node's own messages travel apart)
 * is taken for one of these.
 */
const CHANNEL = 'vllm-gateway';

/** What the primary started before forking, for each worker to use instead of starting its own. */
export interface HostFacts {
  /** The configured database, or the embedded one the primary started; migrated. */
  readonly databaseUrl: string;
  /** The built-in simulator's base URL; null when upstreams are configured. */
  readonly simulatorUrl: string | null;
}

/** One worker's metrics, as its registry gives them for prom-client's aggregation. */
export type MetricsSnapshot = MetricObjectWithValues<MetricValue<string>>[];

/** What a worker asks the primary, and what each question is answered with. */
export type Question = { readonly type: 'host' } | { readonly type: 'metrics' } | { readonly type: 'take-socket'; readonly userId: string };

export interface Answers {
  /** Asked once, at the worker's start. */
  readonly host: HostFacts;
  /** Every worker's metrics added up, in Prometheus' text format. */
  readonly metrics: string;
  /** Whether the user may open one more WebSocket; if so, the slot is the asking worker's. */
  readonly 'take-socket': boolean;
}

/** A worker that serves: what the banner shows. */
export type Listening = Omit<Banner, 'workers'>;

export type WorkerMessage =
  | { readonly channel: typeof CHANNEL; readonly kind: 'question'; readonly id: number; readonly question: Question }
  | { readonly channel: typeof CHANNEL; readonly kind: 'listening'; readonly listening: Listening }
  | { readonly channel: typeof CHANNEL; readonly kind: 'give-socket'; readonly userId: string }
  | { readonly channel: typeof CHANNEL; readonly kind: 'snapshot'; readonly id: number; readonly metrics: MetricsSnapshot };

export type PrimaryMessage =
  | { readonly channel: typeof CHANNEL; readonly kind: 'answer'; readonly id: number; readonly answer: Answers[keyof Answers] }
  | { readonly channel: typeof CHANNEL; readonly kind: 'refusal'; readonly id: number; readonly reason: string }
  | { readonly channel: typeof CHANNEL; readonly kind: 'snapshot-request'; readonly id: number };

type Unsent<M> = M extends unknown ? Omit<M, 'channel'> : never;

export function workerMessage(message: Unsent<WorkerMessage>): WorkerMessage {
  return { channel: CHANNEL, ...message } as WorkerMessage;
}

export function primaryMessage(message: Unsent<PrimaryMessage>): PrimaryMessage {
  return { channel: CHANNEL, ...message } as PrimaryMessage;
}

function onChannel(value: unknown): boolean {
  return typeof value === 'object' && value !== null && (value as { channel?: unknown }).channel === CHANNEL;
}

/** Both ends are this program: a message on the channel has the shape its sender gave it. */
export function isWorkerMessage(value: unknown): value is WorkerMessage {
  return onChannel(value);
}

export function isPrimaryMessage(value: unknown): value is PrimaryMessage {
  return onChannel(value);
}
