import type { Config } from '../config';
import { migrate, whileHoldingStartLock } from '../db/connect';
import { startEmbeddedPostgres } from '../db/embedded';
import type { Logger } from '../logger';
import { printBanner } from '../server/banner';
import { Lifecycle } from '../server/lifecycle';
import { stopOnSignals } from '../server/signals';
import { startBuiltInSimulator } from '../upstreams/connect';
import { SocketCounts } from './socket-counts';
import { WorkerPool } from './worker-pool';

/**
 * The primary of WORKERS above 1: it serves no request itself. It does what must happen once
 * per host (the embedded PostgreSQL and the built-in simulator when none is configured, the
 * migrations), then forks the workers, keeps what they share (the WebSocket count, the sum of
 * their metrics), replaces one that dies, and on SIGTERM or SIGINT lets them drain before it
 * stops what it started.
 */
export async function runPrimary(config: Config, log: Logger): Promise<void> {
  const life = new Lifecycle(log);
  const pool = await life.run(async () => {
    const databaseUrl =
      config.databaseUrl ?? (await life.step('embedded PostgreSQL', () => startEmbeddedPostgres(config.dataDir, log), (pg) => pg.stop())).url;
    const simulatorUrl =
      config.upstreams.length > 0 ? null : (await life.step('built-in simulator', () => startBuiltInSimulator(log), (simulator) => simulator.stop())).url;
    if (config.migrateOnStart) await life.step('migrations', () => whileHoldingStartLock(databaseUrl, () => migrate(databaseUrl, log)));
    const workers = new WorkerPool(config.workers, { databaseUrl, simulatorUrl }, new SocketCounts(config.ws.maxConnectionsPerUser), log);
    const served = await life.step('workers', () => workers.start());
    log.info({ url: served.url, workers: config.workers }, 'all workers listening');
    printBanner({ ...served, workers: config.workers });
    return workers;
  });
  // The workers stop first, each draining its requests; what they used stops after.
  stopOnSignals(async () => {
    try {
      await pool.stop();
    } finally {
      await life.stop();
    }
  }, log);
}
