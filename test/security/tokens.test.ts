import { randomUUID } from 'node:crypto';
import jwt from 'jsonwebtoken';
import { print } from 'graphql';
import { CreateApiKeyDocument, LoginDocument, MeDocument } from '../generated/graphql';
import { TEST_JWT_SECRET, startTestGateway, type TestGateway } from '../helpers/server';
import { createUser, postGraphQL, signInAdmin, until, type SignedIn } from '../helpers/client';
import { lockTable, lockWaiters } from '../helpers/database';
import { RawSocket } from '../helpers/raw-socket';
import { expectErrors, expectSocketStillServing, expectStillServing, rawRequest } from './support';

const base64url = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');

/** Claims exactly like the gateway's own access tokens (src/auth/tokens.ts). */
function claimsFor(userId: string, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000);
  return { typ: 'access', tv: 0, sub: userId, iss: 'vllm-gateway', aud: 'vllm-gateway', iat: now, exp: now + 600, ...overrides };
}

function sign(claims: Record<string, unknown>, options: { secret?: string; algorithm?: jwt.Algorithm } = {}): string {
  return jwt.sign(claims, options.secret ?? TEST_JWT_SECRET, { algorithm: options.algorithm ?? 'HS256', noTimestamp: true });
}

function without(claims: Record<string, unknown>, name: string): Record<string, unknown> {
  const copy = { ...claims };
  delete copy[name];
  return copy;
}

/**
 * Every forged credential, over HTTP (UNAUTHENTICATED, no data) and over the WebSocket (the
 * connection refused with 4403 at connection_init); the genuine token keeps working.
 */
