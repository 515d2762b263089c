import { startSimulator, type Simulator } from '../../src/simulator';
import { ChatDocument, FleetRecordsDocument, FleetUpstreamsDocument, ModelsDocument } from '../generated/graphql';
import { codeOf, createApiKey, createUser, dataOf, eventually, openaiClient, signInAdmin, usageOf, type SignedIn } from '../helpers/client';
import { startTestGateway, type TestGateway } from '../helpers/server';

/** Two vLLM servers: both serve `shared`, each one model of its own. */
describe('a fleet of two upstreams (VLLM_BASE_URL with two URLs)', () => {
  let a: Simulator;
  let b: Simulator;
  let gateway: TestGateway;
  let admin: SignedIn;
  let user: SignedIn;

  const ask = (model: string, token = user.token) =>
    gateway.gql(ChatDocument, { input: { model, messages: [{ role: 'USER', content: 'Say hello.' }], maxTokens: 4 } }, token);

  beforeAll(async () => {
    a = await startSimulator({ models: ['shared', 'only-a'], timeToFirstTokenMs: 20, interTokenLatencyMs: 2 });
    b = await startSimulator({ models: ['shared', 'only-b'], timeToFirstTokenMs: 20, interTokenLatencyMs: 2 });
    gateway = await startTestGateway({ simulator: a, env: { VLLM_BASE_URL: `${a.url}, ${b.url}` } });
    admin = await signInAdmin(gateway);
    user = await createUser(gateway, admin.token);
  });
  afterAll(async () => {
    await gateway.stop();
    await a.stop();
    await b.stop();
  });

  it('lists the union of what both serve, each model once', async () => {
    const { models } = dataOf(await gateway.gql(ModelsDocument, {}, user.token), 'models');
    expect(models.map((model) => model.id).sort()).toEqual(['only-a', 'only-b', 'shared']);
  });

  it('sends a model served by one upstream only to that upstream, and the record names it', async () => {
    const before = { a: a.stats.chatRequests, b: b.stats.chatRequests };
    dataOf(await ask('only-b'), 'chat only-b');
    dataOf(await ask('only-a'), 'chat only-a');
    expect({ a: a.stats.chatRequests - before.a, b: b.stats.chatRequests - before.b }).toEqual({ a: 1, b: 1 });
    const { usage } = dataOf(await gateway.gql(FleetRecordsDocument, {}, user.token), 'usage');
    const byModel = Object.fromEntries(usage.nodes.map((record) => [record.model, record.upstream]));
    expect(byModel).toMatchObject({ 'only-a': 'upstream-1', 'only-b': 'upstream-2' });
  });

  it('spreads concurrent requests for a shared model over both upstreams, metering each once', async () => {
    const before = { a: a.stats.chatRequests, b: b.stats.chatRequests };
    const results = await Promise.all(Array.from({ length: 16 }, () => ask('shared')));
    for (const result of results) dataOf(result, 'chat shared');
    const served = { a: a.stats.chatRequests - before.a, b: b.stats.chatRequests - before.b };
    expect(served.a + served.b).toBe(16);
    expect(served.a).toBeGreaterThanOrEqual(4);
    expect(served.b).toBeGreaterThanOrEqual(4);
    const ids = new Set(results.map((result) => result.data?.chat.id));
    const { usage } = dataOf(await gateway.gql(FleetRecordsDocument, {}, user.token), 'usage');
    expect(usage.nodes.filter((record) => ids.has(record.requestId))).toHaveLength(16);
  });

  it('serves /v1 from the same fleet', async () => {
    const key = await createApiKey(gateway, user.token);
    const answer = await openaiClient(gateway, key.secret).chat.completions.create({ model: 'only-b', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 3 });
    expect(answer.model).toBe('shared');
    expect(answer.usage?.completion_tokens).toBeGreaterThan(0);
  });

  it('shows admins each upstream, without credentials, and refuses others', async () => {
    const { upstreams } = dataOf(await gateway.gql(FleetUpstreamsDocument, {}, admin.token), 'upstreams');
    expect(upstreams.map(({ name, baseUrl, healthy, models, inFlight }) => ({ name, baseUrl, healthy, models: [...models].sort(), inFlight }))).toEqual([
      { name: 'upstream-1', baseUrl: a.url, healthy: true, models: ['only-a', 'shared'], inFlight: 0 },
      { name: 'upstream-2', baseUrl: b.url, healthy: true, models: ['only-b', 'shared'], inFlight: 0 },
    ]);
    expect(codeOf((await gateway.gql(FleetUpstreamsDocument, {}, user.token)).errors)).toBe('FORBIDDEN');
  });

  it('reports an upstream that stopped answering, with its error, and keeps serving the other one', async () => {
    await b.stop();
    const failed = await ask('only-b');
    expect(codeOf(failed.errors)).toBe('UPSTREAM_ERROR');
    dataOf(await ask('only-a'), 'chat only-a while upstream-2 is down');
    const { upstreams } = dataOf(await gateway.gql(FleetUpstreamsDocument, {}, admin.token), 'upstreams');
    const down = upstreams.find((upstream) => upstream.name === 'upstream-2');
    expect(down).toMatchObject({ healthy: false });
    expect(down?.lastError).toEqual(expect.stringContaining('could not be reached'));
    expect(upstreams.find((upstream) => upstream.name === 'upstream-1')).toMatchObject({ healthy: true, lastError: null });
    const ready = await fetch(`${gateway.server.origin}/readyz`);
    expect({ status: ready.status, body: await ready.json() }).toEqual({
      status: 200,
      body: { status: 'ready', database: 'up', upstreams: { healthy: 1, total: 2 } },
    });
  });
});

