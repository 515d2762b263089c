import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { ChatDocument, ChatStreamDocument, UsageUpdatedDocument } from '../generated/graphql';
import { codeOf, createApiKey, createUser, dataOf, eventually, openaiClient, signInAdmin, until, type SignedIn } from '../helpers/client';
import { sql } from '../helpers/database';
import { startTestGateway, type TestGateway } from '../helpers/server';

const METRICS_TOKEN = 'metrics-token-for-tests-8f2a61';
const MODEL = 'sim-llama-3-8b';

type Families = ReturnType<typeof parsePrometheusTextFormat>;

async function scrape(gateway: TestGateway, token: string | null = METRICS_TOKEN): Promise<{ status: number; type: string | null; text: string; families: Families | null }> {
  const response = await fetch(`${gateway.server.origin}/metrics`, { headers: token === null ? {} : { authorization: `Bearer ${token}` } });
  const text = await response.text();
  return { status: response.status, type: response.headers.get('content-type'), text, families: response.status === 200 ? parsePrometheusTextFormat(text) : null };
}

async function families(gateway: TestGateway): Promise<Families> {
  const { families: parsed } = await scrape(gateway);
  if (parsed === null) throw new Error('/metrics did not answer 200');
  return parsed;
}

/** The value of the sample of `name` whose labels include `labels` (0 when there is none yet). */
function valueOf(parsed: Families, name: string, labels: Record<string, string> = {}): number {
  const family = parsed.find((candidate) => candidate.name === name);
  const sample = family?.metrics.find((metric) => Object.entries(labels).every(([key, value]) => metric.labels?.[key] === value));
  return Number(sample?.value ?? 0);
}

/**
 * One series of a histogram, read from the exposition's own lines: the parser's prom2json
 * output folds every labelled series of a histogram into one, so it cannot tell them apart.
 */
function histogramOf(parsed: Families, text: string, name: string, labels: Record<string, string>): { buckets: Record<string, number>; count: number; sum: number } {
  expect(parsed.find((candidate) => candidate.name === name)?.type).toBe('HISTOGRAM');
  const series = (line: string, suffix: string): boolean =>
    line.startsWith(`${name}_${suffix}{`) && Object.entries(labels).every(([key, value]) => line.includes(`${key}="${value}"`));
  const lines = text.split('\n');
  const valueAt = (line: string | undefined): number => Number(line?.split(' ').at(-1));
  const buckets: Record<string, number> = {};
  for (const line of lines.filter((candidate) => series(candidate, 'bucket'))) buckets[/le="([^"]+)"/.exec(line)?.[1] ?? '?'] = valueAt(line);
  return { buckets, count: valueAt(lines.find((line) => series(line, 'count'))), sum: valueAt(lines.find((line) => series(line, 'sum'))) };
}

