import cluster from 'node:cluster';
import { ConfigError, loadConfig, type Config } from './config';
import { DataDirError } from './db/embedded';
import { createLogger, type Logger } from './logger';
import { createServer } from './server';
import { printBanner } from './server/banner';
import { stopOnSignals } from './server/signals';
import { runPrimary } from './workers/primary';
import { runWorker } from './workers/worker';

function fail(message: string, exitCode: number): never {
  process.stderr.write(`vllm-gateway: ${message}\n`);
  process.exit(exitCode);
}

/** WORKERS=1: the whole gateway in this one process, as if there were no cluster at all. */
async function runSingle(config: Config, log: Logger): Promise<void> {
  const server = await createServer(config, { log });
  log.info({ url: server.url, simulator: server.services.serverInfo.simulator }, 'gateway listening');
  printBanner({ version: server.services.serverInfo.version, url: server.url, wsUrl: server.wsUrl, workers: 1, adminBootstrap: server.adminBootstrap });
  stopOnSignals(() => server.stop(), log);
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) fail(`configuration error: ${error.message}`, 2);
    throw error;
  }
  const root = createLogger(config);
  try {
    if (config.workers === 1) await runSingle(config, root);
    else if (cluster.isPrimary) await runPrimary(config, root.child({ primary: true, pid: process.pid }));
    else await runWorker(config, root.child({ worker: cluster.worker?.id, pid: process.pid }));
  } catch (error) {
    if (error instanceof DataDirError) fail(error.message, 1);
    root.fatal({ err: error }, 'start failed');
    fail(`start failed: ${error instanceof Error ? error.message : String(error)}`, 1);
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`vllm-gateway: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
