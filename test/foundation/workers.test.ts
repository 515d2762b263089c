import { randomUUID } from 'node:crypto';
import { request } from 'node:http';
import OpenAI from 'openai';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { ChatDocument, ServerInfoDocument } from '../generated/graphql';
import {
  WsClient,
  createApiKey,
  createUser,
  dataOf,
  eventually,
  gql,
  postGraphQL,
  signIn,
  until,
  type Feed,
  type GraphQLEndpoint,
  type SignedIn,
} from '../helpers/client';
import { usageFeed, type UsageEventData } from '../usage/support';
import { ensureServerBuild } from './build';
import { PROCESS_ADMIN, baseEnv, killGateway, makeDataDir, removeDir, startGatewayProcess, within, type GatewayProcess } from './gateway-process';

/**
 * WORKERS=2 as users run it: `node dist/src/main.js` with nothing else configured, so the
 * primary starts the embedded PostgreSQL and the built-in simulator once and both workers use
 * them. Which worker served what is read from the log: every line of a worker carries its pid,
 * and the access log names the request id the test sent. Each HTTP request below goes on a
 * connection of its own, and node:cluster hands new connections to the workers in turn.
 */

const MODEL = 'sim-llama-3-8b';
const SOCKETS_PER_USER = 2;

interface LogLine {
  readonly msg?: string;
  readonly pid?: number;
  readonly worker?: number;
  readonly primary?: boolean;
  readonly workerPid?: number;
  readonly requestId?: string;
  readonly userId?: string;
}

let dataDir: string;
let gateway: GatewayProcess;
let endpoint: GraphQLEndpoint;
let admin: SignedIn;
const clients: WsClient[] = [];

/** Every complete JSON line the gateway's processes have logged so far. */
function logLines(): LogLine[] {
  const lines = gateway.stdout().split('\n');
  // The last piece has no newline yet: it may be half a line.
  return lines.slice(0, -1).filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as LogLine);
}

/** The pid of the worker whose access log has the request `requestId`. */
function servedBy(requestId: string): Promise<number> {
  return eventually(() => logLines().find((line) => line.msg === 'http request' && line.requestId === requestId)?.pid, 5_000, `the access log line of ${requestId}`);
}

/** The pids of the workers that accepted a WebSocket of `userId`, one per socket, in order. */
function socketWorkers(userId: string): number[] {
  return logLines().flatMap((line) => (line.msg === 'WebSocket connection accepted' && line.userId === userId && line.pid !== undefined ? [line.pid] : []));
}

/** The pids of the workers serving now: listening, and not reported dead by the primary since. */
function livingWorkers(): number[] {
  const lines = logLines();
  const dead = new Set(lines.flatMap((line) => (line.msg === 'worker exited unexpectedly; starting another in its place' && line.workerPid !== undefined ? [line.workerPid] : [])));
  return lines.flatMap((line) => (line.msg === 'gateway listening' && line.worker !== undefined && line.pid !== undefined && !dead.has(line.pid) ? [line.pid] : []));
}

/** One small GraphQL chat on a connection of its own: its id (the usage event's request id) and the worker that served it. */
async function chatOnNewConnection(user: SignedIn): Promise<{ id: string; pid: number }> {
  const requestId = `workers-${randomUUID()}`;
  const { body } = await postGraphQL(
    gateway.url,
    ChatDocument,
    { input: { model: MODEL, messages: [{ role: 'USER', content: 'Count to three, please.' }], maxTokens: 5 } },
    { token: user.token, headers: { 'x-request-id': requestId } },
  );
  return { id: dataOf(body, 'chat').chat.id, pid: await servedBy(requestId) };
}

async function chatsOnNewConnections(user: SignedIn, count: number): Promise<{ id: string; pid: number }[]> {
  const made: { id: string; pid: number }[] = [];
  for (let i = 0; i < count; i += 1) made.push(await chatOnNewConnection(user));
  return made;
}

