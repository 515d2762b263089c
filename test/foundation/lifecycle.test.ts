import { connect, type Socket } from 'node:net';
import { migrationsList } from '../../migrations';
import { startSimulator, type Simulator } from '../../src/simulator';
import { VERSION } from '../../src/version';
import { gql, sleep } from '../helpers/client';
import { createTestDatabase, sql } from '../helpers/database';
import {
  CreateUserDocument,
  LoginDocument,
  UsersDocument,
  ServerInfoDocument,
} from '../generated/graphql';
import { distMain, distMigrateCli, ensureServerBuild } from './build';
import {
  PROCESS_ADMIN,
  baseEnv,
  killGateway,
  makeDataDir,
  removeDir,
  runNode,
  startGatewayProcess,
  within,
  type GatewayProcess,
} from './gateway-process';


let simulator: Simulator;
const started: GatewayProcess[] = [];
const dataDirs: string[] = [];

beforeAll(async () => {
  await ensureServerBuild();
  simulator = await startSimulator({});
}, 120_000);

afterAll(async () => {
  for (const proc of started) await killGateway(proc);
  await simulator?.stop();
  for (const dir of dataDirs) removeDir(dir);
});

async function launch(env: Record<string, string>): Promise<GatewayProcess> {
  const proc = await startGatewayProcess(env);
  started.push(proc);
  return proc;
}

/** A raw HTTP/1.1 connection, so the test decides exactly when each byte of a request is sent. */
class RawConnection {
  private received = '';
  private closed: Promise<void>;
  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (this.received += chunk));
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => undefined);
  }

  static open(url: URL): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const socket = connect(Number(url.port), url.hostname, () => resolve(new RawConnection(socket)));
      socket.once('error', reject);
    });
  }

  write(text: string): void {
    this.socket.write(text);
  }

  get isClosed(): boolean {
    return this.socket.destroyed || this.socket.readyState === 'closed';
  }

  whenClosed(): Promise<void> {
    return this.closed;
  }

  /**
   * Resolves once the server has sent `100 Continue`, which node:http does when it hands the
   * request to the gateway: from then on the request is in flight, whatever the body's progress.
   */
  async continued(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!/^HTTP\/1\.1 100 Continue\r\n\r\n/.test(this.received)) {
      if (this.isClosed || Date.now() > deadline) throw new Error(`no 100 Continue; received: ${JSON.stringify(this.received)}`);
      await sleep(10);
    }
    this.received = this.received.replace(/^HTTP\/1\.1 100 Continue\r\n\r\n/, '');
  }

  /** The status and body of the next complete response (Content-Length framed). */
  async response(timeoutMs = 10_000): Promise<{ status: number; body: string }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const headerEnd = this.received.indexOf('\r\n\r\n');
      if (headerEnd >= 0) {
        const head = this.received.slice(0, headerEnd);
        const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? NaN);
        const body = this.received.slice(headerEnd + 4);
        if (Number.isFinite(length) && Buffer.byteLength(body) >= length) {
          this.received = '';
          return { status: Number(head.split(' ')[1]), body };
        }
      }
      if (this.isClosed) throw new Error(`the connection closed before a complete response; received: ${JSON.stringify(this.received)}`);
      if (Date.now() > deadline) throw new Error(`no complete response within ${timeoutMs} ms; received: ${JSON.stringify(this.received)}`);
      await sleep(20);
    }
  }
}

function graphqlRequestHead(url: URL, body: string, extraHeaders = ''): string {
  return (
    `POST ${url.pathname} HTTP/1.1\r\nHost: ${url.host}\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: keep-alive\r\n${extraHeaders}\r\n`
  );
}

async function eventually(check: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
}

function refusesConnections(url: URL): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(Number(url.port), url.hostname);
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(true));
  });
}

describe('graceful stop (node dist/src/main.js)', () => {
  it('on SIGTERM finishes the request in flight, closes idle connections, and exits 0', async () => {
    const gateway = await launch(
      baseEnv({ DATA_DIR: makeDataDirFor(), DATABASE_URL: await createTestDatabase(), VLLM_BASE_URL: simulator.url }),
    );
    const url = new URL(gateway.url);
    const body = JSON.stringify({ query: '{ serverInfo { version } }' });

    // An idle keep-alive connection that has already been served once.
    const idle = await RawConnection.open(url);
    idle.write(graphqlRequestHead(url, body) + body);
    expect((await idle.response()).status).toBe(200);

    // A request whose body is still arriving when the signal comes.
    const inFlight = await RawConnection.open(url);
    inFlight.write(graphqlRequestHead(url, body, 'Expect: 100-continue\r\n') + body.slice(0, 10));
    await inFlight.continued();

    gateway.child.kill('SIGTERM');
    // The listener closes at once: a load balancer sees the instance go away...
    expect(await eventually(() => refusesConnections(url), 5_000)).toBe(true);
    // ...but the process waits for the request it has accepted.
    await sleep(300);
    expect(gateway.running()).toBe(true);
    await within(idle.whenClosed(), 5_000, () => 'the idle keep-alive connection was left open');

    inFlight.write(body.slice(10));
    const answer = await inFlight.response();
    expect(answer.status).toBe(200);
    expect(JSON.parse(answer.body)).toEqual({ data: { serverInfo: { version: expect.stringMatching(/^\d+\.\d+\.\d+/) } } });

    // Well inside Apollo's 10 s grace period: nothing else is left to wait for.
    const exit = await within(gateway.exited, 5_000, () => `no exit after the last request:\n${gateway.stderr()}`);
    expect({ code: exit.code, signal: exit.signal, stderr: exit.stderr }).toEqual({ code: 0, signal: null, stderr: '' });
  }, 60_000);
});

