import {
  ApiKeysDocument,
  ChangePasswordDocument,
  CreateApiKeyDocument,
  MeDocument,
  RevokeApiKeyDocument,
  UpdateUserDocument,
  UsersDocument,
} from '../generated/graphql';
import { sql } from '../helpers/database';
import { startWithAdmin, type TestGateway } from '../helpers/server';
import { createUser, onlyError, sleep, strongPassword, type SignedIn } from '../helpers/client';
import { expectWsRefused } from './support';

describe('API keys', () => {
  let gateway: TestGateway;
  let admin: SignedIn;

  beforeAll(async () => {
    ({ gateway, admin } = await startWithAdmin());
  });
  afterAll(() => gateway.stop());

  async function newKey(owner: SignedIn, name = 'laptop'): Promise<{ id: string; secret: string; prefix: string }> {
    const result = await gateway.gql(CreateApiKeyDocument, { name }, owner.token);
    expect(result.errors).toBeUndefined();
    const { secret, apiKey } = result.data!.createApiKey;
    return { id: apiKey.id, secret, prefix: apiKey.prefix };
  }

  it('createApiKey returns an sk- secret once; apiKeys lists it by prefix, never the secret', async () => {
    const user = await createUser(gateway, admin.token);
    const created = await gateway.gql(CreateApiKeyDocument, { name: '  ci runner ' }, user.token);
    expect(created.errors).toBeUndefined();
    const { secret, apiKey } = created.data!.createApiKey;
    expect(secret).toMatch(/^sk-[A-Za-z0-9_-]{40,}$/);
    expect(apiKey).toMatchObject({ name: 'ci runner', revokedAt: null, lastUsedAt: null });
    expect(secret.startsWith(apiKey.prefix)).toBe(true);
    expect(apiKey.prefix.length).toBeLessThan(secret.length / 2);

    const listed = await gateway.gql(ApiKeysDocument, {}, user.token);
    expect(listed.data?.apiKeys).toEqual([apiKey]);
    expect(JSON.stringify(listed)).not.toContain(secret);
    // Stored hashed: the database does not hold the secret either.
    const rows = await sql(gateway.databaseUrl, 'select * from api_keys where id = $1', [apiKey.id]);
    expect(JSON.stringify(rows)).not.toContain(secret.slice(apiKey.prefix.length));

    // Two keys never share a secret.
    const second = await newKey(user, 'second');
    expect(second.secret).not.toBe(secret);
    expect((await gateway.gql(ApiKeysDocument, {}, user.token)).data?.apiKeys.map((key) => key.id).sort()).toEqual(
      [apiKey.id, second.id].sort(),
    );
  });

  it('refuses a key without a name', async () => {
    const user = await createUser(gateway, admin.token);
    const result = await gateway.gql(CreateApiKeyDocument, { name: '   ' }, user.token);
    expect(onlyError(result, 'BAD_USER_INPUT').extensions?.field).toBe('name');
  });

  it('authenticates me over HTTP and over graphql-ws, as its owner, and records its use', async () => {
    const user = await createUser(gateway, admin.token);
    const key = await newKey(user);

    const overHttp = await gateway.gql(MeDocument, {}, key.secret);
    expect(overHttp.errors).toBeUndefined();
    expect(overHttp.data?.me).toMatchObject({ id: user.id, email: user.email });

    const overWs = await gateway.ws(key.secret).collect(MeDocument, {});
    expect(overWs.error).toBeNull();
    expect(overWs.events.map((event) => event.me)).toHaveLength(1);
    expect(overWs.events[0].me).toMatchObject({ id: user.id, email: user.email });

    // The key carries its owner's role, no more.
    onlyError(await gateway.gql(UsersDocument, {}, key.secret), 'FORBIDDEN');

    // lastUsedAt is written off the request's path: give it a moment.
    let lastUsedAt: string | null = null;
    for (let i = 0; i < 20 && lastUsedAt === null; i += 1) {
      lastUsedAt = (await gateway.gql(ApiKeysDocument, {}, user.token)).data?.apiKeys[0].lastUsedAt ?? null;
      if (lastUsedAt === null) await sleep(50);
    }
    expect(lastUsedAt).not.toBeNull();
  });

  it('records its use with one write for a run of requests, not one per request', async () => {
    const user = await createUser(gateway, admin.token);
    const key = await newKey(user);
    // A statement-level trigger fires for every UPDATE, even one whose WHERE matches no row.
    await sql(gateway.databaseUrl, 'create table if not exists test_api_key_updates (at timestamptz not null default now())');
    await sql(
      gateway.databaseUrl,
      `create or replace function test_count_api_key_update() returns trigger language plpgsql as
         $$ begin insert into test_api_key_updates default values; return null; end $$`,
    );
    await sql(gateway.databaseUrl, 'drop trigger if exists test_api_key_updates on api_keys');
    await sql(gateway.databaseUrl, 'create trigger test_api_key_updates after update on api_keys for each statement execute function test_count_api_key_update()');
    try {
      for (let i = 0; i < 12; i += 1) expect((await gateway.gql(MeDocument, {}, key.secret)).errors).toBeUndefined();
      let written: string | null = null;
      for (let i = 0; i < 20 && written === null; i += 1) {
        written = (await gateway.gql(ApiKeysDocument, {}, user.token)).data?.apiKeys[0].lastUsedAt ?? null;
        if (written === null) await sleep(50);
      }
      expect(written).not.toBeNull();
      const [{ updates }] = await sql<{ updates: string }>(gateway.databaseUrl, 'select count(*) as updates from test_api_key_updates');
      expect(Number(updates)).toBe(1);
    } finally {
      await sql(gateway.databaseUrl, 'drop trigger test_api_key_updates on api_keys');
    }
  });

  it('stops working once revoked, over HTTP and graphql-ws; revoking again answers false', async () => {
    const user = await createUser(gateway, admin.token);
    const key = await newKey(user);
    const other = await newKey(user, 'other');
    expect((await gateway.gql(MeDocument, {}, key.secret)).errors).toBeUndefined();

    const revoked = await gateway.gql(RevokeApiKeyDocument, { id: key.id }, user.token);
    expect(revoked.data?.revokeApiKey).toBe(true);
    onlyError(await gateway.gql(MeDocument, {}, key.secret), 'UNAUTHENTICATED');
    await expectWsRefused(gateway.ws(key.secret));
    expect((await gateway.gql(RevokeApiKeyDocument, { id: key.id }, user.token)).data?.revokeApiKey).toBe(false);

    const listed = (await gateway.gql(ApiKeysDocument, {}, user.token)).data?.apiKeys ?? [];
    expect(listed.find((entry) => entry.id === key.id)?.revokedAt).toEqual(expect.any(String));
    // The user's other key is unaffected.
    expect((await gateway.gql(MeDocument, {}, other.secret)).data?.me.id).toBe(user.id);
  });

  it('dies when its user is disabled', async () => {
    const user = await createUser(gateway, admin.token);
    const key = await newKey(user);
    expect((await gateway.gql(MeDocument, {}, key.secret)).errors).toBeUndefined();
    await gateway.gql(UpdateUserDocument, { id: user.id, input: { disabled: true } }, admin.token);
    onlyError(await gateway.gql(MeDocument, {}, key.secret), 'UNAUTHENTICATED');
    await expectWsRefused(gateway.ws(key.secret));
  });

  it('refuses to revoke someone else’s key (FORBIDDEN), which keeps working', async () => {
    const owner = await createUser(gateway, admin.token);
    const stranger = await createUser(gateway, admin.token);
    const key = await newKey(owner);

    onlyError(await gateway.gql(RevokeApiKeyDocument, { id: key.id }, stranger.token), 'FORBIDDEN');
    // Nor with the stranger's own API key.
    const strangerKey = await newKey(stranger);
    onlyError(await gateway.gql(RevokeApiKeyDocument, { id: key.id }, strangerKey.secret), 'FORBIDDEN');
    // The stranger does not see it either.
    expect((await gateway.gql(ApiKeysDocument, {}, stranger.token)).data?.apiKeys.map((entry) => entry.id)).toEqual([strangerKey.id]);
    expect((await gateway.gql(MeDocument, {}, key.secret)).data?.me.id).toBe(owner.id);

    const unknown = await gateway.gql(RevokeApiKeyDocument, { id: '00000000-0000-4000-8000-000000000000' }, stranger.token);
    onlyError(unknown, 'BAD_USER_INPUT');
  });

  it('refuses anonymous callers', async () => {
    onlyError(await gateway.gql(CreateApiKeyDocument, { name: 'x' }), 'UNAUTHENTICATED');
    onlyError(await gateway.gql(ApiKeysDocument, {}), 'UNAUTHENTICATED');
    onlyError(await gateway.gql(RevokeApiKeyDocument, { id: '00000000-0000-4000-8000-000000000000' }), 'UNAUTHENTICATED');
    onlyError(await gateway.gql(MeDocument, {}, 'sk-not-a-real-key'), 'UNAUTHENTICATED');
  });

  it('survives a password change (keys are not sessions)', async () => {
    const user = await createUser(gateway, admin.token);
    const key = await newKey(user);
    const changed = await gateway.gql(ChangePasswordDocument, { currentPassword: user.password, newPassword: strongPassword() }, user.token);
    expect(changed.errors).toBeUndefined();
    onlyError(await gateway.gql(MeDocument, {}, user.token), 'UNAUTHENTICATED');
    expect((await gateway.gql(MeDocument, {}, key.secret)).data?.me.id).toBe(user.id);
  });
});
