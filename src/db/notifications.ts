import { Client } from 'pg';
import type { Logger } from '../logger';
import type { Sql } from './database';

/** NOTIFY's payload limit is 8000 bytes; ours carry ids and numbers and stay far below. */
const MAX_PAYLOAD_BYTES = 7900;
const RECONNECT_MIN_MS = 100;
const RECONNECT_MAX_MS = 5000;

/** A channel and what is said on it; each feature declares its own (usage events, credential changes). */
export interface Topic<T> {
  readonly channel: string;
  /** null: a payload this version does not understand, which is dropped. */
  decode(payload: string): T | null;
}

/** A topic the gateway also sends on itself (the usage topic is sent by the settle statement). */
export interface SentTopic<T> extends Topic<T> {
  encode(value: T): string;
}

type Handler = (payload: string) => void;

/**
 * PostgreSQL LISTEN/NOTIFY on one dedicated connection per process: how instances sharing a
 * database tell each other about settled requests and revoked credentials. The connection
 * comes back by itself after the database restarts; the gap is logged, and `onReconnect`
 * listeners (caches) learn that notifications may have been missed.
 */
export class PgNotifications {
  private client: Client | null = null;
  private readonly handlers = new Map<string, Set<Handler>>();
  private readonly reconnectListeners = new Set<() => void>();
  private readonly sessionSetups: ((client: Client) => Promise<unknown>)[] = [];
  private connectedAt: number | null = null;
  private stopped = false;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private lostAt: number | null = null;

  constructor(
    private readonly databaseUrl: string,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    await this.connect();
  }

  /** Calls `handler` with every value said on `topic`, by any instance; returns how to stop. */
  on<T>(topic: Topic<T>, handler: (value: T) => void): () => void {
    let set = this.handlers.get(topic.channel);
    if (set === undefined) {
      set = new Set();
      this.handlers.set(topic.channel, set);
      // A channel first heard of after the connection was made is listened to now; reconnections listen to every known one.
      this.client?.query(`listen ${topic.channel}`).catch((error: unknown) => this.log.warn({ err: error, channel: topic.channel }, 'could not listen'));
    }
    const decoded: Handler = (payload) => {
      const value = topic.decode(payload);
      if (value !== null) handler(value);
    };
    set.add(decoded);
    return () => set.delete(decoded);
  }

  onReconnect(listener: () => void): void {
    this.reconnectListeners.add(listener);
  }

  /**
   * Runs `setup` on the connection now, if there is one, and on every connection made after:
   * what must hold for as long as this process's session does (the instance's lock).
   */
  async onSession(setup: (client: Client) => Promise<unknown>): Promise<void> {
    this.sessionSetups.push(setup);
    if (this.client !== null) await setup(this.client);
  }

  /** How long the connection has been up without a break, in ms (0 while it is down). */
  get upForMs(): number {
    return this.connectedAt === null || this.client === null ? 0 : Date.now() - this.connectedAt;
  }

  /** For tests and health: whether the listening connection is up. */
  get connected(): boolean {
    return this.client !== null;
  }

  /** The backend pid of the listening connection, so a test can cut it. */
  async backendPid(): Promise<number | null> {
    if (this.client === null) return null;
    const result = await this.client.query<{ pid: number }>('select pg_backend_pid() as pid');
    return result.rows[0]?.pid ?? null;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    const client = this.client;
    this.client = null;
    await client?.end().catch(() => undefined);
  }

  private async connect(): Promise<void> {
    const client = new Client({ connectionString: this.databaseUrl, keepAlive: true });
    client.on('notification', (message) => {
      const handlers = this.handlers.get(message.channel);
      if (handlers === undefined || message.payload === undefined) return;
      for (const handler of handlers) {
        try {
          handler(message.payload);
        } catch (error) {
          this.log.error({ err: error, channel: message.channel }, 'notification handler failed');
        }
      }
    });
    const lost = (error?: Error): void => {
      if (this.client !== client) return;
      this.client = null;
      this.lostAt = Date.now();
      this.log.warn({ err: error }, 'notification connection lost; reconnecting');
      client.end().catch(() => undefined);
      this.scheduleReconnect(RECONNECT_MIN_MS);
    };
    client.on('error', lost);
    client.on('end', () => lost());
    try {
      await client.connect();
      for (const setup of this.sessionSetups) await setup(client);
      for (const channel of this.handlers.keys()) await client.query(`listen ${channel}`);
    } catch (error) {
      // A connection that got this far must not stay open beside the next attempt's.
      await client.end().catch(() => undefined);
      throw error;
    }
    if (this.stopped) {
      // stop() ran while this reconnection was under way: nobody would ever close it.
      await client.end().catch(() => undefined);
      return;
    }
    this.client = client;
    this.connectedAt = Date.now();
  }

  private scheduleReconnect(delayMs: number): void {
    if (this.stopped) return;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.connect().then(
        () => {
          if (this.stopped) return;
          const gapMs = this.lostAt === null ? 0 : Date.now() - this.lostAt;
          this.log.warn({ gapMs }, 'notification connection back; events settled during the gap were not pushed live');
          this.lostAt = null;
          for (const listener of this.reconnectListeners) listener();
        },
        () => this.scheduleReconnect(Math.min(delayMs * 2, RECONNECT_MAX_MS)),
      );
    }, delayMs);
    this.reconnectTimer.unref();
  }
}

/** Sends a notification where `sql` runs: inside a transaction, it is delivered on commit. */
export async function notify<T>(sql: Sql, topic: SentTopic<T>, value: T): Promise<void> {
  const text = topic.encode(value);
  if (Buffer.byteLength(text) > MAX_PAYLOAD_BYTES) throw new Error(`notification on ${topic.channel} is too large`);
  await sql.query('select pg_notify($1, $2)', [topic.channel, text]);
}
