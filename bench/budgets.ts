// Load from many accounts with finite budgets: 64 users, each with a daily quota, and the same
// users in teams with API keys of their own budgets, so that every request reserves at three
// levels. The budgets are finite but large: the ledger checks them on every request and no
// request is refused within a run.
import { createApiKey, createTeam, createUser, type Budget } from './lib/graphql-setup';

export type BudgetLoadKind = 'finite-users' | 'three-levels';

export const BUDGET_LOAD_LABEL: Record<BudgetLoadKind, string> = {
  'finite-users': '64 users, finite quotas',
  'three-levels': '64 users, key + user + team budgets',
};

export const BUDGET_LOAD_DESCRIPTION: Record<BudgetLoadKind, string> = {
  'finite-users': 'each load worker is its own user with a DAILY quota of 50 M tokens and an API key without a budget of its own',
  'three-levels':
    'each load worker is its own user (DAILY 50 M) in one of 8 teams (DAILY 500 M each), and `/v1` uses a key with its own budget (MONTHLY 50 M): GraphQL reserves at two levels, `/v1` at three',
};

const USERS = 64;
const TEAMS = 8;
const USER_BUDGET: Budget = { tokenLimit: 50_000_000, quotaPeriod: 'DAILY' };
const TEAM_BUDGET: Budget = { tokenLimit: 500_000_000, quotaPeriod: 'DAILY' };
const KEY_BUDGET: Budget = { tokenLimit: 50_000_000, quotaPeriod: 'MONTHLY' };

export interface LoadAccount {
  /** An access token for GraphQL. */
  readonly token: string;
  /** An API key for /v1. */
  readonly apiKey: string;
}

/** The accounts of one budget load, made through the gateway's GraphQL API as an admin would. */
export async function createLoadAccounts(url: string, adminToken: string, kind: BudgetLoadKind, runId: string, password: string): Promise<LoadAccount[]> {
  const teams: string[] = [];
  if (kind === 'three-levels') {
    for (let i = 0; i < TEAMS; i++) teams.push(await createTeam(url, adminToken, `bench-${runId}-team-${i}`, TEAM_BUDGET));
  }
  const accounts: LoadAccount[] = [];
  // A few at a time: each sign-in hashes a password.
  for (let i = 0; i < USERS; i += 4) {
    const batch = Array.from({ length: Math.min(4, USERS - i) }, async (_, j): Promise<LoadAccount> => {
      const index = i + j;
      const teamId = teams.length === 0 ? undefined : teams[index % teams.length];
      const token = await createUser(url, adminToken, { email: `${kind}-${runId}-${index}@bench.test`, password, role: 'USER', budget: USER_BUDGET, teamId });
      const apiKey = await createApiKey(url, token, `bench-${kind}`, kind === 'three-levels' ? KEY_BUDGET : { tokenLimit: null });
      return { token, apiKey };
    });
    accounts.push(...(await Promise.all(batch)));
  }
  return accounts;
}
