import { randomUUID } from 'node:crypto';
import os from 'node:os';
import type { Database } from '../db/database';
import { ADVISORY_LOCK_KEYS } from '../db/advisory-locks';
import type { PgNotifications } from '../db/notifications';
import type { Logger } from '../logger';
import { HEARTBEAT_SQL } from './ledger-sql';

/** Well within the contract's "at least every 2 s", so a late timer still keeps it. */
const HEARTBEAT_EVERY_MS = 1000;

/** A request in flight whose delivered tokens are checkpointed. */
export interface Checkpointed {
  readonly requestId: string;
  /** Completion tokens delivered to the client so far. */
  readonly delivered: number;
}

/**
 * This process as the other instances sharing the database see it: a row in
 * `gateway_instances` it refreshes every second, and an advisory lock its listening connection
 * holds for as long as the process lives (PostgreSQL drops it the moment the process dies,
 * however it dies). The same heartbeat checkpoints the tokens each of its streams has delivered,
 * so that when it dies, whoever settles its requests charges what the clients received.
 */
export class GatewayInstance {
  readonly id = randomUUID();
  private readonly inFlight = new Set<Checkpointed>();
  /** What the database holds for each request in flight, as of the last heartbeat that went through. */
  private readonly written = new WeakMap<Checkpointed, number>();
  private timer: NodeJS.Timeout | null = null;
  private beating: Promise<void> | null = null;
  private failingSince: number | null = null;
  /** Given at start, from a sequence: the second key of this instance's lock. */
  private lockKey = 0;

  constructor(
    private readonly db: Database,
    private readonly notifications: PgNotifications,
    private readonly log: Logger,
  ) {}

  /**
   * Registers this process and takes its lock, before it takes any request (the tables exist
   * once migrations ran); from then on it beats every second.
   */
  async start(): Promise<this> {
    const row = await this.db.one<{ key: number }>("select nextval('gateway_instance_lock_keys')::integer as key");
    if (row === undefined) throw new Error('no instance lock key');
    this.lockKey = row.key;
    await this.beat();
    await this.notifications.onSession((client) => client.query('select pg_advisory_lock($1, $2)', [ADVISORY_LOCK_KEYS.instances, row.key]));
    this.timer = setInterval(() => void this.beat(), HEARTBEAT_EVERY_MS);
    this.timer.unref();
    this.log.info({ instance: this.id }, 'instance registered');
    return this;
  }

  track(request: Checkpointed): void {
    this.inFlight.add(request);
  }

  untrack(request: Checkpointed): void {
    this.inFlight.delete(request);
  }

  /**
   * Whether this instance may judge others gone: only once its own listening connection has
   * been up for `ms`. After an outage every live instance needs that long to take its lock
   * again; judged sooner, a live instance would look dead.
   */
  steadyFor(ms: number): boolean {
    return this.notifications.connected && this.notifications.upForMs >= ms;
  }

  /** One heartbeat with the checkpoints that changed; never throws (an outage is logged once). */
  beat(): Promise<void> {
    this.beating ??= this.writeBeat().finally(() => {
      this.beating = null;
    });
    return this.beating;
  }

  private async writeBeat(): Promise<void> {
    const changed = [...this.inFlight].filter((request) => request.delivered !== (this.written.get(request) ?? 0));
    const delivered = changed.map((request) => request.delivered);
    try {
      await this.db.query(HEARTBEAT_SQL, [this.id, this.lockKey, os.hostname(), process.pid, changed.map((request) => request.requestId), delivered]);
      changed.forEach((request, index) => this.written.set(request, delivered[index] ?? 0));
      if (this.failingSince !== null) {
        this.log.info({ gapMs: Date.now() - this.failingSince }, 'instance heartbeat written again');
        this.failingSince = null;
      }
    } catch (error) {
      if (this.failingSince === null) {
        this.failingSince = Date.now();
        this.log.warn({ err: error }, 'instance heartbeat failed; checkpoints wait for the database');
      }
    }
  }

  /** Stops beating; the row goes unless requests of this instance are still unsettled (others settle them). */
  async stop(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    await this.beating;
    await this.db
      .query('delete from gateway_instances where id = $1 and not exists (select 1 from quota_reservations where instance_id = $1)', [this.id])
      .catch((error: unknown) => this.log.warn({ err: error }, 'could not remove the instance row'));
  }
}
