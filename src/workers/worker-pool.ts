import cluster, { type Worker } from 'node:cluster';
import { AggregatorRegistry } from 'prom-client';
import type { Logger } from '../logger';
import { isWorkerMessage, primaryMessage, type HostFacts, type Listening, type MetricsSnapshot, type PrimaryMessage, type WorkerMessage } from './protocol';
import type { SocketCounts } from './socket-counts';

/** A worker that does not hand over its metrics within this fails the scrape (503) rather than hold it. */
const SNAPSHOT_TIMEOUT_MS = 3_000;
/** A worker that served this long before it died ran well: the one replacing it starts at once. */
const STEADY_AFTER_MS = 30_000;
/** Deaths in a row wait 0.5 s, 1 s, 2 s, … up to 30 s before the next fork, so that a worker that cannot start does not spin. */
const FIRST_RESTART_DELAY_MS = 500;
const MAX_RESTART_DELAY_MS = 30_000;

interface Exit {
  readonly code: number | null;
  readonly signal: string | null;
  /** Exited 0, or was ended by the SIGTERM of a stop before it served (it had nothing to drain). */
  readonly clean: boolean;
}

/** One of the N places a worker fills; a worker that dies is replaced in its place. */
interface Slot {
  readonly place: number;
  worker: Worker | null;
  exited: Promise<Exit> | null;
  listeningSince: number | null;
  /** Deaths in a row, none after a steady run. */
  failures: number;
  restart: NodeJS.Timeout | null;
}

interface SnapshotWait {
  readonly workerId: number;
  resolve(metrics: MetricsSnapshot): void;
  reject(error: Error): void;
  readonly timer: NodeJS.Timeout;
}

/**
 * The primary's workers: forks them (node:cluster shares the listening socket among them),
 * answers their questions (where the database and simulator are, the host's metrics, a
 * WebSocket slot), replaces one that dies, and stops them all with SIGTERM.
 */
export class WorkerPool {
  private readonly slots: Slot[];
  private readonly snapshotWaits = new Map<number, SnapshotWait>();
  private nextSnapshotId = 1;
  private stopping = false;
  private starting: { resolve(first: Listening): void; reject(error: Error): void; readonly served: Listening[] } | null = null;

  constructor(
    count: number,
    private readonly facts: HostFacts,
    private readonly sockets: SocketCounts,
    private readonly log: Logger,
  ) {
    this.slots = Array.from({ length: count }, (_, index) => ({ place: index + 1, worker: null, exited: null, listeningSince: null, failures: 0, restart: null }));
  }

  /**
   * Forks every worker; resolves once all serve, with what the banner shows (the first admin,
   * if one of them created it). A worker that exits before it serves fails the start.
   */
  start(): Promise<Listening> {
    return new Promise<Listening>((resolve, reject) => {
      this.starting = { resolve, reject, served: [] };
      for (const slot of this.slots) this.fork(slot);
    });
  }

  /** SIGTERM to every worker (each drains, as a single process does); rejects when one did not exit 0. */
  async stop(): Promise<void> {
    this.stopping = true;
    const exits = this.slots.map((slot) => {
      if (slot.restart !== null) clearTimeout(slot.restart);
      slot.restart = null;
      slot.worker?.process.kill('SIGTERM');
      return slot.exited;
    });
    const failed = (await Promise.all(exits)).filter((exit): exit is Exit => exit !== null && !exit.clean);
    if (failed.length > 0) {
      throw new Error(`${failed.length} worker(s) did not stop cleanly: ${failed.map((exit) => `code ${exit.code}, signal ${exit.signal}`).join('; ')}`);
    }
  }

  private fork(slot: Slot): void {
    const worker = cluster.fork();
    slot.worker = worker;
    slot.exited = new Promise<Exit>((resolve) => {
      worker.once('exit', (code: number | null, signal: string | null) => {
        const clean = code === 0 || (this.stopping && slot.listeningSince === null && signal === 'SIGTERM');
        this.exited(slot, worker, { code, signal, clean });
        resolve({ code, signal, clean });
      });
    });
    worker.on('message', (message: unknown) => {
      if (isWorkerMessage(message)) this.receive(slot, worker, message);
    });
  }

