// A team's and a key's usage as they are watched: live (usageUpdated with teamId, the team's
// and key's figures on every event) and in the history (usage, usageSummary by team and key).
import { UsageHistoryDocument, UsageSummaryDocument, UsageUpdatedDocument } from '../generated/graphql';
import { chat, codeOf, createApiKey, createUser, dataOf, onlyError, sleep, until, usageOf, type SignedIn, type WsClient } from '../helpers/client';
import { startWithAdmin, type TestGateway } from '../helpers/server';
import { busSubscribers, requestIds, usageFeed } from '../usage/support';
import { createTeam, recordedSum, teamUsageOf } from './support';

const UNKNOWN_ID = '00000000-0000-4000-8000-000000000000';

describe("a team's and a key's usage, live and in the history", () => {
  let gateway: TestGateway;
  let admin: string;
  let team: { id: string };
  let ana: SignedIn;
  let bo: SignedIn;
  let outsider: SignedIn;
  let boKey: { id: string; secret: string };

  beforeAll(async () => {
    ({ gateway, admin: { token: admin } } = await startWithAdmin({ simulator: { timeToFirstTokenMs: 0, interTokenLatencyMs: 0 } }));
    team = await createTeam(gateway, admin, { tokenLimit: 100_000 });
    [ana, bo, outsider] = await Promise.all([
      createUser(gateway, admin, { teamId: team.id }),
      createUser(gateway, admin, { teamId: team.id, tokenLimit: 50_000 }),
      createUser(gateway, admin),
    ]);
    boKey = await createApiKey(gateway, bo.token, 'bo-ci', { tokenLimit: 20_000 });
  });
  afterAll(() => gateway.stop());

  const ready = async (...clients: WsClient[]): Promise<void> => {
    await until(() => clients.every((client) => client.acknowledged), 5_000, 'connection_ack');
    await sleep(250);
  };
  const teamFeed = (client: WsClient, teamId: string) => client.watch(UsageUpdatedDocument, { teamId }, { pick: (data) => data.usageUpdated });

  it("gives an admin watching a team its members' events, each with the team's figures after it; a member's own events carry them too", async () => {
    const adminClient = gateway.ws(admin);
    const watching = teamFeed(adminClient, team.id);
    const anaClient = gateway.ws(ana.token);
    const anaFeed = usageFeed(anaClient);
    await ready(adminClient, anaClient);

    const fromAna = await chat(gateway, ana.token, 'From Ana.');
    const fromOutsider = await chat(gateway, outsider.token, 'From outside.');
    const fromBo = await chat(gateway, boKey.secret, 'From Bo, with his key.');
    await until(() => watching.events.length >= 2 && anaFeed.events.length >= 1, 5_000, "the team's events");
    await sleep(300); // a stray event (the outsider's) would arrive by now
    expect(requestIds(watching)).toEqual([fromAna, fromBo]);
    expect(requestIds(watching)).not.toContain(fromOutsider);

    const teamUsage = await teamUsageOf(gateway, ana.token);
    const [anaEvent, boEvent] = watching.events;
    expect(anaEvent).toMatchObject({ userId: ana.id, teamId: team.id, apiKeyId: null, apiKeyUsed: null, apiKeyRemaining: null });
    expect(boEvent).toMatchObject({ userId: bo.id, teamId: team.id, apiKeyId: boKey.id, teamUsed: teamUsage.used, teamRemaining: teamUsage.remaining });
    expect(boEvent.teamUsed).toBe((anaEvent.teamUsed ?? 0) + boEvent.totalTokens);
    expect(boEvent.apiKeyUsed).toBe(boEvent.totalTokens);
    expect(boEvent.apiKeyRemaining).toBe(20_000 - boEvent.totalTokens);
    expect(boEvent.used).toBe((await usageOf(gateway, bo.token)).used);
    // Ana's own feed: her event only, with the team's figures as they were after it.
    expect(anaFeed.events).toEqual([anaEvent]);
    expect(teamUsage.used).toBe(await recordedSum(gateway.databaseUrl, 'team_id', team.id));

    // Once the sockets are gone, the team's subscription does not stay registered.
    await Promise.all([adminClient.dispose(), anaClient.dispose()]);
    await until(() => busSubscribers(gateway) === 0, 3_000, 'the bus to have no subscribers');
  });

  it('refuses teamId to a non-admin (FORBIDDEN), and an unknown team or teamId with userId (BAD_USER_INPUT)', async () => {
    const member = gateway.ws(ana.token);
    const refused = await member.collect(UsageUpdatedDocument, { teamId: team.id });
    expect(codeOf(refused.error)).toBe('FORBIDDEN');
    const byKey = await gateway.ws(boKey.secret).collect(UsageUpdatedDocument, { teamId: team.id });
    expect(codeOf(byKey.error)).toBe('FORBIDDEN');
    const adminClient = gateway.ws(admin);
    expect(codeOf((await adminClient.collect(UsageUpdatedDocument, { teamId: UNKNOWN_ID })).error)).toBe('BAD_USER_INPUT');
    expect(codeOf((await adminClient.collect(UsageUpdatedDocument, { teamId: team.id, userId: ana.id })).error)).toBe('BAD_USER_INPUT');
  });

  it('sums and lists by team and by key, to the records, for those who may see them', async () => {
    // One more of Bo's requests without the key, so his records are of two kinds.
    await chat(gateway, bo.token, 'Bo, with his access token.');
    const url = gateway.databaseUrl;
    const teamTotal = await recordedSum(url, 'team_id', team.id);
    const keyTotal = await recordedSum(url, 'api_key_id', boKey.id);

    const byMember = dataOf(await gateway.gql(UsageSummaryDocument, { teamId: team.id, groupBy: 'USER' }, admin), 'summary').usageSummary;
    expect(byMember.map((bucket) => bucket.userId).sort()).toEqual([ana.id, bo.id].sort());
    expect(byMember.every((bucket) => bucket.key === bucket.userId)).toBe(true);
    expect(byMember.reduce((sum, bucket) => sum + bucket.chargedTokens, 0)).toBe(teamTotal);
    expect(byMember.find((bucket) => bucket.userId === ana.id)?.chargedTokens).toBe((await usageOf(gateway, ana.token)).used);

    // Bo's own records by key: the key's, and the ones made with no key.
    const byKey = dataOf(await gateway.gql(UsageSummaryDocument, { groupBy: 'API_KEY' }, bo.token), 'summary').usageSummary;
    expect(byKey.map((bucket) => [bucket.key, bucket.apiKeyId]).sort()).toEqual([[boKey.id, boKey.id], ['none', null]].sort());
    expect(byKey.find((bucket) => bucket.apiKeyId === boKey.id)?.chargedTokens).toBe(keyTotal);
    const byTeam = dataOf(await gateway.gql(UsageSummaryDocument, { userId: outsider.id, groupBy: 'TEAM' }, admin), 'summary').usageSummary;
    expect(byTeam.map((bucket) => [bucket.key, bucket.teamId])).toEqual([['none', null]]);
    const keyDays = dataOf(await gateway.gql(UsageSummaryDocument, { apiKeyId: boKey.id, groupBy: 'DAY' }, bo.token), 'summary').usageSummary;
    expect(keyDays.reduce((sum, bucket) => sum + bucket.chargedTokens, 0)).toBe(keyTotal);

    const keyRecords = dataOf(await gateway.gql(UsageHistoryDocument, { apiKeyId: boKey.id }, bo.token), 'history').usage.edges.map((edge) => edge.node);
    expect(keyRecords.length).toBeGreaterThan(0);
    expect(keyRecords.every((record) => record.apiKeyId === boKey.id && record.teamId === team.id && record.userId === bo.id)).toBe(true);
    const teamRecords = dataOf(await gateway.gql(UsageHistoryDocument, { teamId: team.id }, admin), 'history').usage.edges.map((edge) => edge.node);
    expect(teamRecords.reduce((sum, record) => sum + record.chargedTokens, 0)).toBe(teamTotal);

    // A team's history is the admins'; a key's its owner's and the admins'.
    for (const [label, result, code] of [
      ['team summary, member', await gateway.gql(UsageSummaryDocument, { teamId: team.id, groupBy: 'DAY' }, ana.token), 'FORBIDDEN'],
      ['team history, member', await gateway.gql(UsageHistoryDocument, { teamId: team.id }, ana.token), 'FORBIDDEN'],
      ["someone else's key", await gateway.gql(UsageHistoryDocument, { apiKeyId: boKey.id }, ana.token), 'FORBIDDEN'],
      ["someone else's key, summary", await gateway.gql(UsageSummaryDocument, { apiKeyId: boKey.id, groupBy: 'MODEL' }, ana.token), 'FORBIDDEN'],
      ['unknown key', await gateway.gql(UsageHistoryDocument, { apiKeyId: UNKNOWN_ID }, bo.token), 'BAD_USER_INPUT'],
      ['malformed team id', await gateway.gql(UsageSummaryDocument, { teamId: 'team', groupBy: 'DAY' }, admin), 'BAD_USER_INPUT'],
    ] as const) {
      expect([label, onlyError(result, code).extensions?.code]).toEqual([label, code]);
    }
    const asAdmin = dataOf(await gateway.gql(UsageSummaryDocument, { apiKeyId: boKey.id, groupBy: 'MODEL' }, admin), 'summary').usageSummary;
    expect(asAdmin.reduce((sum, bucket) => sum + bucket.chargedTokens, 0)).toBe(keyTotal);
  });
});
