import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startSimulator, type Simulator, type SimulatorOptions } from '../../src/simulator';
import { ChatDocument, ChatStreamDocument, FleetRecordsDocument, FleetUpstreamsDocument, ModelsDocument } from '../generated/graphql';
import { codeOf, createApiKey, createUser, dataOf, eventually, openaiClient, signInAdmin, usageOf, type SignedIn } from '../helpers/client';
import { startTestGateway, type TestGateway } from '../helpers/server';

const FAST: SimulatorOptions = { models: ['shared'], timeToFirstTokenMs: 5, interTokenLatencyMs: 1 };

/** Which upstream served each of `requestIds`, from the user's usage records. */
async function servedBy(gateway: TestGateway, token: string, requestIds: readonly string[]): Promise<string[]> {
  const { usage } = dataOf(await gateway.gql(FleetRecordsDocument, {}, token), 'usage');
  const byId = new Map(usage.nodes.map((record) => [record.requestId, record.upstream]));
  return requestIds.map((id) => byId.get(id) ?? 'no record');
}

async function healthOf(gateway: TestGateway, token: string, name: string): Promise<boolean | undefined> {
  return dataOf(await gateway.gql(FleetUpstreamsDocument, {}, token), 'upstreams').upstreams.find((upstream) => upstream.name === name)?.healthy;
}

describe('session affinity across three upstreams of one model', () => {
  const simulators: Simulator[] = [];
  let gateway: TestGateway;
  let admin: SignedIn;
  let user: SignedIn;
  const SESSIONS = Array.from({ length: 24 }, (_, i) => `conversation-${i}`);

  const askIn = async (sessionId: string): Promise<string> =>
    dataOf(await gateway.gql(ChatDocument, { input: { model: 'shared', sessionId, messages: [{ role: 'USER', content: 'Hello again.' }], maxTokens: 2 } }, user.token), sessionId)
      .chat.id;
  /** Each session's upstream, asking one session at a time so that load plays no part. */
  const placement = async (): Promise<Map<string, string>> => {
    const ids: string[] = [];
    for (const session of SESSIONS) ids.push(await askIn(session));
    const upstreams = await servedBy(gateway, user.token, ids);
    return new Map(SESSIONS.map((session, i) => [session, upstreams[i]]));
  };

  beforeAll(async () => {
    for (let i = 0; i < 3; i++) simulators.push(await startSimulator(FAST));
    gateway = await startTestGateway({ simulator: simulators[0], env: { VLLM_BASE_URL: simulators.map((s) => s.url).join(','), UPSTREAM_HEALTH_INTERVAL_MS: '200' } });
    admin = await signInAdmin(gateway);
    user = await createUser(gateway, admin.token);
  });
  afterAll(async () => {
    await gateway.stop();
    for (const simulator of simulators) await simulator.stop();
  });

  it('keeps each session on one upstream, spreads sessions over all of them, and moves only the lost server’s sessions', async () => {
    const first = await placement();
    expect(await placement()).toEqual(first);
    expect(new Set(first.values())).toEqual(new Set(['upstream-1', 'upstream-2', 'upstream-3']));

    const port = Number(new URL(simulators[2].url).port);
    await simulators[2].stop();
    const without = await placement();
    for (const session of SESSIONS) {
      if (first.get(session) === 'upstream-3') expect(without.get(session)).not.toBe('upstream-3');
      else expect(without.get(session)).toBe(first.get(session));
    }

    simulators[2] = await startSimulator({ ...FAST, port });
    await eventually(async () => ((await healthOf(gateway, admin.token, 'upstream-3')) === true ? true : undefined), 5_000, 'upstream-3 back');
    expect(await placement()).toEqual(first);
  });

  it('sends /v1 requests with the same x-session-id to the same upstream', async () => {
    const key = await createApiKey(gateway, user.token);
    const client = openaiClient(gateway, key.secret);
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) {
      const { response } = await client.chat.completions
        .create({ model: 'shared', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2 }, { headers: { 'x-session-id': 'agent-run-7' } })
        .withResponse();
      ids.push(response.headers.get('x-usage-request-id') ?? '');
    }
    expect(new Set(await servedBy(gateway, user.token, ids)).size).toBe(1);
  });

  it('lets a session leave its upstream when that one has far more in flight than the others', async () => {
    for (const simulator of simulators) simulator.setLatency({ timeToFirstTokenMs: 150 });
    try {
      const results = await Promise.all(
        Array.from({ length: 30 }, () =>
          gateway.gql(ChatDocument, { input: { model: 'shared', sessionId: 'one-hot-session', messages: [{ role: 'USER', content: 'Go.' }], maxTokens: 2 } }, user.token),
        ),
      );
      const served = await servedBy(gateway, user.token, results.map((result) => dataOf(result, 'hot session chat').chat.id));
      const counts = [...new Set(served)].map((name) => served.filter((upstream) => upstream === name).length);
      expect(counts.length).toBeGreaterThan(1);
      expect(Math.max(...counts)).toBeGreaterThanOrEqual(9);
    } finally {
      for (const simulator of simulators) simulator.setLatency({ timeToFirstTokenMs: 5 });
    }
  });

  it('refuses a session id that is empty or too long', async () => {
    for (const sessionId of ['', 'x'.repeat(257)]) {
      const result = await gateway.gql(ChatDocument, { input: { model: 'shared', sessionId, messages: [{ role: 'USER', content: 'Hi' }], maxTokens: 2 } }, user.token);
      expect(codeOf(result.errors)).toBe('BAD_USER_INPUT');
    }
  });
});

