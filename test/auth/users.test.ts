import {
  CreateUserDocument,
  LoginDocument,
  MeDocument,
  MyUsageDocument,
  UpdateUserDocument,
  UserDocument,
  UsersDocument,
  type CreateUserInput,
} from '../generated/graphql';
import { lockTable, lockWaiters, sql } from '../helpers/database';
import { startTestGateway, startWithAdmin, type TestGateway } from '../helpers/server';
import { createUser, onlyError, signIn, signInAdmin, strongPassword, TEST_ADMIN, uniqueEmail, until, type SignedIn } from '../helpers/client';

describe('user management', () => {
  let gateway: TestGateway;
  let admin: SignedIn;
  let user: SignedIn;
  let other: SignedIn;

  beforeAll(async () => {
    ({ gateway, admin } = await startWithAdmin());
    [user, other] = await Promise.all([createUser(gateway, admin.token), createUser(gateway, admin.token)]);
  });
  afterAll(() => gateway.stop());

  describe('admin-only operations', () => {
    const attempts = () =>
      [
        ['users', (token?: string) => gateway.gql(UsersDocument, {}, token)],
        ['user(someone else)', (token?: string) => gateway.gql(UserDocument, { id: other.id }, token)],
        ['user(self)', (token?: string) => gateway.gql(UserDocument, { id: user.id }, token)],
        ['user(unknown id)', (token?: string) => gateway.gql(UserDocument, { id: '00000000-0000-4000-8000-000000000000' }, token)],
        ['createUser', (token?: string) => gateway.gql(CreateUserDocument, { input: { email: uniqueEmail('sneaky'), password: strongPassword() } }, token)],
        ['updateUser(someone else)', (token?: string) => gateway.gql(UpdateUserDocument, { id: other.id, input: { disabled: true } }, token)],
        ['updateUser(self → ADMIN)', (token?: string) => gateway.gql(UpdateUserDocument, { id: user.id, input: { role: 'ADMIN' } }, token)],
      ] as const;

    it('are refused to a USER with FORBIDDEN, leaking no data', async () => {
      for (const [label, attempt] of attempts()) {
        const result = await attempt(user.token);
        expect([label, result.errors?.map((error) => error.extensions?.code)]).toEqual([label, ['FORBIDDEN']]);
        // No data at all (non-null fields) or only nulls (user(id) is nullable).
        expect([label, Object.values(result.data ?? {}).filter((value) => value !== null)]).toEqual([label, []]);
      }
      // Nothing changed: the user is still a USER, the other user still enabled.
      expect((await gateway.gql(MeDocument, {}, user.token)).data?.me.role).toBe('USER');
      expect((await gateway.gql(UserDocument, { id: other.id }, admin.token)).data?.user?.disabled).toBe(false);
    });

    it('are refused to anonymous callers with UNAUTHENTICATED', async () => {
      for (const [label, attempt] of attempts()) {
        const result = await attempt(undefined);
        expect([label, result.errors?.map((error) => error.extensions?.code)]).toEqual([label, ['UNAUTHENTICATED']]);
      }
    });

    it('work for an admin', async () => {
      const found = await gateway.gql(UserDocument, { id: other.id }, admin.token);
      expect(found.data?.user).toMatchObject({ id: other.id, email: other.email, role: 'USER' });
      expect((await gateway.gql(UserDocument, { id: '00000000-0000-4000-8000-000000000000' }, admin.token)).data?.user).toBeNull();
      expect((await gateway.gql(UserDocument, { id: 'not-a-uuid' }, admin.token)).data?.user).toBeNull();
    });
  });

  describe('validation', () => {
    const create = (input: Partial<CreateUserInput>) =>
      gateway.gql(CreateUserDocument, { input: { email: uniqueEmail('valid'), password: strongPassword(), ...input } }, admin.token);
    const expectField = async (result: Promise<{ errors?: readonly { extensions?: Record<string, unknown> }[] }>, field: string) => {
      const settled = await result;
      expect(settled.errors?.map((error) => [error.extensions?.code, error.extensions?.field])).toEqual([['BAD_USER_INPUT', field]]);
    };

    it.each(['not-an-email', 'two@@example.test', 'spaces in@example.test', '', '@example.test', 'someone@'])(
      'refuses the email %j naming the field',
      async (email) => {
        await expectField(create({ email }), 'email');
      },
    );

    it('refuses an 11-character password and a 257-character one, naming the field', async () => {
      await expectField(create({ password: 'a'.repeat(11) }), 'password');
      await expectField(create({ password: 'a'.repeat(257) }), 'password');
      // Counted in characters as the user sees them, not UTF-16 units: 11 emoji are too short.
      await expectField(create({ password: '🔑'.repeat(11) }), 'password');
    });

    it('accepts 12 and 256 characters, and never truncates', async () => {
      const long = `${'x'.repeat(255)}y`;
      const email = uniqueEmail('long');
      expect((await create({ email, password: long })).errors).toBeUndefined();
      expect((await create({ password: '🔑'.repeat(12) })).errors).toBeUndefined();
      expect((await gateway.gql(LoginDocument, { email, password: long })).errors).toBeUndefined();
      onlyError(await gateway.gql(LoginDocument, { email, password: `${'x'.repeat(255)}z` }), 'UNAUTHENTICATED');
      onlyError(await gateway.gql(LoginDocument, { email, password: 'x'.repeat(255) }), 'UNAUTHENTICATED');
    });

    it('refuses a negative tokenLimit, naming the field', async () => {
      await expectField(create({ tokenLimit: -1 }), 'tokenLimit');
      await expectField(gateway.gql(UpdateUserDocument, { id: other.id, input: { tokenLimit: -5 } }, admin.token), 'tokenLimit');
    });

    it('refuses a duplicate email, whatever its case', async () => {
      await expectField(create({ email: user.email }), 'email');
      await expectField(create({ email: ` ${TEST_ADMIN.email.toUpperCase()} ` }), 'email');
      await expectField(gateway.gql(UpdateUserDocument, { id: other.id, input: { email: user.email.toUpperCase() } }, admin.token), 'email');
    });

    it('refuses bad email and weak password on updateUser too, changing nothing', async () => {
      await expectField(gateway.gql(UpdateUserDocument, { id: other.id, input: { email: 'nope' } }, admin.token), 'email');
      await expectField(gateway.gql(UpdateUserDocument, { id: other.id, input: { password: 'short' } }, admin.token), 'password');
      expect((await gateway.gql(UserDocument, { id: other.id }, admin.token)).data?.user?.email).toBe(other.email);
      expect((await gateway.gql(MeDocument, {}, other.token)).errors).toBeUndefined();
    });

    it('refuses an unknown role with BAD_USER_INPUT', async () => {
      const result = await gateway.gql(
        CreateUserDocument,
        { input: { email: uniqueEmail('role'), password: strongPassword(), role: 'SUPERUSER' as 'ADMIN' } },
        admin.token,
      );
      expect(onlyError(result, 'BAD_USER_INPUT').message).toMatch(/"SUPERUSER" does not exist in "Role" enum/);
    });

    it('creates nothing when it refuses', async () => {
      const email = uniqueEmail('refused');
      await expectField(create({ email, password: 'short' }), 'password');
      await expectField(create({ email, tokenLimit: -1 }), 'tokenLimit');
      expect(await sql(gateway.databaseUrl, 'select id from users where email = $1', [email])).toEqual([]);
    });

    it('stores the email lower-cased and creates a working account', async () => {
      const email = uniqueEmail('Mixed.Case').toUpperCase();
      const password = strongPassword();
      const created = await gateway.gql(CreateUserDocument, { input: { email, password, tokenLimit: 10, quotaPeriod: 'MONTHLY' } }, admin.token);
      expect(created.data?.createUser).toMatchObject({ email: email.toLowerCase(), role: 'USER', disabled: false, tokenLimit: 10, quotaPeriod: 'MONTHLY' });
      expect((await signIn(gateway, email.toLowerCase(), password)).id).toBe(created.data?.createUser.id);
    });
  });

  describe('nobody changes their own role or quota', () => {
    it.each([
      ['role', { role: 'USER' as const }],
      ['tokenLimit', { tokenLimit: 10 }],
      ['tokenLimit to unlimited', { tokenLimit: null }],
      ['quotaPeriod', { quotaPeriod: 'DAILY' as const }],
      ['disabled', { disabled: true }],
    ])('an admin cannot change their own %s', async (_label, input) => {
      const result = await gateway.gql(UpdateUserDocument, { id: admin.id, input }, admin.token);
      onlyError(result, 'FORBIDDEN');
      const me = await gateway.gql(MeDocument, {}, admin.token);
      expect(me.data?.me).toMatchObject({ role: 'ADMIN', disabled: false, tokenLimit: null, quotaPeriod: 'NONE' });
    });
  });

  describe('me.usage', () => {
    it('answers used 0 and the limit of the user’s tokenLimit', async () => {
      const limited = await createUser(gateway, admin.token, { tokenLimit: 5000 });
      const result = await gateway.gql(MyUsageDocument, {}, limited.token);
      expect(result.errors).toBeUndefined();
      expect(result.data?.me).toEqual({
        id: limited.id,
        tokenLimit: 5000,
        usage: { used: 0, limit: 5000, remaining: 5000, reserved: 0, periodStart: null, periodEnd: null },
      });
    });

    it('answers null limit and remaining for an unlimited user', async () => {
      const result = await gateway.gql(MyUsageDocument, {}, user.token);
      expect(result.data?.me.usage).toMatchObject({ used: 0, limit: null, remaining: null });
    });

    it('follows a tokenLimit and period change by an admin, with UTC day bounds', async () => {
      const limited = await createUser(gateway, admin.token, { tokenLimit: 100 });
      await gateway.gql(UpdateUserDocument, { id: limited.id, input: { tokenLimit: 250, quotaPeriod: 'DAILY' } }, admin.token);
      const usage = (await gateway.gql(MyUsageDocument, {}, limited.token)).data?.me.usage;
      expect(usage).toMatchObject({ used: 0, limit: 250, remaining: 250 });
      const today = new Date();
      today.setUTCHours(0, 0, 0, 0);
      expect(Date.parse(usage?.periodStart ?? '')).toBe(today.getTime());
      expect(Date.parse(usage?.periodEnd ?? '')).toBe(today.getTime() + 86_400_000);
      // An admin reads the same through user(id).
      const seen = await gateway.gql(UserDocument, { id: limited.id }, admin.token);
      expect(seen.data?.user?.usage).toEqual(usage);
    });
  });
});