describe('forged credentials', () => {
  let gateway: TestGateway;
  let user: SignedIn;
  let refreshToken: string;
  let apiKey: string;

  beforeAll(async () => {
    gateway = await startTestGateway();
    const admin = (await signInAdmin(gateway)).token;
    user = await createUser(gateway, admin, { tokenLimit: 1_000 });
    const { body } = await postGraphQL(gateway.server.url, LoginDocument, { email: user.email, password: user.password });
    refreshToken = body.data?.login.refreshToken ?? '';
    const key = await postGraphQL(gateway.server.url, CreateApiKeyDocument, { name: 'genuine' }, { token: user.token });
    apiKey = key.body.data?.createApiKey.secret ?? '';
  });
  afterAll(() => gateway.stop());

  const now = (): number => Math.floor(Date.now() / 1000);
  const forgeries: [string, () => string][] = [
    ['alg none', () => `${base64url({ alg: 'none', typ: 'JWT' })}.${base64url(claimsFor(user.id))}.`],
    ['alg none with a signature', () => `${base64url({ alg: 'none', typ: 'JWT' })}.${base64url(claimsFor(user.id))}.${sign(claimsFor(user.id)).split('.')[2]}`],
    ['HS512 with the right secret', () => sign(claimsFor(user.id), { algorithm: 'HS512' })],
    ['a wrong secret', () => sign(claimsFor(user.id), { secret: 'a-wrong-secret-that-is-long-enough-for-hs256-xyz' })],
    ['no exp', () => sign(without(claimsFor(user.id), 'exp'))],
    ['expired', () => sign(claimsFor(user.id, { iat: now() - 1_000, exp: now() - 10 }))],
    ['exp far beyond the TTL but not signed by us', () => sign(claimsFor(user.id, { exp: now() + 10 * 365 * 86_400 }), { secret: 'x'.repeat(40) })],
    ['a wrong aud', () => sign(claimsFor(user.id, { aud: 'some-other-service' }))],
    ['a wrong iss', () => sign(claimsFor(user.id, { iss: 'someone-else' }))],
    ['typ refresh', () => sign(claimsFor(user.id, { typ: 'refresh' }))],
    ['no typ', () => sign(without(claimsFor(user.id), 'typ'))],
    ['a stale tv', () => sign(claimsFor(user.id, { tv: 7 }))],
    ['a sub that is SQL', () => sign(claimsFor(user.id, { sub: "' OR 1=1 --" }))],
    ['an unknown user', () => sign(claimsFor(randomUUID()))],
    ['a payload swapped under a valid signature', () => {
      const [header, , signature] = sign(claimsFor(randomUUID())).split('.');
      return `${header}.${base64url(claimsFor(user.id))}.${signature}`;
    }],
    ['the refresh token as an access token', () => refreshToken],
    ['an API key that was never issued', () => `sk-${'A'.repeat(43)}`],
    ['the genuine API key with one character changed', () => `${apiKey.slice(0, -1)}${apiKey.endsWith('A') ? 'B' : 'A'}`],
    ['garbage', () => 'not-a-token'],
  ];

  it('the genuine token and API key work over HTTP and the socket (each forgery below differs in one point)', async () => {
    for (const token of [sign(claimsFor(user.id)), user.token, apiKey]) {
      const { body } = await postGraphQL(gateway.server.url, MeDocument, {}, { token });
      expect(body.errors).toBeUndefined();
      expect(body.data?.me.id).toBe(user.id);
      await expectSocketStillServing(gateway, token);
    }
  });

  it.each(forgeries)('HTTP: %s → UNAUTHENTICATED', async (_label, forge) => {
    const { status, body } = await postGraphQL(gateway.server.url, MeDocument, {}, { token: forge() });
    expect(status).toBeLessThan(500);
    expect(body.data ?? null).toBeNull();
    expectErrors(body, 'UNAUTHENTICATED');
    await expectStillServing(gateway);
  });

  it.each(forgeries)('WebSocket: %s → closed with 4403 at connection_init', async (_label, forge) => {
    const socket = new RawSocket(gateway.server.wsUrl);
    expect(await socket.init(`Bearer ${forge()}`)).toBe(4403);
    expect(socket.messages).toEqual([]);
    await expectSocketStillServing(gateway, user.token);
  });

  it.each(forgeries)('OpenAI-compatible endpoint: %s → 401', async (_label, forge) => {
    const chatRequests = gateway.simulator.stats.chatRequests;
    const response = await rawRequest(`${gateway.server.origin}/v1/chat/completions`, {
      headers: { 'content-type': 'application/json', authorization: `Bearer ${forge()}` },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 }),
    });
    expect(response.status).toBe(401);
    expect(JSON.parse(response.text)).toMatchObject({ error: { type: 'authentication_error' } });
    expect(gateway.simulator.stats.chatRequests).toBe(chatRequests);
  });

  it.each([
    ['no scheme', (token: string) => token],
    ['Basic', (token: string) => `Basic ${token}`],
    ['Bearer with nothing', () => 'Bearer '],
    ['two tokens', (token: string) => `Bearer ${token} ${token}`],
  ])('a malformed Authorization header (%s) → UNAUTHENTICATED, never data', async (_label, header) => {
    const response = await rawRequest(gateway.server.url, {
      headers: { 'content-type': 'application/json', authorization: header(user.token) },
      body: JSON.stringify({ query: '{ me { id } }' }),
    });
    expect(response.status).toBe(200);
    const body = JSON.parse(response.text) as { data?: unknown; errors?: { extensions?: { code?: string } }[] };
    expect(body.data ?? null).toBeNull();
    expect(body.errors?.map((error) => error.extensions?.code)).toEqual(['UNAUTHENTICATED']);
    await expectStillServing(gateway);
  });

  it('a 100 KB Authorization header → 431 from Node (over its 16 KiB header limit), never data', async () => {
    const response = await rawRequest(gateway.server.url, {
      headers: { 'content-type': 'application/json', authorization: `Bearer ${'a'.repeat(100_000)}` },
      body: JSON.stringify({ query: '{ me { id } }' }),
    });
    expect(response.status).toBe(431);
    expect(response.text).not.toContain('"data"');
    await expectStillServing(gateway);
  });

  it('a socket whose connectionParams carry no credentials, or credentials of the wrong type → 4403', async () => {
    for (const payload of [{}, { authorization: 42 }, { authorization: ['Bearer', user.token] }, { Authorization: `Bearer ${user.token}` }]) {
      const socket = new RawSocket(gateway.server.wsUrl);
      await socket.send({ type: 'connection_init', payload });
      expect((await socket.closed).code).toBe(4403);
    }
    await expectSocketStillServing(gateway, user.token);
  });

  it('a subscribe before connection_init → 4401, and nothing runs', async () => {
    const socket = new RawSocket(gateway.server.wsUrl);
    await socket.send({ id: '1', type: 'subscribe', payload: { query: '{ me { id } }' } });
    expect((await socket.closed).code).toBe(4401);
    expect(socket.messages).toEqual([]);
  });

  it('a query sent while connection_init is still being checked never runs: closed with 4401', async () => {
    // A stale token version of a user whose credentials the gateway has not read yet: refusing
    // it takes a read of the users table, which the test holds, so the subscribe surely arrives
    // before the verdict (graphql-ws: a subscribe before the ack closes the socket with 4401).
    const fresh = await createUser(gateway, (await signInAdmin(gateway)).token);
    const release = await lockTable(gateway.databaseUrl, 'users', 'access exclusive');
    const socket = new RawSocket(gateway.server.wsUrl);
    try {
      await socket.send({ type: 'connection_init', payload: { authorization: `Bearer ${sign(claimsFor(fresh.id, { tv: 7 }))}` } });
      await until(async () => (await lockWaiters(gateway.databaseUrl)) >= 1, 5_000, 'the credentials check to wait on the users table');
      await socket.send({ id: '1', type: 'subscribe', payload: { query: print(MeDocument) } });
      expect((await socket.closed).code).toBe(4401);
    } finally {
      await release();
    }
    expect(socket.messages).toEqual([]);
  });
});
