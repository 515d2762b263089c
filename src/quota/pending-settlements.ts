import { isDatabaseUnreachable } from '../db/unreachable';
import { ServiceUnavailableError } from '../errors';
import type { Logger } from '../logger';
import type { GatewayMetrics } from '../metrics/metrics';

/** How a reservation ends: settled (charged, with its usage record) or released. */
export type ReservationEnding = 'settlement' | 'release';

const FIRST_RETRY_MS = 500;
const LONGEST_RETRY_MS = 5_000;
/** How long a stopping process keeps trying before it leaves what is still pending to the reaper. */
const SHUTDOWN_GRACE_MS = 5_000;
/** How long a charge waits for the listening connection before it is applied without it: a charge matters more than its event. */
const LONGEST_WAIT_FOR_LISTENING_MS = 30_000;

/** The connection usage events are heard on (PgNotifications). */
export interface ListeningConnection {
  readonly connected: boolean;
  onReconnect(listener: () => void): void;
}

interface Pending {
  readonly requestId: string;
  readonly ending: ReservationEnding;
  readonly attempt: () => Promise<unknown>;
  readonly since: number;
  attempts: number;
  delayMs: number;
  timer: NodeJS.Timeout | null;
}

/**
 * Reservation endings that met a database which cannot be reached, kept in memory and tried
 * again (0.5 s, doubling to 5 s) until it answers: a request that finished for its client during
 * an outage is still charged, once. Every attempt is one statement keyed by the request id (a
 * settlement writes at most one usage record per request id, and whichever statement ends a
 * reservation deletes its row), so an attempt whose answer was lost is safe to repeat.
 */
export class PendingSettlements {
  private readonly pending = new Map<string, Pending>();
  private state: 'running' | 'finishing' | 'stopped' = 'running';
  private emptied: (() => void) | null = null;
  private listening: ListeningConnection | null = null;

  constructor(
    private readonly log: Logger,
    metrics: GatewayMetrics,
  ) {
    metrics.countPendingSettlementsWith(() => this.pending.size);
  }

  /** Endings waiting for the database. */
  get size(): number {
    return this.pending.size;
  }

  /**
   * Retries wait until `listening` is connected again, so that the usage events of the charges
   * they apply reach this instance's subscribers; when it is back, every pending ending is tried at once.
   */
  followListening(listening: ListeningConnection): void {
    this.listening = listening;
    listening.onReconnect(() => {
      for (const entry of this.pending.values()) {
        if (entry.timer === null) continue;
        clearTimeout(entry.timer);
        this.retry(entry);
      }
    });
  }

  /**
   * Runs `attempt`, resolving with its result; when the database cannot be reached, resolves
   * with null at once and keeps trying in the background. Any other failure is thrown.
   */
  async apply<T>(requestId: string, ending: ReservationEnding, attempt: () => Promise<T>): Promise<T | null> {
    try {
      return await attempt();
    } catch (error) {
      if (!isDatabaseUnreachable(error)) throw error;
      const reason = driverErrorOf(error);
      if (this.state === 'stopped') {
        this.log.error({ err: reason, requestId, ending }, 'database unreachable while stopping: the reservation stays for the reaper to settle');
        return null;
      }
      const entry: Pending = { requestId, ending, attempt, since: Date.now(), attempts: 1, delayMs: FIRST_RETRY_MS, timer: null };
      this.pending.set(requestId, entry);
      this.log.warn({ err: reason, requestId, ending }, 'database unreachable: the reservation ending is kept and tried again until it answers');
      this.schedule(entry, this.state === 'finishing' ? 0 : entry.delayMs);
      return null;
    }
  }

  /**
   * On shutdown: tries each pending ending at once, keeps trying for at most `graceMs`, then
   * names those the database never took. Their reservation rows stay, for the reaper.
   */
  async finish(graceMs = SHUTDOWN_GRACE_MS): Promise<void> {
    if (this.state !== 'running') return;
    if (this.pending.size > 0) {
      this.state = 'finishing';
      for (const entry of this.pending.values()) {
        if (entry.timer === null) continue;
        clearTimeout(entry.timer);
        this.retry(entry);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, graceMs);
        this.emptied = () => {
          clearTimeout(timer);
          resolve();
        };
        if (this.pending.size === 0) this.emptied();
      });
    }
    this.state = 'stopped';
    for (const entry of this.pending.values()) if (entry.timer !== null) clearTimeout(entry.timer);
    if (this.pending.size > 0) {
      this.log.error(
        { pending: [...this.pending.values()].map(({ requestId, ending }) => ({ requestId, ending })) },
        'stopped with reservation endings the database never took: their reservations stay for the reaper to settle',
      );
    }
    this.pending.clear();
  }

  private schedule(entry: Pending, delayMs: number): void {
    entry.timer = setTimeout(() => this.retry(entry), delayMs);
    entry.timer.unref();
  }

  private retry(entry: Pending): void {
    entry.timer = null;
    const unheard = this.listening !== null && !this.listening.connected;
    if (unheard && this.state === 'running' && Date.now() - entry.since < LONGEST_WAIT_FOR_LISTENING_MS) {
      this.schedule(entry, entry.delayMs);
      return;
    }
    entry.attempts += 1;
    entry.attempt().then(
      () => {
        this.pending.delete(entry.requestId);
        this.log.info(
          { requestId: entry.requestId, ending: entry.ending, attempts: entry.attempts, waitedMs: Date.now() - entry.since },
          'database answering again: the pending reservation ending is applied',
        );
        if (this.pending.size === 0) this.emptied?.();
      },
      (error: unknown) => {
        // Already named in the shutdown's report.
        if (this.state === 'stopped') return;
        if (isDatabaseUnreachable(error)) {
          entry.delayMs = Math.min(entry.delayMs * 2, LONGEST_RETRY_MS);
          this.schedule(entry, entry.delayMs);
          return;
        }
        this.pending.delete(entry.requestId);
        this.log.error({ err: error, requestId: entry.requestId, ending: entry.ending }, 'a pending reservation ending failed: the reservation stays for the reaper');
        if (this.pending.size === 0) this.emptied?.();
      },
    );
  }
}

/** What the driver said, for the log: a ServiceUnavailableError's own message is the client's. */
function driverErrorOf(error: unknown): unknown {
  return error instanceof ServiceUnavailableError && error.cause !== undefined ? error.cause : error;
}
