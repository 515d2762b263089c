import { CreateTeamDocument, MyTeamDocument, type CreateTeamInput, type MyTeamQuery } from '../generated/graphql';
import { dataOf, type GraphQLEndpoint } from '../helpers/client';
import { sql } from '../helpers/database';
import type { TestGateway } from '../helpers/server';

let teams = 0;

/** A team no other test uses, created by the admin whose access token is `adminToken`. */
export async function createTeam(gateway: GraphQLEndpoint, adminToken: string, input: Partial<CreateTeamInput> = {}): Promise<{ id: string; name: string }> {
  teams += 1;
  const name = input.name ?? `team-${teams}-${Math.random().toString(36).slice(2, 8)}`;
  const { createTeam: team } = dataOf(await gateway.gql(CreateTeamDocument, { input: { ...input, name } }, adminToken), `createTeam ${name}`);
  return { id: team.id, name: team.name };
}

/** `me.team.usage` of the user behind `token`. */
export async function teamUsageOf(gateway: TestGateway, token: string): Promise<NonNullable<MyTeamQuery['me']['team']>['usage']> {
  const team = dataOf(await gateway.gql(MyTeamDocument, {}, token), 'me.team').me.team;
  if (team == null) throw new Error('the user has no team');
  return team.usage;
}

export interface LevelLedger {
  used: number;
  reserved: number;
}

/** A level's ledger row straight from PostgreSQL: `scope` picks the table. */
export async function levelLedger(databaseUrl: string, scope: 'TEAM' | 'USER' | 'API_KEY', id: string): Promise<LevelLedger> {
  const [table, key] = { TEAM: ['team_quota_accounts', 'team_id'], USER: ['quota_accounts', 'user_id'], API_KEY: ['api_key_quota_accounts', 'api_key_id'] }[scope];
  const [row] = await sql<{ used: string; reserved: string }>(databaseUrl, `select used, reserved from ${table} where ${key} = $1`, [id]);
  return { used: Number(row.used), reserved: Number(row.reserved) };
}

/** The sum of charged_tokens of the records matching `column = id`, straight from PostgreSQL. */
export async function recordedSum(databaseUrl: string, column: 'team_id' | 'user_id' | 'api_key_id', id: string): Promise<number> {
  const [row] = await sql<{ sum: string | null }>(databaseUrl, `select sum(charged_tokens) as sum from usage_records where ${column} = $1`, [id]);
  return Number(row.sum ?? 0);
}
