export interface IteratorHooks {
  /** Runs around every call into the source, e.g. to enter a logging scope. */
  around?: <R>(call: () => Promise<R>) => Promise<R>;
  /**
   * Runs before return() or throw() reach the source. A generator suspended in an `await`
   * (on the upstream, on the bus) sees return() only once that await settles: this is where
   * to abort what it waits on, so closing takes effect at once.
   */
  beforeClose?: () => unknown;
  /** Runs once when the iteration ends, however it ends (done, failed, closed). */
  onEnd?: () => Promise<unknown>;
}

/** An async iterator that behaves like `source` with `hooks` around it. */
export function hookIterator<T>(source: AsyncIterator<T>, hooks: IteratorHooks): AsyncIterableIterator<T> {
  const around = hooks.around ?? (<R>(call: () => Promise<R>) => call());
  let ended: Promise<unknown> | null = null;
  const end = (): Promise<unknown> => (ended ??= hooks.onEnd?.() ?? Promise.resolve());
  const close = async (): Promise<IteratorResult<T>> => {
    try {
      await hooks.beforeClose?.();
      await around(async () => source.return?.());
    } finally {
      await end();
    }
    return { done: true, value: undefined };
  };
  const iterator: AsyncIterableIterator<T> = {
    [Symbol.asyncIterator]: () => iterator,
    next: () =>
      around(async () => {
        let result: IteratorResult<T>;
        try {
          result = await source.next();
        } catch (error) {
          await end();
          throw error;
        }
        if (result.done === true) await end();
        return result;
      }),
    return: close,
    throw: async (error?: unknown) => {
      await close();
      throw error;
    },
  };
  return iterator;
}