describe('failover of streams and of timeouts, before the first token', () => {
  let a: Simulator;
  let b: Simulator;
  let gateway: TestGateway;
  let admin: SignedIn;
  let user: SignedIn;

  const stream = (token = user.token) =>
    gateway.ws(token).collect(ChatStreamDocument, { input: { model: 'shared', messages: [{ role: 'USER', content: 'Tell me a story.' }], maxTokens: 6 } });

  beforeAll(async () => {
    a = await startSimulator(FAST);
    b = await startSimulator(FAST);
    gateway = await startTestGateway({ simulator: a, env: { VLLM_BASE_URL: `${a.url},${b.url}`, UPSTREAM_HEALTH_INTERVAL_MS: '200', VLLM_TIMEOUT_MS: '600' } });
    admin = await signInAdmin(gateway);
    user = await createUser(gateway, admin.token);
  });
  afterAll(async () => {
    await gateway.stop();
    await a.stop();
    await b.stop();
  });
  afterEach(async () => {
    a.setFault(null);
    await eventually(async () => ((await healthOf(gateway, admin.token, 'upstream-1')) === true ? true : undefined), 5_000, 'upstream-1 back');
  });

  /** Streams `count` at once; each must complete, with one record, and the failed server must have been tried. */
  async function everyStreamCompletes(count: number): Promise<void> {
    const before = { used: (await usageOf(gateway, user.token)).used, tried: a.stats.chatRequests };
    const outcomes = await Promise.all(Array.from({ length: count }, () => stream()));
    for (const outcome of outcomes) {
      expect(outcome.error).toBeNull();
      expect(outcome.events.at(-1)?.chatStream.finishReason).toBe('length');
    }
    expect(a.stats.chatRequests - before.tried).toBeGreaterThan(0);
    const ids = outcomes.map((outcome) => outcome.events[0].chatStream.id);
    expect(await servedBy(gateway, user.token, ids)).toEqual(ids.map(() => 'upstream-2'));
    const charged = outcomes.reduce((sum, outcome) => sum + (outcome.events.at(-1)?.chatStream.usage?.totalTokens ?? 0), 0);
    expect((await usageOf(gateway, user.token)).used - before.used).toBe(charged);
  }

  it('retries a stream whose server fails after its headers and before any token on the other server', async () => {
    a.setFault('fail-mid:0');
    await everyStreamCompletes(4);
  });

  it('retries a stream whose server stays silent past VLLM_TIMEOUT_MS on the other server', async () => {
    a.setFault('hang:0');
    await everyStreamCompletes(4);
  });

  it('retries a whole-answer chat whose server stays silent past VLLM_TIMEOUT_MS', async () => {
    a.setFault('hang:0');
    const results = await Promise.all(
      Array.from({ length: 4 }, () => gateway.gql(ChatDocument, { input: { model: 'shared', messages: [{ role: 'USER', content: 'Hi' }], maxTokens: 3 } }, user.token)),
    );
    const ids = results.map((result) => dataOf(result, 'chat past a silent server').chat.id);
    expect(await servedBy(gateway, user.token, ids)).toEqual(ids.map(() => 'upstream-2'));
  });

  it('does not retry a stream that failed after tokens reached the client: those are charged, once', async () => {
    a.setFault('fail-mid:2');
    b.setFault('fail-mid:2');
    try {
      const before = (await usageOf(gateway, user.token)).used;
      const outcome = await stream();
      expect(codeOf(outcome.error)).toBe('UPSTREAM_ERROR');
      const ids = [outcome.events[0].chatStream.id];
      expect((await servedBy(gateway, user.token, ids))[0]).toMatch(/^upstream-[12]$/);
      expect((await usageOf(gateway, user.token)).used - before).toBeGreaterThan(0);
      expect(a.stats.chatRequests + b.stats.chatRequests).toBeGreaterThan(0);
    } finally {
      b.setFault(null);
    }
    await eventually(async () => ((await healthOf(gateway, admin.token, 'upstream-2')) === true ? true : undefined), 5_000, 'upstream-2 back');
  });
});

