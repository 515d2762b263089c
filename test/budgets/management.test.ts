// Teams and API keys' budgets as admins and users manage them: what each may do, and bad input
// that is refused with nothing changed.
import {
  ApiKeyBudgetsDocument,
  ApiKeysDocument,
  CreateApiKeyDocument,
  CreateTeamDocument,
  CreateUserDocument,
  MyTeamDocument,
  MyTeamMembersDocument,
  RevokeApiKeyDocument,
  TeamDocument,
  TeamsDocument,
  UpdateApiKeyDocument,
  UpdateTeamDocument,
  UpdateUserDocument,
  UserTeamDocument,
  UsersDocument,
} from '../generated/graphql';
import { createApiKey, createUser, dataOf, onlyError, strongPassword, uniqueEmail, type SignedIn } from '../helpers/client';
import { startWithAdmin, type TestGateway } from '../helpers/server';
import { createTeam } from './support';

const UNKNOWN_ID = '00000000-0000-4000-8000-000000000000';

describe('teams and key budgets, managed', () => {
  let gateway: TestGateway;
  let admin: SignedIn;

  beforeAll(async () => {
    ({ gateway, admin } = await startWithAdmin());
  });
  afterAll(() => gateway.stop());

  const teamsNow = async (): Promise<unknown> => dataOf(await gateway.gql(TeamsDocument, {}, admin.token), 'teams').teams;

  it('creates, lists, reads and updates teams; users join and leave through createUser and updateUser', async () => {
    const created = dataOf(await gateway.gql(CreateTeamDocument, { input: { name: '  Research ', tokenLimit: 5_000, quotaPeriod: 'MONTHLY' } }, admin.token), 'createTeam');
    const research = created.createTeam;
    expect(research).toMatchObject({ name: 'Research', tokenLimit: 5_000, quotaPeriod: 'MONTHLY' });
    const other = await createTeam(gateway, admin.token, { name: 'Apple pickers' });
    const listed = dataOf(await gateway.gql(TeamsDocument, {}, admin.token), 'teams').teams;
    expect(listed.map((team) => team.name)).toEqual(expect.arrayContaining(['Research', 'Apple pickers']));

    const empty = dataOf(await gateway.gql(TeamDocument, { id: research.id }, admin.token), 'team').team;
    expect(empty).toMatchObject({ members: [], usage: { used: 0, reserved: 0, limit: 5_000, remaining: 5_000 } });
    expect(empty?.usage.periodEnd).not.toBeNull();
    expect(dataOf(await gateway.gql(TeamDocument, { id: UNKNOWN_ID }, admin.token), 'team').team).toBeNull();

    // Joining at creation, and by update.
    const ana = await createUser(gateway, admin.token, { email: uniqueEmail('ana'), teamId: research.id });
    const bo = await createUser(gateway, admin.token, { email: uniqueEmail('bo') });
    expect(dataOf(await gateway.gql(UserTeamDocument, { id: bo.id }, admin.token), 'user').user?.team).toBeNull();
    dataOf(await gateway.gql(UpdateUserDocument, { id: bo.id, input: { teamId: research.id } }, admin.token), 'updateUser');
    const members = dataOf(await gateway.gql(TeamDocument, { id: research.id }, admin.token), 'team').team?.members;
    expect(members?.map((member) => member.id).sort()).toEqual([ana.id, bo.id].sort());
    // A member sees their own team, and its usage.
    const mine = dataOf(await gateway.gql(MyTeamDocument, {}, ana.token), 'me.team').me.team;
    expect(mine).toMatchObject({ id: research.id, name: 'Research', usage: { used: 0, limit: 5_000 } });

    // One team at a time: moving Bo takes him out of Research; null takes him out of any.
    dataOf(await gateway.gql(UpdateUserDocument, { id: bo.id, input: { teamId: other.id } }, admin.token), 'updateUser');
    expect(dataOf(await gateway.gql(UserTeamDocument, { id: bo.id }, admin.token), 'user').user?.team).toEqual({ id: other.id, name: 'Apple pickers' });
    expect(dataOf(await gateway.gql(TeamDocument, { id: research.id }, admin.token), 'team').team?.members.map((member) => member.id)).toEqual([ana.id]);
    dataOf(await gateway.gql(UpdateUserDocument, { id: bo.id, input: { teamId: null } }, admin.token), 'updateUser');
    expect(dataOf(await gateway.gql(MyTeamDocument, {}, bo.token), 'me').me.team).toBeNull();
    // Other changes to a user leave the team alone.
    dataOf(await gateway.gql(UpdateUserDocument, { id: ana.id, input: { tokenLimit: 100 } }, admin.token), 'updateUser');
    expect(dataOf(await gateway.gql(UserTeamDocument, { id: ana.id }, admin.token), 'user').user?.team?.id).toBe(research.id);

    const renamed = dataOf(await gateway.gql(UpdateTeamDocument, { id: research.id, input: { name: 'Research & Development', tokenLimit: null } }, admin.token), 'updateTeam');
    expect(renamed.updateTeam).toMatchObject({ id: research.id, name: 'Research & Development', tokenLimit: null, quotaPeriod: 'MONTHLY' });
    const unlimited = dataOf(await gateway.gql(TeamDocument, { id: research.id }, admin.token), 'team').team?.usage;
    expect(unlimited).toMatchObject({ limit: null, remaining: null });
  });

  it('refuses a bad team with BAD_USER_INPUT and changes nothing', async () => {
    await createTeam(gateway, admin.token, { name: 'Taken name' });
    const taken = await createTeam(gateway, admin.token);
    const before = await teamsNow();
    for (const [label, input, field] of [
      ['empty name', { name: '' }, 'name'],
      ['blank name', { name: '   ' }, 'name'],
      ['long name', { name: 'x'.repeat(101) }, 'name'],
      ['taken name', { name: 'Taken name' }, 'name'],
      ['taken name, other case', { name: 'TAKEN NAME' }, 'name'],
      ['negative limit', { name: 'Negative', tokenLimit: -1 }, 'tokenLimit'],
    ] as const) {
      const result = await gateway.gql(CreateTeamDocument, { input }, admin.token);
      expect([label, onlyError(result, 'BAD_USER_INPUT').extensions?.field]).toEqual([label, field]);
    }
    for (const [label, id, input, field] of [
      ['unknown id', UNKNOWN_ID, { name: 'Ghost' }, 'id'],
      ['malformed id', 'not-an-id', { name: 'Ghost' }, 'id'],
      ['taken name', taken.id, { name: 'taken NAME' }, 'name'],
      ['empty name', taken.id, { name: '' }, 'name'],
      ['negative limit', taken.id, { tokenLimit: -5 }, 'tokenLimit'],
    ] as const) {
      const result = await gateway.gql(UpdateTeamDocument, { id, input }, admin.token);
      expect([label, onlyError(result, 'BAD_USER_INPUT').extensions?.field]).toEqual([label, field]);
    }
    expect(await teamsNow()).toEqual(before);
  });

  it('refuses a teamId that names no team, creating or changing no user', async () => {
    const team = await createTeam(gateway, admin.token);
    const email = uniqueEmail('teamless');
    for (const teamId of [UNKNOWN_ID, 'not-an-id']) {
      const result = await gateway.gql(CreateUserDocument, { input: { email, password: strongPassword(), teamId } }, admin.token);
      expect(onlyError(result, 'BAD_USER_INPUT').extensions?.field).toBe('teamId');
    }
    expect(dataOf(await gateway.gql(UsersDocument, { search: email }, admin.token), 'users').users.totalCount).toBe(0);

    const member = await createUser(gateway, admin.token, { teamId: team.id });
    const moved = await gateway.gql(UpdateUserDocument, { id: member.id, input: { teamId: UNKNOWN_ID, tokenLimit: 7 } }, admin.token);
    expect(onlyError(moved, 'BAD_USER_INPUT').extensions?.field).toBe('teamId');
    const after = dataOf(await gateway.gql(UserTeamDocument, { id: member.id }, admin.token), 'user').user;
    expect(after?.team?.id).toBe(team.id);
  });

  it('keeps teams an admin matter: a member sees their team but not its members, and nobody moves themselves', async () => {
    const team = await createTeam(gateway, admin.token);
    const member = await createUser(gateway, admin.token, { teamId: team.id });
    const before = await teamsNow();
    for (const [label, result] of [
      ['teams', await gateway.gql(TeamsDocument, {}, member.token)],
      ['team', await gateway.gql(TeamDocument, { id: team.id }, member.token)],
      ['createTeam', await gateway.gql(CreateTeamDocument, { input: { name: 'Mine' } }, member.token)],
      ['updateTeam', await gateway.gql(UpdateTeamDocument, { id: team.id, input: { tokenLimit: null } }, member.token)],
      ['members of my team', await gateway.gql(MyTeamMembersDocument, {}, member.token)],
    ] as const) {
      expect([label, result.errors?.map((error) => error.extensions?.code)]).toEqual([label, ['FORBIDDEN']]);
    }
    expect(await teamsNow()).toEqual(before);

    // Nobody changes their own team, an admin included.
    const self = await gateway.gql(UpdateUserDocument, { id: admin.id, input: { teamId: team.id } }, admin.token);
    onlyError(self, 'FORBIDDEN');
    expect(dataOf(await gateway.gql(MyTeamDocument, {}, admin.token), 'me').me.team).toBeNull();
  });

  it("gives a key a budget at creation and by updateApiKey, its owner's or an admin's; refuses bad budgets and other people's keys", async () => {
    const owner = await createUser(gateway, admin.token);
    const stranger = await createUser(gateway, admin.token);
    const created = dataOf(await gateway.gql(CreateApiKeyDocument, { name: 'ci', tokenLimit: 900, quotaPeriod: 'DAILY' }, owner.token), 'createApiKey');
    expect(created.createApiKey.apiKey).toMatchObject({ name: 'ci', tokenLimit: 900, quotaPeriod: 'DAILY' });
    const plain = await createApiKey(gateway, owner.token, 'laptop');
    const keys = dataOf(await gateway.gql(ApiKeyBudgetsDocument, {}, owner.token), 'apiKeys').apiKeys;
    expect(keys.find((key) => key.id === plain.id)).toMatchObject({ tokenLimit: null, quotaPeriod: 'NONE', usage: { used: 0, limit: null, remaining: null } });
    expect(keys.find((key) => key.id === created.createApiKey.apiKey.id)?.usage).toMatchObject({ used: 0, limit: 900, remaining: 900 });

    const updated = dataOf(await gateway.gql(UpdateApiKeyDocument, { id: plain.id, input: { tokenLimit: 50, quotaPeriod: 'MONTHLY' } }, owner.token), 'updateApiKey');
    expect(updated.updateApiKey).toMatchObject({ name: 'laptop', tokenLimit: 50, quotaPeriod: 'MONTHLY', usage: { limit: 50, remaining: 50 } });
    // An admin may change anyone's key, as they may revoke it.
    const byAdmin = dataOf(await gateway.gql(UpdateApiKeyDocument, { id: plain.id, input: { name: 'old laptop', tokenLimit: null } }, admin.token), 'updateApiKey');
    expect(byAdmin.updateApiKey).toMatchObject({ name: 'old laptop', tokenLimit: null, quotaPeriod: 'MONTHLY' });

    const keysBefore = dataOf(await gateway.gql(ApiKeysDocument, {}, owner.token), 'apiKeys').apiKeys;
    // Bad budgets, unknown keys, someone else's key.
    onlyError(await gateway.gql(CreateApiKeyDocument, { name: 'negative', tokenLimit: -1 }, owner.token), 'BAD_USER_INPUT');
    for (const [label, id, input, token, code] of [
      ['negative limit', plain.id, { tokenLimit: -1 }, owner.token, 'BAD_USER_INPUT'],
      ['unknown key', UNKNOWN_ID, { tokenLimit: 5 }, owner.token, 'BAD_USER_INPUT'],
      ["someone else's key", plain.id, { tokenLimit: 1_000_000 }, stranger.token, 'FORBIDDEN'],
    ] as const) {
      const result = await gateway.gql(UpdateApiKeyDocument, { id, input }, token);
      expect([label, result.errors?.map((error) => error.extensions?.code)]).toEqual([label, [code]]);
    }
    // A revoked key keeps the budget it had.
    dataOf(await gateway.gql(RevokeApiKeyDocument, { id: created.createApiKey.apiKey.id }, owner.token), 'revokeApiKey');
    onlyError(await gateway.gql(UpdateApiKeyDocument, { id: created.createApiKey.apiKey.id, input: { tokenLimit: null } }, owner.token), 'BAD_USER_INPUT');
    const keysAfter = dataOf(await gateway.gql(ApiKeysDocument, {}, owner.token), 'apiKeys').apiKeys;
    expect(keysAfter.map(({ revokedAt: _revokedAt, ...key }) => key)).toEqual(keysBefore.map(({ revokedAt: _revokedAt, ...key }) => key));
    expect(keysAfter.find((key) => key.id === created.createApiKey.apiKey.id)).toMatchObject({ tokenLimit: 900, quotaPeriod: 'DAILY' });
  });
});
