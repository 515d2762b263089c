import type { Topic } from '../db/notifications';
import type { UsageEvent } from './usage.types';

/** The PostgreSQL channel that settled requests are announced on. */
export const USAGE_CHANNEL = 'gateway_usage';

/** An event before settlement: the settle statement adds the quota figures and the time. */
export type UnsettledUsageEvent = Omit<UsageEvent, 'used' | 'remaining' | 'at' | 'totalTokens'>;

/**
 * The wire form: ids and numbers only, far below NOTIFY's 8000-byte limit. The settle
 * statement writes `used`, `rem` (remaining, null when unlimited) and `at` into it itself,
 * so the record and its event commit together.
 */
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

export function encodeUnsettled(event: UnsettledUsageEvent): string {
  const wire: Omit<WireEvent, 'used' | 'rem' | 'at'> = {
    r: event.requestId,
    u: event.userId,
    m: event.model.slice(0, 256),
    p: event.promptTokens,
    c: event.completionTokens,
  };
  return JSON.stringify(wire);
}

export function decodeUsageEvent(text: string): UsageEvent | null {
  let wire: Partial<WireEvent>;
  try {
    wire = JSON.parse(text) as Partial<WireEvent>;
  } catch {
    return null;
  }
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

/** What usageUpdated is fed from, on every instance. */
export const USAGE_TOPIC: Topic<UsageEvent> = { channel: USAGE_CHANNEL, decode: decodeUsageEvent };
