import type { EntityManager } from '@mikro-orm/postgresql';
import pg from 'pg';
import type { Logger } from '../logger';

/**
 * Statements outside a transaction go straight to a pg pool as named prepared statements:
 * the hot path (authentication, reserve, settle) then skips knex and MikroORM's wrapping,
 * and PostgreSQL plans each statement once per connection. Inside a transaction they run on
 * the transaction's connection through MikroORM.
 */
const statementPools = new WeakMap<object, pg.Pool>();
const prepared = new Map<string, { name: string; text: string }>();

/** A pool whose results look like MikroORM's: dates and timestamps as text. */
export function createStatementPool(databaseUrl: string, max: number, log: Logger): pg.Pool {
  const types = new pg.TypeOverrides();
  for (const oid of [1082, 1114, 1184, 1186]) types.setTypeParser(oid, (text: string) => text);
  const pool = new pg.Pool({ connectionString: databaseUrl, max, types });
  // An idle connection the server ended (restart, terminated backend) is dropped by the pool;
  // without a listener its 'error' would end the process.
  pool.on('error', (error) => log.warn({ err: error }, 'an idle database connection was lost'));
  return pool;
}

export function useStatementPool(em: EntityManager, pool: pg.Pool): void {
  statementPools.set(em.getConnection(), pool);
}

/** knex's `?` placeholders as `$n`, once per statement text. */
function preparedStatement(sql: string): { name: string; text: string } {
  let statement = prepared.get(sql);
  if (statement === undefined) {
    let index = 0;
    // Not `gw_`: `Database` names its statements so, on the same pool's connections.
    statement = { name: `legacy_${prepared.size + 1}`, text: sql.replace(/\?/g, () => `$${++index}`) };
    prepared.set(sql, statement);
  }
  return statement;
}

/**
 * Runs one SQL statement (knex `?` placeholders), inside the entity manager's transaction
 * when it has one. Used where one atomic statement says more than the ORM.
 */
export async function query<Row>(em: EntityManager, sql: string, params: readonly unknown[] = []): Promise<Row[]> {
  const pool = em.getTransactionContext() === undefined ? statementPools.get(em.getConnection()) : undefined;
  if (pool !== undefined) {
    const { name, text } = preparedStatement(sql);
    const result = await pool.query<Row & pg.QueryResultRow>({ name, text, values: [...params] });
    return result.rows;
  }
  return em.getConnection().execute<Row[]>(sql, [...params], 'all', em.getTransactionContext());
}

export async function queryOne<Row>(em: EntityManager, sql: string, params: readonly unknown[] = []): Promise<Row | undefined> {
  const rows = await query<Row>(em, sql, params);
  return rows[0];
}
