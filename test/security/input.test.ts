import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import {
  ApiKeysDocument,
  ChatDocument,
  ChatStreamDocument,
  CreateApiKeyDocument,
  CreateUserDocument,
  LoginDocument,
  UpdateUserDocument,
  UsageHistoryDocument,
  UsageSummaryDocument,
  UsageUpdatedDocument,
  UserDocument,
  UsersDocument,
  type ChatInput,
} from '../generated/graphql';
import { sql } from '../helpers/database';
import { startWithAdmin, type TestGateway } from '../helpers/server';
import { startSimulator, type Simulator } from '../../src/simulator';
import { createUser, postGraphQL, type SignedIn } from '../helpers/client';
import { RawSocket, expectWsErrors } from '../helpers/raw-socket';
import { expectErrors, expectStillServing, rawRequest, spendOf, startCountingProxy, type CountingProxy } from './support';

const TOKENIZE = '/tokenize';
const COMPLETIONS = '/v1/chat/completions';
const SQL_METACHARACTERS = ["' OR 1=1 --", '"; drop table users; --', '\\', '%', '_'] as const;

/**
 * Hostile arguments: sizes, integer overflow, SQL metacharacters, and reaching for what is
 * someone else's. The upstream sits behind a counting proxy, so "before tokenizing" and
 * "nothing sent upstream" are observed, not assumed.
 */
