import type { Logger } from '../logger';

/**
 * SIGINT and SIGTERM stop the process gracefully with `stop`, then exit (0, or 1 when stopping
 * failed); a deliberate second signal exits at once with 1.
 */
export function stopOnSignals(stop: () => Promise<void>, log: Logger): void {
  let stoppingSince: number | null = null;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stoppingSince !== null) {
      // Ctrl-C under `npm start` arrives twice at once (from the terminal and forwarded by
      // npm), and a worker gets the terminal's and its primary's; only a later, deliberate
      // second signal skips the drain.
      if (Date.now() - stoppingSince < 2000) return;
      log.warn({ signal }, 'second signal: exiting without waiting');
      process.exit(1);
    }
    stoppingSince = Date.now();
    log.info({ signal }, 'stopping: draining in-flight requests');
    stop().then(
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
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}
