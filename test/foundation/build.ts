import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';

/**
 * The process-level tests run what users run: the compiled `dist/`. `npm test` builds before
 * jest; a bare `npx jest` may find no build or one older than the sources, so these helpers
 * (re)build what is missing or stale, one jest worker at a time.
 */
export const repoRoot = path.resolve(__dirname, '../..');
export const distMain = path.join(repoRoot, 'dist/src/main.js');
export const distMigrateCli = path.join(repoRoot, 'dist/src/db/migrate-cli.js');
export const graphiqlAssetDir = path.join(repoRoot, 'dist/public/graphiql');

const run = promisify(execFile);
const LOCK_DIR = path.join(repoRoot, 'dist/.foundation-test-build.lock');
const STALE_LOCK_MS = 5 * 60_000;

function newestMtime(dir: string, accept: (file: string) => boolean): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestMtime(full, accept));
    else if (accept(entry.name)) newest = Math.max(newest, statSync(full).mtimeMs);
  }
  return newest;
}

function mtimeOf(file: string): number {
  return existsSync(file) ? statSync(file).mtimeMs : 0;
}

const isTs = (name: string): boolean => name.endsWith('.ts');

function serverBuildIsStale(): boolean {
  const built = Math.min(mtimeOf(distMain), mtimeOf(distMigrateCli));
  if (built === 0) return true;
  const sources = Math.max(
    newestMtime(path.join(repoRoot, 'migrations'), isTs),
    newestMtime(path.join(repoRoot, 'src'), (name) => isTs(name) && !name.endsWith('.d.ts')),
    mtimeOf(path.join(repoRoot, 'package.json')),
  );
  return sources > built;
}

function graphiqlBuildIsStale(): boolean {
  const built = Math.min(mtimeOf(path.join(graphiqlAssetDir, 'graphiql.js')), mtimeOf(path.join(graphiqlAssetDir, 'graphiql.css')));
  if (built === 0) return true;
  return newestMtime(path.join(repoRoot, 'src/graphiql/client'), () => true) > built;
}

async function withBuildLock(work: () => Promise<void>): Promise<void> {
  mkdirSync(path.dirname(LOCK_DIR), { recursive: true });
  const deadline = Date.now() + 3 * 60_000;
  for (;;) {
    try {
      mkdirSync(LOCK_DIR);
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      if (Date.now() - mtimeOf(LOCK_DIR) > STALE_LOCK_MS) rmSync(LOCK_DIR, { recursive: true, force: true });
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${LOCK_DIR} (another test worker building?)`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
  try {
    await work();
  } finally {
    rmSync(LOCK_DIR, { recursive: true, force: true });
  }
}

async function build(what: string, file: string, args: string[]): Promise<void> {
  try {
    await run(process.execPath, [file, ...args], { cwd: repoRoot, maxBuffer: 16 * 1024 * 1024 });
  } catch (error) {
    const { stdout = '', stderr = '' } = error as { stdout?: string; stderr?: string };
    throw new Error(`${what} failed, so the compiled gateway cannot be tested:\n${stdout}${stderr}`);
  }
}

/** dist/src (main.js, migrate-cli.js) up to date with src/ and migrations/. */
export async function ensureServerBuild(): Promise<void> {
  if (!serverBuildIsStale()) return;
  await withBuildLock(async () => {
    if (serverBuildIsStale()) await build('tsc -p tsconfig.build.json', require.resolve('typescript/bin/tsc'), ['-p', 'tsconfig.build.json']);
  });
}

/** dist/public/graphiql (the page's script, styles and workers) up to date with src/graphiql/client. */
export async function ensureGraphiqlBuild(): Promise<void> {
  if (!graphiqlBuildIsStale()) return;
  await withBuildLock(async () => {
    if (graphiqlBuildIsStale()) await build('scripts/build-graphiql.mjs', path.join(repoRoot, 'scripts/build-graphiql.mjs'), []);
  });
}
