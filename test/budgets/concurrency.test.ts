// Invariant 3 at every level under load: many requests at once, from the members of one team,
// with access tokens and with keys of their own, on two gateway instances sharing one database.
// No level's `used + reserved` ever passes its limit, each level's `used` is the sum of its
// records, and the upstream sees exactly the requests that were accepted.
import { Client } from 'pg';
import { startSimulator, type Simulator } from '../../src/simulator';
import { ChatDocument } from '../generated/graphql';
import { codeOf, createApiKey, createUser, signInAdmin, type SignedIn } from '../helpers/client';
import { sql } from '../helpers/database';
import { startTestGateway, type TestGateway } from '../helpers/server';
import { createTeam, levelLedger, recordedSum } from './support';

const CALLS = 60;
const TEAM_LIMIT = 1_500;
const USER_LIMITS = [null, 600, null];
const KEY_LIMITS = [200, null, 150];

interface Level {
  readonly label: string;
  readonly table: string;
  readonly key: string;
  readonly id: string;
  readonly limit: number | null;
  /** The column of usage_records naming it. */
  readonly column: 'team_id' | 'user_id' | 'api_key_id';
}

describe('budgets at three levels, under load, on two instances', () => {
  let simulator: Simulator;
  let a: TestGateway;
  let b: TestGateway;

  beforeAll(async () => {
    // A short context, so that a request without maxTokens holds at most ~110 tokens, not the team's whole budget.
    simulator = await startSimulator({ timeToFirstTokenMs: 5, interTokenLatencyMs: 1, maxModelLen: 128 });
    a = await startTestGateway({ simulator });
    b = await startTestGateway({ simulator, databaseUrl: a.databaseUrl });
  });
  afterAll(async () => {
    await b?.stop();
    await a?.stop();
    await simulator?.stop();
  });

  it("never lets a team, a user or a key overspend, and each one's used is the sum of its records", async () => {
    const admin = (await signInAdmin(a)).token;
    const team = await createTeam(a, admin, { tokenLimit: TEAM_LIMIT, quotaPeriod: 'MONTHLY' });
    const members: { user: SignedIn; key: { id: string; secret: string } }[] = [];
    for (const [index, tokenLimit] of USER_LIMITS.entries()) {
      const user = await createUser(index % 2 === 0 ? a : b, admin, { tokenLimit, teamId: team.id });
      members.push({ user, key: await createApiKey(a, user.token, `load-${index}`, { tokenLimit: KEY_LIMITS[index] }) });
    }
    const levels: Level[] = [
      { label: 'team', table: 'team_quota_accounts', key: 'team_id', id: team.id, limit: TEAM_LIMIT, column: 'team_id' },
      ...members.flatMap(({ user, key }, index): Level[] => [
        { label: `user ${index}`, table: 'quota_accounts', key: 'user_id', id: user.id, limit: USER_LIMITS[index], column: 'user_id' },
        { label: `key ${index}`, table: 'api_key_quota_accounts', key: 'api_key_id', id: key.id, limit: KEY_LIMITS[index], column: 'api_key_id' },
      ]),
    ];

    // Every level's `used + reserved`, sampled from PostgreSQL while the burst runs.
    const peaks = new Map<string, number>(levels.map((level) => [level.label, 0]));
    const watcher = new Client({ connectionString: a.databaseUrl });
    await watcher.connect();
    let running = true;
    const sampler = (async () => {
      while (running) {
        for (const level of levels) {
          const { rows } = await watcher.query<{ held: string }>(`select used + reserved as held from ${level.table} where ${level.key} = $1`, [level.id]);
          peaks.set(level.label, Math.max(peaks.get(level.label) ?? 0, Number(rows[0].held)));
        }
      }
    })();
    const before = simulator.stats.chatRequests;
    // Round robin over members, credentials (key or access token), instances and maxTokens (given or not).
    const results = await Promise.all(
      Array.from({ length: CALLS }, (_, i) => {
        const { user, key } = members[i % members.length];
        const credential = Math.floor(i / members.length) % 2 === 0 ? key.secret : user.token;
        const maxTokens = i % 4 === 3 ? null : 20;
        return (i % 2 === 0 ? a : b).gql(ChatDocument, { input: { messages: [{ role: 'USER', content: `Request ${i}: tell me something.` }], maxTokens } }, credential);
      }),
    );
    running = false;
    await sampler;
    await watcher.end();

    const accepted = results.filter((result) => result.data?.chat != null).map((result) => result.data!.chat);
    const refusals = results.filter((result) => result.data?.chat == null).map((result) => codeOf(result.errors));
    expect(accepted.length).toBeGreaterThan(0);
    expect(refusals.length).toBeGreaterThan(0);
    expect(new Set(refusals)).toEqual(new Set(['QUOTA_EXCEEDED']));
    // The team's limit was in play (the tightest for most), and every refusal names a level.
    const scopes = results.filter((result) => result.errors !== undefined).map((result) => result.errors?.[0]?.extensions?.scope);
    expect(scopes).toContain('TEAM');
    expect(scopes.every((scope) => scope === 'TEAM' || scope === 'USER' || scope === 'API_KEY')).toBe(true);
    expect(simulator.stats.chatRequests - before).toBe(accepted.length);

    const url = a.databaseUrl;
    for (const level of levels) {
      const ledger = await levelLedger(url, level.table === 'team_quota_accounts' ? 'TEAM' : level.table === 'quota_accounts' ? 'USER' : 'API_KEY', level.id);
      const recorded = await recordedSum(url, level.column, level.id);
      expect({ level: level.label, ...ledger }).toEqual({ level: level.label, used: recorded, reserved: 0 });
      if (level.limit !== null) {
        expect({ level: level.label, within: ledger.used <= level.limit, peakWithin: (peaks.get(level.label) ?? 0) <= level.limit }).toEqual({
          level: level.label,
          within: true,
          peakWithin: true,
        });
      }
    }
    // The team's used is what its members' records add up to, and what the clients were told.
    const [members_] = await sql<{ sum: string }>(url, 'select sum(charged_tokens) as sum from usage_records where user_id = any($1::uuid[])', [
      members.map(({ user }) => user.id),
    ]);
    const team_ = await levelLedger(url, 'TEAM', team.id);
    expect(Number(members_.sum)).toBe(team_.used);
    expect(accepted.reduce((sum, chat) => sum + chat.usage.totalTokens, 0)).toBe(team_.used);
    const [open] = await sql<{ n: string }>(url, 'select count(*) as n from quota_reservations');
    expect(Number(open.n)).toBe(0);
  });
});
