import { sql } from '../helpers/database';
import { startTestGateway, type TestGateway } from '../helpers/server';

let gateway: TestGateway;
let databaseName: string;
let blocked = false;

function adminUrl(): string {
  const url = process.env.TEST_POSTGRES_URL;
  if (url === undefined) throw new Error('TEST_POSTGRES_URL is unset: run through jest');
  return url;
}

/** What a load balancer sees: status, JSON body, and how long it waited. */
async function probe(path: string): Promise<{ status: number; contentType: string | null; body: unknown; ms: number }> {
  const started = Date.now();
  const response = await fetch(`${gateway.server.origin}${path}`);
  const body: unknown = await response.json();
  return { status: response.status, contentType: response.headers.get('content-type'), body, ms: Date.now() - started };
}

/** Cuts the gateway off from its database: no new connections, and the open ones killed. */
async function blockDatabase(): Promise<void> {
  blocked = true;
  await sql(adminUrl(), `alter database "${databaseName}" allow_connections false`);
  await sql(adminUrl(), 'select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()', [
    databaseName,
  ]);
}

async function unblockDatabase(): Promise<void> {
  await sql(adminUrl(), `alter database "${databaseName}" allow_connections true`);
  blocked = false;
}

beforeAll(async () => {
  gateway = await startTestGateway();
  databaseName = new URL(gateway.databaseUrl).pathname.slice(1);
  expect(databaseName).toMatch(/^test_[0-9a-f]+$/);
});

afterAll(async () => {
  if (blocked) await unblockDatabase();
  await gateway.stop();
});

describe('health and readiness', () => {
  it('/healthz answers 200 JSON while the process is up', async () => {
    const reply = await probe('/healthz');
    expect(reply.status).toBe(200);
    expect(reply.contentType).toMatch(/^application\/json/);
    expect(reply.body).toEqual({ status: 'ok', version: expect.stringMatching(/^\d+\.\d+\.\d+/) });
  });

  it('/readyz answers 200 JSON while the database is reachable', async () => {
    const reply = await probe('/readyz');
    expect(reply.status).toBe(200);
    expect(reply.contentType).toMatch(/^application\/json/);
    expect(reply.body).toEqual({ status: 'ready', database: 'up', upstreams: { healthy: 1, total: 1 } });
  });

  it('/readyz answers 503 once the database is unreachable, promptly, and 200 again once it is back', async () => {
    await blockDatabase();

    // Every probe, not just the first: the pool must not hide the outage behind a stale connection.
    for (let attempt = 0; attempt < 3; attempt++) {
      const reply = await probe('/readyz');
      expect({ attempt, status: reply.status }).toEqual({ attempt, status: 503 });
      expect(reply.contentType).toMatch(/^application\/json/);
      expect(reply.body).toMatchObject({ status: 'unavailable' });
      expect(reply.ms).toBeLessThan(5_000);
    }
    // The process itself is fine: liveness must not restart it for a database outage.
    expect((await probe('/healthz')).status).toBe(200);

    await unblockDatabase();
    // The pool reconnects on its own: ready again without a restart.
    let status = 0;
    for (let attempt = 0; attempt < 20 && status !== 200; attempt++) {
      if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, 100));
      status = (await probe('/readyz')).status;
    }
    expect(status).toBe(200);
  });
});
