// npm run bench:ledger [-- --ops N] [-- --rounds R]
//
// The ledger's cost with one budget level against three: a reservation and its settlement
// (QuotaService.reserve, then Reservation.settle: the statements every metered request runs)
// against an embedded PostgreSQL, for a user alone (one level: their own quota) and for a user
// in a team with an API key of their own (three levels, all limited). Rounds alternate, so
// that a shift in the machine's load touches both alike. Reports per operation: wall time,
// this process's CPU (the gateway's share), PostgreSQL's CPU (every process of its cluster),
// at concurrency 1 and with 8 requests at once: from 8 users of their own (and, at three
// levels, 8 teams), and contended, all on one account: 8 requests of one user at one level,
// 8 users of one team at three levels.
// Writes bench/results/ledger-levels.json.
import { randomUUID } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { MikroORM } from '@mikro-orm/postgresql';
import pino from 'pino';
import { systemClock } from '../src/clock';
import { createPool, Database } from '../src/db/database';
import { startEmbeddedPostgres } from '../src/db/embedded';
import { PgNotifications } from '../src/db/notifications';
import { ormOptions } from '../src/db/orm-options';
import { GatewayInstance } from '../src/quota/gateway-instance';
import { GatewayMetrics } from '../src/metrics/metrics';
import { QuotaService } from '../src/quota/quota.service';
import { Fleet } from '../src/upstreams/fleet';
import { RateLimiter } from '../src/quota/rate-limiter';
import { processCpuNs } from './lib/cpu';
import { findPostmaster, processTree } from './lib/proc';
import { median, round } from './lib/stats';

const { values } = parseArgs({ options: { ops: { type: 'string' }, rounds: { type: 'string' } } });
const OPS = Number(values.ops ?? 2000);
const ROUNDS = Number(values.rounds ?? 5);
const CONCURRENCIES = [1, 8];
const LIMIT = 2_000_000_000;

type Shape = 'one level' | 'three levels' | 'one level, one user' | 'three levels, one team';
/** The pairs compared at each concurrency. */
const SHAPES: Record<number, readonly (readonly [Shape, Shape])[]> = {
  1: [['one level', 'three levels']],
  8: [
    ['one level', 'three levels'],
    ['one level, one user', 'three levels, one team'],
  ],
};

interface Requester {
  readonly userId: string;
  readonly apiKeyId: string | null;
}

interface Sample {
  wallUs: number;
  nodeCpuUs: number;
  pgCpuUs: number;
}

function pgCpuNs(postmaster: number): number {
  let ns = 0;
  for (const pid of processTree(postmaster)) ns += processCpuNs(pid) ?? 0;
  return ns;
}