describe('GET /metrics', () => {
  let gateway: TestGateway;
  let admin: SignedIn;
  let user: SignedIn;

  beforeAll(async () => {
    gateway = await startTestGateway({ env: { METRICS_TOKEN, UPSTREAM_HEALTH_INTERVAL_MS: '200' } });
    admin = await signInAdmin(gateway);
    user = await createUser(gateway, admin.token);
  });
  afterAll(async () => {
    await gateway.stop();
  });

  it('answers only the bearer of METRICS_TOKEN, in Prometheus text format', async () => {
    expect((await scrape(gateway, null)).status).toBe(401);
    expect((await scrape(gateway, 'not-the-token')).status).toBe(401);
    const ok = await scrape(gateway);
    expect(ok.status).toBe(200);
    expect(ok.type).toMatch(/^text\/plain; version=0\.0\.4/);
    const names = new Set(ok.families?.map((family) => family.name));
    for (const name of ['process_cpu_seconds_total', 'nodejs_eventloop_lag_seconds', 'gateway_reservations_in_flight', 'gateway_websocket_connections', 'gateway_upstream_up']) {
      expect(names).toContain(name);
    }
  });

  it('counts tokens exactly as the usage records this instance wrote, and each request by its outcome', async () => {
    const before = await families(gateway);
    const key = await createApiKey(gateway, user.token);
    dataOf(await gateway.gql(ChatDocument, { input: { model: MODEL, messages: [{ role: 'USER', content: 'One.' }], maxTokens: 5 } }, user.token), 'chat 1');
    dataOf(await gateway.gql(ChatDocument, { input: { model: MODEL, messages: [{ role: 'USER', content: 'Two, please.' }], maxTokens: 7 } }, user.token), 'chat 2');
    await openaiClient(gateway, key.secret).chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Three.' }], max_tokens: 4 });
    const streamed = await gateway.ws(user.token).collect(ChatStreamDocument, { input: { model: MODEL, messages: [{ role: 'USER', content: 'Four.' }], maxTokens: 6 } });
    expect(streamed.error).toBeNull();
    const unknown = await gateway.gql(ChatDocument, { input: { model: 'no-such-model', messages: [{ role: 'USER', content: 'Hi' }], maxTokens: 2 } }, user.token);
    expect(codeOf(unknown.errors)).toBe('BAD_USER_INPUT');
    const capped = await createUser(gateway, admin.token, { tokenLimit: 3 });
    const refused = await gateway.gql(ChatDocument, { input: { model: MODEL, messages: [{ role: 'USER', content: 'Too long for three tokens.' }], maxTokens: 2 } }, capped.token);
    expect(codeOf(refused.errors)).toBe('QUOTA_EXCEEDED');

    const after = await families(gateway);
    const [records] = await sql<{ prompt: string; completion: string }>(
      gateway.databaseUrl,
      'select coalesce(sum(prompt_tokens), 0) as prompt, coalesce(sum(completion_tokens), 0) as completion from usage_records where user_id = $1',
      [user.id],
    );
    const delta = (name: string, labels: Record<string, string>): number => valueOf(after, name, labels) - valueOf(before, name, labels);
    expect(delta('gateway_tokens_total', { model: MODEL, kind: 'prompt' })).toBe(Number(records.prompt));
    expect(delta('gateway_tokens_total', { model: MODEL, kind: 'completion' })).toBe(Number(records.completion));
    expect(delta('gateway_requests_total', { interface: 'graphql', model: MODEL, outcome: 'ok' })).toBe(3);
    expect(delta('gateway_requests_total', { interface: 'openai', model: MODEL, outcome: 'ok' })).toBe(1);
    expect(delta('gateway_requests_total', { interface: 'graphql', model: 'other', outcome: 'bad_input' })).toBe(1);
    expect(delta('gateway_requests_total', { interface: 'graphql', model: MODEL, outcome: 'quota_exceeded' })).toBe(1);
    // What the client typed never becomes a label.
    expect(JSON.stringify(after)).not.toContain('no-such-model');
    expect(valueOf(after, 'gateway_reservations_in_flight')).toBe(0);
  });

  it('has histograms with buckets that fit what they measure, and a sum and count per series', async () => {
    const { families: scraped, text } = await scrape(gateway);
    const parsed = scraped ?? [];
    const duration = histogramOf(parsed, text, 'gateway_request_duration_seconds', { interface: 'graphql', model: MODEL });
    expect(duration.count).toBeGreaterThanOrEqual(3);
    expect(duration.sum).toBeGreaterThan(0);
    const overhead = histogramOf(parsed, text, 'gateway_overhead_seconds', { interface: 'openai' });
    expect(Object.keys(overhead.buckets)).toEqual(expect.arrayContaining(['0.00025', '0.1', '+Inf']));
    expect(overhead.count).toBeGreaterThanOrEqual(1);
    expect(overhead.sum).toBeLessThan(duration.sum);
    const firstToken = histogramOf(parsed, text, 'gateway_time_to_first_token_seconds', { model: MODEL });
    expect(Object.keys(firstToken.buckets)).toEqual(expect.arrayContaining(['0.01', '30', '+Inf']));
    expect(firstToken.count).toBeGreaterThanOrEqual(1);
  });

  it('reports each upstream and the open sockets, and /readyz turns 503 when no upstream is in rotation', async () => {
    const socket = gateway.ws(user.token);
    socket.watch(UsageUpdatedDocument, {});
    await until(() => socket.acknowledged, 5_000, 'the socket acknowledged');
    const parsed = await families(gateway);
    expect(valueOf(parsed, 'gateway_upstream_up', { upstream: 'upstream-1' })).toBe(1);
    expect(valueOf(parsed, 'gateway_upstream_in_flight', { upstream: 'upstream-1' })).toBe(0);
    expect(valueOf(parsed, 'gateway_websocket_connections')).toBeGreaterThanOrEqual(1);

    await gateway.simulator.stop();
    await eventually(async () => (valueOf(await families(gateway), 'gateway_upstream_up', { upstream: 'upstream-1' }) === 0 ? true : undefined), 5_000, 'upstream down');
    const ready = await fetch(`${gateway.server.origin}/readyz`);
    expect({ status: ready.status, body: await ready.json() }).toEqual({
      status: 503,
      body: { status: 'unavailable', reason: 'no upstream in rotation', database: 'up', upstreams: { healthy: 0, total: 1 } },
    });
  });
});

describe('GET /metrics in production', () => {
  it('is not served without METRICS_TOKEN', async () => {
    const gateway = await startTestGateway({ env: { NODE_ENV: 'production', LOG_LEVEL: 'silent' } });
    try {
      expect((await scrape(gateway, null)).status).toBe(404);
    } finally {
      await gateway.stop();
    }
  });
});
