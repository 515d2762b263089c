import jwt from 'jsonwebtoken';
import { LoginDocument, MeDocument, UpdateUserDocument } from '../generated/graphql';
import { sql } from '../helpers/database';
import { startTestGateway, startWithAdmin, type TestGateway } from '../helpers/server';
import { createUser, onlyError, postGraphQL, signInAdmin, sleep, strongPassword, TEST_ADMIN, uniqueEmail, type SignedIn } from '../helpers/client';

/** Source addresses: every test that counts failures per address uses its own. */
const address = (n: number): string => `127.0.0.${n}`;

async function loginFrom(gateway: TestGateway, from: string, email: string, password: string) {
  const { body } = await postGraphQL(gateway.server.url, LoginDocument, { email, password }, { localAddress: from });
  return body;
}

/** One mutation with a `login` alias per guess. */
function guessDocument(email: string, guesses: readonly string[]): string {
  const fields = guesses.map((guess, i) => `  g${i}: login(email: ${JSON.stringify(email)}, password: ${JSON.stringify(guess)}) { accessToken }`);
  return `mutation Guess {\n${fields.join('\n')}\n}`;
}

/** The cost parameters of an argon2 PHC string: `$argon2id$v=19$m=…,t=…,p=…$salt$hash`. */
function argon2Parameters(hash: string): Record<string, number> {
  const [, algorithm, , parameters] = hash.split('$');
  expect(algorithm).toBe('argon2id');
  return Object.fromEntries(parameters.split(',').map((pair) => [pair.split('=')[0], Number(pair.split('=')[1])]));
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

describe('login', () => {
  let gateway: TestGateway;
  let admin: SignedIn;

  beforeAll(async () => {
    ({ gateway, admin } = await startWithAdmin({
      // Aliases allowed beyond 20 here, so that the throttle itself is what stops a document of guesses.
      env: { LOGIN_MAX_FAILURES_PER_ACCOUNT: '5', LOGIN_MAX_FAILURES_PER_ADDRESS: '10', GRAPHQL_MAX_ALIASES: '50' },
    }));
  });
  afterAll(() => gateway.stop());

  it('returns an HS256 access token valid for 15 minutes, an opaque refresh token and the user', async () => {
    const before = Date.now();
    const result = await gateway.gql(LoginDocument, { email: TEST_ADMIN.email, password: TEST_ADMIN.password });
    expect(result.errors).toBeUndefined();
    const payload = result.data!.login;
    expect(payload.user).toMatchObject({ email: TEST_ADMIN.email, role: 'ADMIN', disabled: false });

    const expiresAt = Date.parse(payload.expiresAt);
    expect(expiresAt).toBeGreaterThanOrEqual(before + 15 * 60_000 - 2_000);
    expect(expiresAt).toBeLessThanOrEqual(Date.now() + 15 * 60_000 + 2_000);

    const decoded = jwt.decode(payload.accessToken, { complete: true });
    expect(decoded?.header.alg).toBe('HS256');
    expect(decoded?.payload).toMatchObject({ typ: 'access', sub: payload.user.id, iss: 'vllm-gateway', aud: 'vllm-gateway', tv: expect.any(Number) });
    expect((decoded?.payload as jwt.JwtPayload).exp).toBe(Math.floor(expiresAt / 1000));

    // The refresh token is opaque (not a JWT) and carries at least 256 bits.
    expect(payload.refreshToken.split('.')).toHaveLength(1);
    expect(payload.refreshToken.length).toBeGreaterThanOrEqual(43);
    expect(payload.refreshToken).not.toBe(payload.accessToken);

    const me = await gateway.gql(MeDocument, {}, payload.accessToken);
    expect(me.data?.me).toMatchObject({ id: payload.user.id, email: TEST_ADMIN.email });
  });

  it('finds the account whatever the case and surrounding spaces of the email', async () => {
    const result = await gateway.gql(LoginDocument, { email: `  ${TEST_ADMIN.email.toUpperCase()} `, password: TEST_ADMIN.password });
    expect(result.errors).toBeUndefined();
    expect(result.data?.login.user.email).toBe(TEST_ADMIN.email);
  });

  it('answers a wrong password, an unknown email and a disabled account identically', async () => {
    const user = await createUser(gateway, admin.token);
    const disabled = await createUser(gateway, admin.token);
    await gateway.gql(UpdateUserDocument, { id: disabled.id, input: { disabled: true } }, admin.token);

    const wrong = await gateway.gql(LoginDocument, { email: user.email, password: `${user.password}x` });
    const unknown = await gateway.gql(LoginDocument, { email: uniqueEmail('nobody'), password: user.password });
    const off = await gateway.gql(LoginDocument, { email: disabled.email, password: disabled.password });

    const error = onlyError(wrong, 'UNAUTHENTICATED');
    expect(wrong.data).toBeNull();
    expect(error.message).not.toMatch(/unknown|not found|no user|exist|disabled/i);
    for (const other of [unknown, off]) {
      expect(other.status).toBe(wrong.status);
      expect(other.data).toEqual(wrong.data);
      expect(other.errors).toEqual(wrong.errors);
    }
  });

  it('locks an account after 5 failures, from any address, with RATE_LIMITED and retryAfter', async () => {
    const user = await createUser(gateway, admin.token);
    for (let i = 0; i < 5; i += 1) {
      onlyError(await loginFrom(gateway, address(11), user.email, `wrong-password-${i}`), 'UNAUTHENTICATED');
    }
    // Even the right password, even from another address: the account is locked.
    for (const from of [address(11), address(12)]) {
      const locked = onlyError(await loginFrom(gateway, from, user.email, user.password), 'RATE_LIMITED');
      expect(locked.extensions?.retryAfter).toEqual(expect.any(Number));
      expect(locked.extensions?.retryAfter as number).toBeGreaterThanOrEqual(1);
      expect(locked.extensions?.retryAfter as number).toBeLessThanOrEqual(30);
    }
    // Other accounts are not affected.
    expect((await loginFrom(gateway, address(12), TEST_ADMIN.email, TEST_ADMIN.password)).errors).toBeUndefined();
  });

  it('counts failures per client address, across accounts', async () => {
    for (let i = 0; i < 10; i += 1) {
      onlyError(await loginFrom(gateway, address(21), uniqueEmail('spray'), 'some-password-123'), 'UNAUTHENTICATED');
    }
    const locked = onlyError(await loginFrom(gateway, address(21), TEST_ADMIN.email, TEST_ADMIN.password), 'RATE_LIMITED');
    expect(locked.extensions?.retryAfter as number).toBeGreaterThanOrEqual(1);
    // The same account from another address still signs in: the address, not the account, is locked.
    expect((await loginFrom(gateway, address(22), TEST_ADMIN.email, TEST_ADMIN.password)).errors).toBeUndefined();
  });

  it('does not lock an address because of a successful sign-in', async () => {
    for (let i = 0; i < 9; i += 1) {
      onlyError(await loginFrom(gateway, address(31), uniqueEmail('typo'), 'some-password-123'), 'UNAUTHENTICATED');
    }
    // The 10th attempt from this address is a success: it must not count as the 10th failure.
    expect((await loginFrom(gateway, address(31), TEST_ADMIN.email, TEST_ADMIN.password)).errors).toBeUndefined();
    expect((await loginFrom(gateway, address(31), TEST_ADMIN.email, TEST_ADMIN.password)).errors).toBeUndefined();
    // One more failure reaches the limit; after it the address is locked.
    onlyError(await loginFrom(gateway, address(31), uniqueEmail('typo'), 'some-password-123'), 'UNAUTHENTICATED');
    onlyError(await loginFrom(gateway, address(31), TEST_ADMIN.email, TEST_ADMIN.password), 'RATE_LIMITED');
  });

  it('counts each aliased login in one document as one attempt: 20 guesses in a request find nothing', async () => {
    const user = await createUser(gateway, admin.token);
    // 19 wrong guesses, then the right password as the 20th alias.
    const guesses = [...Array.from({ length: 19 }, (_, i) => `guess-number-${i}`), user.password];
    const { body } = await postGraphQL<Record<string, { accessToken: string } | null>, undefined>(
      gateway.server.url,
      guessDocument(user.email, guesses),
      undefined,
      { localAddress: address(41) },
    );

    expect(JSON.stringify(body.data ?? null)).not.toContain('accessToken');
    const codes = (body.errors ?? []).map((error) => error.extensions?.code);
    expect(codes.length).toBeGreaterThanOrEqual(1);
    const checked = codes.filter((code) => code === 'UNAUTHENTICATED').length;
    expect(checked).toBeGreaterThanOrEqual(1);
    // Every password that was checked was counted: no more than 5 in all, any later alias RATE_LIMITED.
    expect(checked).toBeLessThanOrEqual(5);
    expect(codes).toEqual([...Array<string>(checked).fill('UNAUTHENTICATED'), ...Array<string>(codes.length - checked).fill('RATE_LIMITED')]);

    // The attempts the document made count: the account locks after 5 in total.
    let singles = 0;
    for (;;) {
      const single = await loginFrom(gateway, address(42), user.email, 'yet-another-guess');
      if (single.errors?.[0]?.extensions?.code === 'RATE_LIMITED') break;
      onlyError(single, 'UNAUTHENTICATED');
      singles += 1;
      if (singles > 5) break;
    }
    expect(checked + singles).toBe(5);
  });

  it('rehashes the password at sign-in when the hash parameters change', async () => {
    const user = await createUser(gateway, admin.token);
    const hashOf = async () =>
      (await sql<{ password_hash: string }>(gateway.databaseUrl, 'select password_hash from users where id = $1', [user.id]))[0].password_hash;
    expect(argon2Parameters(await hashOf())).toEqual({ m: 19456, t: 2, p: 1 });

    // A second instance on the same database, configured with a higher time cost.
    const stronger = await startTestGateway({ databaseUrl: gateway.databaseUrl, env: { PASSWORD_HASH_TIME_COST: '3' } });
    try {
      expect((await stronger.gql(LoginDocument, { email: user.email, password: user.password })).errors).toBeUndefined();
    } finally {
      await stronger.stop();
    }
    expect(argon2Parameters(await hashOf())).toEqual({ m: 19456, t: 3, p: 1 });
    // The new hash still verifies the same password, on either configuration.
    expect((await gateway.gql(LoginDocument, { email: user.email, password: user.password })).errors).toBeUndefined();
  });
});

describe('login lockout expiry', () => {
  let gateway: TestGateway;
  beforeAll(async () => {
    gateway = await startTestGateway({ env: { LOGIN_LOCKOUT_BASE_SECONDS: '1', LOGIN_MAX_FAILURES_PER_ACCOUNT: '3' } });
  });
  afterAll(() => gateway.stop());

  it('with the default limits, refuses a document of 20 aliased logins before checking any password', async () => {
    const admin = await signInAdmin(gateway);
    const user = await createUser(gateway, admin.token);
    const guesses = [...Array.from({ length: 19 }, (_, i) => `guess-number-${i}`), user.password];
    const { body } = await postGraphQL(gateway.server.url, guessDocument(user.email, guesses), undefined, { localAddress: address(52) });
    expect(body.data ?? null).toBeNull();
    expect(body.errors?.map((error) => error.extensions?.code)).toEqual(['BAD_USER_INPUT']);
    // Nothing was counted: 2 failures still do not reach this gateway's limit of 3.
    for (let i = 0; i < 2; i += 1) onlyError(await loginFrom(gateway, address(52), user.email, 'not-the-password'), 'UNAUTHENTICATED');
    expect((await loginFrom(gateway, address(52), user.email, user.password)).errors).toBeUndefined();
  });

  it('lifts the lock after retryAfter, doubles it on the next failure, and a success starts afresh', async () => {
    const admin = await signInAdmin(gateway);
    const user = await createUser(gateway, admin.token);
    const from = address(51);
    for (let i = 0; i < 3; i += 1) onlyError(await loginFrom(gateway, from, user.email, 'not-the-password'), 'UNAUTHENTICATED');
    const first = onlyError(await loginFrom(gateway, from, user.email, user.password), 'RATE_LIMITED');
    expect(first.extensions?.retryAfter).toBe(1);

    await sleep(1_200);
    // Unlocked: the password is checked again; a further failure locks for twice as long.
    onlyError(await loginFrom(gateway, from, user.email, 'not-the-password'), 'UNAUTHENTICATED');
    const second = onlyError(await loginFrom(gateway, from, user.email, user.password), 'RATE_LIMITED');
    expect(second.extensions?.retryAfter).toBe(2);

    await sleep(2_200);
    expect((await loginFrom(gateway, from, user.email, user.password)).errors).toBeUndefined();
    // After a success the account's count starts from zero: 2 failures do not lock it.
    for (let i = 0; i < 2; i += 1) onlyError(await loginFrom(gateway, from, user.email, 'not-the-password'), 'UNAUTHENTICATED');
    expect((await loginFrom(gateway, from, user.email, user.password)).errors).toBeUndefined();
  });
});

describe('login timing', () => {
  let gateway: TestGateway;
  beforeAll(async () => {
    gateway = await startTestGateway({
      // A costlier hash than the other tests use, so that the hash (not HTTP) dominates each answer.
      env: { LOGIN_MAX_FAILURES_PER_ACCOUNT: '1000', LOGIN_MAX_FAILURES_PER_ADDRESS: '100000', PASSWORD_HASH_TIME_COST: '6' },
    });
  });
  afterAll(() => gateway.stop());

  it('takes about as long for an unknown email as for a wrong password', async () => {
    const admin = await signInAdmin(gateway);
    const user = await createUser(gateway, admin.token, { password: strongPassword() });
    const timed = async (email: string): Promise<number> => {
      const started = performance.now();
      const result = await gateway.gql(LoginDocument, { email, password: 'wrong-password-for-timing' });
      const elapsed = performance.now() - started;
      onlyError(result, 'UNAUTHENTICATED');
      return elapsed;
    };
    // Warm up both paths once (connections, the dummy hash).
    await timed(user.email);
    await timed(uniqueEmail('ghost'));
    const wrong: number[] = [];
    const unknown: number[] = [];
    for (let i = 0; i < 9; i += 1) {
      wrong.push(await timed(user.email));
      unknown.push(await timed(uniqueEmail('ghost')));
    }
    const ratio = median(unknown) / median(wrong);
    expect(ratio).toBeGreaterThan(0.5);
    expect(ratio).toBeLessThan(2);
  });
});
