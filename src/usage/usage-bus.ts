import { CHANNELS, type PgNotifications } from '../db/notifications';
import type { SettlementNotice } from '../quota/quota.service';
import type { UsageEvent } from './usage.types';

/** An event before settlement: the settle statement adds the quota figures and the time. */
export type UnsettledUsageEvent = Omit<UsageEvent, 'used' | 'remaining' | 'at' | 'totalTokens'>;

/** Where settled requests are announced; subscribers filter by user. */
export interface UsageBus {
  /** The NOTIFY the settle statement sends for this request (see QuotaService.settle). */
  notice(event: UnsettledUsageEvent): SettlementNotice;
  subscribe(): AsyncIterable<UsageEvent>;
}

/** The wire form: ids and numbers only, far below NOTIFY's 8000-byte limit. */
interface WireEvent {
  r: string;
  u: string;
  m: string;
  p: number;
  c: number;
  used: number;
  rem: number | null;
  at: string;
}

function toWire(event: UnsettledUsageEvent): Omit<WireEvent, 'used' | 'rem' | 'at'> {
  return {
    r: event.requestId,
    u: event.userId,
    m: event.model.slice(0, 256),
    p: event.promptTokens,
    c: event.completionTokens,
  };
}

function fromWire(text: string): UsageEvent | null {
  const wire = JSON.parse(text) as Partial<WireEvent>;
  if (typeof wire.r !== 'string' || typeof wire.u !== 'string' || typeof wire.p !== 'number' || typeof wire.c !== 'number') return null;
  return {
    requestId: wire.r,
    userId: wire.u,
    model: String(wire.m ?? ''),
    promptTokens: wire.p,
    completionTokens: wire.c,
    totalTokens: wire.p + wire.c,
    used: Number(wire.used ?? 0),
    remaining: typeof wire.rem === 'number' ? wire.rem : null,
    at: new Date(String(wire.at)),
  };
}

/**
 * Usage events through PostgreSQL NOTIFY, sent by the settle statement itself, so an event
 * settled on any instance reaches subscribers on every instance, and exactly when its usage
 * record commits. The settling instance hears its own NOTIFY too: that is its only delivery
 * path, so no subscriber gets an event twice.
 */
export class PgUsageBus implements UsageBus {
  private readonly subscribers = new Set<Subscriber<UsageEvent>>();

  constructor(notifications: PgNotifications) {
    notifications.on(CHANNELS.usage, (payload) => {
      const event = fromWire(payload);
      if (event === null) return;
      for (const subscriber of this.subscribers) subscriber.push(event);
    });
  }

  notice(event: UnsettledUsageEvent): SettlementNotice {
    return { channel: CHANNELS.usage, payload: JSON.stringify(toWire(event)) };
  }

  subscribe(): AsyncIterable<UsageEvent> {
    const subscriber = new Subscriber<UsageEvent>(() => this.subscribers.delete(subscriber));
    this.subscribers.add(subscriber);
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
