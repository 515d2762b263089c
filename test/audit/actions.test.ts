import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import {
  CreateTeamDocument,
  UpdateTeamDocument,
  AuditLogDocument,
  ChangePasswordDocument,
  CreateApiKeyDocument,
  CreateUserDocument,
  LoginDocument,
  LogoutDocument,
  RefreshDocument,
  RevokeApiKeyDocument,
  UpdateUserDocument,
  type AuditLogQuery,
} from '../generated/graphql';
import { sql } from '../helpers/database';
import { startWithAdmin, type TestGateway } from '../helpers/server';
import { createUser, dataOf, onlyError, postGraphQL, signIn, strongPassword, uniqueEmail, type SignedIn } from '../helpers/client';

type Entry = AuditLogQuery['auditLog']['nodes'][number];

/** Source addresses: any 127.0.0.0/8 address reaches the server, so each test can tell its entries' `ip`. */
const address = (n: number): string => `127.0.0.${n}`;

describe('audit log: an entry for each change, in its transaction', () => {
  let gateway: TestGateway;
  let admin: SignedIn;
  /** Every secret this file handles; the last test looks for each of them in every entry. */
  const secrets: { label: string; value: string }[] = [];
  const keep = (label: string, value: string): string => {
    secrets.push({ label, value });
    return value;
  };
  const keepSignedIn = (user: SignedIn): SignedIn => {
    keep(`password of ${user.email}`, user.password);
    keep(`access token of ${user.email}`, user.token);
    keep(`refresh token of ${user.email}`, user.refreshToken);
    return user;
  };

  beforeAll(async () => {
    ({ gateway, admin } = await startWithAdmin());
    keepSignedIn(admin);
  });
  afterAll(() => gateway.stop());

  /** A typed GraphQL request from the source address `from`: the body of the answer. */
  async function send<TData, TVariables>(from: string, document: TypedDocumentNode<TData, TVariables>, variables: TVariables, token?: string) {
    return (await postGraphQL(gateway.server.url, document, variables, { token, localAddress: from })).body;
  }

  /** The entries about `targetUserId`, newest first, as the admin reads them. */
  async function entriesAbout(targetUserId: string): Promise<Entry[]> {
    return dataOf(await gateway.gql(AuditLogDocument, { targetUserId, first: 500 }, admin.token), 'auditLog').auditLog.nodes;
  }

  async function newUser(): Promise<SignedIn> {
    return keepSignedIn(await createUser(gateway, admin.token));
  }

  it('TEAM_CREATED and TEAM_UPDATED: the admin is actor, the team named, each changed field with its old and new value', async () => {
    const { createTeam: team } = dataOf(await gateway.gql(CreateTeamDocument, { input: { name: `audited-${Date.now()}`, tokenLimit: 1000 } }, admin.token), 'createTeam');
    dataOf(await gateway.gql(UpdateTeamDocument, { id: team.id, input: { tokenLimit: 2000 } }, admin.token), 'updateTeam');
    const latest = async (action: 'TEAM_CREATED' | 'TEAM_UPDATED') =>
      dataOf(await gateway.gql(AuditLogDocument, { action, first: 1 }, admin.token), action).auditLog.nodes[0];
    expect(await latest('TEAM_CREATED')).toMatchObject({
      actorId: admin.id,
      targetUserId: null,
      details: { teamId: team.id, name: team.name, tokenLimit: 1000, quotaPeriod: 'NONE' },
    });
    expect((await latest('TEAM_UPDATED'))?.details).toEqual({ teamId: team.id, changes: { tokenLimit: { old: 1000, new: 2000 } } });
  });

  it('LOGIN: the user is actor and target, from the client address', async () => {
    const user = await newUser();
    const before = Date.now();
    const login = await send(address(21), LoginDocument, { email: user.email, password: user.password });
    keep('access token of a second login', login.data!.login.accessToken);
    keep('refresh token of a second login', login.data!.login.refreshToken);
    const [latest] = await entriesAbout(user.id);
    expect(latest).toMatchObject({ action: 'LOGIN', actorId: user.id, targetUserId: user.id, ip: address(21), details: null });
    expect(Date.parse(latest.at)).toBeGreaterThanOrEqual(before - 1_000);
    expect(Date.parse(latest.at)).toBeLessThanOrEqual(Date.now() + 1_000);
  });

  it('LOGIN_FAILED: written alone, with no actor, naming the email as typed and why it was refused', async () => {
    const user = await newUser();
    const wrong = keep('a wrong password', strongPassword());
    onlyError(await send(address(22), LoginDocument, { email: user.email.toUpperCase(), password: wrong }), 'UNAUTHENTICATED');
    const [failed] = await entriesAbout(user.id);
    expect(failed).toMatchObject({
      action: 'LOGIN_FAILED',
      actorId: null,
      targetUserId: user.id,
      ip: address(22),
      details: { email: user.email, reason: 'WRONG_PASSWORD' },
    });

    const unknown = uniqueEmail('nobody');
    onlyError(await send(address(22), LoginDocument, { email: unknown, password: wrong }), 'UNAUTHENTICATED');
    const { nodes } = dataOf(await gateway.gql(AuditLogDocument, { action: 'LOGIN_FAILED', first: 1 }, admin.token), 'auditLog').auditLog;
    expect(nodes).toEqual([expect.objectContaining({ actorId: null, targetUserId: null, ip: address(22), details: { email: unknown, reason: 'UNKNOWN_EMAIL' } })]);

    dataOf(await gateway.gql(UpdateUserDocument, { id: user.id, input: { disabled: true } }, admin.token), 'disable');
    onlyError(await send(address(22), LoginDocument, { email: user.email, password: user.password }), 'UNAUTHENTICATED');
    expect((await entriesAbout(user.id))[0]).toMatchObject({ action: 'LOGIN_FAILED', details: { email: user.email, reason: 'USER_DISABLED' } });
  });

  it('LOGIN_FAILED keeps no email that is not shaped like one: it may be a password typed in the wrong box', async () => {
    const typedIntoEmail = keep('a password typed as the email', strongPassword());
    onlyError(await send(address(23), LoginDocument, { email: typedIntoEmail, password: 'x' }), 'UNAUTHENTICATED');
    const { nodes } = dataOf(await gateway.gql(AuditLogDocument, { action: 'LOGIN_FAILED', first: 1 }, admin.token), 'auditLog').auditLog;
    expect(nodes[0]).toMatchObject({ ip: address(23), targetUserId: null, details: { email: null, reason: 'UNKNOWN_EMAIL' } });
  });

  it('LOGOUT: the holder of the refresh token is the actor', async () => {
    const user = await newUser();
    expect((await send(address(24), LogoutDocument, { refreshToken: user.refreshToken })).data?.logout).toBe(true);
    expect((await entriesAbout(user.id))[0]).toMatchObject({ action: 'LOGOUT', actorId: user.id, targetUserId: user.id, ip: address(24), details: null });
    // A logout that ends nothing changes nothing, and records nothing.
    const count = (await entriesAbout(user.id)).length;
    expect((await send(address(24), LogoutDocument, { refreshToken: user.refreshToken })).data?.logout).toBe(false);
    expect(await entriesAbout(user.id)).toHaveLength(count);
  });

  it('PASSWORD_CHANGED: by the user, with neither password in the entry', async () => {
    const user = await newUser();
    const newPassword = keep('a changed password', strongPassword());
    const changed = await send(address(25), ChangePasswordDocument, { currentPassword: user.password, newPassword }, user.token);
    expect(changed.data?.changePassword).toBe(true);
    expect((await entriesAbout(user.id))[0]).toMatchObject({
      action: 'PASSWORD_CHANGED',
      actorId: user.id,
      targetUserId: user.id,
      ip: address(25),
      details: null,
    });
  });

  it('USER_CREATED: by the admin, with what the user was created as, and no password', async () => {
    const email = uniqueEmail('created');
    const password = keep('a created password', strongPassword());
    const created = await send(address(26), CreateUserDocument, { input: { email, password, tokenLimit: 5000, quotaPeriod: 'DAILY' } }, admin.token);
    const id = created.data!.createUser.id;
    expect(await entriesAbout(id)).toEqual([
      expect.objectContaining({
        action: 'USER_CREATED',
        actorId: admin.id,
        targetUserId: id,
        ip: address(26),
        details: { email, role: 'USER', tokenLimit: 5000, quotaPeriod: 'DAILY', teamId: null },
      }),
    ]);
  });

  it('USER_UPDATED: each changed field with its old and new value; unchanged fields left out; a password only as changed', async () => {
    const user = await newUser();
    const email = uniqueEmail('renamed');
    const password = keep('a password set by the admin', strongPassword());
    const updated = await send(
      address(27),
      UpdateUserDocument,
      { id: user.id, input: { email, password, role: 'USER', tokenLimit: 100, quotaPeriod: 'MONTHLY', disabled: true } },
      admin.token,
    );
    expect(updated.errors).toBeUndefined();
    const [entry] = await entriesAbout(user.id);
    expect(entry).toMatchObject({ action: 'USER_UPDATED', actorId: admin.id, targetUserId: user.id, ip: address(27) });
    expect(entry.details).toEqual({
      changes: {
        email: { old: user.email, new: email },
        tokenLimit: { old: null, new: 100 },
        quotaPeriod: { old: 'NONE', new: 'MONTHLY' },
        disabled: { old: false, new: true },
        password: { old: '[redacted]', new: '[redacted]' },
      },
    });

    dataOf(await gateway.gql(UpdateUserDocument, { id: user.id, input: { tokenLimit: null, role: 'ADMIN' } }, admin.token), 'second update');
    expect((await entriesAbout(user.id))[0].details).toEqual({
      changes: { tokenLimit: { old: 100, new: null }, role: { old: 'USER', new: 'ADMIN' } },
    });
  });

  it('API_KEY_CREATED and API_KEY_REVOKED: the key by id, name and prefix, never its secret', async () => {
    const user = await newUser();
    const created = await send(address(28), CreateApiKeyDocument, { name: 'laptop' }, user.token);
    const { apiKey, secret } = created.data!.createApiKey;
    keep('an API key secret', secret);
    const keyDetails = { apiKeyId: apiKey.id, name: 'laptop', prefix: apiKey.prefix };
    expect((await entriesAbout(user.id))[0]).toMatchObject({
      action: 'API_KEY_CREATED',
      actorId: user.id,
      targetUserId: user.id,
      ip: address(28),
      details: keyDetails,
    });

    // An admin revoking someone's key is the actor; the key's owner is the target.
    expect((await send(address(29), RevokeApiKeyDocument, { id: apiKey.id }, admin.token)).data?.revokeApiKey).toBe(true);
    expect((await entriesAbout(user.id))[0]).toMatchObject({
      action: 'API_KEY_REVOKED',
      actorId: admin.id,
      targetUserId: user.id,
      ip: address(29),
      details: keyDetails,
    });
    const count = (await entriesAbout(user.id)).length;
    expect((await gateway.gql(RevokeApiKeyDocument, { id: apiKey.id }, user.token)).data?.revokeApiKey).toBe(false);
    expect(await entriesAbout(user.id)).toHaveLength(count);
  });

  it('records a change made over the WebSocket with the socket’s client address too', async () => {
    const user = await newUser();
    const { events, error } = await gateway.ws(user.token).collect(CreateApiKeyDocument, { name: 'over the socket' });
    expect(error).toBeNull();
    keep('an API key secret made over the socket', events[0].createApiKey.secret);
    expect((await entriesAbout(user.id))[0]).toMatchObject({ action: 'API_KEY_CREATED', actorId: user.id, ip: '127.0.0.1' });
  });

  it('REFRESH_REUSE_DETECTED: no actor (it may be a thief), the session’s user as target; a plain rotation records nothing', async () => {
    const user = await newUser();
    const rotated = await send(address(30), RefreshDocument, { refreshToken: user.refreshToken });
    keep('a rotated access token', rotated.data!.refresh.accessToken);
    keep('a rotated refresh token', rotated.data!.refresh.refreshToken);
    expect((await entriesAbout(user.id)).map((entry) => entry.action)).toEqual(['LOGIN', 'USER_CREATED']);

    onlyError(await send(address(31), RefreshDocument, { refreshToken: user.refreshToken }), 'UNAUTHENTICATED');
    expect((await entriesAbout(user.id))[0]).toMatchObject({
      action: 'REFRESH_REUSE_DETECTED',
      actorId: null,
      targetUserId: user.id,
      ip: address(31),
      details: null,
    });
  });

  it('a change that fails writes no entry, even when it fails inside its transaction', async () => {
    const user = await newUser();
    const taken = await newUser();
    const before = await entriesAbout(user.id);
    // Refused before the transaction…
    onlyError(await gateway.gql(UpdateUserDocument, { id: user.id, input: { email: 'not-an-email' } }, admin.token), 'BAD_USER_INPUT');
    onlyError(await gateway.gql(UpdateUserDocument, { id: user.id, input: { tokenLimit: -1 } }, admin.token), 'BAD_USER_INPUT');
    // …and by the unique index, inside it, after its entry was written: both roll back together.
    onlyError(await gateway.gql(UpdateUserDocument, { id: user.id, input: { email: taken.email, disabled: true } }, admin.token), 'BAD_USER_INPUT');
    expect(await entriesAbout(user.id)).toEqual(before);
    expect((await gateway.gql(LoginDocument, { email: user.email, password: user.password })).errors).toBeUndefined();

    const createdBefore = dataOf(await gateway.gql(AuditLogDocument, { action: 'USER_CREATED', first: 500 }, admin.token), 'auditLog').auditLog.nodes;
    const duplicate = await gateway.gql(CreateUserDocument, { input: { email: taken.email, password: keep('a refused password', strongPassword()) } }, admin.token);
    onlyError(duplicate, 'BAD_USER_INPUT');
    const createdAfter = dataOf(await gateway.gql(AuditLogDocument, { action: 'USER_CREATED', first: 500 }, admin.token), 'auditLog').auditLog.nodes;
    expect(createdAfter).toEqual(createdBefore);
  });

  it('holds no password, hash, token or API key secret in any entry', async () => {
    // One of each action of this file's own, so the search has something to find if anything leaked.
    const user = await newUser();
    const other = keepSignedIn(await signIn(gateway, user.email, user.password));
    onlyError(await gateway.gql(LoginDocument, { email: user.email, password: keep('a wrong password', strongPassword()) }), 'UNAUTHENTICATED');
    const key = dataOf(await gateway.gql(CreateApiKeyDocument, { name: 'search' }, user.token), 'createApiKey').createApiKey;
    keep('an API key secret', key.secret);
    await gateway.gql(RevokeApiKeyDocument, { id: key.apiKey.id }, user.token);
    const rotated = dataOf(await gateway.gql(RefreshDocument, { refreshToken: other.refreshToken }), 'refresh').refresh;
    keep('a rotated refresh token', rotated.refreshToken);
    keep('a rotated access token', rotated.accessToken);
    onlyError(await gateway.gql(RefreshDocument, { refreshToken: other.refreshToken }), 'UNAUTHENTICATED');
    await gateway.gql(LogoutDocument, { refreshToken: user.refreshToken });
    const reset = keep('a reset password', strongPassword());
    await gateway.gql(UpdateUserDocument, { id: user.id, input: { password: reset } }, admin.token);
    const again = keepSignedIn(await signIn(gateway, user.email, reset));
    const newPassword = keep('a new password', strongPassword());
    expect((await gateway.gql(ChangePasswordDocument, { currentPassword: reset, newPassword }, again.token)).data?.changePassword).toBe(true);

    // What the database holds that is as secret: the hashes of passwords, refresh tokens and keys.
    for (const [table, column] of [['users', 'password_hash'], ['refresh_sessions', 'token_hash'], ['api_keys', 'key_hash']] as const) {
      for (const row of await sql<Record<string, string>>(gateway.databaseUrl, `select ${column} as value from ${table}`)) {
        keep(`${table}.${column}`, row.value);
      }
    }

    const stored = (await sql<{ text: string }>(gateway.databaseUrl, 'select row_to_json(a)::text as text from audit_log a')).map((row) => row.text);
    const served = JSON.stringify(dataOf(await gateway.gql(AuditLogDocument, { first: 500 }, admin.token), 'auditLog').auditLog.nodes);
    expect(stored.length).toBeGreaterThan(20);
    expect(served).toContain('API_KEY_REVOKED');
    const leaks: string[] = [];
    for (const text of [...stored, served]) {
      for (const secret of secrets) if (text.includes(secret.value)) leaks.push(`${secret.label} in ${text.slice(0, 200)}`);
      // Whatever their origin: a JWT, a refresh token, a whole API key, an argon2 hash.
      for (const shape of [/eyJ[\w-]{10,}/, /rt_[\w-]{20,}/, /sk-[\w-]{8,}/, /\$argon2/]) if (shape.test(text)) leaks.push(`${String(shape)} in ${text.slice(0, 200)}`);
    }
    expect(leaks).toEqual([]);
  });
});