  private receive(slot: Slot, worker: Worker, message: WorkerMessage): void {
    switch (message.kind) {
      case 'question': {
        const { id, question } = message;
        if (question.type === 'host') this.tell(worker, primaryMessage({ kind: 'answer', id, answer: this.facts }));
        else if (question.type === 'take-socket') this.tell(worker, primaryMessage({ kind: 'answer', id, answer: this.sockets.take(worker.id, question.userId) }));
        else {
          this.hostMetrics().then(
            (text) => this.tell(worker, primaryMessage({ kind: 'answer', id, answer: text })),
            (error: unknown) => this.tell(worker, primaryMessage({ kind: 'refusal', id, reason: error instanceof Error ? error.message : String(error) })),
          );
        }
        return;
      }
      case 'give-socket':
        this.sockets.give(worker.id, message.userId);
        return;
      case 'snapshot': {
        const wait = this.snapshotWaits.get(message.id);
        if (wait === undefined) return;
        this.snapshotWaits.delete(message.id);
        clearTimeout(wait.timer);
        wait.resolve(message.metrics);
        return;
      }
      case 'listening':
        slot.listeningSince = Date.now();
        this.log.info({ worker: worker.id, workerPid: worker.process.pid, place: slot.place }, 'worker listening');
        if (this.starting !== null) {
          this.starting.served.push(message.listening);
          if (this.starting.served.length === this.slots.length) {
            const [first] = this.starting.served;
            const created = this.starting.served.find((served) => served.adminBootstrap !== null);
            this.starting.resolve({ ...first, adminBootstrap: created?.adminBootstrap ?? null });
            this.starting = null;
          }
        }
        return;
    }
  }

  /** Every serving worker's registry, added up metric by metric as each metric's `aggregator` says. */
  private async hostMetrics(): Promise<string> {
    const serving = this.slots.flatMap((slot) => (slot.worker !== null && slot.listeningSince !== null && slot.worker.isConnected() ? [slot.worker] : []));
    const snapshots = await Promise.all(serving.map((worker) => this.snapshotOf(worker)));
    return AggregatorRegistry.aggregate(snapshots).metrics();
  }

  private snapshotOf(worker: Worker): Promise<MetricsSnapshot> {
    const id = this.nextSnapshotId++;
    return new Promise<MetricsSnapshot>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.snapshotWaits.delete(id);
        reject(new Error(`worker ${worker.id} gave no metrics within ${SNAPSHOT_TIMEOUT_MS} ms`));
      }, SNAPSHOT_TIMEOUT_MS);
      this.snapshotWaits.set(id, { workerId: worker.id, resolve, reject, timer });
      this.tell(worker, primaryMessage({ kind: 'snapshot-request', id }));
    });
  }

  private exited(slot: Slot, worker: Worker, exit: Exit): void {
    this.sockets.forgetWorker(worker.id);
    // Its figures went with it: the scrape adds up the workers that are left.
    for (const [id, wait] of this.snapshotWaits) {
      if (wait.workerId !== worker.id) continue;
      this.snapshotWaits.delete(id);
      clearTimeout(wait.timer);
      wait.resolve([]);
    }
    const servedSince = slot.listeningSince;
    slot.worker = null;
    slot.listeningSince = null;
    if (this.stopping) return;
    if (this.starting !== null) {
      const starting = this.starting;
      this.starting = null;
      const reason = new Error(`worker ${worker.id} exited (code ${exit.code}, signal ${exit.signal}) before it was listening`);
      // The others are stopped before the start fails, so that nothing is left behind.
      this.stop().then(
        () => starting.reject(reason),
        () => starting.reject(reason),
      );
      return;
    }
    const ranSteadily = servedSince !== null && Date.now() - servedSince >= STEADY_AFTER_MS;
    slot.failures = ranSteadily ? 0 : slot.failures + 1;
    const delay = slot.failures === 0 ? 0 : Math.min(MAX_RESTART_DELAY_MS, FIRST_RESTART_DELAY_MS * 2 ** (slot.failures - 1));
    this.log.error(
      { worker: worker.id, workerPid: worker.process.pid, place: slot.place, code: exit.code, signal: exit.signal, restartInMs: delay },
      'worker exited unexpectedly; starting another in its place',
    );
    slot.restart = setTimeout(() => {
      slot.restart = null;
      this.fork(slot);
    }, delay);
  }

  /** A worker that is gone cannot be told anything: its exit is handled on its own. */
  private tell(worker: Worker, message: PrimaryMessage): void {
    if (worker.isConnected()) worker.send(message, undefined, {}, () => undefined);
  }
}
