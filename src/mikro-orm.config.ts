import { defineConfig, type Options } from '@mikro-orm/postgresql';
import { Migrator } from '@mikro-orm/migrations';
import { migrationsList } from '../migrations';
import { ApiKey } from './auth/api-key.entity';
import { RefreshSession } from './auth/session.entity';
import { User } from './users/user.entity';

/** Every entity, listed explicitly: no folder scanning, so the build and the tests see the same set. */
export const entities = [User, RefreshSession, ApiKey];

/** The one ORM configuration, shared by the server, `npm run migrate` and the MikroORM CLI. */
export function ormOptions(clientUrl: string, overrides: Partial<Options> = {}): Options {
  return defineConfig({
    clientUrl,
    entities,
    extensions: [Migrator],
    discovery: { requireEntitiesArray: true },
    migrations: {
      migrationsList,
      tableName: 'mikro_orm_migrations',
      transactional: true,
      allOrNothing: true,
      snapshot: false,
      path: 'migrations',
      emit: 'ts',
      silent: true,
    },
    pool: { min: 2, max: 20 },
    debug: false,
    allowGlobalContext: false,
    ...overrides,
  });
}

/**
 * For the MikroORM CLI (`npx mikro-orm migration:create`): it needs a running database, given
 * by DATABASE_URL. The app itself never goes through this file's default export.
 */
export default (): Options => {
  // Imported lazily so that importing this module for `ormOptions` never reads the environment.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { loadConfig } = require('./config') as typeof import('./config');
  const { databaseUrl } = loadConfig();
  if (databaseUrl === null) throw new Error('DATABASE_URL must be set for the MikroORM CLI');
  return ormOptions(databaseUrl);
};
