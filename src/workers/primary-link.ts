import { Registry } from 'prom-client';
import type { MetricsExposition } from '../metrics/metrics';
import type { ConnectionSlots } from '../server/sockets';
import { isPrimaryMessage, workerMessage, type Answers, type Listening, type MetricsSnapshot, type PrimaryMessage, type Question } from './protocol';

/** Longer than the primary takes to gather every worker's metrics (it gives up after 3 s). */
const ANSWER_TIMEOUT_MS = 5_000;

interface Waiting {
  resolve(answer: Answers[keyof Answers]): void;
  reject(error: Error): void;
  readonly timer: NodeJS.Timeout;
}

/** A worker's line to its primary: questions with their answers, notices, and the primary's requests for this worker's metrics. */
export class PrimaryLink {
  private nextId = 1;
  private readonly waiting = new Map<number, Waiting>();
  private snapshot: (() => Promise<MetricsSnapshot>) | null = null;

  constructor() {
    process.on('message', (message: unknown) => {
      if (isPrimaryMessage(message)) this.receive(message);
    });
    process.once('disconnect', () => this.failAll(new Error('the primary process is gone')));
  }

  ask<T extends Question['type']>(question: Extract<Question, { type: T }>): Promise<Answers[T]> {
    const id = this.nextId++;
    return new Promise<Answers[T]>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`the primary did not answer "${question.type}" within ${ANSWER_TIMEOUT_MS} ms`));
      }, ANSWER_TIMEOUT_MS);
      // The primary answers each question with the answer of its type.
      this.waiting.set(id, { resolve: resolve as (answer: Answers[keyof Answers]) => void, reject, timer });
      this.send(workerMessage({ kind: 'question', id, question }), (error) => this.settle(id, error));
    });
  }

  /** This worker serves. */
  listening(listening: Listening): void {
    this.send(workerMessage({ kind: 'listening', listening }));
  }

  /** Lost only when the primary is gone, or when this worker is exiting; the primary forgets an exited worker's sockets anyway. */
  giveSocket(userId: string): void {
    this.send(workerMessage({ kind: 'give-socket', userId }));
  }

  /** From now on the primary's requests for this worker's metrics are answered with `read`. */
  answerSnapshotsWith(read: () => Promise<MetricsSnapshot>): void {
    this.snapshot = read;
  }

  private receive(message: PrimaryMessage): void {
    if (message.kind === 'snapshot-request') {
      const read = this.snapshot ?? (() => Promise.resolve([]));
      read().then(
        (metrics) => this.send(workerMessage({ kind: 'snapshot', id: message.id, metrics })),
        () => this.send(workerMessage({ kind: 'snapshot', id: message.id, metrics: [] })),
      );
      return;
    }
    const waiting = this.waiting.get(message.id);
    if (waiting === undefined) return;
    this.waiting.delete(message.id);
    clearTimeout(waiting.timer);
    if (message.kind === 'answer') waiting.resolve(message.answer);
    else waiting.reject(new Error(message.reason));
  }

  private settle(id: number, error: Error | null): void {
    if (error === null) return;
    const waiting = this.waiting.get(id);
    if (waiting === undefined) return;
    this.waiting.delete(id);
    clearTimeout(waiting.timer);
    waiting.reject(error);
  }

  private failAll(error: Error): void {
    for (const [id, waiting] of this.waiting) {
      this.waiting.delete(id);
      clearTimeout(waiting.timer);
      waiting.reject(error);
    }
  }

  private send(message: ReturnType<typeof workerMessage>, done: (error: Error | null) => void = () => undefined): void {
    if (process.send === undefined || !process.connected) {
      done(new Error('the primary process is gone'));
      return;
    }
    process.send(message, undefined, {}, done);
  }
}

/** WS_MAX_CONNECTIONS_PER_USER counted by the primary, for every worker at once. */
export class SharedConnectionSlots implements ConnectionSlots {
  constructor(private readonly primary: PrimaryLink) {}

  take(userId: string): Promise<boolean> {
    return this.primary.ask({ type: 'take-socket', userId });
  }

  give(userId: string): void {
    this.primary.giveSocket(userId);
  }
}

/** `GET /metrics` of a worker: every worker's figures, added up by the primary. */
export class HostMetrics implements MetricsExposition {
  readonly contentType = Registry.PROMETHEUS_CONTENT_TYPE;

  constructor(private readonly primary: PrimaryLink) {}

  text(): Promise<string> {
    return this.primary.ask({ type: 'metrics' });
  }
}
