import { defineConfig, type Options } from '@mikro-orm/postgresql';
import { Migrator } from '@mikro-orm/migrations';
import { migrationsList } from '../../migrations';
import { ApiKey } from '../auth/api-key.entity';
import { Team } from '../teams/team.entity';
import { User } from '../users/user.entity';

/**
 * Every entity, listed explicitly: no folder scanning, so the build and the tests see the same
 * set. Only tables read and written through the ORM are mapped; the rest are used through SQL.
 */
export const entities = [User, ApiKey, Team];

/** The one ORM configuration, shared by the server and `npm run migrate`. */
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
