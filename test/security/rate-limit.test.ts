import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { ChatDocument, ChatStreamDocument } from '../generated/graphql';
import { sql } from '../helpers/database';
import { startTestGateway, startWithAdmin, type TestGateway } from '../helpers/server';
import { startSimulator, type Simulator } from '../../src/simulator';
import { createUser, postGraphQL, signInAdmin, sleep } from '../helpers/client';
import { RawSocket, expectWsErrors } from '../helpers/raw-socket';
import { expectErrors, expectStillServing, rawRequest, spendOf, startCountingProxy, type CountingProxy } from './support';

/** Seconds left in the current calendar minute, by the database's clock (the limiter's). */
async function secondsLeftInMinute(gateway: TestGateway): Promise<number> {
  const [row] = await sql<{ left: string }>(gateway.databaseUrl, "select extract(epoch from (date_trunc('minute', now()) + interval '1 minute' - now())) as left");
  return Number(row.left);
}

describe('rate limit (RATE_LIMIT_REQUESTS_PER_MINUTE=3)', () => {
  let simulator: Simulator;
  let proxy: CountingProxy;
  let gateway: TestGateway;
  let admin: string;

  beforeAll(async () => {
    simulator = await startSimulator({});
    proxy = await startCountingProxy(simulator);
    ({ gateway, admin: { token: admin } } = await startWithAdmin({ simulator, env: { RATE_LIMIT_REQUESTS_PER_MINUTE: '3', VLLM_BASE_URL: proxy.url } }));
  });
  afterAll(async () => {
    await gateway.stop();
    await proxy.stop();
    await simulator.stop();
  });

  const input = { messages: [{ role: 'USER' as const, content: 'count me' }], maxTokens: 8 };

  it('the 4th chat of a minute → RATE_LIMITED with retryAfter; nothing sent upstream or charged; others unaffected', async () => {
    const user = await createUser(gateway, admin, { tokenLimit: 100_000 });
    const bystander = await createUser(gateway, admin, { tokenLimit: 100_000 });
    // All four in one calendar minute: the limiter's window.
    const left = await secondsLeftInMinute(gateway);
    if (left < 3) await sleep(left * 1000 + 200);

    for (let i = 0; i < 3; i += 1) {
      const { body } = await postGraphQL(gateway.server.url, ChatDocument, { input }, { token: user.token });
      expect(body.errors).toBeUndefined();
    }
    const spent = await spendOf(gateway, user);
    expect(spent.records).toBe(3);
    const chatRequests = gateway.simulator.stats.chatRequests;
    const completions = proxy.hitsOf('/v1/chat/completions');

    const { status, body } = await postGraphQL(gateway.server.url, ChatDocument, { input }, { token: user.token });
    expect(status).toBe(200);
    expect(body.data ?? null).toBeNull();
    const [error] = expectErrors(body, 'RATE_LIMITED');
    const retryAfter = error.extensions?.retryAfter;
    expect(Number.isInteger(retryAfter)).toBe(true);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(gateway.simulator.stats.chatRequests).toBe(chatRequests);
    expect(await spendOf(gateway, user)).toEqual(spent);

    // chatStream and the OpenAI-compatible endpoint share the same count.
    const socket = new RawSocket(gateway.server.wsUrl);
    try {
      expect(await socket.init(`Bearer ${user.token}`)).toBe('ack');
      const [streamError] = expectWsErrors(await socket.run('s', ChatStreamDocument as TypedDocumentNode<unknown, never>, { input }), 'RATE_LIMITED');
      expect(streamError.extensions?.retryAfter).toEqual(expect.any(Number));
    } finally {
      socket.close();
    }
    const openai = await rawRequest(`${gateway.server.origin}/v1/chat/completions`, {
      headers: { 'content-type': 'application/json', authorization: `Bearer ${user.token}` },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'count me' }], max_tokens: 8 }),
    });
    expect(openai.status).toBe(429);
    expect(Number(openai.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(JSON.parse(openai.text)).toMatchObject({ error: { code: 'rate_limit_exceeded' } });
    expect(gateway.simulator.stats.chatRequests).toBe(chatRequests);
    expect(proxy.hitsOf('/v1/chat/completions')).toBe(completions);
    expect(await spendOf(gateway, user)).toEqual(spent);

    // Per user: someone else's chats still go through, and the server serves everything else.
    const other = await postGraphQL(gateway.server.url, ChatDocument, { input }, { token: bystander.token });
    expect(other.body.errors).toBeUndefined();
    await expectStillServing(gateway);
  });

  it('a RATE_LIMITED chat sends nothing upstream, not even to /tokenize', async () => {
    const user = await createUser(gateway, admin, { tokenLimit: 100_000 });
    const left = await secondsLeftInMinute(gateway);
    if (left < 3) await sleep(left * 1000 + 200);
    for (let i = 0; i < 3; i += 1) expect((await postGraphQL(gateway.server.url, ChatDocument, { input }, { token: user.token })).body.errors).toBeUndefined();
    const tokenize = proxy.hitsOf('/tokenize');
    expectErrors((await postGraphQL(gateway.server.url, ChatDocument, { input }, { token: user.token })).body, 'RATE_LIMITED');
    expect(proxy.hitsOf('/tokenize')).toBe(tokenize);
  });

  it('a burst of 10 concurrent chats: exactly 3 go through, 7 are RATE_LIMITED, only 3 reach the upstream', async () => {
    const user = await createUser(gateway, admin, { tokenLimit: 100_000 });
    const left = await secondsLeftInMinute(gateway);
    if (left < 3) await sleep(left * 1000 + 200);
    const chatRequests = gateway.simulator.stats.chatRequests;
    const results = await Promise.all(Array.from({ length: 10 }, () => postGraphQL(gateway.server.url, ChatDocument, { input }, { token: user.token })));
    const codes = results.map(({ body }) => body.errors?.[0]?.extensions?.code ?? 'OK').sort();
    expect(codes).toEqual([...Array<string>(3).fill('OK'), ...Array<string>(7).fill('RATE_LIMITED')]);
    expect(gateway.simulator.stats.chatRequests - chatRequests).toBe(3);
    expect((await spendOf(gateway, user)).records).toBe(3);
  });

  it('refused input does not use up the allowance of the minute', async () => {
    const user = await createUser(gateway, admin, { tokenLimit: 100_000 });
    const left = await secondsLeftInMinute(gateway);
    if (left < 3) await sleep(left * 1000 + 200);
    for (let i = 0; i < 5; i += 1) {
      const { body } = await postGraphQL(gateway.server.url, ChatDocument, { input: { ...input, maxTokens: -1 } }, { token: user.token });
      expectErrors(body, 'BAD_USER_INPUT');
    }
    const { body } = await postGraphQL(gateway.server.url, ChatDocument, { input }, { token: user.token });
    expect(body.errors).toBeUndefined();
  });
});

