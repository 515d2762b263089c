// Quota periods are calendar periods at UTC boundaries (not relative to a first request), roll
// over lazily with no cron, and a lifetime quota never resets. The server gets an injected
// clock, so the test crosses midnight and month ends without waiting.
import type { Clock } from '../../src/clock';
import { ChatDocument, ChatStreamDocument, type QuotaPeriod } from '../generated/graphql';
import { createTestDatabase, ledger, sql, usageRecords } from '../helpers/database';
import { resetSimulator, startWithAdmin, type TestGateway } from '../helpers/server';
import { codeOf, createUser, eventually, usageOf } from '../helpers/client';

const LIMIT = 120;
const messages = [{ role: 'USER' as const, content: 'Count to ten.' }];

describe('quota periods at UTC boundaries', () => {
  let gateway: TestGateway;
  let admin: string;
  let now = new Date('2026-03-14T12:00:00Z');
  const clock: Clock = { now: () => now };

  beforeAll(async () => {
    // The database's sessions run 14 hours ahead of UTC: SQL that truncated to the session's
    // day or month instead of UTC's would put the boundary in the wrong place.
    const databaseUrl = await createTestDatabase();
    await sql(databaseUrl, `alter database ${new URL(databaseUrl).pathname.slice(1)} set timezone to 'Pacific/Kiritimati'`);
    ({ gateway, admin: { token: admin } } = await startWithAdmin({ clock, databaseUrl }));
  });
  afterEach(() => resetSimulator(gateway.simulator));
  afterAll(() => gateway.stop());

  /** Chats (no maxTokens, so the last one is capped to what remains) until refused. */
  async function spendUntilRefused(token: string): Promise<number> {
    let spent = 0;
    for (let i = 0; i < 20; i++) {
      const result = await gateway.gql(ChatDocument, { input: { messages } }, token);
      if (result.data?.chat == null) {
        expect(codeOf(result.errors)).toBe('QUOTA_EXCEEDED');
        return spent;
      }
      spent += result.data.chat.usage.totalTokens;
    }
    throw new Error('never refused');
  }

  async function newPeriodRecordsSum(userId: string, from: Date): Promise<number> {
    const records = await usageRecords(gateway.databaseUrl, userId);
    return records.filter((record) => new Date(record.created_at) >= from).reduce((sum, record) => sum + record.charged_tokens, 0);
  }

  it.each<[QuotaPeriod, string, string, string, string, string]>([
    // period, last second of a period, its start, first second of the next, its start, its end
    ['DAILY', '2026-03-14T23:59:59Z', '2026-03-14T00:00:00.000Z', '2026-03-15T00:00:01Z', '2026-03-15T00:00:00.000Z', '2026-03-16T00:00:00.000Z'],
    ['MONTHLY', '2026-01-31T23:59:59Z', '2026-01-01T00:00:00.000Z', '2026-02-01T00:00:01Z', '2026-02-01T00:00:00.000Z', '2026-03-01T00:00:00.000Z'],
  ])('%s: spent out at the end of a period, spends again one second into the next', async (period, lastSecond, start, firstSecond, nextStart, nextEnd) => {
    now = new Date(lastSecond);
    const user = await createUser(gateway, admin, { tokenLimit: LIMIT, quotaPeriod: period });
    // The period ends where the next one starts.
    expect(await usageOf(gateway, user.token)).toMatchObject({ used: 0, periodStart: start, periodEnd: nextStart });

    const spent = await spendUntilRefused(user.token);
    expect(spent).toBeGreaterThan(0);
    const atEnd = await usageOf(gateway, user.token);
    expect(atEnd.used).toBe(spent);
    expect(atEnd.used).toBeLessThanOrEqual(LIMIT);
    expect(atEnd.periodStart).toBe(start);

    now = new Date(firstSecond);
    // Nothing has run since midnight: the new period shows fresh, with no cron having run.
    expect(await usageOf(gateway, user.token)).toEqual({ used: 0, limit: LIMIT, remaining: LIMIT, reserved: 0, periodStart: nextStart, periodEnd: nextEnd });

    const again = await gateway.gql(ChatDocument, { input: { messages } }, user.token);
    expect(again.errors).toBeUndefined();
    const charged = again.data!.chat.usage.totalTokens;
    const after = await usageOf(gateway, user.token);
    expect(after).toMatchObject({ used: charged, remaining: LIMIT - charged, periodStart: nextStart, periodEnd: nextEnd });
    // Invariant 3 per period: the records of the new period add up to `used`.
    expect(await newPeriodRecordsSum(user.id, new Date(nextStart))).toBe(charged);
    // The old period's records are kept, dated in the old period.
    const records = await usageRecords(gateway.databaseUrl, user.id);
    expect(records.filter((record) => new Date(record.created_at) < new Date(nextStart)).reduce((sum, record) => sum + record.charged_tokens, 0)).toBe(spent);
  });

  it('NONE: a lifetime quota never resets', async () => {
    now = new Date('2026-01-31T23:59:59Z');
    const user = await createUser(gateway, admin, { tokenLimit: LIMIT, quotaPeriod: 'NONE' });
    const spent = await spendUntilRefused(user.token);
    expect(await usageOf(gateway, user.token)).toMatchObject({ used: spent, periodStart: null, periodEnd: null });

    for (const later of ['2026-02-01T00:00:01Z', '2026-02-02T00:00:01Z', '2027-01-01T00:00:01Z']) {
      now = new Date(later);
      expect(await usageOf(gateway, user.token)).toMatchObject({ used: spent, periodStart: null, periodEnd: null });
      const refused = await gateway.gql(ChatDocument, { input: { messages } }, user.token);
      expect(codeOf(refused.errors)).toBe('QUOTA_EXCEEDED');
    }
  });

  it('DAILY: a stream that starts before midnight and ends after it is charged once, in the new day', async () => {
    now = new Date('2026-05-20T23:59:59Z');
    const user = await createUser(gateway, admin, { tokenLimit: 1_000, quotaPeriod: 'DAILY' });
    gateway.simulator.setLatency({ timeToFirstTokenMs: 50, interTokenLatencyMs: 40 });

    const ws = gateway.ws(user.token);
    const streaming = ws.collect(ChatStreamDocument, { input: { messages, maxTokens: 10 } });
    // The reservation is made before midnight...
    const held = await eventually(async () => {
      const row = await ledger(gateway.databaseUrl, user.id);
      return row.reserved > 0 ? row : undefined;
    }, 2_000, 'the reservation');
    expect(held.reservations).toBe(1);
    // ...and settled after it.
    now = new Date('2026-05-21T00:00:01Z');
    const outcome = await streaming;
    expect(outcome.error).toBeNull();
    const last = outcome.events.at(-1)!.chatStream;
    expect(last.usage).not.toBeNull();

    const usage = await usageOf(gateway, user.token);
    expect(usage).toMatchObject({ used: last.usage!.totalTokens, reserved: 0, periodStart: '2026-05-21T00:00:00.000Z' });
    expect(await ledger(gateway.databaseUrl, user.id)).toEqual({ used: last.usage!.totalTokens, reserved: 0, reservations: 0 });
    const records = await usageRecords(gateway.databaseUrl, user.id);
    expect(records).toHaveLength(1);
    expect(new Date(records[0].created_at).toISOString()).toBe('2026-05-21T00:00:01.000Z');
  });
});