/** GET /metrics on a connection of its own, parsed, with the worker that answered. */
function scrapeOnNewConnection(): Promise<{ families: ReturnType<typeof parsePrometheusTextFormat>; pid: Promise<number> }> {
  const requestId = `workers-${randomUUID()}`;
  return new Promise((resolve, reject) => {
    const req = request(new URL('/metrics', gateway.url), { agent: false, headers: { 'x-request-id': requestId } }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new Error(`/metrics answered ${res.statusCode}: ${text}`));
        else resolve({ families: parsePrometheusTextFormat(text), pid: servedBy(requestId) });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

/** The sum of every sample of `name` whose labels include `labels`. */
function total(families: ReturnType<typeof parsePrometheusTextFormat>, name: string, labels: Record<string, string> = {}): number {
  const family = families.find((candidate) => candidate.name === name);
  if (family === undefined) throw new Error(`/metrics has no ${name}`);
  return family.metrics
    .filter((metric) => Object.entries(labels).every(([key, value]) => metric.labels?.[key] === value))
    .reduce((sum, metric) => sum + Number(metric.value), 0);
}

/** A graphql-ws client with a usageUpdated subscription, once the server acknowledged or refused it. */
async function usageSocket(user: SignedIn): Promise<{ client: WsClient; feed: Feed<UsageEventData> }> {
  const client = new WsClient(gateway.url.replace(/^http/, 'ws'), `Bearer ${user.token}`);
  clients.push(client);
  const feed = usageFeed(client);
  await until(() => client.acknowledged || client.closeCode !== null, 10_000, 'connection_ack or a close');
  return { client, feed };
}

beforeAll(async () => {
  await ensureServerBuild();
  dataDir = makeDataDir('workers');
  const { ADMIN_PASSWORD: _configured, ...env } = baseEnv({
    WORKERS: '2',
    DATA_DIR: dataDir,
    LOG_LEVEL: 'info',
    WS_MAX_CONNECTIONS_PER_USER: String(SOCKETS_PER_USER),
  });
  gateway = await startGatewayProcess(env, 90_000);
  endpoint = { gql: (document, variables, token) => gql(gateway.url, document, variables, token) };
  const password = /Password \(shown this once, change it with changePassword\): (\S+)/.exec(gateway.stdout())?.[1];
  if (password === undefined) throw new Error(`no generated admin password beside the URL:\n${gateway.stdout()}`);
  admin = await signIn(endpoint, PROCESS_ADMIN.email, password);
}, 120_000);

afterEach(async () => {
  await Promise.all(clients.splice(0).map((client) => client.dispose()));
});

afterAll(async () => {
  await killGateway(gateway);
  removeDir(dataDir);
});

describe('WORKERS=2 (node dist/src/main.js, embedded PostgreSQL, built-in simulator)', () => {
  it('serves from two workers on one port; the first admin is created once, its password printed once', async () => {
    expect(gateway.stdout()).toMatch(/Workers: {3}2 processes on one port/);
    expect(gateway.stdout().match(/Password \(shown this once/g)).toHaveLength(1);
    expect(logLines().filter((line) => line.msg === 'first admin created')).toHaveLength(1);

    expect(new Set(livingWorkers()).size).toBe(2);
    const info = dataOf(await endpoint.gql(ServerInfoDocument, {}), 'serverInfo').serverInfo;
    expect(info.simulator).toBe(true);
    const user = await createUser(endpoint, admin.token);
    const chats = await chatsOnNewConnections(user, 4);
    expect(new Set(chats.map((chat) => chat.pid))).toEqual(new Set(livingWorkers()));
  });

  it("delivers a chat's usage event to a subscriber on the other worker", async () => {
    const user = await createUser(endpoint, admin.token);
    const sockets = [await usageSocket(user), await usageSocket(user)];
    expect(sockets.every(({ client }) => client.acknowledged)).toBe(true);
    await until(() => socketWorkers(user.id).length === 2, 5_000, 'both sockets in the log');
    expect(new Set(socketWorkers(user.id)).size).toBe(2);
    // A first chat that both feeds receive: from then on both subscriptions are listening.
    const first = await chatOnNewConnection(user);
    await until(() => sockets.every(({ feed }) => feed.events.length === 1), 10_000, 'the first event on both sockets');

    const chats = await chatsOnNewConnections(user, 4);
    expect(new Set(chats.map((chat) => chat.pid)).size).toBe(2);
    const expected = [first, ...chats].map((chat) => chat.id).sort();
    await until(() => sockets.every(({ feed }) => feed.events.length >= expected.length), 10_000, 'every event on both sockets');
    for (const { feed } of sockets) expect(feed.events.map((event) => event.requestId).sort()).toEqual(expected);
  });

  it("answers /metrics from either worker with both workers' figures added up", async () => {
    const user = await createUser(endpoint, admin.token);
    const before = await scrapeOnNewConnection();
    const chats = await chatsOnNewConnections(user, 6);
    expect(new Set(chats.map((chat) => chat.pid)).size).toBe(2);
    await usageSocket(user);
    await usageSocket(user);
    await until(() => socketWorkers(user.id).length === 2, 5_000, 'both sockets in the log');
    expect(new Set(socketWorkers(user.id)).size).toBe(2);

    const answeredBy = new Set<number>();
    for (let i = 0; i < 2; i += 1) {
      const after = await eventually(async () => {
        const scrape = await scrapeOnNewConnection();
        return total(scrape.families, 'gateway_websocket_connections') === 2 ? scrape : undefined;
      }, 5_000, 'both workers\' sockets in gateway_websocket_connections');
      answeredBy.add(await after.pid);
      expect(total(after.families, 'gateway_requests_total', { outcome: 'ok' }) - total(before.families, 'gateway_requests_total', { outcome: 'ok' })).toBe(6);
      // Each worker has the simulator in rotation: the host's figure is 1, not one per worker.
      expect(total(after.families, 'gateway_upstream_up')).toBe(1);
    }
    expect(answeredBy.size).toBe(2);
  });

  it('holds WS_MAX_CONNECTIONS_PER_USER for the user across both workers, and gives a closed socket back', async () => {
    const user = await createUser(endpoint, admin.token);
    const first = await usageSocket(user);
    await usageSocket(user);
    await until(() => socketWorkers(user.id).length === SOCKETS_PER_USER, 5_000, 'both sockets in the log');
    expect(new Set(socketWorkers(user.id)).size).toBe(2);

    // Each worker holds one of the user's sockets: a count per worker would let this one in.
    const third = await usageSocket(user);
    expect(third.client.acknowledged).toBe(false);
    expect(third.client.closeCode).toBe(4029);

    await first.client.dispose();
    const again = await eventually(async () => {
      const socket = await usageSocket(user);
      return socket.client.acknowledged ? socket : undefined;
    }, 10_000, 'a socket accepted once one was closed');
    expect(again.client.acknowledged).toBe(true);
  });

  it('replaces a worker killed with SIGKILL, serving throughout, and gives back the sockets it held', async () => {
    const user = await createUser(endpoint, admin.token);
    await usageSocket(user);
    await usageSocket(user);
    await until(() => socketWorkers(user.id).length === SOCKETS_PER_USER, 5_000, 'both sockets in the log');
    const [killed, survivor] = socketWorkers(user.id);
    expect(new Set(livingWorkers())).toEqual(new Set([killed, survivor]));

    process.kill(killed, 'SIGKILL');
    await until(
      () => logLines().some((line) => line.primary === true && line.msg === 'worker exited unexpectedly; starting another in its place' && line.workerPid === killed),
      10_000,
      'the primary noticing the death',
    );
    // The survivor serves every request meanwhile (or the replacement, if it is already up).
    for (const chat of await chatsOnNewConnections(user, 3)) expect(chat.pid).not.toBe(killed);
    // The dead worker's socket no longer counts against the user's limit.
    const replacing = await usageSocket(user);
    expect(replacing.client.acknowledged).toBe(true);

    const replacement = await eventually(() => livingWorkers().find((pid) => pid !== survivor), 30_000, 'a replacement worker listening');
    expect(replacement).not.toBe(killed);
    expect(new Set((await chatsOnNewConnections(user, 4)).map((chat) => chat.pid))).toEqual(new Set([survivor, replacement]));
    // The replacement found the admin: still only one was created.
    expect(logLines().filter((line) => line.msg === 'first admin created')).toHaveLength(1);
  }, 90_000);

  it('on SIGTERM to the primary lets the workers finish the request in flight, then exits 0', async () => {
    const user = await createUser(endpoint, admin.token);
    const key = await createApiKey(endpoint, user.token);
    const openai = new OpenAI({ baseURL: new URL('/v1', gateway.url).toString(), apiKey: key.secret, maxRetries: 0, timeout: 15_000 });
    const stream = await openai.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Tell me a story.' }], max_tokens: 40, stream: true });
    let content = '';
    let finishReason: string | null = null;
    let signalled = false;
    for await (const chunk of stream) {
      content += chunk.choices[0]?.delta.content ?? '';
      finishReason = chunk.choices[0]?.finish_reason ?? finishReason;
      if (!signalled && content !== '') {
        signalled = true;
        gateway.child.kill('SIGTERM');
      }
    }
    expect(signalled).toBe(true);
    expect(finishReason).not.toBeNull();

    const exit = await within(gateway.exited, 20_000, () => `the gateway did not exit after SIGTERM:\n${gateway.stderr()}`);
    expect({ code: exit.code, signal: exit.signal, stderr: exit.stderr }).toEqual({ code: 0, signal: null, stderr: '' });
    const stopped = logLines().filter((line) => line.msg === 'stopped');
    expect(stopped.filter((line) => line.worker !== undefined)).toHaveLength(2);
    expect(stopped.filter((line) => line.primary === true)).toHaveLength(1);
    expect(exit.stdout).toMatch(/embedded PostgreSQL stopped/);
  }, 60_000);
});