async function main(): Promise<void> {
  const root = mkdtempSync(path.join(os.tmpdir(), 'vllm-gateway-ledger-bench-'));
  chmodSync(root, 0o755); // as root, PostgreSQL runs as `postgres`, which must enter it
  const log = pino({ level: 'error' });
  const embedded = await startEmbeddedPostgres(path.join(root, 'pg'), log);
  const postmaster = findPostmaster(path.join(root, 'pg', 'postgres'));
  if (postmaster === null) throw new Error('the embedded PostgreSQL has no postmaster to measure');
  const orm = await MikroORM.init(ormOptions(embedded.url));
  // Generous bounds: they guard the run against a hang, not a client against a wait.
  const pool = createPool(embedded.url, { max: Math.max(...CONCURRENCIES) + 2, connectTimeoutMs: 10_000, statementTimeoutMs: 60_000 }, log);
  const notifications = new PgNotifications(embedded.url, log);
  let instance: GatewayInstance | null = null;
  try {
    await orm.getMigrator().up();
    const db = new Database(pool, orm);
    await notifications.start();
    instance = await new GatewayInstance(db, notifications, log).start();
    // The ledger as the gateway runs it, metrics included; no upstream is needed to reserve and settle.
    const metrics = new GatewayMetrics(new Fleet([], log, { healthIntervalMs: 5_000, catalogueRefreshMs: 30_000 }));
    const quota = new QuotaService(db, new RateLimiter({ requestsPerMinute: 0, tokensPerMinute: 0 }, db), systemClock, log, 180, metrics, instance, 10_000);

    const newTeam = async (): Promise<string> => {
      const teamId = randomUUID();
      await db.query("insert into teams (id, name, token_limit, quota_period) values ($1, $2, $3, 'MONTHLY')", [teamId, teamId, LIMIT]);
      await quota.openAccount(db, 'TEAM', teamId);
      return teamId;
    };
    const sharedTeam = await newTeam();
    const requesters: Record<Shape, Requester[]> = { 'one level': [], 'three levels': [], 'one level, one user': [], 'three levels, one team': [] };
    for (const shape of ['one level', 'three levels', 'three levels, one team'] as const) {
      for (let i = 0; i < Math.max(...CONCURRENCIES); i += 1) {
        const userId = randomUUID();
        const inTeam = shape !== 'one level';
        const teamId = shape === 'three levels' ? await newTeam() : sharedTeam;
        await db.query(
          "insert into users (id, email, password_hash, token_limit, quota_period, team_id) values ($1, $2, 'x', $3, 'DAILY', $4)",
          [userId, `${userId}@bench.test`, LIMIT, inTeam ? teamId : null],
        );
        await quota.openAccount(db, 'USER', userId);
        let apiKeyId: string | null = null;
        if (inTeam) {
          apiKeyId = randomUUID();
          await db.query("insert into api_keys (id, user_id, name, prefix, key_hash, token_limit, quota_period) values ($1, $2, 'k', 'sk-', $3, $4, 'DAILY')", [
            apiKeyId,
            userId,
            apiKeyId,
            LIMIT,
          ]);
          await quota.openAccount(db, 'API_KEY', apiKeyId);
        }
        requesters[shape].push({ userId, apiKeyId });
      }
    }
    requesters['one level, one user'] = requesters['one level'].map(() => requesters['one level'][0]);

    const once = async ({ userId, apiKeyId }: Requester): Promise<void> => {
      const reservation = await quota.reserve({
        requestId: randomUUID(),
        userId,
        apiKeyId,
        promptTokens: 20,
        promptCountSource: 'tokenize',
        maxTokens: null,
        modelCompletionLimit: 100,
        minCompletionTokens: 1,
        target: { model: 'bench-model', interface: 'openai', apiKeyId, upstream: 'bench' },
      });
      await reservation.settle({ promptTokens: 20, completionTokens: 60, cachedTokens: 0, usageSource: 'reported', status: 'completed' });
    };

    const run = async (shape: Shape, concurrency: number, ops: number): Promise<Sample> => {
      const who = requesters[shape].slice(0, concurrency);
      const pgBefore = pgCpuNs(postmaster);
      const cpuBefore = process.cpuUsage();
      const started = performance.now();
      let next = 0;
      await Promise.all(
        who.map(async (requester) => {
          while (next < ops) {
            next += 1;
            await once(requester);
          }
        }),
      );
      const wallMs = performance.now() - started;
      const cpu = process.cpuUsage(cpuBefore);
      const pgNs = pgCpuNs(postmaster) - pgBefore;
      return { wallUs: (wallMs * 1000) / ops, nodeCpuUs: (cpu.user + cpu.system) / ops, pgCpuUs: pgNs / 1000 / ops };
    };

    const summary = (samples: Sample[]): Sample & { rounds: Sample[] } => ({
      wallUs: round(median(samples.map((s) => s.wallUs)), 1),
      nodeCpuUs: round(median(samples.map((s) => s.nodeCpuUs)), 1),
      pgCpuUs: round(median(samples.map((s) => s.pgCpuUs)), 1),
      rounds: samples.map((s) => ({ wallUs: round(s.wallUs, 1), nodeCpuUs: round(s.nodeCpuUs, 1), pgCpuUs: round(s.pgCpuUs, 1) })),
    });
    const totalOf = (s: Sample): number => s.nodeCpuUs + s.pgCpuUs;
    const lines = [`reserve + settle, ${OPS} operations per round, median of ${ROUNDS} rounds (µs per operation)`, ''];
    lines.push(
      '| concurrency | requests | wall | gateway CPU | PostgreSQL CPU | CPU total | vs one level |',
      '| ---: | --- | ---: | ---: | ---: | ---: | ---: |',
    );
    const results: { concurrency: number; shape: Shape; summary: Sample & { rounds: Sample[] } }[] = [];
    for (const concurrency of CONCURRENCIES) {
      for (const [one, three] of SHAPES[concurrency] ?? []) {
        // Warm: plans prepared on every connection, caches filled.
        for (const shape of [one, three]) await run(shape, concurrency, 300);
        const rounds = new Map<Shape, Sample[]>([
          [one, []],
          [three, []],
        ]);
        for (let r = 0; r < ROUNDS; r += 1) {
          for (const shape of r % 2 === 0 ? [one, three] : [three, one]) rounds.get(shape)?.push(await run(shape, concurrency, OPS));
        }
        const base = summary(rounds.get(one) ?? []);
        const other = summary(rounds.get(three) ?? []);
        results.push({ concurrency, shape: one, summary: base }, { concurrency, shape: three, summary: other });
        const change = ((totalOf(other) - totalOf(base)) / totalOf(base)) * 100;
        lines.push(`| ${concurrency} | ${one} | ${base.wallUs} | ${base.nodeCpuUs} | ${base.pgCpuUs} | ${round(totalOf(base), 1)} | |`);
        lines.push(
          `| ${concurrency} | ${three} | ${other.wallUs} | ${other.nodeCpuUs} | ${other.pgCpuUs} | ${round(totalOf(other), 1)} | ${change >= 0 ? '+' : ''}${round(change, 1)} % |`,
        );
      }
    }
    process.stdout.write(`${lines.join('\n')}\n`);
    const out = path.resolve(__dirname, '..', '..', 'bench', 'results');
    mkdirSync(out, { recursive: true });
    writeFileSync(path.join(out, 'ledger-levels.json'), `${JSON.stringify({ ops: OPS, rounds: ROUNDS, machine: os.cpus().length, results }, null, 2)}\n`);
  } finally {
    await instance?.stop();
    await notifications.stop();
    await pool.end();
    await orm.close(true);
    await embedded.stop();
    rmSync(root, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`ledger bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
