import { createServer, Socket, type Server } from 'node:net';
import { Client } from 'pg';
import pino from 'pino';
import { PgNotifications, type Topic } from '../../src/db/notifications';
import { USAGE_CHANNEL } from '../../src/usage/usage-wire';
import { createTestDatabase } from '../helpers/database';
import { sleep, until } from '../helpers/client';

/**
 * A TCP proxy in front of PostgreSQL that a test can cut, hold (new connections wait) or shut
 * (new connections are refused): a database restart as the gateway's listener sees it.
 */
class Proxy {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private mode: 'open' | 'hold' | 'shut' = 'open';
  private readonly held: (() => void)[] = [];
  port = 0;

  constructor(private readonly target: { host: string; port: number }) {
    this.server = createServer((client) => {
      if (this.mode === 'shut') {
        client.destroy();
        return;
      }
      const connect = (): void => {
        const upstream = new Socket();
        upstream.connect(this.target.port, this.target.host);
        for (const socket of [client, upstream]) {
          this.sockets.add(socket);
          socket.on('close', () => this.sockets.delete(socket));
          socket.on('error', () => undefined);
        }
        client.pipe(upstream).pipe(client);
        client.on('close', () => upstream.destroy());
        upstream.on('close', () => client.destroy());
      };
      if (this.mode === 'hold') this.held.push(connect);
      else connect();
    });
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as { port: number }).port;
  }

  /** Connections through the proxy that are still open (client sides and upstream sides). */
  get open(): number {
    return this.sockets.size;
  }

  cut(): void {
    for (const socket of this.sockets) socket.destroy();
  }

  set(mode: 'open' | 'hold' | 'shut'): void {
    this.mode = mode;
    if (mode !== 'hold') for (const connect of this.held.splice(0)) connect();
  }

  async stop(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** The usage channel, its payloads taken as they come. */
const RAW_USAGE: Topic<string> = { channel: USAGE_CHANNEL, decode: (payload) => payload };

describe('PgNotifications (the listening connection)', () => {
  let databaseUrl: string;
  let proxy: Proxy;
  let proxiedUrl: string;
  const log = pino({ level: 'silent' });

  const notify = async (payload: string): Promise<void> => {
    const client = new Client({ connectionString: databaseUrl });
    await client.connect();
    try {
      await client.query('select pg_notify($1, $2)', [RAW_USAGE.channel, payload]);
    } finally {
      await client.end();
    }
  };

  beforeAll(async () => {
    databaseUrl = await createTestDatabase();
    const target = new URL(databaseUrl);
    proxy = new Proxy({ host: target.hostname, port: Number(target.port) });
    await proxy.start();
    const proxied = new URL(databaseUrl);
    proxied.hostname = '127.0.0.1';
    proxied.port = String(proxy.port);
    proxiedUrl = proxied.toString();
  });
  afterAll(() => proxy.stop());

  it('comes back after the database was away for a while, hears notifications again, and logs the gap', async () => {
    const lines: { level: number; msg: string; gapMs?: number }[] = [];
    const recording = pino({ level: 'warn' }, { write: (line: string) => lines.push(JSON.parse(line) as (typeof lines)[number]) });
    const notifications = new PgNotifications(proxiedUrl, recording);
    const heard: string[] = [];
    notifications.on(RAW_USAGE, (payload) => heard.push(payload));
    let reconnects = 0;
    notifications.onReconnect(() => {
      reconnects += 1;
    });
    await notifications.start();
    try {
      await notify('before');
      await until(() => heard.includes('before'), 5_000, 'the first notification');

      proxy.set('shut');
      proxy.cut();
      await until(() => !notifications.connected, 2_000, 'the loss to be seen');
      await sleep(800); // several refused attempts, backing off
      expect(notifications.connected).toBe(false);
      proxy.set('open');
      await until(() => notifications.connected, 6_000, 'the listener to come back');
      expect(reconnects).toBe(1);

      await notify('after');
      await until(() => heard.includes('after'), 5_000, 'the notification after the gap');
      expect(heard).toEqual(['before', 'after']);
      const back = lines.filter((line) => typeof line.gapMs === 'number');
      expect(back).toHaveLength(1);
      expect(back[0].gapMs).toBeGreaterThanOrEqual(800);
    } finally {
      await notifications.stop();
    }
  });

  it('leaves no connection open when stopped while a reconnection is under way', async () => {
    const notifications = new PgNotifications(proxiedUrl, log);
    await notifications.start();
    expect(proxy.open).toBe(2);
    proxy.set('hold');
    proxy.cut();
    // The reconnection starts after 100 ms and waits in the proxy; stop() comes meanwhile.
    await sleep(300);
    await notifications.stop();
    proxy.set('open');
    await sleep(500);
    expect(proxy.open).toBe(0);
    expect(notifications.connected).toBe(false);
  });
});
