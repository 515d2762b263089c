// Every way an upstream call can end badly settles or releases the reservation exactly once:
// nothing is charged for tokens never produced, what was produced is charged once, and the
// user's quota is never left held by a request that is gone.
import { ChatDocument, ChatStreamDocument, type ChatStreamSubscription } from '../generated/graphql';
import { resetSimulator, startWithAdmin, type TestGateway } from '../helpers/server';
import { codeOf, createUser, eventually, extensionsOf } from '../helpers/client';
import { ledger, usageRecords } from '../helpers/database';
import { simulatorPromptTokens } from '../helpers/tokens';

const LIMIT = 10_000;
const messages = [{ role: 'USER' as const, content: 'Tell me about the weather today.' }];
const PROMPT = simulatorPromptTokens(messages);

function contentDeltas(outcome: { events: ChatStreamSubscription[] }): string[] {
  return outcome.events.map((event) => event.chatStream.delta).filter((delta) => delta !== '');
}

describe('upstream faults', () => {
  let gateway: TestGateway;
  let admin: string;

  beforeAll(async () => {
    ({ gateway, admin: { token: admin } } = await startWithAdmin());
  });
  afterEach(() => resetSimulator(gateway.simulator));
  afterAll(() => gateway.stop());

  async function expectNothingCharged(userId: string): Promise<void> {
    expect(await usageRecords(gateway.databaseUrl, userId)).toEqual([]);
    expect(await ledger(gateway.databaseUrl, userId)).toEqual({ used: 0, reserved: 0, reservations: 0 });
  }

  it('fail-before on chat: UPSTREAM_ERROR, nothing charged, reservation gone', async () => {
    const user = await createUser(gateway, admin, { tokenLimit: LIMIT });
    gateway.simulator.setFault('fail-before');
    const before = { ...gateway.simulator.stats };

    const result = await gateway.gql(ChatDocument, { input: { messages, maxTokens: 20 } }, user.token);

    expect(result.data).toBeNull();
    expect(codeOf(result.errors)).toBe('UPSTREAM_ERROR');
    expect(gateway.simulator.stats.failed - before.failed).toBe(1);
    await expectNothingCharged(user.id);
  });

  it('fail-before on chatStream: UPSTREAM_ERROR to the subscriber, nothing charged', async () => {
    const user = await createUser(gateway, admin, { tokenLimit: LIMIT });
    gateway.simulator.setFault('fail-before');

    const outcome = await gateway.ws(user.token).collect(ChatStreamDocument, { input: { messages } });

    expect(codeOf(outcome.error)).toBe('UPSTREAM_ERROR');
    expect(contentDeltas(outcome)).toEqual([]);
    await expectNothingCharged(user.id);
  });

  it('fail-mid on chat (not streamed): UPSTREAM_ERROR, nothing charged for an answer never delivered', async () => {
    const user = await createUser(gateway, admin, { tokenLimit: LIMIT });
    gateway.simulator.setFault('fail-mid:3');

    const result = await gateway.gql(ChatDocument, { input: { messages } }, user.token);

    expect(codeOf(result.errors)).toBe('UPSTREAM_ERROR');
    await expectNothingCharged(user.id);
  });

  it('fail-mid on chatStream: UPSTREAM_ERROR delivered, the 3 tokens generated charged once as upstream_error', async () => {
    const user = await createUser(gateway, admin, { tokenLimit: LIMIT });
    gateway.simulator.setFault('fail-mid:3');
    const before = { ...gateway.simulator.stats };

    const outcome = await gateway.ws(user.token).collect(ChatStreamDocument, { input: { messages } });

    expect(codeOf(outcome.error)).toBe('UPSTREAM_ERROR');
    expect(contentDeltas(outcome)).toHaveLength(3);
    expect(gateway.simulator.stats.failed - before.failed).toBe(1);
    const records = await eventually(async () => {
      const rows = await usageRecords(gateway.databaseUrl, user.id);
      return rows.length > 0 ? rows : undefined;
    });
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({
      prompt_tokens: PROMPT,
      completion_tokens: 3,
      charged_tokens: PROMPT + 3,
      status: 'upstream_error',
      usage_source: 'reported',
    });
    expect(await ledger(gateway.databaseUrl, user.id)).toEqual({ used: PROMPT + 3, reserved: 0, reservations: 0 });
  });

  it('client disconnect mid-stream: the upstream is aborted and the partial answer charged once', async () => {
    const user = await createUser(gateway, admin, { tokenLimit: LIMIT });
    gateway.simulator.setLatency({ timeToFirstTokenMs: 20, interTokenLatencyMs: 40 });
    const before = { ...gateway.simulator.stats };

    // Unsubscribes after 3 chunks, long before the answer (16+ tokens, 40 ms each) is done.
    const outcome = await gateway.ws(user.token).collect(ChatStreamDocument, { input: { messages } }, 3);

    expect(outcome.error).toBeNull();
    expect(contentDeltas(outcome)).toHaveLength(3);
    await eventually(async () => (gateway.simulator.stats.aborted - before.aborted === 1 ? true : undefined), 2_000, 'the simulator to see the abort');
    const records = await eventually(async () => {
      const rows = await usageRecords(gateway.databaseUrl, user.id);
      return rows.length > 0 ? rows : undefined;
    });
    const generated = gateway.simulator.stats.completionTokens - before.completionTokens;
    expect(gateway.simulator.stats.completed - before.completed).toBe(0);
    expect(records).toHaveLength(1);
    const [record] = records;
    expect(record.status).toBe('aborted');
    expect(record.prompt_tokens).toBe(PROMPT);
    // At least what the client saw, at most what the simulator generated before it stopped.
    expect(record.completion_tokens).toBeGreaterThanOrEqual(3);
    expect(record.completion_tokens).toBeLessThanOrEqual(generated);
    expect(generated).toBeLessThan(16);
    expect(record.charged_tokens).toBe(PROMPT + record.completion_tokens);
    // Recorded once: a while later there is still one record and the ledger agrees with it.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await usageRecords(gateway.databaseUrl, user.id)).toHaveLength(1);
    expect(await ledger(gateway.databaseUrl, user.id)).toEqual({ used: record.charged_tokens, reserved: 0, reservations: 0 });
  });

  it('client disconnect while the upstream is silent: aborted at once, not when the idle timer fires', async () => {
    const user = await createUser(gateway, admin, { tokenLimit: LIMIT });
    // Three tokens, then the model produces nothing more until the client goes away.
    gateway.simulator.setFault('hang:3');
    const before = { ...gateway.simulator.stats };

    const outcome = await gateway.ws(user.token).collect(ChatStreamDocument, { input: { messages } }, 3);
    const unsubscribedAt = Date.now();

    expect(contentDeltas(outcome)).toHaveLength(3);
    await eventually(async () => (gateway.simulator.stats.aborted - before.aborted === 1 ? true : undefined), 2_000, 'the simulator to see the abort');
    expect(Date.now() - unsubscribedAt).toBeLessThan(2_000);
    const records = await eventually(async () => {
      const rows = await usageRecords(gateway.databaseUrl, user.id);
      return rows.length > 0 ? rows : undefined;
    });
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ status: 'aborted', prompt_tokens: PROMPT, completion_tokens: 3, charged_tokens: PROMPT + 3 });
    expect(await ledger(gateway.databaseUrl, user.id)).toEqual({ used: PROMPT + 3, reserved: 0, reservations: 0 });
  });

  it('missing usage chunk: charged an estimate from the deltas received, never zero', async () => {
    const user = await createUser(gateway, admin, { tokenLimit: LIMIT });
    gateway.simulator.setFault('no-usage');

    const outcome = await gateway.ws(user.token).collect(ChatStreamDocument, { input: { messages } });

    expect(outcome.error).toBeNull();
    const deltas = contentDeltas(outcome);
    expect(deltas.length).toBeGreaterThanOrEqual(16);
    const last = outcome.events.at(-1)!.chatStream;
    expect(last.finishReason).toBe('stop');
    expect(last.usage).toEqual({ promptTokens: PROMPT, completionTokens: deltas.length, totalTokens: PROMPT + deltas.length });
    const records = await usageRecords(gateway.databaseUrl, user.id);
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({
      usage_source: 'estimated',
      status: 'completed',
      prompt_tokens: PROMPT,
      completion_tokens: deltas.length,
      charged_tokens: PROMPT + deltas.length,
    });
    expect(records[0].charged_tokens).toBeGreaterThan(0);
    expect(await ledger(gateway.databaseUrl, user.id)).toEqual({ used: PROMPT + deltas.length, reserved: 0, reservations: 0 });
  });

  it('missing usage and a client that leaves: the deltas received are charged, marked estimated', async () => {
    const user = await createUser(gateway, admin, { tokenLimit: LIMIT });
    gateway.simulator.setFault('no-usage');
    gateway.simulator.setLatency({ interTokenLatencyMs: 40 });

    const outcome = await gateway.ws(user.token).collect(ChatStreamDocument, { input: { messages } }, 4);

    expect(contentDeltas(outcome)).toHaveLength(4);
    const records = await eventually(async () => {
      const rows = await usageRecords(gateway.databaseUrl, user.id);
      return rows.length > 0 ? rows : undefined;
    });
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ usage_source: 'estimated', status: 'aborted', prompt_tokens: PROMPT });
    expect(records[0].completion_tokens).toBeGreaterThanOrEqual(4);
    expect(records[0].charged_tokens).toBe(PROMPT + records[0].completion_tokens);
  });
});