describe('a server closed under load, and a second gateway instance over the same fleet', () => {
  let a: Simulator;
  let b: Simulator;
  let first: TestGateway;
  let second: TestGateway;
  let user: SignedIn;

  beforeAll(async () => {
    a = await startSimulator({ ...FAST, timeToFirstTokenMs: 80 });
    b = await startSimulator({ ...FAST, timeToFirstTokenMs: 80 });
    const env = { VLLM_BASE_URL: `${a.url},${b.url}`, UPSTREAM_HEALTH_INTERVAL_MS: '200' };
    first = await startTestGateway({ simulator: a, env });
    second = await startTestGateway({ simulator: a, env, databaseUrl: first.databaseUrl });
    user = await createUser(first, (await signInAdmin(first)).token);
  });
  afterAll(async () => {
    await first.stop();
    await second.stop();
    await a.stop();
    await b.stop();
  });

  it('answers every request on both instances while one server is closed mid-flight, each charged once', async () => {
    const before = (await usageOf(first, user.token)).used;
    const ask = (gateway: TestGateway) =>
      gateway.gql(ChatDocument, { input: { model: 'shared', messages: [{ role: 'USER', content: 'Under load.' }], maxTokens: 3 } }, user.token);
    const pending = Array.from({ length: 24 }, (_, i) => ask(i % 2 === 0 ? first : second));
    await eventually(() => (a.stats.chatRequests > 0 && b.stats.chatRequests > 0 ? true : undefined), 5_000, 'both servers busy');
    await b.stop();
    const results = await Promise.all(pending);
    const ids = results.map((result) => dataOf(result, 'chat while upstream-2 closes').chat.id);
    const served = await servedBy(first, user.token, ids);
    expect(served.filter((name) => name === 'no record')).toEqual([]);
    const charged = results.reduce((sum, result) => sum + (result.data?.chat.usage.totalTokens ?? 0), 0);
    expect((await usageOf(second, user.token)).used - before).toBe(charged);
  });
});

