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

/**
 * `source` with each value mapped (undefined: skipped). Unlike an async generator, closing it
 * reaches `source` at once, even while a `next()` is pending: an abort wired to the source's
 * close takes effect immediately.
 */
export function mapIterator<T, U>(source: AsyncIterator<T>, map: (value: T) => U | undefined): AsyncIterableIterator<U> {
  const close = async (): Promise<IteratorResult<U>> => {
    await source.return?.();
    return { done: true, value: undefined };
  };
  const iterator: AsyncIterableIterator<U> = {
    [Symbol.asyncIterator]: () => iterator,
    async next() {
      for (;;) {
        const result = await source.next();
        if (result.done === true) return { done: true, value: undefined };
        const mapped = map(result.value);
        if (mapped !== undefined) return { done: false, value: mapped };
      }
    },
    return: close,
    throw: async (error?: unknown) => {
      await close();
      throw error;
    },
  };
  return iterator;
}
