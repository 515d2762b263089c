import OpenAI from 'openai';
import type { ChatCompletionCreateParamsStreaming } from 'openai/resources/chat/completions';
import { startSimulator, type Simulator } from '../../src/simulator';
import { CreateApiKeyDocument, CreateUserDocument, LoginDocument, UsageUpdatedDocument, type UsageUpdatedSubscription } from '../generated/graphql';
import { ensureServerBuild } from '../foundation/build';
import { baseEnv, killGateway, makeDataDir, PROCESS_ADMIN, removeDir, startGatewayProcess, within, type GatewayProcess } from '../foundation/gateway-process';
import { dataOf, eventually, gql, sleep, strongPassword, uniqueEmail, WsClient, type Feed } from '../helpers/client';
import { createTestDatabase, sql } from '../helpers/database';
import { startWithAdmin, type TestGateway } from '../helpers/server';
import { ChatDocument } from '../generated/graphql';

type UsageEvent = UsageUpdatedSubscription['usageUpdated'];

/** How long a gone instance waits to be judged in these tests (the default is 10 s). */
const SETTLE_AFTER_MS = '3000';
const STREAMS = 4;

interface StreamUser {
  readonly id: string;
  readonly key: string;
}

/** A stream the test reads itself, noting when each content chunk arrived. */
interface WatchedStream {
  readonly arrivals: number[];
  readonly ended: Promise<unknown>;
}

describe('a gateway killed mid-stream (SIGKILL)', () => {
  let simulator: Simulator;
  let databaseUrl: string;
  const started: GatewayProcess[] = [];
  const dataDirs: string[] = [];
  let watcher: WsClient | undefined;

  beforeAll(async () => {
    await ensureServerBuild();
    simulator = await startSimulator({});
    databaseUrl = await createTestDatabase();
  }, 120_000);

  afterAll(async () => {
    await watcher?.dispose();
    for (const proc of started) await killGateway(proc);
    await simulator?.stop();
    for (const dir of dataDirs) removeDir(dir);
  });

  async function launch(): Promise<GatewayProcess> {
    const dataDir = makeDataDir('crash');
    dataDirs.push(dataDir);
    const proc = await startGatewayProcess(
      baseEnv({ DATABASE_URL: databaseUrl, VLLM_BASE_URL: simulator.url, DATA_DIR: dataDir, ORPHAN_SETTLE_AFTER_MS: SETTLE_AFTER_MS }),
    );
    started.push(proc);
    return proc;
  }

  async function streamUser(gateway: GatewayProcess, admin: string): Promise<StreamUser> {
    const email = uniqueEmail('crash');
    const password = strongPassword();
    const created = dataOf(await gql(gateway.url, CreateUserDocument, { input: { email, password, tokenLimit: 100_000, quotaPeriod: 'DAILY' } }, admin), 'createUser');
    const token = dataOf(await gql(gateway.url, LoginDocument, { email, password }), 'login').login.accessToken;
    const key = dataOf(await gql(gateway.url, CreateApiKeyDocument, { name: 'crash' }, token), 'createApiKey').createApiKey.secret;
    return { id: created.createUser.id, key };
  }

  function watchStream(gateway: GatewayProcess, user: StreamUser): WatchedStream {
    const client = new OpenAI({ baseURL: `${new URL(gateway.url).origin}/v1`, apiKey: user.key, maxRetries: 0, timeout: 60_000 });
    // ignore_eos: a vLLM sampling parameter /v1 passes through, so the answer runs its whole max_tokens.
    const params = { model: 'sim-llama-3-8b', messages: [{ role: 'user', content: 'Tell me a long story.' }], max_tokens: 400, stream: true, ignore_eos: true };
    const arrivals: number[] = [];
    const ended = (async () => {
      const stream = await client.chat.completions.create(params as ChatCompletionCreateParamsStreaming);
      for await (const chunk of stream) if ((chunk.choices[0]?.delta.content ?? '') !== '') arrivals.push(Date.now());
    })().catch((error: unknown) => error);
    return { arrivals, ended };
  }

  it('settles each interrupted request once, from its last checkpoint, with its event, and leaves nothing reserved; instances racing write one record', async () => {
    const [doomed, survivor] = await Promise.all([launch(), launch()]);
    const admin = dataOf(await gql(survivor.url, LoginDocument, { email: PROCESS_ADMIN.email, password: PROCESS_ADMIN.password }), 'admin login').login.accessToken;
    const users: StreamUser[] = [];
    for (let i = 0; i < STREAMS; i += 1) users.push(await streamUser(survivor, admin));
    watcher = new WsClient(survivor.url.replace(/^http/, 'ws'), `Bearer ${admin}`);
    const feeds = new Map<string, Feed<UsageEvent>>(
      users.map((user) => [user.id, watcher!.watch(UsageUpdatedDocument, { userId: user.id }, { pick: (data) => data.usageUpdated })]),
    );
    await eventually(() => (watcher!.acknowledged ? true : undefined), 5_000, 'the subscriber connected');

    simulator.setLatency({ timeToFirstTokenMs: 0, interTokenLatencyMs: 40, jitterMs: 0 });
    const streams = users.map((user) => watchStream(doomed, user));
    // Long enough for several checkpoints (one a second) with tokens flowing: about 6 s of tokens.
    await eventually(() => (streams.every((stream) => stream.arrivals.length >= 150) ? true : undefined), 30_000, 'every stream delivering');
    const killedAt = Date.now();
    doomed.child.kill('SIGKILL');
    await within(doomed.exited, 10_000, () => 'the killed gateway did not exit');
    // Each client saw its stream break (a whole one would have ended with undefined).
    for (const stream of streams) expect(await stream.ended).toEqual(expect.objectContaining({ message: expect.any(String) }));
    // Two more instances start at once beside the survivor: three reapers race for the same requests.
    await Promise.all([launch(), launch()]);

    const records = await eventually(
      async () => {
        const rows = await sql<{ user_id: string; status: string; usage_source: string; prompt_tokens: number; completion_tokens: number; charged_tokens: number }>(
          databaseUrl,
          'select user_id, status, usage_source, prompt_tokens, completion_tokens, charged_tokens from usage_records where user_id = any($1::uuid[])',
          [users.map((user) => user.id)],
        );
        return rows.length >= STREAMS ? rows : undefined;
      },
      60_000,
      'the interrupted requests settled',
    );
    await sleep(1_500); // a reaper that came second would have written by now
    expect(await sql(databaseUrl, 'select count(*)::int as n from usage_records where user_id = any($1::uuid[])', [users.map((user) => user.id)])).toEqual([{ n: STREAMS }]);
    expect(await sql(databaseUrl, 'select count(*)::int as n from quota_reservations')).toEqual([{ n: 0 }]);

    for (const [index, user] of users.entries()) {
      const record = records.find((row) => row.user_id === user.id);
      expect(record).toMatchObject({ status: 'interrupted', usage_source: 'estimated' });
      // The checkpoint is at most 2 s old when the process dies, and never more than the client received.
      const deliveredLongBefore = streams[index]!.arrivals.filter((at) => at <= killedAt - 3_000).length;
      expect(deliveredLongBefore).toBeGreaterThan(0);
      expect(record!.completion_tokens).toBeGreaterThanOrEqual(deliveredLongBefore);
      expect(record!.completion_tokens).toBeLessThanOrEqual(streams[index]!.arrivals.length);
      expect(record!.charged_tokens).toBe(record!.prompt_tokens + record!.completion_tokens);
      const [account] = await sql<{ used: string; reserved: string }>(databaseUrl, 'select used, reserved from quota_accounts where user_id = $1', [user.id]);
      expect(account).toEqual({ used: String(record!.charged_tokens), reserved: '0' });
      const events = await eventually(() => (feeds.get(user.id)!.events.length > 0 ? feeds.get(user.id)!.events : undefined), 10_000, 'the usage event');
      expect(events).toHaveLength(1);
      expect(events[0]).toMatchObject({ userId: user.id, promptTokens: record!.prompt_tokens, completionTokens: record!.completion_tokens, used: record!.charged_tokens });
    }
  }, 150_000);
});