describe('rate limit (RATE_LIMIT_TOKENS_PER_MINUTE=30)', () => {
  let gateway: TestGateway;

  beforeAll(async () => {
    gateway = await startTestGateway({ env: { RATE_LIMIT_TOKENS_PER_MINUTE: '30' } });
  });
  afterAll(() => gateway.stop());

  it('once the minute\'s tokens are spent, the next chat → RATE_LIMITED; nothing sent upstream or charged', async () => {
    const user = await createUser(gateway, (await signInAdmin(gateway)).token, { tokenLimit: 100_000 });
    const left = await secondsLeftInMinute(gateway);
    if (left < 3) await sleep(left * 1000 + 200);
    let spentTokens = 0;
    while (spentTokens < 30) {
      const { body } = await postGraphQL(gateway.server.url, ChatDocument, { input: { messages: [{ role: 'USER', content: 'spend some tokens' }], maxTokens: 8 } }, { token: user.token });
      expect(body.errors).toBeUndefined();
      spentTokens += body.data?.chat.usage.totalTokens ?? 0;
    }
    const spent = await spendOf(gateway, user);
    expect(spent.used).toBe(spentTokens);
    const chatRequests = gateway.simulator.stats.chatRequests;
    const { body } = await postGraphQL(gateway.server.url, ChatDocument, { input: { messages: [{ role: 'USER', content: 'one more' }], maxTokens: 8 } }, { token: user.token });
    const [error] = expectErrors(body, 'RATE_LIMITED');
    expect(error.extensions?.retryAfter).toEqual(expect.any(Number));
    expect(gateway.simulator.stats.chatRequests).toBe(chatRequests);
    expect(await spendOf(gateway, user)).toEqual(spent);
    await expectStillServing(gateway);
  });

  it('a burst of concurrent chats spends at most RATE_LIMIT_TOKENS_PER_MINUTE plus one request', async () => {
    const user = await createUser(gateway, (await signInAdmin(gateway)).token, { tokenLimit: 100_000 });
    const left = await secondsLeftInMinute(gateway);
    if (left < 3) await sleep(left * 1000 + 200);
    const results = await Promise.all(
      Array.from({ length: 10 }, () => postGraphQL(gateway.server.url, ChatDocument, { input: { messages: [{ role: 'USER', content: 'spend' }], maxTokens: 8 } }, { token: user.token })),
    );
    const spent = results.map(({ body }) => body.data?.chat.usage.totalTokens ?? 0);
    expect(spent.reduce((sum, tokens) => sum + tokens, 0)).toBeLessThanOrEqual(30 + Math.max(...spent));
    expect(results.filter(({ body }) => body.errors?.[0]?.extensions?.code === 'RATE_LIMITED').length).toBeGreaterThan(0);
  });
});
