import { randomUUID } from 'node:crypto';
import jwt from 'jsonwebtoken';
import { ChangePasswordDocument, MeDocument } from '../generated/graphql';
import { sql } from '../helpers/database';
import { TEST_JWT_SECRET, startWithAdmin, type TestGateway } from '../helpers/server';
import { createUser, onlyError, postGraphQL, strongPassword, type SignedIn } from '../helpers/client';
import { expectWsRefused } from './support';

const base64url = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');

/** Claims exactly like the gateway's own access tokens (see src/auth/tokens.ts). */
function claimsFor(userId: string, tokenVersion = 0): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000);
  return { typ: 'access', tv: tokenVersion, sub: userId, iss: 'vllm-gateway', aud: 'vllm-gateway', iat: now, exp: now + 600 };
}

function sign(claims: Record<string, unknown>, options: { secret?: string; algorithm?: jwt.Algorithm } = {}): string {
  return jwt.sign(claims, options.secret ?? TEST_JWT_SECRET, { algorithm: options.algorithm ?? 'HS256', noTimestamp: true });
}

function without(claims: Record<string, unknown>, name: string): Record<string, unknown> {
  return Object.fromEntries(Object.entries(claims).filter(([key]) => key !== name));
}

describe('access tokens', () => {
  let gateway: TestGateway;
  let admin: SignedIn;
  let user: SignedIn;

  beforeAll(async () => {
    ({ gateway, admin } = await startWithAdmin());
    user = await createUser(gateway, admin.token);
  });
  afterAll(() => gateway.stop());

  const meWith = (authorization: string | undefined) =>
    postGraphQL(gateway.server.url, MeDocument, {}, { headers: authorization === undefined ? {} : { authorization } });

  it('accepts a token forged the way the gateway signs (the forgeries below differ in one point each)', async () => {
    const { body } = await meWith(`Bearer ${sign(claimsFor(user.id))}`);
    expect(body.errors).toBeUndefined();
    expect(body.data?.me.id).toBe(user.id);
  });

  const forgeries: [string, () => string][] = [
    ['alg none', () => `${base64url({ alg: 'none', typ: 'JWT' })}.${base64url(claimsFor(user.id))}.`],
    ['HS512 with the right secret', () => sign(claimsFor(user.id), { algorithm: 'HS512' })],
    ['HS384 with the right secret', () => sign(claimsFor(user.id), { algorithm: 'HS384' })],
    ['a wrong secret', () => sign(claimsFor(user.id), { secret: `${TEST_JWT_SECRET}-but-not-quite` })],
    ['no exp', () => sign(without(claimsFor(user.id), 'exp'))],
    ['expired', () => sign({ ...claimsFor(user.id), iat: Math.floor(Date.now() / 1000) - 1000, exp: Math.floor(Date.now() / 1000) - 10 })],
    ['a wrong aud', () => sign({ ...claimsFor(user.id), aud: 'some-other-service' })],
    ['no aud', () => sign(without(claimsFor(user.id), 'aud'))],
    ['a wrong iss', () => sign({ ...claimsFor(user.id), iss: 'someone-else' })],
    ['no typ', () => sign(without(claimsFor(user.id), 'typ'))],
    ['typ refresh', () => sign({ ...claimsFor(user.id), typ: 'refresh' })],
    ['no tv', () => sign(without(claimsFor(user.id), 'tv'))],
    ['a stale tv', () => sign(claimsFor(user.id, 1))],
    ['no sub', () => sign(without(claimsFor(user.id), 'sub'))],
    ['a sub that is no user id', () => sign({ ...claimsFor(user.id), sub: 'not-a-uuid' })],
    ['an unknown user', () => sign(claimsFor(randomUUID()))],
    ['the signature of another token', () => {
      const [header, payload] = sign(claimsFor(user.id)).split('.');
      return `${header}.${payload}.${sign(claimsFor(admin.id)).split('.')[2]}`;
    }],
    ['a payload swapped under a valid signature', () => {
      const [header, , signature] = sign(claimsFor(user.id)).split('.');
      return `${header}.${base64url(claimsFor(admin.id))}.${signature}`;
    }],
    ['a refresh token', () => user.refreshToken],
    ['garbage', () => 'this-is-not-a-token'],
    ['three dots of garbage', () => 'a.b.c'],
  ];

  it.each(forgeries)('refuses a token with %s: UNAUTHENTICATED', async (_label, forge) => {
    const { body, status } = await meWith(`Bearer ${forge()}`);
    expect(body.data ?? null).toBeNull();
    onlyError(body, 'UNAUTHENTICATED');
    expect(status).toBeLessThan(500);
  });

  it.each([
    ['no Authorization header', undefined],
    ['"Bearer" without a token', 'Bearer'],
    ['"Bearer " and spaces', 'Bearer    '],
    ['another scheme', `Basic ${Buffer.from('a:b').toString('base64')}`],
    ['a token without the Bearer scheme', 'TOKEN'],
  ])('refuses %s: UNAUTHENTICATED', async (_label, authorization) => {
    const header = authorization === 'TOKEN' ? user.token : authorization;
    onlyError((await meWith(header)).body, 'UNAUTHENTICATED');
  });

  it('refuses a token it accepted a moment ago once the token has expired, and once its user signs out everywhere', async () => {
    const now = Math.floor(Date.now() / 1000);
    const shortLived = sign({ ...claimsFor(user.id), exp: now + 2 });
    expect((await meWith(`Bearer ${shortLived}`)).body.data?.me.id).toBe(user.id);
    await new Promise((resolve) => setTimeout(resolve, (now + 2) * 1000 - Date.now() + 100));
    expect(onlyError((await meWith(`Bearer ${shortLived}`)).body, 'UNAUTHENTICATED').message).toMatch(/invalid or expired/);

    // A password change ends every session: the token verified a moment ago is refused at once.
    const other = await createUser(gateway, admin.token);
    expect((await meWith(`Bearer ${other.token}`)).body.data?.me.id).toBe(other.id);
    const changed = await gateway.gql(ChangePasswordDocument, { currentPassword: other.password, newPassword: strongPassword() }, other.token);
    expect(changed.errors).toBeUndefined();
    expect(onlyError((await meWith(`Bearer ${other.token}`)).body, 'UNAUTHENTICATED').message).toMatch(/no longer valid/);
  });

  it('refuses a valid token once its user is deleted', async () => {
    const doomed = await createUser(gateway, admin.token);
    expect((await gateway.gql(MeDocument, {}, doomed.token)).errors).toBeUndefined();
    await sql(gateway.databaseUrl, 'delete from users where id = $1', [doomed.id]);
    onlyError(await gateway.gql(MeDocument, {}, doomed.token), 'UNAUTHENTICATED');
  });

  it('refuses the same forgeries over graphql-ws', async () => {
    expect((await gateway.ws(user.token).collect(MeDocument, {})).events.map((event) => event.me.id)).toEqual([user.id]);
    const forged = [sign(claimsFor(user.id), { algorithm: 'HS512' }), sign(without(claimsFor(user.id), 'exp')), sign(claimsFor(user.id, 1)), user.refreshToken];
    for (const token of forged) await expectWsRefused(gateway.ws(token));
    await expectWsRefused(gateway.ws());
  });
});
