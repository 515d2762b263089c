import type { Logger } from '../logger';

/**
 * Start-up as named steps: each starts in order and, when it has something to undo, is
 * stopped in reverse order. A start that fails stops what had started.
 */
export class Lifecycle {
  private readonly started: { readonly name: string; readonly stop: () => Promise<void> }[] = [];
  private stopping: Promise<void> | null = null;

  constructor(private readonly log: Logger) {}

  async step<T>(name: string, start: () => Promise<T> | T, stop?: (value: T) => Promise<unknown> | unknown): Promise<T> {
    this.log.debug({ step: name }, 'starting');
    const value = await start();
    if (stop !== undefined) this.started.push({ name, stop: async () => void (await stop(value)) });
    return value;
  }

  /** Stops every started step, newest first; a step that fails to stop is logged, the rest still stop. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      for (const { name, stop } of this.started.splice(0).reverse()) {
        this.log.debug({ step: name }, 'stopping');
        try {
          await stop();
        } catch (error) {
          this.log.error({ err: error, step: name }, 'error while stopping');
        }
      }
    })();
    return this.stopping;
  }

  /** Runs `start` with this lifecycle; on failure, stops what had started and rethrows. */
  async run<T>(start: (life: Lifecycle) => Promise<T>): Promise<T> {
    try {
      return await start(this);
    } catch (error) {
      await this.stop();
      throw error;
    }
  }
}
