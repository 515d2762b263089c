import { sql } from '../helpers/database';
import { startWithAdmin, type TestGateway } from '../helpers/server';
import { chat, createUser, sleep, until, type Feed, type WsClient } from '../helpers/client';
import { RawSocket } from '../helpers/raw-socket';
import { requestIds, usageFeed, type UsageEventData } from './support';

/** The listening connection of the gateway: the backend whose last statement was a LISTEN. */
async function listeners(databaseUrl: string): Promise<number[]> {
  const rows = await sql<{ pid: number }>(
    databaseUrl,
    "select pid from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid() and query ilike 'listen %'",
  );
  return rows.map((row) => row.pid);
}

async function terminate(databaseUrl: string, pids: number[]): Promise<void> {
  await sql(databaseUrl, 'select pg_terminate_backend(pid) from unnest($1::int[]) as pid', [pids]);
}

describe('usageUpdated across a lost database connection', () => {
  let gateway: TestGateway;
  let admin: string;
  const clients: WsClient[] = [];

  const subscribe = async (token: string): Promise<{ client: WsClient; feed: Feed<UsageEventData> }> => {
    const client = gateway.ws(token);
    clients.push(client);
    const feed = usageFeed(client);
    await until(() => client.acknowledged, 5_000, 'connection_ack');
    await sleep(250);
    return { client, feed };
  };

  beforeAll(async () => {
    ({ gateway, admin: { token: admin } } = await startWithAdmin({ simulator: { timeToFirstTokenMs: 0, interTokenLatencyMs: 0 } }));
  });
  let restore: (() => void) | null = null;
  afterEach(async () => {
    restore?.();
    restore = null;
    await Promise.all(clients.splice(0).map((client) => client.dispose()));
  });
  afterAll(() => gateway.stop());

  it('resumes delivery after the listening connection is cut, on the same subscription', async () => {
    const user = await createUser(gateway, admin);
    const { client, feed } = await subscribe(user.token);
    const before = await chat(gateway, user.token);
    await until(() => feed.events.length === 1, 5_000, 'the event before the cut');

    const [listener, ...others] = await listeners(gateway.databaseUrl);
    expect(others).toEqual([]); // one dedicated connection per process
    await terminate(gateway.databaseUrl, [listener]);
    const cutAt = Date.now();
    await until(async () => (await listeners(gateway.databaseUrl)).some((pid) => pid !== listener), 5_000, 'a new listening connection');
    const gapMs = Date.now() - cutAt;

    const after = await chat(gateway, user.token);
    await until(() => feed.events.length === 2, 5_000, 'the event after the reconnection');
    await sleep(200);
    expect(requestIds(feed)).toEqual([before, after]);
    expect(feed.error).toBeNull();
    expect(client.closeCode).toBeNull();
    expect(gapMs).toBeLessThan(5_000);
  });

  it('re-checks every socket after the gap: a change it could not hear about closes the socket', async () => {
    const user = await createUser(gateway, admin);
    const socket = await RawSocket.connect(gateway.server.wsUrl);
    try {
      expect(await socket.init(`Bearer ${user.token}`)).toBe('ack');
      // Straight in the database: no notification is sent, as if it was sent during the gap.
      await sql(gateway.databaseUrl, 'update users set disabled = true where id = $1', [user.id]);
      await terminate(gateway.databaseUrl, await listeners(gateway.databaseUrl));
      const closed = await socket.closedWithin(5_000);
      expect(closed?.code).toBe(4403);
    } finally {
      socket.terminate();
    }
  });

  it('resumes delivery after every connection to the database was cut (a database restart as the gateway sees it)', async () => {
    const user = await createUser(gateway, admin);
    const { feed } = await subscribe(user.token);
    // knex reports each dead pool connection with console.log; expected here.
    const consoleLog = jest.spyOn(console, 'log').mockImplementation(() => undefined);
    restore = () => consoleLog.mockRestore();
    await sql(gateway.databaseUrl, 'select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()');
    await until(async () => (await listeners(gateway.databaseUrl)).length === 1, 5_000, 'a new listening connection');

    // The pool may hand out a dead connection once; a client retries.
    let requestId: string | null = null;
    await until(
      async () => {
        requestId = await chat(gateway, user.token).catch(() => null);
        return requestId !== null;
      },
      5_000,
      'a chat to succeed again',
    );
    await until(() => feed.events.length === 1, 5_000, 'the event after the restart');
    expect(requestIds(feed)).toEqual([requestId]);
  });
});