function makeDataDirFor(): string {
  const dir = makeDataDir('lifecycle');
  dataDirs.push(dir);
  return dir;
}

describe('Ctrl-C under npm start (NODE_ENV=development)', () => {
  it('survives the doubled SIGINT (terminal + npm), stops the embedded PostgreSQL and exits 0', async () => {
    const dataDir = makeDataDirFor();
    const proc = await launch(baseEnv({ NODE_ENV: 'development', LOG_LEVEL: 'info', DATA_DIR: dataDir, VLLM_BASE_URL: simulator.url }));
    expect((await gql(proc.url, ServerInfoDocument)).data?.serverInfo.version).toBe(VERSION);
    // The terminal signals the whole process group and npm forwards the signal again.
    proc.child.kill('SIGINT');
    proc.child.kill('SIGINT');
    const exit = await within(proc.exited, 15_000, () => `the gateway did not exit after Ctrl-C:\n${proc.stdout()}`);
    expect(exit.code).toBe(0);
    expect(exit.stdout).toMatch(/embedded PostgreSQL stopped/);
    expect(exit.stdout).not.toMatch(/second signal/);
  });
});

describe('embedded PostgreSQL under DATA_DIR (no DATABASE_URL)', () => {
  it('starts, refuses a second process on the same DATA_DIR, and keeps data across a restart', async () => {
    const dataDir = makeDataDirFor();
    const env = baseEnv({ DATA_DIR: dataDir, VLLM_BASE_URL: simulator.url });

    const first = await launch(env);
    const info = await gql(first.url, ServerInfoDocument);
    expect(info.errors).toBeUndefined();
    expect(info.data?.serverInfo.version).toMatch(/^\d+\.\d+\.\d+/);

    const second = runNode(distMain, env);
    const refused = await within(second.exited, 30_000, () => 'a second gateway on the same DATA_DIR kept running');
    expect(refused.code).not.toBe(0);
    expect(refused.code).not.toBeNull();
    expect(refused.stderr).toMatch(/DATA_DIR/);
    expect(refused.stderr).toMatch(/in use/);
    expect(refused.stdout).not.toMatch(/GraphiQL/);
    // The first one is untouched by the attempt.
    expect((await gql(first.url, ServerInfoDocument)).data?.serverInfo.version).toBe(VERSION);

    const admin = await gql(first.url, LoginDocument, PROCESS_ADMIN);
    expect(admin.errors).toBeUndefined();
    expect(admin.data?.login.user.role).toBe('ADMIN');
    const newUser = { email: 'kept@example.test', password: 'kept-password-123' };
    const created = await gql(first.url, CreateUserDocument, { input: newUser }, admin.data?.login.accessToken);
    expect(created.errors).toBeUndefined();
    const createdId = created.data?.createUser.id;
    expect(createdId).toBeDefined();

    const firstExit = await first.stop();
    expect({ code: firstExit.code, stderr: firstExit.stderr }).toEqual({ code: 0, stderr: '' });

    const restarted = await launch(env);
    const login = await gql(restarted.url, LoginDocument, newUser);
    expect(login.errors).toBeUndefined();
    expect(login.data?.login.user).toEqual({ ...created.data?.createUser, id: createdId, email: newUser.email, role: 'USER' });
    const adminAgain = await gql(restarted.url, LoginDocument, PROCESS_ADMIN);
    const listed = await gql(restarted.url, UsersDocument, { search: 'kept@' }, adminAgain.data?.login.accessToken);
    expect(listed.data?.users.nodes).toEqual([{ id: createdId, email: newUser.email, usage: { used: 0, limit: null, remaining: null, reserved: 0, periodStart: null, periodEnd: null } }]);

    const restartedExit = await restarted.stop();
    expect(restartedExit.code).toBe(0);
  }, 120_000);
});

describe('node dist/src/db/migrate-cli.js (npm run migrate)', () => {
  it('applies every migration to a fresh database, then has nothing to apply', async () => {
    const databaseUrl = await createTestDatabase();
    const env = baseEnv({ DATA_DIR: makeDataDirFor(), DATABASE_URL: databaseUrl, NODE_ENV: 'development', LOG_LEVEL: 'info' });

    const first = await within(runNode(distMigrateCli, env).exited, 30_000, () => 'migrate did not finish');
    expect({ code: first.code, stderr: first.stderr }).toEqual({ code: 0, stderr: '' });
    const appliedLine = first.stdout.split('\n').find((line) => line.startsWith('migrations applied: ')) ?? first.stdout;
    expect(appliedLine.slice('migrations applied: '.length).split(', ')).toEqual(migrationsList.map((migration) => migration.name));
    const tables = await sql<{ name: string }>(databaseUrl, "select tablename as name from pg_tables where schemaname = 'public'");
    expect(tables.map((table) => table.name)).toEqual(expect.arrayContaining(['users', 'mikro_orm_migrations']));

    const second = await within(runNode(distMigrateCli, env).exited, 30_000, () => 'migrate did not finish');
    expect({ code: second.code, stderr: second.stderr }).toEqual({ code: 0, stderr: '' });
    expect(second.stdout).toContain('migrations: nothing to apply');
    expect(second.stdout).not.toContain('migrations applied');
  }, 60_000);
});
