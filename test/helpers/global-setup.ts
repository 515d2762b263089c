import { mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { startEmbeddedPostgres, type EmbeddedDatabase } from '../../src/db/embedded';

declare global {
  var testPostgres: EmbeddedDatabase | undefined;
}

/**
 * One real PostgreSQL for the whole run. It lives under a folder created with mode 0755 in
 * the system temp folder: as root the server runs as `postgres`, which must traverse it.
 */
export default async function globalSetup(): Promise<void> {
  const root = path.join(os.tmpdir(), `vllm-gateway-test-${process.pid}`);
  mkdirSync(root, { recursive: true, mode: 0o755 });
  const database = await startEmbeddedPostgres(root, pino({ level: process.env.TEST_PG_LOG ?? 'warn' }));
  globalThis.testPostgres = database;
  process.env.TEST_POSTGRES_URL = database.url;
  process.env.TEST_ROOT = root;
}
