import { QuotaPeriod } from '../users/user.entity';

export interface PeriodBounds {
  /** Inclusive; the epoch for a lifetime quota. */
  readonly start: Date;
  /** Exclusive; null for a lifetime quota. */
  readonly end: Date | null;
}

export const LIFETIME_START = new Date(0);

/** Calendar periods at UTC boundaries, never relative to a user's first request. */
export function periodBounds(period: QuotaPeriod, now: Date): PeriodBounds {
  const year = now.getUTCFullYear();
  const month = now.getUTCMonth();
  switch (period) {
    case QuotaPeriod.DAILY: {
      const start = Date.UTC(year, month, now.getUTCDate());
      return { start: new Date(start), end: new Date(start + 86_400_000) };
    }
    case QuotaPeriod.MONTHLY:
      return { start: new Date(Date.UTC(year, month, 1)), end: new Date(Date.UTC(year, month + 1, 1)) };
    case QuotaPeriod.NONE:
      return { start: LIFETIME_START, end: null };
  }
}