describe('upstream hangs past the timeout', () => {
  let gateway: TestGateway;
  let admin: string;

  beforeAll(async () => {
    ({ gateway, admin: { token: admin } } = await startWithAdmin({ env: { VLLM_TIMEOUT_MS: '1000' } }));
  });
  afterEach(() => resetSimulator(gateway.simulator));
  afterAll(() => gateway.stop());

  it('chat: UPSTREAM_ERROR with timeout after about VLLM_TIMEOUT_MS, nothing charged, reservation released', async () => {
    const user = await createUser(gateway, admin, { tokenLimit: LIMIT });
    gateway.simulator.setFault('hang');
    const before = { ...gateway.simulator.stats };
    const startedAt = Date.now();

    const result = await gateway.gql(ChatDocument, { input: { messages, maxTokens: 50 } }, user.token);

    const elapsed = Date.now() - startedAt;
    expect(codeOf(result.errors)).toBe('UPSTREAM_ERROR');
    expect(extensionsOf(result.errors)?.timeout).toBe(true);
    expect(elapsed).toBeGreaterThanOrEqual(900);
    expect(elapsed).toBeLessThan(3_000);
    // The gateway hung up on the model, which stops generating.
    await eventually(async () => (gateway.simulator.stats.aborted - before.aborted === 1 ? true : undefined), 2_000, 'the simulator to see the abort');
    expect(await usageRecords(gateway.databaseUrl, user.id)).toEqual([]);
    expect(await ledger(gateway.databaseUrl, user.id)).toEqual({ used: 0, reserved: 0, reservations: 0 });
  });

  it('chatStream that stalls after 3 tokens: UPSTREAM_ERROR with timeout, the 3 tokens charged as timeout', async () => {
    const user = await createUser(gateway, admin, { tokenLimit: LIMIT });
    gateway.simulator.setFault('hang:3');

    const outcome = await gateway.ws(user.token).collect(ChatStreamDocument, { input: { messages } });

    expect(codeOf(outcome.error)).toBe('UPSTREAM_ERROR');
    expect(extensionsOf(outcome.error)?.timeout).toBe(true);
    expect(contentDeltas(outcome)).toHaveLength(3);
    const records = await usageRecords(gateway.databaseUrl, user.id);
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ status: 'timeout', prompt_tokens: PROMPT, completion_tokens: 3, charged_tokens: PROMPT + 3 });
    expect(await ledger(gateway.databaseUrl, user.id)).toEqual({ used: PROMPT + 3, reserved: 0, reservations: 0 });
  });
});
