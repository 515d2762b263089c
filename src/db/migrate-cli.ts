import { MikroORM } from '@mikro-orm/postgresql';
import { ConfigError, loadConfig } from '../config';
import { createLogger } from '../logger';
import { ormOptions } from './orm-options';
import { DataDirError, startEmbeddedPostgres } from './embedded';

/** `npm run migrate`: applies pending migrations to DATABASE_URL, or to the embedded cluster under DATA_DIR. */
async function migrate(): Promise<void> {
  const config = loadConfig();
  const log = createLogger({ logLevel: config.logLevel === 'silent' ? 'silent' : 'info' });
  const embedded = config.databaseUrl === null ? await startEmbeddedPostgres(config.dataDir, log) : null;
  try {
    const orm = await MikroORM.init(ormOptions(config.databaseUrl ?? embedded?.url ?? ''));
    try {
      const applied = await orm.getMigrator().up();
      process.stdout.write(
        applied.length === 0 ? 'migrations: nothing to apply\n' : `migrations applied: ${applied.map((m) => m.name).join(', ')}\n`,
      );
    } finally {
      await orm.close(true);
    }
  } finally {
    await embedded?.stop();
  }
}

migrate().catch((error: unknown) => {
  const message = error instanceof ConfigError || error instanceof DataDirError ? error.message : String(error);
  process.stderr.write(`migrate failed: ${message}\n`);
  process.exit(1);
});
