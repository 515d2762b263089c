import { MikroORM } from '@mikro-orm/postgresql';
import { Client as PgClient } from 'pg';
import type { Config } from '../config';
import type { Logger } from '../logger';
import { ormOptions } from './orm-options';
import { ADVISORY_LOCK_KEYS } from './advisory-locks';
import { connectionTimeouts, createPool, Database } from './database';

export interface DatabaseConnections {
  readonly orm: MikroORM;
  readonly db: Database;
  close(): Promise<void>;
}

/**
 * The ORM (entities) and the statement pool beside it, on one database, both bounded by the
 * connect and statement timeouts: while the database is away, a request fails at once.
 */
export async function connectDatabase(databaseUrl: string, config: Config, log: Logger): Promise<DatabaseConnections> {
  const { connectTimeoutMs, statementTimeoutMs } = config.database;
  const orm = await MikroORM.init(
    ormOptions(databaseUrl, {
      // Waiting for a free connection is load, not an outage: it may take as long as a statement.
      pool: { min: 1, max: config.database.ormPoolSize, acquireTimeoutMillis: statementTimeoutMs },
      driverOptions: {
        connection: connectionTimeouts({ connectTimeoutMs, statementTimeoutMs }),
        // knex prints to the console (a lost connection, say); the gateway's log has one form.
        log: {
          warn: (message: unknown) => log.warn({ knex: String(message) }, 'ORM connection pool'),
          error: (message: unknown) => log.error({ knex: String(message) }, 'ORM connection pool'),
          deprecate: (message: unknown) => log.debug({ knex: String(message) }, 'ORM connection pool'),
          debug: (message: unknown) => log.debug({ knex: String(message) }, 'ORM connection pool'),
        },
      },
    }),
  );
  const pool = createPool(databaseUrl, { max: config.database.poolSize, connectTimeoutMs, statementTimeoutMs }, log);
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

/**
 * Applies pending migrations on an ORM of their own, whose connection has no statement timeout:
 * a migration may rightly run longer than any request's statement.
 */
export async function migrate(databaseUrl: string, log: Logger): Promise<void> {
  const orm = await MikroORM.init(ormOptions(databaseUrl, { pool: { min: 0, max: 1 } }));
  try {
    const applied = await orm.getMigrator().up();
    if (applied.length > 0) log.info({ migrations: applied.map((m) => m.name) }, 'migrations applied');
  } finally {
    await orm.close(true);
  }
}