describe('the last enabled admin', () => {
  let gateway: TestGateway;
  beforeAll(async () => {
    gateway = await startTestGateway();
  });
  afterAll(() => gateway.stop());

  const enabledAdmins = async (): Promise<string[]> =>
    (await sql<{ email: string }>(gateway.databaseUrl, "select email from users where role = 'ADMIN' and not disabled order by email")).map((row) => row.email);

  it('cannot be demoted or disabled; with two admins one can be; two admins removing each other at once leave one', async () => {
    const first = await signInAdmin(gateway);
    expect(await enabledAdmins()).toEqual([TEST_ADMIN.email]);
    for (const input of [{ role: 'USER' as const }, { disabled: true }]) {
      onlyError(await gateway.gql(UpdateUserDocument, { id: first.id, input }, first.token), 'FORBIDDEN');
    }
    expect(await enabledAdmins()).toEqual([TEST_ADMIN.email]);

    // With a second admin, the first can be demoted (by the second).
    const second = await createUser(gateway, first.token, { role: 'ADMIN' });
    const demoted = await gateway.gql(UpdateUserDocument, { id: first.id, input: { role: 'USER' } }, second.token);
    expect(demoted.errors).toBeUndefined();
    expect(demoted.data?.updateUser.role).toBe('USER');
    expect(await enabledAdmins()).toEqual([second.email]);

    // Two admins demoting (then disabling) each other at the same moment: exactly one wins.
    let survivor = second;
    for (const input of [{ role: 'USER' as const }, { disabled: true }]) {
      const partner = await createUser(gateway, survivor.token, { role: 'ADMIN' });
      // "At the same moment" made exact: the test holds the users table, so both requests get
      // past authentication and both wait at the guard's `select … for update` of the admins.
      // (Sent one after the other, the loser would instead be refused as signed out.)
      const release = await lockTable(gateway.databaseUrl, 'users', 'exclusive');
      const racing = Promise.all([
        gateway.gql(UpdateUserDocument, { id: partner.id, input }, survivor.token),
        gateway.gql(UpdateUserDocument, { id: survivor.id, input }, partner.token),
      ]);
      try {
        await until(async () => (await lockWaiters(gateway.databaseUrl)) === 2, 10_000, 'both updates to wait on the users table');
      } finally {
        await release();
      }
      const [a, b] = await racing;
      const succeeded = [a, b].filter((result) => result.errors === undefined);
      expect(succeeded).toHaveLength(1);
      // The loser, run once the winner committed, finds one admin left and is refused by the guard.
      const [refused, ...others] = [a, b].filter((result) => result.errors !== undefined);
      expect(others).toEqual([]);
      expect(onlyError(refused, 'FORBIDDEN').message).toBe('The last enabled admin cannot be demoted or disabled.');
      const remaining = await enabledAdmins();
      expect(remaining).toHaveLength(1);
      survivor = remaining[0] === survivor.email ? await signIn(gateway, survivor.email, survivor.password) : await signIn(gateway, partner.email, partner.password);
      expect((await gateway.gql(UsersDocument, { first: 1 }, survivor.token)).errors).toBeUndefined();
    }
  });
});
