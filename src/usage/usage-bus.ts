import type { PgNotifications } from '../db/notifications';
import { USAGE_TOPIC } from './usage-wire';
import type { UsageEvent } from './usage.types';

/** Whose events a subscription gets: one user's, one team's (its members'), or with null everyone's. */
export type UsageTarget = { readonly userId: string } | { readonly teamId: string } | null;

/** Where settled requests are announced (the settle statement sends them, see QuotaService). */
export interface UsageBus {
  subscribe(target: UsageTarget): AsyncIterableIterator<UsageEvent>;
}

type Subscribers = Map<string, Set<Subscriber<UsageEvent>>>;

/**
 * Usage events through PostgreSQL NOTIFY, so an event settled on any instance reaches
 * subscribers on every instance, exactly when its usage record commits. The settling instance
 * hears its own NOTIFY too: that is its only delivery path, so no subscriber gets an event
 * twice. Subscribers are indexed by user and by team: an event visits its user's and its
 * team's subscribers and the "everyone" set, not every subscriber of the instance.
 */
export class PgUsageBus implements UsageBus {
  private readonly byUser: Subscribers = new Map();
  private readonly byTeam: Subscribers = new Map();
  private readonly everyone = new Set<Subscriber<UsageEvent>>();

  constructor(notifications: PgNotifications) {
    notifications.on(USAGE_TOPIC, (event) => {
      for (const subscriber of this.byUser.get(event.userId) ?? []) subscriber.push(event);
      if (event.teamId !== null) for (const subscriber of this.byTeam.get(event.teamId) ?? []) subscriber.push(event);
      for (const subscriber of this.everyone) subscriber.push(event);
    });
  }

  /** Live subscriptions on this instance. */
  get subscriberCount(): number {
    let count = this.everyone.size;
    for (const index of [this.byUser, this.byTeam]) for (const set of index.values()) count += set.size;
    return count;
  }

  subscribe(target: UsageTarget): AsyncIterableIterator<UsageEvent> {
    if (target === null) {
      const subscriber: Subscriber<UsageEvent> = new Subscriber(() => this.everyone.delete(subscriber));
      this.everyone.add(subscriber);
      return subscriber;
    }
    return 'userId' in target ? join(this.byUser, target.userId) : join(this.byTeam, target.teamId);
  }
}

/** A subscriber registered under `id` in `index`, unregistered (and the id's set dropped once empty) when it closes. */
function join(index: Subscribers, id: string): Subscriber<UsageEvent> {
  const set = index.get(id) ?? new Set<Subscriber<UsageEvent>>();
  index.set(id, set);
  const subscriber: Subscriber<UsageEvent> = new Subscriber(() => {
    set.delete(subscriber);
    if (set.size === 0 && index.get(id) === set) index.delete(id);
  });
  set.add(subscriber);
  return subscriber;
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
