// Invariant 3 under load: many requests at once, on one or two gateway instances sharing one
// database, never push `used` past the limit, every token charged is in a usage record, and
// the upstream sees exactly the requests that were accepted.
import { ledger, sql, usageRecords } from '../helpers/database';
import { startTestGateway, startWithAdmin, type TestGateway } from '../helpers/server';
import { ChatDocument, MyUsageDocument, type ChatMutation } from '../generated/graphql';
import { codeOf, createUser, signInAdmin, TEST_ADMIN } from '../helpers/client';
import { simulatorPromptTokens } from '../helpers/tokens';

const CALLS = 50;
const LIMIT = 500;

interface BurstOutcome {
  accepted: ChatMutation['chat'][];
  refusals: unknown[];
  /** Highest `used` and `used + reserved` seen in PostgreSQL while the burst ran. */
  peakUsed: number;
  peakCommitted: number;
}

/** Fires CALLS chats at once (round-robin over `gateways`) while sampling the ledger. */
async function burst(gateways: TestGateway[], userId: string, token: string, maxTokens: number | null): Promise<BurstOutcome> {
  let running = true;
  let peakUsed = 0;
  let peakCommitted = 0;
  const sampler = (async () => {
    while (running) {
      const row = await ledger(gateways[0].databaseUrl, userId);
      peakUsed = Math.max(peakUsed, row.used);
      peakCommitted = Math.max(peakCommitted, row.used + row.reserved);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  })();
  const results = await Promise.all(
    Array.from({ length: CALLS }, (_, i) =>
      gateways[i % gateways.length].gql(
        ChatDocument,
        { input: { messages: [{ role: 'USER', content: `Request ${i}: tell me something.` }], ...(maxTokens === null ? {} : { maxTokens }) } },
        token,
      ),
    ),
  );
  running = false;
  await sampler;
  const accepted: ChatMutation['chat'][] = [];
  const refusals: unknown[] = [];
  for (const result of results) {
    if (result.data?.chat != null) accepted.push(result.data.chat);
    else refusals.push(codeOf(result.errors));
  }
  return { accepted, refusals, peakUsed, peakCommitted };
}

async function expectLedgerConsistent(gateway: TestGateway, user: { id: string; token: string }, outcome: BurstOutcome, simulatorTokens: number): Promise<void> {
  const { accepted, refusals } = outcome;
  // Some fit, some did not: the limit was really in play.
  expect(accepted.length).toBeGreaterThan(0);
  expect(refusals.length).toBeGreaterThan(0);
  expect(accepted.length + refusals.length).toBe(CALLS);
  // Every refusal is a quota refusal, nothing else failed.
  expect(new Set(refusals)).toEqual(new Set(['QUOTA_EXCEEDED']));
  expect(outcome.peakUsed).toBeLessThanOrEqual(LIMIT);
  expect(outcome.peakCommitted).toBeLessThanOrEqual(LIMIT);

  const me = await gateway.gql(MyUsageDocument, {}, user.token);
  const usage = me.data?.me.usage;
  expect(usage?.limit).toBe(LIMIT);
  expect(usage?.used).toBeLessThanOrEqual(LIMIT);
  expect(usage?.reserved).toBe(0);

  const records = await usageRecords(gateway.databaseUrl, user.id);
  expect(records).toHaveLength(accepted.length);
  expect(new Set(records.map((record) => record.request_id))).toEqual(new Set(accepted.map((chat) => chat.id)));
  const charged = records.reduce((sum, record) => sum + record.charged_tokens, 0);
  const total = records.reduce((sum, record) => sum + record.total_tokens, 0);
  expect(charged).toBe(usage?.used);
  expect(total).toBe(usage?.used);
  // What the clients were told they spent, and what the simulator generated, is what was charged.
  expect(accepted.reduce((sum, chat) => sum + chat.usage.totalTokens, 0)).toBe(usage?.used);
  expect(simulatorTokens).toBe(usage?.used);
  expect(records.every((record) => record.status === 'completed' && record.usage_source === 'reported')).toBe(true);

  const after = await ledger(gateway.databaseUrl, user.id);
  expect(after).toEqual({ used: usage?.used, reserved: 0, reservations: 0 });
}

describe('concurrent chats against one quota', () => {
  let gateway: TestGateway;
  let admin: string;

  beforeAll(async () => {
    ({ gateway, admin: { token: admin } } = await startWithAdmin());
  });
  afterAll(() => gateway.stop());

  it.each([
    ['with maxTokens 20', 20],
    ['without maxTokens', null],
  ])('%s: never overspends, and the simulator sees exactly the accepted requests', async (_label, maxTokens) => {
    const user = await createUser(gateway, admin, { tokenLimit: LIMIT });
    const sim = gateway.simulator;
    const before = { ...sim.stats };

    const outcome = await burst([gateway], user.id, user.token, maxTokens);

    expect(sim.stats.chatRequests - before.chatRequests).toBe(outcome.accepted.length);
    const simulatorTokens = sim.stats.promptTokens - before.promptTokens + (sim.stats.completionTokens - before.completionTokens);
    await expectLedgerConsistent(gateway, user, outcome, simulatorTokens);
    if (maxTokens !== null) {
      // Each reservation is prompt + 20, so at most LIMIT / that many can ever be held at once.
      const prompt = simulatorPromptTokens([{ content: 'Request 0: tell me something.' }]);
      expect(outcome.accepted.every((chat) => chat.usage.promptTokens === prompt && chat.usage.completionTokens <= 20)).toBe(true);
    }
  });

  describe('on two gateway instances sharing one database', () => {
    let second: TestGateway;

    beforeAll(async () => {
      second = await startTestGateway({ simulator: gateway.simulator, databaseUrl: gateway.databaseUrl });
    });
    afterAll(() => second.stop());

    it('starts the second instance without creating a second admin', async () => {
      expect(gateway.server.adminBootstrap).not.toBeNull();
      expect(second.server.adminBootstrap).toBeNull();
      const admins = await sql<{ email: string }>(gateway.databaseUrl, "select email from users where role = 'ADMIN'");
      expect(admins).toEqual([{ email: TEST_ADMIN.email }]);
      // The admin created by the first instance signs in on the second, as the same account.
      expect((await signInAdmin(second)).id).toBe((await signInAdmin(gateway)).id);
    });

    it.each([
      ['with maxTokens 20', 20],
      ['without maxTokens', null],
    ])('%s: the limit holds across both instances', async (_label, maxTokens) => {
      const user = await createUser(gateway, admin, { tokenLimit: LIMIT });
      const sim = gateway.simulator;
      const before = { ...sim.stats };

      const outcome = await burst([gateway, second], user.id, user.token, maxTokens);

      expect(sim.stats.chatRequests - before.chatRequests).toBe(outcome.accepted.length);
      const simulatorTokens = sim.stats.promptTokens - before.promptTokens + (sim.stats.completionTokens - before.completionTokens);
      await expectLedgerConsistent(gateway, user, outcome, simulatorTokens);
      // Both instances report the same ledger.
      const fromSecond = await second.gql(MyUsageDocument, {}, user.token);
      const fromFirst = await gateway.gql(MyUsageDocument, {}, user.token);
      expect(fromSecond.data?.me.usage).toEqual(fromFirst.data?.me.usage);
    });
  });
});
