import { MikroORM } from '@mikro-orm/postgresql';
import { Client as PgClient } from 'pg';
import type { Config } from '../config';
import type { Logger } from '../logger';
import { ormOptions } from './orm-options';
import { ADVISORY_LOCK_KEYS } from './advisory-locks';
import { createPool, Database } from './database';

export interface DatabaseConnections {
  readonly orm: MikroORM;
  readonly db: Database;
  close(): Promise<void>;
}

/** The ORM (entities, migrations) and the statement pool beside it, on one database. */
export async function connectDatabase(databaseUrl: string, config: Config, log: Logger): Promise<DatabaseConnections> {
  const orm = await MikroORM.init(ormOptions(databaseUrl, { pool: { min: 1, max: config.database.ormPoolSize } }));
  const pool = createPool(databaseUrl, config.database.poolSize, log);
  return {
    orm,
    db: new Database(pool, orm),
    async close() {
      await pool.end();
      await orm.close(true);
    },
  };
}

/**
 * Runs `work` holding the start lock: instances starting together on one database take
 * turns to migrate and bootstrap.
 */
export async function whileHoldingStartLock<T>(databaseUrl: string, work: () => Promise<T>): Promise<T> {
  const client = new PgClient({ connectionString: databaseUrl });
  await client.connect();
  try {
    await client.query('select pg_advisory_lock($1)', [ADVISORY_LOCK_KEYS.start]);
    return await work();
  } finally {
    await client.query('select pg_advisory_unlock($1)', [ADVISORY_LOCK_KEYS.start]).catch(() => undefined);
    await client.end().catch(() => undefined);
  }
}

export async function migrate(orm: MikroORM, log: Logger): Promise<void> {
  const applied = await orm.getMigrator().up();
  if (applied.length > 0) log.info({ migrations: applied.map((m) => m.name) }, 'migrations applied');
}