describe('LoRA adapters, per-server API keys and the catalogue from UPSTREAMS_FILE', () => {
  let base: Simulator;
  let other: Simulator;
  let gateway: TestGateway;
  let admin: SignedIn;
  let user: SignedIn;
  const KEY_A = 'sk-server-a-0f3b9d2c7e';
  const KEY_B = 'sk-server-b-7a1c4e8f2d';
  let otherPort = 0;

  beforeAll(async () => {
    base = await startSimulator({ ...FAST, models: ['llama-base'], loras: ['sql-lora'], maxModelLen: 2048, apiKey: KEY_A });
    other = await startSimulator({ ...FAST, models: ['mistral'], apiKey: KEY_B });
    otherPort = Number(new URL(other.url).port);
    const dir = mkdtempSync(path.join(tmpdir(), 'fleet-'));
    const file = path.join(dir, 'upstreams.yaml');
    writeFileSync(
      file,
      ['upstreams:', '  - name: gpu-a', `    baseUrl: ${base.url}`, `    apiKey: ${KEY_A}`, '  - name: gpu-b', `    baseUrl: ${other.url}`, `    apiKey: ${KEY_B}`, ''].join('\n'),
    );
    // Health checks slower than the catalogue refresh: a changed list shows through the refresh alone.
    gateway = await startTestGateway({ simulator: base, env: { VLLM_BASE_URL: '', UPSTREAMS_FILE: file, UPSTREAM_HEALTH_INTERVAL_MS: '60000', UPSTREAM_MODELS_REFRESH_MS: '1000' } });
    admin = await signInAdmin(gateway);
    user = await createUser(gateway, admin.token);
  });
  afterAll(async () => {
    await gateway.stop();
    await base.stop();
    await other.stop();
  });

  it("lists the LoRA adapter with its parent's context length and serves it under its own name", async () => {
    const { models } = dataOf(await gateway.gql(ModelsDocument, {}, user.token), 'models');
    expect(models.find((model) => model.id === 'sql-lora')).toMatchObject({ maxModelLen: 2048 });
    const { chat } = dataOf(
      await gateway.gql(ChatDocument, { input: { model: 'sql-lora', messages: [{ role: 'USER', content: 'select' }], maxTokens: 3 } }, user.token),
      'chat with a LoRA',
    );
    expect(chat.model).toBe('sql-lora');
    const tooLong = await gateway.gql(ChatDocument, { input: { model: 'sql-lora', messages: [{ role: 'USER', content: 'select' }], maxTokens: 3000 } }, user.token);
    expect(codeOf(tooLong.errors)).toBe('BAD_USER_INPUT');
  });

  it('sends each server its own API key, and shows neither key', async () => {
    for (const model of ['llama-base', 'mistral']) {
      dataOf(await gateway.gql(ChatDocument, { input: { model, messages: [{ role: 'USER', content: 'Hi' }], maxTokens: 2 } }, user.token), `chat ${model}`);
    }
    const { upstreams } = dataOf(await gateway.gql(FleetUpstreamsDocument, {}, admin.token), 'upstreams');
    expect(upstreams.map((upstream) => [upstream.name, upstream.healthy])).toEqual([
      ['gpu-a', true],
      ['gpu-b', true],
    ]);
    expect(JSON.stringify(upstreams)).not.toMatch(/sk-server-/);
  });

  it('refreshes the catalogue on its interval: a model a server starts serving appears without a request failing', async () => {
    await other.stop();
    other = await startSimulator({ ...FAST, models: ['mistral', 'mistral-large'], apiKey: KEY_B, port: otherPort });
    const listed = await eventually(async () => {
      const { models } = dataOf(await gateway.gql(ModelsDocument, {}, user.token), 'models');
      return models.some((model) => model.id === 'mistral-large') ? models.map((model) => model.id) : undefined;
      // A refresh that ran while the server was restarting took it out of rotation; its probe (backoff up to 10 s) brings it back.
    }, 15_000, 'mistral-large in the catalogue');
    expect(listed.sort()).toEqual(['llama-base', 'mistral', 'mistral-large', 'sql-lora']);
    dataOf(await gateway.gql(ChatDocument, { input: { model: 'mistral-large', messages: [{ role: 'USER', content: 'Hi' }], maxTokens: 2 } }, user.token), 'chat mistral-large');
  });
});

describe('every server of a model down', () => {
  let down: Simulator;
  let probed: TestGateway;
  let unprobed: TestGateway;
  let user: SignedIn;
  let key: string;

  beforeAll(async () => {
    down = await startSimulator({ ...FAST, models: ['lonely'] });
    probed = await startTestGateway({ simulator: down, env: { UPSTREAM_HEALTH_INTERVAL_MS: '200' } });
    unprobed = await startTestGateway({ simulator: down, databaseUrl: probed.databaseUrl, env: { UPSTREAM_HEALTH_INTERVAL_MS: '60000' } });
    user = await createUser(probed, (await signInAdmin(probed)).token);
    key = (await createApiKey(probed, user.token)).secret;
    await down.stop();
  });
  afterAll(async () => {
    await probed.stop();
    await unprobed.stop();
  });

  const v1Status = async (gateway: TestGateway): Promise<number> => {
    const response = await fetch(`${gateway.server.origin}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'lonely', messages: [{ role: 'user', content: 'anyone?' }], max_tokens: 2 }),
    });
    await response.text();
    return response.status;
  };

  it('answers 502 when the server was tried and failed, 503 once its probe confirms it down; nothing charged either way', async () => {
    const before = await usageOf(probed, user.token);
    expect(await v1Status(unprobed)).toBe(502);
    await eventually(async () => ((await v1Status(probed)) === 503 ? true : undefined), 5_000, 'a 503 once the probe failed');
    const graphql = await probed.gql(ChatDocument, { input: { model: 'lonely', messages: [{ role: 'USER', content: 'Hi' }], maxTokens: 2 } }, user.token);
    expect(codeOf(graphql.errors)).toBe('UPSTREAM_ERROR');
    expect(await usageOf(probed, user.token)).toEqual(before);
  });
});
