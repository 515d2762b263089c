import type { Config } from '../config';
import type { Logger } from '../logger';
import { createServer } from '../server';
import { stopOnSignals } from '../server/signals';
import { HostMetrics, PrimaryLink, SharedConnectionSlots } from './primary-link';

/**
 * One worker of WORKERS above 1: the whole gateway, as a single process is, on the port it
 * shares with the others, using the database and simulator the primary started, with the
 * WebSocket count and `/metrics` held by the primary for all workers.
 */
export async function runWorker(config: Config, log: Logger): Promise<void> {
  const primary = new PrimaryLink();
  const facts = await primary.ask({ type: 'host' });
  const server = await createServer(config, {
    log,
    worker: { ...facts, connectionSlots: new SharedConnectionSlots(primary), metrics: new HostMetrics(primary) },
  });
  primary.answerSnapshotsWith(() => server.services.metrics.registry.getMetricsAsJSON());
  log.info({ url: server.url }, 'gateway listening');
  primary.listening({ version: server.services.serverInfo.version, url: server.url, wsUrl: server.wsUrl, adminBootstrap: server.adminBootstrap });
  stopOnSignals(() => server.stop(), log);
}