describe('hostile arguments', () => {
  let simulator: Simulator;
  let proxy: CountingProxy;
  let gateway: TestGateway;
  let admin: string;
  let user: SignedIn;
  let other: SignedIn;

  beforeAll(async () => {
    simulator = await startSimulator({});
    proxy = await startCountingProxy(simulator);
    ({ gateway, admin: { token: admin } } = await startWithAdmin({ simulator, env: { VLLM_BASE_URL: proxy.url } }));
    user = await createUser(gateway, admin, { tokenLimit: 100_000 });
    other = await createUser(gateway, admin, { tokenLimit: 100_000 });
    // One real chat each, so that both have usage to read (and to protect).
    for (const who of [user, other]) {
      const { body } = await postGraphQL(gateway.server.url, ChatDocument, { input: { messages: [{ role: 'USER', content: 'hello' }], maxTokens: 8 } }, { token: who.token });
      expect(body.errors).toBeUndefined();
    }
    // The proxy does see what the gateway sends upstream: the checks below are not vacuous.
    expect(proxy.hitsOf(TOKENIZE)).toBeGreaterThanOrEqual(2);
    expect(proxy.hitsOf(COMPLETIONS)).toBe(2);
  });
  afterAll(async () => {
    await gateway.stop();
    await proxy.stop();
    await simulator.stop();
  });

  /** Snapshot of everything a refused chat must leave untouched. */
  async function untouched(): Promise<() => Promise<void>> {
    const spent = await spendOf(gateway, user);
    const tokenize = proxy.hitsOf(TOKENIZE);
    const completions = proxy.hitsOf(COMPLETIONS);
    const chatRequests = simulator.stats.chatRequests;
    return async () => {
      expect(proxy.hitsOf(TOKENIZE)).toBe(tokenize);
      expect(proxy.hitsOf(COMPLETIONS)).toBe(completions);
      expect(simulator.stats.chatRequests).toBe(chatRequests);
      expect(await spendOf(gateway, user)).toEqual(spent);
      await expectStillServing(gateway);
    };
  }

  const hi = [{ role: 'USER' as const, content: 'hi' }];

  describe('sizes of chat input: refused before tokenizing, nothing charged', () => {
    const refused: [string, () => ChatInput, string][] = [
      ['a 500 KB message', () => ({ messages: [{ role: 'USER', content: 'a'.repeat(500 * 1024) }] }), 'messages'],
      ['200 messages of 2 100 characters (over CHAT_MAX_CONTENT_CHARS together)', () => ({ messages: Array.from({ length: 200 }, () => ({ role: 'USER' as const, content: 'b'.repeat(2_100) })) }), 'messages'],
      ['1 000 messages (over CHAT_MAX_MESSAGES)', () => ({ messages: Array.from({ length: 1_000 }, () => ({ role: 'USER' as const, content: 'c' })) }), 'messages'],
      ['no message at all', () => ({ messages: [] }), 'messages'],
      ['a stop list of 1 000 items', () => ({ messages: hi, stop: Array.from({ length: 1_000 }, (_, i) => `s${i}`) }), 'stop'],
      ['a 300-character stop sequence', () => ({ messages: hi, stop: ['s'.repeat(300)] }), 'stop'],
      ['an empty stop sequence', () => ({ messages: hi, stop: [''] }), 'stop'],
      ['maxTokens 0', () => ({ messages: hi, maxTokens: 0 }), 'maxTokens'],
      ['maxTokens -1', () => ({ messages: hi, maxTokens: -1 }), 'maxTokens'],
      ['maxTokens -2147483648', () => ({ messages: hi, maxTokens: -2_147_483_648 }), 'maxTokens'],
      ['maxTokens 2147483647 (over the model length)', () => ({ messages: hi, maxTokens: 2_147_483_647 }), 'maxTokens'],
      ['temperature 1e308', () => ({ messages: hi, temperature: 1e308 }), 'temperature'],
      ['topP -0.5', () => ({ messages: hi, topP: -0.5 }), 'topP'],
    ];

    it.each(refused)('chat with %s → BAD_USER_INPUT', async (_label, input, field) => {
      const check = await untouched();
      const { body } = await postGraphQL(gateway.server.url, ChatDocument, { input: input() }, { token: user.token });
      expect(body.data ?? null).toBeNull();
      const [error] = expectErrors(body, 'BAD_USER_INPUT');
      expect(error.extensions?.field).toBe(field);
      await check();
    });

    it.each(refused.filter(([label]) => /stop list|maxTokens -1|no message/.test(label)))('chatStream with %s → BAD_USER_INPUT over the socket', async (_label, input) => {
      const check = await untouched();
      const socket = new RawSocket(gateway.server.wsUrl);
      try {
        expect(await socket.init(`Bearer ${user.token}`)).toBe('ack');
        expectWsErrors(await socket.run('s', ChatStreamDocument as TypedDocumentNode<unknown, never>, { input: input() }), 'BAD_USER_INPUT');
      } finally {
        socket.close();
      }
      await check();
    });

    it('chatStream with a 500 KB message: the frame is over WS_MAX_MESSAGE_BYTES, so the socket closes (1009) first; nothing charged', async () => {
      const check = await untouched();
      const socket = new RawSocket(gateway.server.wsUrl);
      expect(await socket.init(`Bearer ${user.token}`)).toBe('ack');
      await socket.send({ id: 's', type: 'subscribe', payload: { query: 'subscription($input: ChatInput!) { chatStream(input: $input) { delta } }', variables: { input: { messages: [{ role: 'USER', content: 'a'.repeat(500 * 1024) }] } } } });
      expect((await socket.closed).code).toBe(1009);
      await check();
    });
  });

  describe('integer overflow', () => {
    it.each([
      ['maxTokens 2147483648 as a variable', { messages: hi, maxTokens: 2_147_483_648 }],
      ['maxTokens 1e20 as a variable', { messages: hi, maxTokens: 1e20 }],
      ['maxTokens 1.5 as a variable', { messages: hi, maxTokens: 1.5 }],
      ['seed 2147483648 as a variable', { messages: hi, seed: 2_147_483_648 }],
    ])('%s → BAD_USER_INPUT (GraphQL Int), nothing charged', async (_label, input) => {
      const check = await untouched();
      const { body } = await postGraphQL(gateway.server.url, ChatDocument, { input: input as ChatInput }, { token: user.token });
      expect(body.data ?? null).toBeNull();
      expectErrors(body, 'BAD_USER_INPUT');
      expect(body.errors?.[0].message).toMatch(/Int cannot represent/);
      await check();
    });

    it('maxTokens 2147483648 inline in the document → BAD_USER_INPUT (GraphQL Int), nothing charged', async () => {
      const check = await untouched();
      const { body } = await postGraphQL(gateway.server.url, 'mutation { chat(input: { messages: [{ role: USER, content: "hi" }], maxTokens: 2147483648 }) { id } }', undefined, { token: user.token });
      expectErrors(body, 'BAD_USER_INPUT');
      expect(body.errors?.[0].message).toMatch(/Int cannot represent/);
      await check();
    });

    it.each([
      ['2^31', 2_147_483_648, /Int cannot represent/],
      ['-1', -1, /tokenLimit must be/],
      ['-2147483648', -2_147_483_648, /tokenLimit must be/],
      ['1e20', 1e20, /Int cannot represent/],
    ])('createUser with tokenLimit %s → BAD_USER_INPUT, no user created', async (_label, tokenLimit, message) => {
      const email = `overflow-${Math.random().toString(36).slice(2)}@example.test`;
      const { body } = await postGraphQL(gateway.server.url, CreateUserDocument, { input: { email, password: 'a-long-enough-password', tokenLimit } }, { token: admin });
      expect(body.data ?? null).toBeNull();
      expectErrors(body, 'BAD_USER_INPUT');
      expect(body.errors?.[0].message).toMatch(message);
      expect(await sql(gateway.databaseUrl, 'select id from users where email = $1', [email])).toEqual([]);
      await expectStillServing(gateway);
    });

    it.each([
      ['2^31', 2_147_483_648],
      ['-1', -1],
    ])('updateUser with tokenLimit %s → BAD_USER_INPUT, the limit unchanged', async (_label, tokenLimit) => {
      const { body } = await postGraphQL(gateway.server.url, UpdateUserDocument, { id: other.id, input: { tokenLimit } }, { token: admin });
      expect(body.data ?? null).toBeNull();
      expectErrors(body, 'BAD_USER_INPUT');
      expect(await sql(gateway.databaseUrl, 'select token_limit from users where id = $1', [other.id])).toEqual([{ token_limit: 100_000 }]);
      await expectStillServing(gateway);
    });

    it.each([
      ['max_tokens 1e20', { max_tokens: 1e20 }],
      ['max_tokens 2147483648', { max_tokens: 2_147_483_648 }],
      ['max_completion_tokens 2^53 + 2', { max_completion_tokens: 2 ** 53 + 2 }],
      ['max_tokens -1', { max_tokens: -1 }],
      ['max_tokens 1.5', { max_tokens: 1.5 }],
      ['max_tokens "100"', { max_tokens: '100' }],
      ['seed 1e30', { seed: 1e30 }],
    ])('the OpenAI-compatible endpoint with %s → 400 invalid_request_error, nothing charged', async (_label, extra) => {
      const check = await untouched();
      const response = await rawRequest(`${gateway.server.origin}/v1/chat/completions`, {
        headers: { 'content-type': 'application/json', authorization: `Bearer ${user.token}` },
        body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], ...extra }),
      });
      expect(response.status).toBe(400);
      expect(JSON.parse(response.text)).toMatchObject({ error: { type: 'invalid_request_error' } });
      await check();
    });
  });

  describe('SQL metacharacters in every string argument', () => {
    async function tableCounts(): Promise<Record<string, number>> {
      const rows = await sql<{ table_name: string }>(gateway.databaseUrl, "select table_name from information_schema.tables where table_schema = 'public' order by table_name");
      const counts: Record<string, number> = {};
      for (const { table_name: table } of rows) {
        if (table === 'login_throttle' || table === 'mikro_orm_migrations') continue;
        const [row] = await sql<{ n: string }>(gateway.databaseUrl, `select count(*) as n from "${table}"`);
        counts[table] = Number(row.n);
      }
      return counts;
    }

    it.each(SQL_METACHARACTERS)('login with %j as email and as password → UNAUTHENTICATED', async (payload) => {
      const before = await tableCounts();
      for (const variables of [
        { email: payload, password: payload },
        { email: user.email, password: payload },
        { email: `${user.email}${payload}`, password: user.password },
      ]) {
        const { body } = await postGraphQL(gateway.server.url, LoginDocument, variables);
        expect(body.data ?? null).toBeNull();
        expectErrors(body, 'UNAUTHENTICATED');
      }
      // Nothing is written but the audit log's record of each refusal.
      expect(await tableCounts()).toEqual({ ...before, audit_log: before.audit_log + 3 });
      const latest = await sql<{ action: string }>(gateway.databaseUrl, 'select action from audit_log order by id desc limit 3');
      expect(latest.map((row) => row.action)).toEqual(['LOGIN_FAILED', 'LOGIN_FAILED', 'LOGIN_FAILED']);
      await expectStillServing(gateway);
    });

    it.each(SQL_METACHARACTERS)('createUser with %j as the whole email → BAD_USER_INPUT', async (payload) => {
      const before = await tableCounts();
      const { body } = await postGraphQL(gateway.server.url, CreateUserDocument, { input: { email: payload, password: 'a-long-enough-password' } }, { token: admin });
      expectErrors(body, 'BAD_USER_INPUT');
      expect(await tableCounts()).toEqual(before);
    });

    const literalUsers = new Map<string, { id: string; email: string }>();

    it.each(SQL_METACHARACTERS)('createUser with %j inside a valid email and the password → stored literally, signs in with it', async (payload) => {
      const email = `meta${literalUsers.size}${payload.replace(/\s/g, '')}x@example.test`;
      const password = `${payload}${payload}-padding-123`;
      const { body } = await postGraphQL(gateway.server.url, CreateUserDocument, { input: { email, password, tokenLimit: 10 } }, { token: admin });
      expect(body.errors).toBeUndefined();
      expect(body.data?.createUser.email).toBe(email.toLowerCase());
      const id = body.data?.createUser.id ?? '';
      literalUsers.set(payload, { id, email: email.toLowerCase() });
      expect(await sql(gateway.databaseUrl, 'select email from users where id = $1', [id])).toEqual([{ email: email.toLowerCase() }]);
      const login = await postGraphQL(gateway.server.url, LoginDocument, { email, password });
      expect(login.body.errors).toBeUndefined();
      expect(login.body.data?.login.user.id).toBe(id);
      const wrong = await postGraphQL(gateway.server.url, LoginDocument, { email, password: `${password.slice(0, -1)}%` });
      expectErrors(wrong.body, 'UNAUTHENTICATED');
    });

    it.each(SQL_METACHARACTERS)('users(search: %j) matches it literally, never everything', async (payload) => {
      const { body } = await postGraphQL(gateway.server.url, UsersDocument, { search: payload, first: 100 }, { token: admin });
      expect(body.errors).toBeUndefined();
      const expected = (await sql<{ id: string }>(gateway.databaseUrl, 'select id from users where strpos(email, $1) > 0 order by created_at, id', [payload.trim().toLowerCase()])).map((row) => row.id);
      const [all] = await sql<{ n: string }>(gateway.databaseUrl, 'select count(*) as n from users');
      expect(body.data?.users.nodes.map((node) => node.id).sort()).toEqual([...expected].sort());
      expect(body.data?.users.totalCount).toBe(expected.length);
      expect(expected.length).toBeLessThan(Number(all.n));
      const made = literalUsers.get(payload);
      // The metacharacters kept in an email (all but the spaces) find that user, and only users holding them.
      if (made !== undefined && !/\s/.test(payload)) expect(body.data?.users.nodes.map((node) => node.id)).toContain(made.id);
    });

    it('users(search) with % or _ does not act as a wildcard', async () => {
      for (const search of ['%', '_', '%%', '_@%', 'meta%']) {
        const { body } = await postGraphQL(gateway.server.url, UsersDocument, { search, first: 100 }, { token: admin });
        for (const node of body.data?.users.nodes ?? []) expect(node.email).toContain(search);
      }
    });

    it.each(SQL_METACHARACTERS)('createApiKey with %j as the name → stored and listed literally', async (payload) => {
      const { body } = await postGraphQL(gateway.server.url, CreateApiKeyDocument, { name: payload }, { token: user.token });
      expect(body.errors).toBeUndefined();
      expect(body.data?.createApiKey.apiKey.name).toBe(payload);
      const listed = await postGraphQL(gateway.server.url, ApiKeysDocument, {}, { token: user.token });
      expect(listed.body.data?.apiKeys.map((key) => key.name)).toContain(payload);
    });

    it.each(SQL_METACHARACTERS)('chat with %j as the model → BAD_USER_INPUT, nothing sent upstream or charged', async (payload) => {
      const check = await untouched();
      const { body } = await postGraphQL(gateway.server.url, ChatDocument, { input: { model: payload, messages: hi } }, { token: user.token });
      const [error] = expectErrors(body, 'BAD_USER_INPUT');
      expect(error.extensions?.field).toBe('model');
      await check();
    });

    it.each(SQL_METACHARACTERS)('%j as a cursor (usage after, users after) → BAD_USER_INPUT', async (payload) => {
      for (const after of [payload, Buffer.from(JSON.stringify([payload, '1'])).toString('base64url'), Buffer.from(JSON.stringify(['2026-01-01T00:00:00.000000Z', payload])).toString('base64url')]) {
        const usage = await postGraphQL(gateway.server.url, UsageHistoryDocument, { after }, { token: user.token });
        expectErrors(usage.body, 'BAD_USER_INPUT');
        const users = await postGraphQL(gateway.server.url, UsersDocument, { after }, { token: admin });
        expectErrors(users.body, 'BAD_USER_INPUT');
      }
    });

    it.each(SQL_METACHARACTERS)('%j as an id: user → null, usage/usageSummary/updateUser/revokeApiKey → BAD_USER_INPUT', async (payload) => {
      const user1 = await postGraphQL(gateway.server.url, UserDocument, { id: payload }, { token: admin });
      expect(user1.body).toEqual({ data: { user: null } });
      expectErrors((await postGraphQL(gateway.server.url, UsageHistoryDocument, { userId: payload }, { token: admin })).body, 'BAD_USER_INPUT');
      expectErrors((await postGraphQL(gateway.server.url, UsageSummaryDocument, { userId: payload, groupBy: 'DAY' }, { token: admin })).body, 'BAD_USER_INPUT');
      expectErrors((await postGraphQL(gateway.server.url, UpdateUserDocument, { id: payload, input: { tokenLimit: 1 } }, { token: admin })).body, 'BAD_USER_INPUT');
      expectErrors((await postGraphQL(gateway.server.url, 'mutation($id: ID!) { revokeApiKey(id: $id) }', { id: payload }, { token: user.token })).body, 'BAD_USER_INPUT');
      // A user naming a metacharacter id is reaching for someone else's usage.
      expectErrors((await postGraphQL(gateway.server.url, UsageHistoryDocument, { userId: payload }, { token: user.token })).body, 'FORBIDDEN');
    });

    it('every table is intact afterwards', async () => {
      const tables = await sql<{ table_name: string }>(gateway.databaseUrl, "select table_name from information_schema.tables where table_schema = 'public'");
      expect(tables.map((row) => row.table_name)).toEqual(expect.arrayContaining(['users', 'api_keys', 'usage_records', 'quota_accounts', 'login_throttle', 'refresh_sessions']));
      const [users] = await sql<{ n: string }>(gateway.databaseUrl, 'select count(*) as n from users');
      // The admin, user, other, and one literal user per metacharacter.
      expect(Number(users.n)).toBe(3 + SQL_METACHARACTERS.length);
      await expectStillServing(gateway);
    });
  });

  describe('roles and ownership', () => {
    it.each([
      ['createUser', 'mutation { createUser(input: { email: "escalate@example.test", password: "a-long-enough-password", role: ADMIN }) { id } }'],
      ['updateUser of oneself to ADMIN', 'mutation($id: ID!) { updateUser(id: $id, input: { role: ADMIN }) { id } }'],
      ['updateUser of oneself to unlimited', 'mutation($id: ID!) { updateUser(id: $id, input: { tokenLimit: null }) { id } }'],
      ['updateUser of another user', 'mutation($other: ID!) { updateUser(id: $other, input: { disabled: true }) { id } }'],
      ['users', '{ users { nodes { id email } } }'],
      ['user of another user', 'query($other: ID!) { user(id: $other) { id email } }'],
    ])('a user token on admin-only %s → FORBIDDEN, nothing changed', async (_label, query) => {
      const { body } = await postGraphQL(gateway.server.url, query, { id: user.id, other: other.id }, { token: user.token });
      expectErrors(body, 'FORBIDDEN');
      expect(await sql(gateway.databaseUrl, "select role, token_limit, disabled from users where id = any($1) order by email", [[user.id, other.id]])).toEqual([
        { role: 'USER', token_limit: 100_000, disabled: false },
        { role: 'USER', token_limit: 100_000, disabled: false },
      ]);
      expect(await sql(gateway.databaseUrl, "select 1 from users where email = 'escalate@example.test'")).toEqual([]);
      await expectStillServing(gateway);
    });

    it('an API key of a user gets FORBIDDEN on admin-only fields too', async () => {
      const { body: created } = await postGraphQL(gateway.server.url, CreateApiKeyDocument, { name: 'escalation' }, { token: user.token });
      const secret = created.data?.createApiKey.secret ?? '';
      expectErrors((await postGraphQL(gateway.server.url, UsersDocument, {}, { token: secret })).body, 'FORBIDDEN');
      expectErrors((await postGraphQL(gateway.server.url, UsageHistoryDocument, { userId: other.id }, { token: secret })).body, 'FORBIDDEN');
    });

    it('a user reading another user\'s usage, usageSummary or user → FORBIDDEN', async () => {
      expectErrors((await postGraphQL(gateway.server.url, UsageHistoryDocument, { userId: other.id }, { token: user.token })).body, 'FORBIDDEN');
      for (const groupBy of ['DAY', 'MODEL'] as const) {
        expectErrors((await postGraphQL(gateway.server.url, UsageSummaryDocument, { userId: other.id, groupBy }, { token: user.token })).body, 'FORBIDDEN');
      }
      const { body } = await postGraphQL(gateway.server.url, UserDocument, { id: other.id }, { token: user.token });
      expectErrors(body, 'FORBIDDEN');
      expect(body.data?.user ?? null).toBeNull();
      // Their own is fine, and holds only their own records.
      const own = await postGraphQL(gateway.server.url, UsageHistoryDocument, { userId: user.id }, { token: user.token });
      expect(own.body.errors).toBeUndefined();
      expect(own.body.data?.usage.edges.every((edge) => edge.node.userId === user.id)).toBe(true);
      expect(own.body.data?.usage.edges.length).toBeGreaterThan(0);
      await expectStillServing(gateway);
    });

    it('a user subscribing to another user\'s usageUpdated → FORBIDDEN; the socket keeps serving', async () => {
      const socket = new RawSocket(gateway.server.wsUrl);
      try {
        expect(await socket.init(`Bearer ${user.token}`)).toBe('ack');
        expectWsErrors(await socket.run('spy', UsageUpdatedDocument as TypedDocumentNode<unknown, never>, { userId: other.id }), 'FORBIDDEN');
        const own = socket.run('own', UsageUpdatedDocument as TypedDocumentNode<unknown, never>, { userId: user.id });
        // The other user's chat must not reach this socket; the user's own does.
        await new Promise((resolve) => setTimeout(resolve, 100));
        await postGraphQL(gateway.server.url, ChatDocument, { input: { messages: hi, maxTokens: 4 } }, { token: other.token });
        await postGraphQL(gateway.server.url, ChatDocument, { input: { messages: hi, maxTokens: 4 } }, { token: user.token });
        const events = await own;
        expect(events.filter((message) => message.type === 'next').map((message) => message.type === 'next' && (message.payload.data as { usageUpdated: { userId: string } }).usageUpdated.userId)).toEqual([user.id]);
      } finally {
        socket.close();
      }
    });

    it('revoking another user\'s API key → FORBIDDEN, the key keeps working', async () => {
      const { body: created } = await postGraphQL(gateway.server.url, CreateApiKeyDocument, { name: 'victim-key' }, { token: other.token });
      const key = created.data?.createApiKey;
      const { body } = await postGraphQL(gateway.server.url, 'mutation($id: ID!) { revokeApiKey(id: $id) }', { id: key?.apiKey.id }, { token: user.token });
      expectErrors(body, 'FORBIDDEN');
      const still = await postGraphQL(gateway.server.url, ApiKeysDocument, {}, { token: key?.secret });
      expect(still.body.errors).toBeUndefined();
    });
  });
});
