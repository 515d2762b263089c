// One request, three budgets: it must fit in its API key's, its user's and its team's, is
// reserved in all of them or none, is charged the same at each, and a refusal names the level.
import OpenAI from 'openai';
import type { Clock } from '../../src/clock';
import { ChatDocument, TeamDocument, UpdateApiKeyDocument, UpdateTeamDocument, UpdateUserDocument, type ChatMutation } from '../generated/graphql';
import { createApiKey, createUser, dataOf, eventually, onlyError, openaiClient, usageOf, type SignedIn } from '../helpers/client';
import { sql } from '../helpers/database';
import { resetSimulator, startWithAdmin, type TestGateway } from '../helpers/server';
import { simulatorPromptTokens } from '../helpers/tokens';
import { createTeam, levelLedger, recordedSum, teamUsageOf } from './support';

const STORY = [{ role: 'USER' as const, content: 'Tell me a long story about the sea.' }];
const PROMPT = simulatorPromptTokens(STORY);

interface Member {
  readonly team: { id: string };
  readonly user: SignedIn;
  readonly key: { id: string; secret: string };
}

describe('budgets at three levels', () => {
  let gateway: TestGateway;
  let admin: string;
  // The gateway's clock: real time unless a test fixes it.
  let fixed: Date | null = null;
  const clock: Clock = { now: () => fixed ?? new Date() };

  beforeAll(async () => {
    // Judges a gone instance at once, so a test can hand a reservation to one and settle it; an
    // orphan is charged its reserved prompt, which these figures expect to be the exact count.
    ({ gateway, admin: { token: admin } } = await startWithAdmin({ clock, env: { ORPHAN_SETTLE_AFTER_MS: '0', PROMPT_COUNT: 'exact' } }));
  });
  afterEach(() => {
    fixed = null;
    resetSimulator(gateway.simulator);
  });
  afterAll(() => gateway.stop());

  /** A team, a user in it and a key of theirs, each with the limit and period given (null: unlimited). */
  async function member(limits: { team?: number | null; user?: number | null; key?: number | null }, periods: { team?: 'NONE' | 'DAILY' | 'MONTHLY'; key?: 'NONE' | 'DAILY' | 'MONTHLY'; user?: 'NONE' | 'DAILY' | 'MONTHLY' } = {}): Promise<Member> {
    const team = await createTeam(gateway, admin, { tokenLimit: limits.team ?? null, quotaPeriod: periods.team ?? 'NONE' });
    const user = await createUser(gateway, admin, { tokenLimit: limits.user ?? null, quotaPeriod: periods.user ?? 'NONE', teamId: team.id });
    const key = await createApiKey(gateway, user.token, 'budgeted', { tokenLimit: limits.key ?? null, quotaPeriod: periods.key ?? 'NONE' });
    return { team, user, key };
  }

  const ask = (token: string, maxTokens: number | null = null) => gateway.gql(ChatDocument, { input: { messages: STORY, maxTokens } }, token);

  async function ledgers(m: Member): Promise<Record<'team' | 'user' | 'key', { used: number; reserved: number }>> {
    const url = gateway.databaseUrl;
    return { team: await levelLedger(url, 'TEAM', m.team.id), user: await levelLedger(url, 'USER', m.user.id), key: await levelLedger(url, 'API_KEY', m.key.id) };
  }

  /** Invariant 3 at every level: each ledger's `used` is the sum of its records, nothing stays reserved. */
  async function expectLedgersMatchRecords(m: Member): Promise<void> {
    const url = gateway.databaseUrl;
    expect(await ledgers(m)).toEqual({
      team: { used: await recordedSum(url, 'team_id', m.team.id), reserved: 0 },
      user: { used: await recordedSum(url, 'user_id', m.user.id), reserved: 0 },
      key: { used: await recordedSum(url, 'api_key_id', m.key.id), reserved: 0 },
    });
  }

  it("binds a request made with a key by the key's, the user's and the team's budget; one made with an access token by the user's and the team's", async () => {
    const m = await member({ team: 10_000, user: 10_000, key: PROMPT + 10 });
    const before = gateway.simulator.stats.chatRequests;

    const refused = await ask(m.key.secret, 11);
    const error = onlyError(refused, 'QUOTA_EXCEEDED');
    expect(error.extensions).toMatchObject({ scope: 'API_KEY', limit: PROMPT + 10, used: 0, reserved: 0, requested: PROMPT + 11, resetsAt: null });
    expect(error.message).toMatch(/this API key's quota/);
    // Nothing reached the upstream, nothing was held anywhere.
    expect(gateway.simulator.stats.chatRequests).toBe(before);
    expect(await ledgers(m)).toEqual({ team: { used: 0, reserved: 0 }, user: { used: 0, reserved: 0 }, key: { used: 0, reserved: 0 } });

    // The same request with the user's access token: the key's budget does not apply.
    const byToken = dataOf(await ask(m.user.token, 11), 'chat by token').chat;
    const byKey = dataOf(await ask(m.key.secret, 10), 'chat by key').chat;
    const spent = byToken.usage.totalTokens + byKey.usage.totalTokens;
    expect(await ledgers(m)).toEqual({ team: { used: spent, reserved: 0 }, user: { used: spent, reserved: 0 }, key: { used: byKey.usage.totalTokens, reserved: 0 } });
    await expectLedgersMatchRecords(m);
    expect((await usageOf(gateway, m.user.token)).used).toBe(spent);
    expect(await teamUsageOf(gateway, m.user.token)).toMatchObject({ used: spent, limit: 10_000, remaining: 10_000 - spent, reserved: 0 });
  });

  it('names the level that refused (API_KEY, USER or TEAM) and when it resets; of several, the one that resets last', async () => {
    fixed = new Date('2026-03-14T12:00:00Z');
    const cases: [string, Member, string, string | null][] = [
      ['user, daily', await member({ user: PROMPT + 2 }, { user: 'DAILY' }), 'USER', '2026-03-15T00:00:00.000Z'],
      ['team, monthly', await member({ team: PROMPT + 2 }, { team: 'MONTHLY' }), 'TEAM', '2026-04-01T00:00:00.000Z'],
      ['key, daily', await member({ key: PROMPT + 2 }, { key: 'DAILY' }), 'API_KEY', '2026-03-15T00:00:00.000Z'],
      ['key daily and team monthly', await member({ key: PROMPT + 2, team: PROMPT + 2 }, { key: 'DAILY', team: 'MONTHLY' }), 'TEAM', '2026-04-01T00:00:00.000Z'],
      ['key daily and user lifetime', await member({ key: PROMPT + 2, user: PROMPT + 2 }, { key: 'DAILY' }), 'USER', null],
    ];
    for (const [label, m, scope, resetsAt] of cases) {
      const error = onlyError(await ask(m.key.secret, 10), 'QUOTA_EXCEEDED');
      expect([label, error.extensions?.scope, error.extensions?.resetsAt]).toEqual([label, scope, resetsAt]);
      expect([label, await ledgers(m)]).toEqual([label, { team: { used: 0, reserved: 0 }, user: { used: 0, reserved: 0 }, key: { used: 0, reserved: 0 } }]);
    }
    // The messages name the level too.
    const team = onlyError(await ask(cases[1][1].user.token, 10), 'QUOTA_EXCEEDED');
    expect(team.message).toMatch(/your team's quota/);
    const user = onlyError(await ask(cases[0][1].user.token, 10), 'QUOTA_EXCEEDED');
    expect(user.message).toMatch(/remain in your quota/);
  });

  it.each([
    // The other two keep room for another request afterwards, so that only the tightest refuses it.
    ['API_KEY', { key: PROMPT + 5, user: 3 * PROMPT + 20, team: 3 * PROMPT + 40 }],
    ['USER', { key: 3 * PROMPT + 40, user: PROMPT + 5, team: 3 * PROMPT + 20 }],
    ['TEAM', { key: 3 * PROMPT + 20, user: 3 * PROMPT + 40, team: PROMPT + 5 }],
  ])('without maxTokens, caps the answer to the least that remains across the levels (%s the tightest)', async (scope, limits) => {
    const m = await member(limits);
    const chat = dataOf(await ask(m.key.secret), 'capped chat').chat;
    expect(chat.finishReason).toBe('length');
    expect(chat.usage).toEqual({ promptTokens: PROMPT, completionTokens: 5, totalTokens: PROMPT + 5 });
    expect(await ledgers(m)).toEqual({ team: { used: PROMPT + 5, reserved: 0 }, user: { used: PROMPT + 5, reserved: 0 }, key: { used: PROMPT + 5, reserved: 0 } });
    // Nothing remains at that level: the next one is refused there, and nothing is held.
    const error = onlyError(await ask(m.key.secret), 'QUOTA_EXCEEDED');
    expect(error.extensions?.scope).toBe(scope);
    await expectLedgersMatchRecords(m);
  });

  it("a team's quota binds all its members together, and rolls over at the UTC day like a user's", async () => {
    fixed = new Date('2026-05-20T23:59:59Z');
    const team = await createTeam(gateway, admin, { tokenLimit: 3 * (PROMPT + 5), quotaPeriod: 'DAILY' });
    const ana = await createUser(gateway, admin, { teamId: team.id });
    const bo = await createUser(gateway, admin, { teamId: team.id, tokenLimit: 1_000_000 });
    const spent: ChatMutation['chat'][] = [];
    for (const who of [ana, bo, ana]) spent.push(dataOf(await ask(who.token, 5), 'team chat').chat);
    const total = spent.reduce((sum, chat) => sum + chat.usage.totalTokens, 0);
    expect(total).toBeLessThanOrEqual(3 * (PROMPT + 5));
    // Whatever is left is too little for another member's request: the team refuses it.
    const refused = onlyError(await ask(bo.token, 5), 'QUOTA_EXCEEDED');
    expect(refused.extensions).toMatchObject({ scope: 'TEAM', used: total, resetsAt: '2026-05-21T00:00:00.000Z' });
    const usage = dataOf(await gateway.gql(TeamDocument, { id: team.id }, admin), 'team').team?.usage;
    expect(usage).toMatchObject({ used: total, periodStart: '2026-05-20T00:00:00.000Z', periodEnd: '2026-05-21T00:00:00.000Z' });
    expect(await recordedSum(gateway.databaseUrl, 'team_id', team.id)).toBe(total);

    fixed = new Date('2026-05-21T00:00:01Z');
    expect(await teamUsageOf(gateway, ana.token)).toMatchObject({ used: 0, reserved: 0, periodStart: '2026-05-21T00:00:00.000Z' });
    const again = dataOf(await ask(bo.token, 5), 'next day').chat;
    expect(await teamUsageOf(gateway, bo.token)).toMatchObject({ used: again.usage.totalTokens, remaining: 3 * (PROMPT + 5) - again.usage.totalTokens });
    // A new team period does not touch a member's own lifetime quota.
    expect((await usageOf(gateway, bo.token)).used).toBe(spent[1].usage.totalTokens + again.usage.totalTokens);
  });

  it("recounts a level's usage from its records when its period changes", async () => {
    const m = await member({ team: 100_000, key: 100_000 });
    const chat = dataOf(await ask(m.key.secret, 5), 'chat').chat;
    // Moved to a period starting after the record: nothing of it counts any more...
    fixed = new Date(Date.now() + 40 * 86_400_000);
    dataOf(await gateway.gql(UpdateTeamDocument, { id: m.team.id, input: { quotaPeriod: 'DAILY' } }, admin), 'updateTeam');
    dataOf(await gateway.gql(UpdateApiKeyDocument, { id: m.key.id, input: { quotaPeriod: 'MONTHLY' } }, m.user.token), 'updateApiKey');
    expect(await ledgers(m)).toMatchObject({ team: { used: 0 }, key: { used: 0 }, user: { used: chat.usage.totalTokens } });
    // ...and back to a lifetime period, all of it again.
    dataOf(await gateway.gql(UpdateTeamDocument, { id: m.team.id, input: { quotaPeriod: 'NONE' } }, admin), 'updateTeam');
    dataOf(await gateway.gql(UpdateApiKeyDocument, { id: m.key.id, input: { quotaPeriod: 'NONE' } }, m.user.token), 'updateApiKey');
    await expectLedgersMatchRecords(m);
  });

  it('charges a request to the team it was reserved in, even when the user moves meanwhile', async () => {
    const m = await member({ team: 100_000 });
    const next = await createTeam(gateway, admin, { tokenLimit: 100_000 });
    gateway.simulator.setLatency({ timeToFirstTokenMs: 300, interTokenLatencyMs: 0, jitterMs: 0 });
    const running = ask(m.user.token, 5);
    await eventually(async () => ((await levelLedger(gateway.databaseUrl, 'TEAM', m.team.id)).reserved > 0 ? true : undefined), 2_000, 'the reservation');
    dataOf(await gateway.gql(UpdateUserDocument, { id: m.user.id, input: { teamId: next.id } }, admin), 'move');
    const chat = dataOf(await running, 'chat across the move').chat;
    expect(await levelLedger(gateway.databaseUrl, 'TEAM', m.team.id)).toEqual({ used: chat.usage.totalTokens, reserved: 0 });
    expect(await levelLedger(gateway.databaseUrl, 'TEAM', next.id)).toEqual({ used: 0, reserved: 0 });
    // The next request is the new team's.
    const after = dataOf(await ask(m.user.token, 5), 'chat after the move').chat;
    expect(await levelLedger(gateway.databaseUrl, 'TEAM', next.id)).toEqual({ used: after.usage.totalTokens, reserved: 0 });
  });

  it('settles, at every level, the reservation of an instance that is gone as interrupted; its request, ending later, is not charged again', async () => {
    const m = await member({ team: 100_000, user: 100_000, key: 100_000 });
    gateway.simulator.setLatency({ timeToFirstTokenMs: 400, interTokenLatencyMs: 0, jitterMs: 0 });
    const running = ask(m.key.secret, 5);
    const held = await eventually(async () => {
      const now = await ledgers(m);
      return now.key.reserved > 0 ? now : undefined;
    }, 2_000, 'the reservation');
    expect(held.team.reserved).toBe(held.key.reserved);
    expect(held.user.reserved).toBe(held.key.reserved);
    // As if its instance had died (no such instance holds a lock or beats): the reaper, a white-box
    // call as its timer runs every 5 s, charges the checkpoint (the prompt: nothing was delivered yet).
    await sql(gateway.databaseUrl, 'update quota_reservations set instance_id = gen_random_uuid() where api_key_id = $1', [m.key.id]);
    expect(await gateway.server.services.quota.settleOrphans()).toBe(1);
    const charged = { used: PROMPT, reserved: 0 };
    expect(await ledgers(m)).toEqual({ team: charged, user: charged, key: charged });
    const [record] = await sql<{ status: string; usage_source: string; prompt_tokens: number; completion_tokens: number }>(
      gateway.databaseUrl,
      'select status, usage_source, prompt_tokens, completion_tokens from usage_records where api_key_id = $1',
      [m.key.id],
    );
    expect(record).toEqual({ status: 'interrupted', usage_source: 'estimated', prompt_tokens: PROMPT, completion_tokens: 0 });
    // A second reaper finds nothing left.
    expect(await gateway.server.services.quota.settleOrphans()).toBe(0);

    dataOf(await running, 'the chat');
    expect(await ledgers(m)).toEqual({ team: charged, user: charged, key: charged });
    await expectLedgersMatchRecords(m);
  });

  it("on /v1, a refusal is a 429 whose message names the level and whose Retry-After is the level's reset", async () => {
    fixed = new Date('2026-03-14T23:00:00Z');
    const m = await member({ key: PROMPT + 2, team: 1_000_000 }, { key: 'DAILY', team: 'MONTHLY' });
    const client = openaiClient(gateway, m.key.secret);
    const model = dataOf(await ask(m.user.token, 1), 'a first chat').chat.model;
    const error = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Hello there.' }], max_tokens: 50 }).then(
      () => null,
      (failure: unknown) => failure,
    );
    expect(error).toBeInstanceOf(OpenAI.RateLimitError);
    const refusal = error as InstanceType<typeof OpenAI.RateLimitError>;
    expect(refusal.status).toBe(429);
    expect(refusal.code).toBe('insufficient_quota');
    expect(refusal.message).toMatch(/this API key's quota/);
    expect(refusal.headers?.get('retry-after')).toBe(String(60 * 60));
  });
});

describe('budgets at three levels, when vLLM reports more than was reserved', () => {
  let gateway: TestGateway;
  let admin: string;
  // 64 dots: 64 tokens for the simulator, 1 for tiktoken, so the reservation comes out far too low.
  const DOTS = [{ role: 'USER' as const, content: '.'.repeat(64) }];

  beforeAll(async () => {
    ({ gateway, admin: { token: admin } } = await startWithAdmin({ simulator: { tokenizeEndpoint: false } }));
  });
  afterAll(() => gateway.stop());

  it.each([
    ['TEAM', { team: 40, user: 10_000, key: 10_000 }],
    ['API_KEY', { team: 10_000, user: 10_000, key: 40 }],
    ['USER', { team: 10_000, user: 40, key: null }],
  ])('charges every level what fits in the tightest (%s), never past any limit', async (_scope, limits) => {
    const team = await createTeam(gateway, admin, { tokenLimit: limits.team });
    const user = await createUser(gateway, admin, { tokenLimit: limits.user, teamId: team.id });
    const key = await createApiKey(gateway, user.token, 'overrun', { tokenLimit: limits.key });

    const chat = dataOf(await gateway.gql(ChatDocument, { input: { messages: DOTS, maxTokens: 8 } }, key.secret), 'overrunning chat').chat;

    expect(chat.usage.totalTokens).toBe(simulatorPromptTokens(DOTS) + 8);
    const url = gateway.databaseUrl;
    expect(await recordedSum(url, 'user_id', user.id)).toBe(40);
    for (const [scope, id] of [['TEAM', team.id], ['USER', user.id], ['API_KEY', key.id]] as const) {
      expect([scope, await levelLedger(url, scope, id)]).toEqual([scope, { used: 40, reserved: 0 }]);
    }
    expect(dataOf(await gateway.gql(TeamDocument, { id: team.id }, admin), 'team').team?.usage.used).toBe(40);
  });
});