describe('instances settling the same orphaned requests at once', () => {
  let first: TestGateway;
  let second: TestGateway;
  let admin: string;

  beforeAll(async () => {
    const env = { ORPHAN_SETTLE_AFTER_MS: '0' };
    ({ gateway: first, admin: { token: admin } } = await startWithAdmin({ env }));
    second = (await startWithAdmin({ env, databaseUrl: first.databaseUrl, simulator: first.simulator })).gateway;
  }, 60_000);
  afterAll(async () => {
    await second?.stop();
    await first?.stop();
  });

  it('write one record per request, charge it once at every level, and release everything', async () => {
    const email = uniqueEmail('race');
    const password = strongPassword();
    const userId = dataOf(await first.gql(CreateUserDocument, { input: { email, password, tokenLimit: 1_000_000, quotaPeriod: 'DAILY' } }, admin), 'createUser').createUser.id;
    const token = dataOf(await first.gql(LoginDocument, { email, password }), 'login').login.accessToken;
    first.simulator.setLatency({ timeToFirstTokenMs: 1_500, interTokenLatencyMs: 0, jitterMs: 0 });
    const running = Array.from({ length: 12 }, () => first.gql(ChatDocument, { input: { messages: [{ role: 'USER', content: 'Hello there.' }], maxTokens: 20 } }, token));
    await eventually(async () => {
      const [row] = await sql<{ n: number }>(first.databaseUrl, 'select count(*)::int as n from quota_reservations where user_id = $1', [userId]);
      return row?.n === 12 ? true : undefined;
    }, 5_000, 'twelve reservations');
    // Their instance is gone, as far as anyone can tell: no such instance holds a lock or beats.
    await sql(first.databaseUrl, 'update quota_reservations set instance_id = gen_random_uuid() where user_id = $1', [userId]);
    const reapers = [first, second, first, second, first, second].map((gateway) => gateway.server.services.quota.settleOrphans());
    const settled = await Promise.all(reapers);
    expect(settled.reduce((sum, count) => sum + count, 0)).toBe(12);

    const [sums] = await sql<{ records: number; distinct_requests: number; charged: string }>(
      first.databaseUrl,
      'select count(*)::int as records, count(distinct request_id)::int as distinct_requests, sum(charged_tokens) as charged from usage_records where user_id = $1',
      [userId],
    );
    expect(sums).toMatchObject({ records: 12, distinct_requests: 12 });
    const [account] = await sql<{ used: string; reserved: string }>(first.databaseUrl, 'select used, reserved from quota_accounts where user_id = $1', [userId]);
    expect(account).toEqual({ used: sums!.charged, reserved: '0' });
    await Promise.all(running);
    // The requests ending afterwards changed nothing.
    expect(await sql(first.databaseUrl, 'select used, reserved from quota_accounts where user_id = $1', [userId])).toEqual([account]);
    expect(await sql(first.databaseUrl, 'select count(*)::int as n from usage_records where user_id = $1', [userId])).toEqual([{ n: 12 }]);
  }, 60_000);
});
