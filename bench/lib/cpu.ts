// How much CPU processes outside the bench's own process tree used while it ran: on a shared
// 2-core machine another job's load skews every figure, so the report says how quiet it was.
import { readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import { processTree } from './proc';

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

function systemTicks(): { busy: number; total: number } | null {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
    const [, ...fields] = line.trim().split(/\s+/);
    const [user, nice, system, idle, iowait, irq, softirq, steal] = fields.map(Number) as number[];
    const busy = (user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0);
    return { busy, total: busy + (idle ?? 0) + (iowait ?? 0) };
  } catch {
    return null;
  }
}

export function processTicks(pid: number): number | null {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return null;
  }
}

export interface ForeignCpu {
  /** Mean cores used by processes outside the bench's tree, over the run. */
  meanCores: number;
  /** Highest 1-second interval. */
  maxCores: number;
  /** Share of 1-second intervals in which others used more than 0.25 cores. */
  busyShare: number;
  samples: number;
  loadAverageStart: number[];
  loadAverageEnd: number[];
}

export class ForeignCpuMonitor {
  private timer: NodeJS.Timeout | null = null;
  private last: { system: { busy: number; total: number }; ours: Map<number, number> } | null = null;
  private readonly intervals: number[] = [];
  private readonly loadStart = os.loadavg();

  start(intervalMs = 1000): void {
    this.last = this.snapshot();
    this.timer = setInterval(() => this.sample(), intervalMs);
    this.timer.unref();
  }

  /** Cores used by others over the next `ms`, measured now (before the run starts). */
  static async probe(ms: number): Promise<number | null> {
    const monitor = new ForeignCpuMonitor();
    monitor.last = monitor.snapshot();
    await new Promise((resolve) => setTimeout(resolve, ms));
    monitor.sample();
    return monitor.intervals[0] ?? null;
  }

  stop(): ForeignCpu {
    if (this.timer !== null) clearInterval(this.timer);
    this.sample();
    const n = this.intervals.length;
    return {
      meanCores: n === 0 ? 0 : this.intervals.reduce((a, b) => a + b, 0) / n,
      maxCores: n === 0 ? 0 : Math.max(...this.intervals),
      busyShare: n === 0 ? 0 : this.intervals.filter((v) => v > 0.25).length / n,
      samples: n,
      loadAverageStart: this.loadStart.map((v) => Math.round(v * 100) / 100),
      loadAverageEnd: os.loadavg().map((v) => Math.round(v * 100) / 100),
    };
  }

  private snapshot(): { system: { busy: number; total: number }; ours: Map<number, number> } | null {
    const system = systemTicks();
    if (system === null) return null;
    const ours = new Map<number, number>();
    for (const pid of processTree(process.pid)) {
      const ticks = processTicks(pid);
      if (ticks !== null) ours.set(pid, ticks);
    }
    return { system, ours };
  }

  private sample(): void {
    const now = this.snapshot();
    const before = this.last;
    this.last = now;
    if (now === null || before === null) return;
    const totalDelta = now.system.total - before.system.total;
    if (totalDelta <= 0) return;
    let oursDelta = 0;
    // A process born during the interval used all its ticks in it.
    for (const [pid, ticks] of now.ours) oursDelta += ticks - (before.ours.get(pid) ?? 0);
    const foreignTicks = Math.max(0, now.system.busy - before.system.busy - oursDelta);
    const seconds = totalDelta / os.cpus().length / TICKS_PER_SECOND;
    this.intervals.push(foreignTicks / TICKS_PER_SECOND / seconds);
  }
}

/**
 * CPU time of a process, ns, summed over its threads from /proc/<pid>/task/<tid>/schedstat
 * (the scheduler's exact run time; utime/stime in /proc/<pid>/stat are sampled at 100 Hz and
 * skew for processes that wake on timers).
 */
export function processCpuNs(pid: number): number | null {
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return null;
  }
  let total = 0;
  for (const task of tasks) {
    try {
      total += Number(readFileSync(`/proc/${pid}/task/${task}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // thread ended
    }
  }
  return total;
}

/** CPU time so far (ns) of every process the bench started (its tree without itself), per pid. */
export function serverCpuSnapshot(): Map<number, number> {
  const used = new Map<number, number>();
  for (const pid of processTree(process.pid)) {
    if (pid === process.pid) continue;
    const ns = processCpuNs(pid);
    if (ns !== null) used.set(pid, ns);
  }
  return used;
}

/**
 * CPU used between two snapshots, ms: processes born in between count whole; a process that
 * ended in between (a PostgreSQL worker) loses only its last stretch, never goes negative.
 */
export function serverCpuMsSince(before: Map<number, number>): number {
  let ns = 0;
  for (const [pid, used] of serverCpuSnapshot()) ns += Math.max(0, used - (before.get(pid) ?? 0));
  return ns / 1e6;
}
