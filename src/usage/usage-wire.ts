import type { Topic } from '../db/notifications';
import type { UsageEvent } from './usage.types';

/** The PostgreSQL channel that settled requests are announced on. */
export const USAGE_CHANNEL = 'gateway_usage';

/** What the settle statement adds to an event: the quota figures of every level and the time. */
type SettledFigures = 'used' | 'remaining' | 'teamUsed' | 'teamRemaining' | 'apiKeyUsed' | 'apiKeyRemaining' | 'at';

/** An event before settlement. */
export type UnsettledUsageEvent = Omit<UsageEvent, SettledFigures | 'totalTokens'>;

/**
 * The wire form: ids and numbers only, far below NOTIFY's 8000-byte limit. The settle
 * statement writes `used`, `rem` (remaining, null when unlimited), the team's (`tu`, `trem`)
 * and the key's (`ku`, `krem`) figures, null for a level the request did not belong to, and
 * `at` into it itself, so the record and its event commit together.
 */
interface WireEvent {
  r: string;
  u: string;
  k: string | null;
  t: string | null;
  m: string;
  p: number;
  c: number;
  /** Cached prompt tokens; absent from events of instances that predate it. */
  ct?: number;
  used: number;
  rem: number | null;
  tu: number | null;
  trem: number | null;
  ku: number | null;
  krem: number | null;
  at: string;
}

const numberOrNull = (value: unknown): number | null => (typeof value === 'number' ? value : null);
const stringOrNull = (value: unknown): string | null => (typeof value === 'string' ? value : null);

export function encodeUnsettled(event: UnsettledUsageEvent): string {
  const wire: Pick<WireEvent, 'r' | 'u' | 'k' | 't' | 'm' | 'p' | 'c' | 'ct'> = {
    r: event.requestId,
    u: event.userId,
    k: event.apiKeyId,
    t: event.teamId,
    m: event.model.slice(0, 256),
    p: event.promptTokens,
    c: event.completionTokens,
    ct: event.cachedTokens,
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
    apiKeyId: stringOrNull(wire.k),
    teamId: stringOrNull(wire.t),
    model: String(wire.m ?? ''),
    promptTokens: wire.p,
    completionTokens: wire.c,
    cachedTokens: typeof wire.ct === 'number' ? wire.ct : 0,
    totalTokens: wire.p + wire.c,
    used: Number(wire.used ?? 0),
    remaining: numberOrNull(wire.rem),
    teamUsed: numberOrNull(wire.tu),
    teamRemaining: numberOrNull(wire.trem),
    apiKeyUsed: numberOrNull(wire.ku),
    apiKeyRemaining: numberOrNull(wire.krem),
    at: new Date(String(wire.at)),
  };
}

/** What usageUpdated is fed from, on every instance. */
export const USAGE_TOPIC: Topic<UsageEvent> = { channel: USAGE_CHANNEL, decode: decodeUsageEvent };
