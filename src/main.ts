import { ConfigError, loadConfig, type Config } from './config';
import { DataDirError } from './db/embedded';
import { createLogger } from './logger';
import { createServer } from './server';

function fail(message: string, exitCode: number): never {
  process.stderr.write(`vllm-gateway: ${message}\n`);
  process.exit(exitCode);
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) fail(`configuration error: ${error.message}`, 2);
    throw error;
  }
  const log = createLogger(config);

  let server;
  try {
    server = await createServer(config, { log });
  } catch (error) {
    if (error instanceof DataDirError) fail(error.message, 1);
    log.fatal({ err: error }, 'start failed');
    fail(`start failed: ${error instanceof Error ? error.message : String(error)}`, 1);
  }
  const running = server;
  log.info({ url: running.url, simulator: running.services.serverInfo.simulator }, 'gateway listening');
  process.stdout.write(`\nvLLM gateway ${running.services.serverInfo.version} is up.\n  GraphiQL:  ${running.url}\n  WebSocket: ${running.wsUrl}\n\n`);

  if (running.adminBootstrap?.generatedPassword != null) {
    process.stdout.write(
      `  First admin created: ${running.adminBootstrap.email}\n` +
        `  Password (shown this once, change it with changePassword): ${running.adminBootstrap.generatedPassword}\n\n`,
    );
  }

  let stoppingSince: number | null = null;
  const stop = (signal: NodeJS.Signals): void => {
    if (stoppingSince !== null) {
      // Ctrl-C under `npm start` arrives twice at once (from the terminal and forwarded by
      // npm); only a later, deliberate second signal skips the drain.
      if (Date.now() - stoppingSince < 2000) return;
      log.warn({ signal }, 'second signal: exiting without waiting');
      process.exit(1);
    }
    stoppingSince = Date.now();
    log.info({ signal }, 'stopping: draining in-flight requests');
    running.stop().then(
      () => {
        log.info('stopped');
        process.exit(0);
      },
      (error: unknown) => {
        log.error({ err: error }, 'error while stopping');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main().catch((error: unknown) => {
  process.stderr.write(`vllm-gateway: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
