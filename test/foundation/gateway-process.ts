import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { distMain, repoRoot } from './build';

export const PROCESS_JWT_SECRET = 'process-test-secret-long-enough-for-hs256-0123456789';
export const PROCESS_ADMIN = { email: 'root@example.test', password: 'root-password-123' } as const;

/**
 * A folder for DATA_DIR under the system temp folder, mode 0755: as root, embedded PostgreSQL
 * runs as `postgres`, which must be able to enter it (mkdtemp alone gives 0700).
 */
export function makeDataDir(label: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), `gateway-${label}-`));
  chmodSync(dir, 0o755);
  return dir;
}

export function removeDir(dir: string | undefined): void {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
}

/**
 * Only what the gateway needs: never the test runner's own environment, which holds
 * TEST_POSTGRES_URL and whatever the developer has exported.
 */
export function baseEnv(extra: Record<string, string>): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: process.env.HOME ?? os.tmpdir(),
    NODE_ENV: 'test',
    HOST: '127.0.0.1',
    PORT: '0',
    LOG_LEVEL: 'warn',
    JWT_SECRET: PROCESS_JWT_SECRET,
    ADMIN_EMAIL: PROCESS_ADMIN.email,
    ADMIN_PASSWORD: PROCESS_ADMIN.password,
    // The cheapest argon2id cost config.ts allows: logins in these tests stay fast.
    PASSWORD_HASH_MEMORY_KIB: '19456',
    PASSWORD_HASH_TIME_COST: '2',
    PASSWORD_HASH_PARALLELISM: '1',
    ...extra,
  };
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface NodeProcess {
  readonly child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Settles when the process has exited, with everything it printed. */
  readonly exited: Promise<Exit>;
  running(): boolean;
}

export function runNode(script: string, env: Record<string, string>): NodeProcess {
  const child = spawn(process.execPath, [script], { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  let done = false;
  const exited = new Promise<Exit>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => {
      done = true;
      resolve({ code, signal, stdout, stderr });
    });
  });
  return { child, stdout: () => stdout, stderr: () => stderr, exited, running: () => !done };
}

/** Rejects after `ms` with `message`, unless `promise` settles first. */
export function within<T>(promise: Promise<T>, ms: number, message: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${message()} (after ${ms} ms)`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export interface GatewayProcess extends NodeProcess {
  /** http://127.0.0.1:<port>/graphql, as printed by main.ts */
  readonly url: string;
  /** SIGTERM, then the exit. */
  stop(): Promise<Exit>;
}

/** `node dist/src/main.js`; resolves once it has printed its GraphiQL URL. */
export async function startGatewayProcess(env: Record<string, string>, startTimeoutMs = 30_000): Promise<GatewayProcess> {
  const proc = runNode(distMain, env);
  const url = await within(
    new Promise<string>((resolve, reject) => {
      const onData = (): void => {
        const match = /GraphiQL:\s+(http:\/\/\S+)/.exec(proc.stdout());
        if (match?.[1] !== undefined) {
          proc.child.stdout?.off('data', onData);
          resolve(match[1]);
        }
      };
      proc.child.stdout?.on('data', onData);
      proc.exited.then(
        (exit) => reject(new Error(`the gateway exited (code ${exit.code}) before listening:\n${exit.stderr}${exit.stdout}`)),
        reject,
      );
    }),
    startTimeoutMs,
    () => `the gateway printed no URL:\n${proc.stderr()}${proc.stdout()}`,
  ).catch((error: unknown) => {
    if (proc.running()) proc.child.kill('SIGKILL');
    throw error;
  });
  return {
    ...proc,
    url,
    stop: () => {
      if (proc.running()) proc.child.kill('SIGTERM');
      return within(proc.exited, 20_000, () => `the gateway did not exit after SIGTERM:\n${proc.stderr()}`);
    },
  };
}

/** Last resort in afterAll: SIGTERM (so embedded PostgreSQL is stopped too), SIGKILL if that hangs. */
export async function killGateway(proc: NodeProcess | undefined): Promise<void> {
  if (proc === undefined || !proc.running()) return;
  proc.child.kill('SIGTERM');
  try {
    await within(proc.exited, 15_000, () => 'no exit');
  } catch {
    proc.child.kill('SIGKILL');
    await proc.exited;
  }
}
