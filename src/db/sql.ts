import type { EntityManager } from '@mikro-orm/postgresql';

/**
 * Runs one SQL statement (knex `?` placeholders) on the entity manager's connection, inside
 * its transaction when it has one. Used where one atomic statement says more than the ORM.
 */
export async function query<Row>(em: EntityManager, sql: string, params: readonly unknown[] = []): Promise<Row[]> {
  return em.getConnection().execute<Row[]>(sql, [...params], 'all', em.getTransactionContext());
}

export async function queryOne<Row>(em: EntityManager, sql: string, params: readonly unknown[] = []): Promise<Row | undefined> {
  const rows = await query<Row>(em, sql, params);
  return rows[0];
}
