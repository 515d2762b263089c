import type { PgNotifications } from '../db/notifications';
import { USAGE_TOPIC } from './usage-wire';
import type { UsageEvent } from './usage.types';

/** Where settled requests are announced (the settle statement sends them, see QuotaService). */
export interface UsageBus {
  /** One user's events, or with null every user's (for admins). */
  subscribe(userId: string | null): AsyncIterableIterator<UsageEvent>;
}

/**
 * Usage events through PostgreSQL NOTIFY, so an event settled on any instance reaches
 * subscribers on every instance, exactly when its usage record commits. The settling instance
 * hears its own NOTIFY too: that is its only delivery path, so no subscriber gets an event
 * twice. Subscribers are indexed by user: an event visits its user's subscribers and the
 * "everyone" set, not every subscriber of the instance.
 */
export class PgUsageBus implements UsageBus {
  private readonly byUser = new Map<string, Set<Subscriber<UsageEvent>>>();
  private readonly everyone = new Set<Subscriber<UsageEvent>>();

  constructor(notifications: PgNotifications) {
    notifications.on(USAGE_TOPIC, (event) => {
      for (const subscriber of this.byUser.get(event.userId) ?? []) subscriber.push(event);
      for (const subscriber of this.everyone) subscriber.push(event);
    });
  }

  /** Live subscriptions on this instance. */
  get subscriberCount(): number {
    let count = this.everyone.size;
    for (const set of this.byUser.values()) count += set.size;
    return count;
  }

  subscribe(userId: string | null): AsyncIterableIterator<UsageEvent> {
    if (userId === null) {
      const subscriber: Subscriber<UsageEvent> = new Subscriber(() => this.everyone.delete(subscriber));
      this.everyone.add(subscriber);
      return subscriber;
    }
    const set = this.byUser.get(userId) ?? new Set<Subscriber<UsageEvent>>();
    this.byUser.set(userId, set);
    const subscriber: Subscriber<UsageEvent> = new Subscriber(() => {
      set.delete(subscriber);
      if (set.size === 0 && this.byUser.get(userId) === set) this.byUser.delete(userId);
    });
    set.add(subscriber);
    return subscriber;
  }
}

/**
 * A subscription that is registered the moment it is created (not on the first `next()`),
 * so no event settled right after subscribing is missed. Events wait in a bounded queue;
 * a consumer too slow to keep up loses the oldest.
 */
class Subscriber<T> implements AsyncIterableIterator<T> {
  private readonly queue: T[] = [];
  private waiting: ((result: IteratorResult<T>) => void) | null = null;
  private done = false;
  private static readonly MAX_QUEUED = 1000;

  constructor(private readonly onClose: () => void) {}

  push(value: T): void {
    if (this.done) return;
    if (this.waiting !== null) {
      const resolve = this.waiting;
      this.waiting = null;
      resolve({ value, done: false });
      return;
    }
    if (this.queue.length >= Subscriber.MAX_QUEUED) this.queue.shift();
    this.queue.push(value);
  }

  next(): Promise<IteratorResult<T>> {
    if (this.queue.length > 0) return Promise.resolve({ value: this.queue.shift() as T, done: false });
    if (this.done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => {
      this.waiting = resolve;
    });
  }

  return(): Promise<IteratorResult<T>> {
    if (!this.done) {
      this.done = true;
      this.queue.length = 0;
      this.onClose();
      this.waiting?.({ value: undefined, done: true });
      this.waiting = null;
    }
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }
}
