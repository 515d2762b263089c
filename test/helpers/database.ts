import { randomBytes } from 'node:crypto';
import { Client } from 'pg';

function adminUrl(): string {
  const url = process.env.TEST_POSTGRES_URL;
  if (url === undefined) throw new Error('TEST_POSTGRES_URL is unset: run the tests through jest (its global setup starts PostgreSQL)');
  return url;
}

/** A fresh, empty database on the run's PostgreSQL; the server under test applies migrations itself. */
export async function createTestDatabase(): Promise<string> {
  const name = `test_${randomBytes(6).toString('hex')}`;
  const client = new Client({ connectionString: adminUrl() });
  await client.connect();
  try {
    await client.query(`create database ${name}`);
  } finally {
    await client.end();
  }
  const url = new URL(adminUrl());
  url.pathname = `/${name}`;
  return url.toString();
}

/** A plain client on a test database, for assertions that must not go through the gateway. */
export async function sql<Row extends Record<string, unknown>>(databaseUrl: string, text: string, values: unknown[] = []): Promise<Row[]> {
  const client = new Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    return (await client.query<Row>(text, values)).rows;
  } finally {
    await client.end();
  }
}

export interface UsageRecordRow extends Record<string, unknown> {
  request_id: string;
  api_key_id: string | null;
  model: string;
  interface: 'graphql' | 'openai';
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  cached_tokens: number;
  charged_tokens: number;
  usage_source: 'reported' | 'estimated';
  prompt_count_source: 'tokenize' | 'tiktoken' | 'bound';
  status: string;
  created_at: Date;
}

/** The user's usage records, oldest first, read straight from PostgreSQL. */
export function usageRecords(databaseUrl: string, userId: string): Promise<UsageRecordRow[]> {
  return sql<UsageRecordRow>(
    databaseUrl,
    `select request_id, api_key_id, model, interface, prompt_tokens, completion_tokens, total_tokens, cached_tokens, charged_tokens, usage_source,
            prompt_count_source, status, created_at
       from usage_records where user_id = $1 order by id`,
    [userId],
  );
}

/** The user's ledger row and open reservations, straight from PostgreSQL. */
export async function ledger(databaseUrl: string, userId: string): Promise<{ used: number; reserved: number; reservations: number }> {
  const [account] = await sql<{ used: string; reserved: string }>(databaseUrl, 'select used, reserved from quota_accounts where user_id = $1', [userId]);
  const [open] = await sql<{ n: string }>(databaseUrl, 'select count(*) as n from quota_reservations where user_id = $1', [userId]);
  return { used: Number(account.used), reserved: Number(account.reserved), reservations: Number(open.n) };
}

/**
 * Takes a lock on `table` in a transaction of its own and holds it until `release()`: the
 * gateway's statements that conflict with `mode` wait meanwhile, so a test decides when they run.
 */
export async function lockTable(databaseUrl: string, table: string, mode: 'exclusive' | 'access exclusive'): Promise<() => Promise<void>> {
  const client = new Client({ connectionString: databaseUrl });
  await client.connect();
  await client.query('begin');
  await client.query(`lock table ${table} in ${mode} mode`);
  return async () => {
    try {
      await client.query('commit');
    } finally {
      await client.end();
    }
  };
}

/** How many of the database's connections are waiting for a lock (those lockTable holds back, say). */
export async function lockWaiters(databaseUrl: string): Promise<number> {
  const [row] = await sql<{ n: string }>(databaseUrl, "select count(*) as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'");
  return Number(row.n);
}
