// Child processes of the bench: spawning, waiting for a line, stopping, and reading their memory.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { createServer } from 'node:net';

export interface Child {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  /** Everything printed so far (stdout and stderr, interleaved), capped to the last 64 KiB. */
  output(): string;
  running(): boolean;
  /** Resolves when `pattern` appears in the output; rejects on exit or after `timeoutMs`. */
  waitFor(pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code. */
  stop(graceMs?: number): Promise<number | null>;
  readonly exited: Promise<number | null>;
}

const OUTPUT_CAP = 64 * 1024;

/** Every child the bench started, so that an early exit still ends them (by pid, one by one). */
const started = new Set<Child>();

export function spawnChild(name: string, command: string, args: string[], options: SpawnOptions): Child {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  if (child.pid === undefined) throw new Error(`${name} did not start`);
  let output = '';
  const listeners = new Set<() => void>();
  const append = (chunk: Buffer | string): void => {
    output += chunk.toString();
    if (output.length > OUTPUT_CAP) output = output.slice(-OUTPUT_CAP);
    for (const listener of listeners) listener();
  };
  child.stdout?.on('data', append);
  child.stderr?.on('data', append);
  let done = false;
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      done = true;
      for (const listener of listeners) listener();
      resolve(code);
    });
    child.once('error', (error) => {
      append(`\n[spawn error] ${error.message}\n`);
      done = true;
      resolve(null);
    });
  });
  const handle: Child = {
    name,
    child,
    pid: child.pid,
    output: () => output,
    running: () => !done,
    exited,
    waitFor(pattern, timeoutMs) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          listeners.delete(check);
          reject(new Error(`${name}: no ${pattern} within ${timeoutMs} ms. Output:\n${output.slice(-4000)}`));
        }, timeoutMs);
        const check = (): void => {
          const match = pattern.exec(output);
          if (match !== null) {
            clearTimeout(timer);
            listeners.delete(check);
            resolve(match);
          } else if (done) {
            clearTimeout(timer);
            listeners.delete(check);
            reject(new Error(`${name} exited before printing ${pattern}. Output:\n${output.slice(-4000)}`));
          }
        };
        listeners.add(check);
        check();
      });
    },
    async stop(graceMs = 15_000) {
      if (!done) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => {
          if (!done) child.kill('SIGKILL');
        }, graceMs);
        await exited;
        clearTimeout(timer);
      }
      started.delete(handle);
      return exited;
    },
  };
  started.add(handle);
  return handle;
}

/** Last resort on an abnormal exit: SIGKILL each child this bench started, by its pid. */
export function killStartedChildren(): void {
  for (const handle of started) {
    if (handle.running()) {
      try {
        process.kill(handle.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  started.clear();
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      probe.close(() => (address !== null && typeof address === 'object' ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

function statusField(pid: number, field: string): number | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
    return match === null ? null : Number(match[1]) * 1024;
  } catch {
    return null;
  }
}

/** Peak resident set size (VmHWM) of a running process, in bytes. */
export function peakRss(pid: number): number | null {
  return statusField(pid, 'VmHWM');
}

export function currentRss(pid: number): number | null {
  return statusField(pid, 'VmRSS');
}

function childrenOf(pid: number): number[] {
  const found: number[] = [];
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      const text = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
      if (text !== '') found.push(...text.split(/\s+/).map(Number));
    }
  } catch {
    // gone
  }
  return found;
}

/** A process and all its descendants. */
export function processTree(pid: number): number[] {
  const all = [pid];
  for (let i = 0; i < all.length; i++) all.push(...childrenOf(all[i] as number));
  return all;
}

/** Proportional set size (shared pages split between sharers) of a process tree, in bytes. */
export function treePss(pid: number): number | null {
  let total = 0;
  let seen = false;
  for (const member of processTree(pid)) {
    try {
      const rollup = readFileSync(`/proc/${member}/smaps_rollup`, 'utf8');
      const match = /^Pss:\s+(\d+) kB/m.exec(rollup);
      if (match !== null) {
        total += Number(match[1]) * 1024;
        seen = true;
      }
    } catch {
      // gone or not readable
    }
  }
  return seen ? total : null;
}

/** The pid of the postmaster whose command line names `dataDir`, if any. */
export function findPostmaster(dataDir: string): number | null {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (cmdline.some((arg) => arg.endsWith('/postgres') || arg === 'postgres') && cmdline.includes(dataDir)) return Number(entry);
    } catch {
      // gone
    }
  }
  return null;
}