/** Two servers of one model; health probes every 200 ms. */
describe('failover and health across two upstreams of one model', () => {
  let a: Simulator;
  let b: Simulator;
  let gateway: TestGateway;
  let admin: SignedIn;
  let user: SignedIn;
  const MODELS = ['shared'];

  const ask = () => gateway.gql(ChatDocument, { input: { model: 'shared', messages: [{ role: 'USER', content: 'Say hello.' }], maxTokens: 4 } }, user.token);
  const statusOf = async (name: string) =>
    dataOf(await gateway.gql(FleetUpstreamsDocument, {}, admin.token), 'upstreams').upstreams.find((upstream) => upstream.name === name);

  beforeAll(async () => {
    a = await startSimulator({ models: MODELS, timeToFirstTokenMs: 10, interTokenLatencyMs: 2 });
    b = await startSimulator({ models: MODELS, timeToFirstTokenMs: 10, interTokenLatencyMs: 2 });
    gateway = await startTestGateway({ simulator: a, env: { VLLM_BASE_URL: `${a.url},${b.url}`, UPSTREAM_HEALTH_INTERVAL_MS: '200' } });
    admin = await signInAdmin(gateway);
    user = await createUser(gateway, admin.token);
    dataOf(await ask(), 'first chat');
  });
  afterAll(async () => {
    await gateway.stop();
    await a.stop();
    await b.stop();
  });

  it('answers every request while one server is closed, each metered once and named after the server that answered', async () => {
    const port = Number(new URL(b.url).port);
    await b.stop();
    const before = (await usageOf(gateway, user.token)).used;
    const results = await Promise.all(Array.from({ length: 12 }, () => ask()));
    for (const result of results) dataOf(result, 'chat while upstream-2 is closed');
    const ids = new Set(results.map((result) => result.data?.chat.id));
    const { usage } = dataOf(await gateway.gql(FleetRecordsDocument, {}, user.token), 'usage');
    const records = usage.nodes.filter((record) => ids.has(record.requestId));
    expect(records).toHaveLength(12);
    expect(new Set(records.map((record) => record.upstream))).toEqual(new Set(['upstream-1']));
    const charged = results.reduce((sum, result) => sum + (result.data?.chat.usage.totalTokens ?? 0), 0);
    expect((await usageOf(gateway, user.token)).used - before).toBe(charged);
    expect(await statusOf('upstream-2')).toMatchObject({ healthy: false });

    // Back on the same port: a probe brings it into rotation, and it takes traffic again.
    b = await startSimulator({ models: MODELS, port, timeToFirstTokenMs: 10, interTokenLatencyMs: 2 });
    await eventually(async () => ((await statusOf('upstream-2'))?.healthy === true ? true : undefined), 5_000, 'upstream-2 back in rotation');
    const servedBefore = b.stats.chatRequests;
    for (const result of await Promise.all(Array.from({ length: 12 }, () => ask()))) dataOf(result, 'chat after upstream-2 came back');
    expect(b.stats.chatRequests - servedBefore).toBeGreaterThan(0);
  });

  it('with every server of the model down: UPSTREAM_ERROR, nothing charged', async () => {
    await a.stop();
    await b.stop();
    const before = await usageOf(gateway, user.token);
    const failed = await ask();
    expect(codeOf(failed.errors)).toBe('UPSTREAM_ERROR');
    expect(await usageOf(gateway, user.token)).toEqual(before);
  });
});
