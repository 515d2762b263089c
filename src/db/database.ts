import type { EntityManager, MikroORM } from '@mikro-orm/postgresql';
import pg from 'pg';
import type { Logger } from '../logger';
import { isDatabaseUnreachable, unreachableAsServiceUnavailable } from './unreachable';

/** Statements written with `$1…$n`, run where the caller stands: on the pool or in a transaction. */
export interface Sql {
  query<Row>(text: string, params?: readonly unknown[]): Promise<Row[]>;
  /** The first row, or undefined. */
  one<Row>(text: string, params?: readonly unknown[]): Promise<Row | undefined>;
}

/**
 * The one database object every service is given. Statements run on a pg pool as named
 * prepared statements (PostgreSQL plans each once per connection); `transaction` runs
 * several on one connection between BEGIN and COMMIT. A statement that cannot reach the
 * database fails with ServiceUnavailableError. The ORM is for the tables mapped to entities
 * (users, API keys, teams); its entity managers come from `em()`, and its failures are
 * recognised where errors leave (each API's error mapper).
 */
export class Database implements Sql {
  /** Statement names by text: the texts are the code's own, so the map stays small. */
  private readonly names = new Map<string, string>();

  constructor(
    private readonly pool: pg.Pool,
    private readonly orm: MikroORM,
  ) {}

  query<Row>(text: string, params: readonly unknown[] = []): Promise<Row[]> {
    return run<Row>(this.pool, this.nameOf(text), text, params);
  }

  async one<Row>(text: string, params: readonly unknown[] = []): Promise<Row | undefined> {
    return (await this.query<Row>(text, params))[0];
  }

  /** Runs `work` in one transaction: committed when it resolves, rolled back when it throws. */
  async transaction<T>(work: (tx: Sql) => Promise<T>): Promise<T> {
    const client = await this.pool.connect().catch((error: unknown) => {
      throw unreachableAsServiceUnavailable(error);
    });
    let broken = false;
    try {
      await client.query('begin');
      const tx: Sql = {
        query: <Row>(text: string, params: readonly unknown[] = []) => run<Row>(client, this.nameOf(text), text, params),
        one: async <Row>(text: string, params: readonly unknown[] = []) => (await run<Row>(client, this.nameOf(text), text, params))[0],
      };
      const result = await work(tx);
      await client.query('commit');
      return result;
    } catch (error) {
      // A connection that failed is not asked to roll back (it would not answer, or answer late):
      // closing it ends the transaction on the server too.
      if (isDatabaseUnreachable(error)) broken = true;
      else {
        await client.query('rollback').catch(() => {
          broken = true;
        });
      }
      throw unreachableAsServiceUnavailable(error);
    } finally {
      // A connection that failed, or whose rollback failed, is in an unknown state: the pool must not hand it out again.
      client.release(broken);
    }
  }

  /** A fresh entity manager: no identity map is shared between requests. */
  em(): EntityManager {
    return this.orm.em.fork();
  }

  private nameOf(text: string): string {
    let name = this.names.get(text);
    if (name === undefined) {
      name = `gw_${this.names.size + 1}`;
      this.names.set(text, name);
    }
    return name;
  }
}

/** Runs one statement; a database that cannot be reached is reported as SERVICE_UNAVAILABLE, whatever the driver said. */
async function run<Row>(runner: pg.Pool | pg.PoolClient, name: string, text: string, params: readonly unknown[]): Promise<Row[]> {
  try {
    const result = await runner.query<Row & pg.QueryResultRow>({ name, text, values: [...params] });
    return result.rows;
  } catch (error) {
    throw unreachableAsServiceUnavailable(error);
  }
}

/** How many connections a pool holds, and how long anything on it may wait on the database. */
export interface PoolLimits {
  readonly max: number;
  readonly connectTimeoutMs: number;
  readonly statementTimeoutMs: number;
}

/**
 * The timeouts of every connection the gateway opens on the request path: PostgreSQL cancels a
 * statement past `statement_timeout`; a server that does not answer at all (cut off, frozen)
 * is given up on a connect timeout later, when its cancellation would have arrived by then.
 */
export function connectionTimeouts(limits: Omit<PoolLimits, 'max'>): { connectionTimeoutMillis: number; statement_timeout: number; query_timeout: number } {
  return {
    connectionTimeoutMillis: limits.connectTimeoutMs,
    statement_timeout: limits.statementTimeoutMs,
    query_timeout: limits.statementTimeoutMs + limits.connectTimeoutMs,
  };
}

/**
 * A pool whose results look like MikroORM's: dates and timestamps as text. While the database
 * is away, opening a connection fails within the connect timeout. pg-pool applies its own
 * `connectionTimeoutMillis` to waiting for a free connection too; under load that wait is not an
 * outage, so it may last as long as a statement, while each new connection keeps the short one.
 */
export function createPool(databaseUrl: string, limits: PoolLimits, log: Logger): pg.Pool {
  const types = new pg.TypeOverrides();
  for (const oid of [1082, 1114, 1184, 1186]) types.setTypeParser(oid, (text: string) => text);
  const timeouts = connectionTimeouts(limits);
  class BoundedClient extends pg.Client {
    // pg-pool passes its own options, the longer wait included; @types/pg types the class as taking none.
    constructor(config: pg.ClientConfig = {}) {
      super({ ...config, connectionTimeoutMillis: timeouts.connectionTimeoutMillis });
    }
  }
  const pool = new pg.Pool({
    connectionString: databaseUrl,
    max: limits.max,
    types,
    ...timeouts,
    connectionTimeoutMillis: limits.statementTimeoutMs,
    Client: BoundedClient,
  });
  // An idle connection the server ended (restart, terminated backend) is dropped by the pool;
  // without a listener its 'error' would end the process.
  // Only the reason: pg attaches the whole client to the error, its prepared statements with it.
  pool.on('error', (error) => log.warn({ code: (error as { code?: unknown }).code, reason: error.message }, 'an idle database connection was lost'));
  return pool;
}
