// Group commit of the ledger: reservations and settlements that arrive while a statement is in
// flight share the next one. The invariants hold as they do one by one: no level overspent, no
// request refused that fits once the others are decided, each charge recorded once, and each
// event carrying the figures as they stood after its own settlement.
import { randomUUID } from 'node:crypto';
import { ServiceUnavailableError, QuotaExceededError, UnauthenticatedError } from '../../src/errors';
import { GroupCommit } from '../../src/quota/group-commit';
import type { ReserveRequest } from '../../src/quota/quota.service';
import type { Reservation, SettledUsage } from '../../src/quota/reservation';
import { RevokeApiKeyDocument } from '../generated/graphql';
import { createApiKey, createUser, dataOf, until, type SignedIn } from '../helpers/client';
import { startWithAdmin, type TestGateway } from '../helpers/server';
import { usageFeed } from '../usage/support';
import { createTeam, levelLedger, recordedSum } from './support';

/** A statement pair that records what it was asked, answering from `decide` (undefined: left undecided). */
function recordingStatements(decide: (item: number) => string | undefined = (item) => `together ${item}`) {
  const calls: Array<{ kind: 'alone' | 'together'; items: number[] }> = [];
  let release: () => void = () => undefined;
  const statements = {
    calls,
    /** Holds the first statement in flight until `open()`. */
    gate: new Promise<void>((resolve) => {
      release = resolve;
    }),
    open: () => release(),
    alone: async (item: number): Promise<string> => {
      calls.push({ kind: 'alone', items: [item] });
      await statements.gate;
      if (item < 0) throw new Error(`item ${item} is bad`);
      return `alone ${item}`;
    },
    together: async (items: readonly number[]): Promise<ReadonlyArray<string | undefined>> => {
      calls.push({ kind: 'together', items: [...items] });
      if (items.some((item) => item < 0)) throw new Error('a bad item in the group');
      return items.map(decide);
    },
  };
  return statements;
}

describe('GroupCommit', () => {
  it('runs an item alone when nothing is in flight, and what arrives meanwhile together, in order', async () => {
    const statements = recordingStatements();
    const observed: number[] = [];
    const group = new GroupCommit<number, string>(statements, 64, (items) => observed.push(items));
    const outcomes = [1, 2, 3, 4].map((item) => group.submit(item));
    expect(statements.calls).toEqual([{ kind: 'alone', items: [1] }]);
    statements.open();
    expect(await Promise.all(outcomes)).toEqual(['alone 1', 'together 2', 'together 3', 'together 4']);
    expect(statements.calls).toEqual([
      { kind: 'alone', items: [1] },
      { kind: 'together', items: [2, 3, 4] },
    ]);
    expect(observed).toEqual([1, 3]);
    // Quiet again: the next item goes alone at once.
    expect(await group.submit(5)).toBe('alone 5');
  });

  it('carries at most maxItems per statement and runs an item that may not share alone at once', async () => {
    const statements = recordingStatements();
    const group = new GroupCommit<number, string>(statements, 2, () => undefined);
    const outcomes = [1, 2, 3, 4, 5].map((item) => group.submit(item));
    const apart = group.submit(9, false);
    expect(statements.calls).toEqual([
      { kind: 'alone', items: [1] },
      { kind: 'alone', items: [9] },
    ]);
    statements.open();
    await Promise.all([...outcomes, apart]);
    expect(statements.calls.slice(2)).toEqual([
      { kind: 'together', items: [2, 3] },
      { kind: 'together', items: [4, 5] },
    ]);
  });

  it('decides alone an item the shared statement left undecided, and every item of a shared statement that failed', async () => {
    const statements = recordingStatements((item) => (item % 2 === 0 ? `together ${item}` : undefined));
    const group = new GroupCommit<number, string>(statements, 64, () => undefined);
    const first = [1, 2, 3].map((item) => group.submit(item));
    statements.open();
    expect(await Promise.all(first)).toEqual(['alone 1', 'together 2', 'alone 3']);

    // A group holding a bad item fails as a whole: each is then tried alone, and only the bad one fails.
    const blocker = recordingStatements();
    const failing = new GroupCommit<number, string>(blocker, 64, () => undefined);
    const held = failing.submit(0);
    const outcomes = [4, -1, 6].map((item) => failing.submit(item).catch((error: Error) => error.message));
    blocker.open();
    await held;
    expect(await Promise.all(outcomes)).toEqual(['alone 4', 'item -1 is bad', 'alone 6']);
  });

  it('fails every item of a shared statement at once when the database cannot be reached', async () => {
    const statements = recordingStatements();
    const unreachable = {
      ...statements,
      together: async (items: readonly number[]): Promise<ReadonlyArray<string | undefined>> => {
        statements.calls.push({ kind: 'together', items: [...items] });
        throw new ServiceUnavailableError();
      },
    };
    const group = new GroupCommit<number, string>(unreachable, 64, () => undefined);
    const held = group.submit(1);
    const outcomes = [2, 3].map((item) => group.submit(item).then(String, (error: unknown) => (error instanceof ServiceUnavailableError ? 'unavailable' : 'other')));
    statements.open();
    await held;
    expect(await Promise.all(outcomes)).toEqual(['unavailable', 'unavailable']);
    expect(statements.calls.filter((call) => call.kind === 'alone')).toHaveLength(1);
  });
});

describe('the ledger group-committed, on a real PostgreSQL', () => {
  let gateway: TestGateway;
  let admin: SignedIn;

  beforeAll(async () => {
    ({ gateway, admin } = await startWithAdmin({ simulator: { timeToFirstTokenMs: 0, interTokenLatencyMs: 0 } }));
  });
  afterAll(() => gateway.stop());

  const PROMPT = 10;
  const MAX_TOKENS = 20;
  const AMOUNT = PROMPT + MAX_TOKENS;
  const USAGE = { promptTokens: PROMPT, completionTokens: 15, cachedTokens: 0, usageSource: 'reported', status: 'completed' } as const;

  function reserveRequest(userId: string, apiKeyId: string | null = null): ReserveRequest {
    return {
      requestId: randomUUID(),
      userId,
      apiKeyId,
      promptTokens: PROMPT,
      promptCountSource: 'tokenize',
      maxTokens: MAX_TOKENS,
      modelCompletionLimit: 1_000,
      minCompletionTokens: 1,
      target: { model: 'sim-llama-3-8b', interface: 'openai', apiKeyId, upstream: 'upstream-1' },
    };
  }

  /** Statements the ledger ran so far, and how many of them carried more than one item. */
  async function statementsRun(statement: 'reserve' | 'settle'): Promise<{ statements: number; shared: number }> {
    const text = await gateway.server.services.metrics.text();
    const count = (pattern: string): number => Number(new RegExp(`^${pattern} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
    const statements = count(`gateway_ledger_statement_items_count\\{statement="${statement}"\\}`);
    return { statements, shared: statements - count(`gateway_ledger_statement_items_bucket\\{le="1",statement="${statement}"\\}`) };
  }

  it('grants exactly what fits of a burst for one user, refuses the rest by name, and settles them all once', async () => {
    const fits = 25;
    const user = await createUser(gateway, admin.token, { tokenLimit: fits * AMOUNT });
    const { quota } = gateway.server.services;
    const reservesBefore = await statementsRun('reserve');
    const settlesBefore = await statementsRun('settle');

    const outcomes = await Promise.allSettled(Array.from({ length: 40 }, () => quota.reserve(reserveRequest(user.id))));
    const granted = outcomes.flatMap((outcome) => (outcome.status === 'fulfilled' ? [outcome.value] : []));
    const refused = outcomes.flatMap((outcome) => (outcome.status === 'rejected' ? [outcome.reason as unknown] : []));
    expect(granted).toHaveLength(fits);
    expect(refused).toHaveLength(40 - fits);
    for (const error of refused) {
      expect(error).toBeInstanceOf(QuotaExceededError);
      expect((error as QuotaExceededError).refusal).toMatchObject({ scope: 'USER', limit: fits * AMOUNT, requested: AMOUNT });
    }
    expect(await levelLedger(gateway.databaseUrl, 'USER', user.id)).toEqual({ used: 0, reserved: fits * AMOUNT });
    const reserves = await statementsRun('reserve');
    expect(reserves.shared - reservesBefore.shared).toBeGreaterThanOrEqual(1);
    expect(reserves.statements - reservesBefore.statements).toBeLessThan(40);

    const subscriber = gateway.ws(user.token);
    const feed = usageFeed(subscriber);
    await until(() => subscriber.acknowledged, 5_000, 'connection_ack');
    await new Promise((resolve) => setTimeout(resolve, 250));
    const settled = (await Promise.all(granted.map((reservation: Reservation) => reservation.settle(USAGE)))) as SettledUsage[];
    const charged = PROMPT + USAGE.completionTokens;
    expect(settled.every((outcome) => outcome.charged && outcome.chargedTokens === charged)).toBe(true);
    // Each settlement reads the figures as they stood after it: a staircase of one charge per step.
    expect(settled.map((outcome) => outcome.used).sort((a, b) => a - b)).toEqual(Array.from({ length: fits }, (_, i) => (i + 1) * charged));
    expect(await levelLedger(gateway.databaseUrl, 'USER', user.id)).toEqual({ used: fits * charged, reserved: 0 });
    expect(await recordedSum(gateway.databaseUrl, 'user_id', user.id)).toBe(fits * charged);
    const settles = await statementsRun('settle');
    expect(settles.shared - settlesBefore.shared).toBeGreaterThanOrEqual(1);

    await until(() => feed.events.length === fits, 5_000, `${fits} usage events`);
    expect(new Set(feed.events.map((event) => event.requestId))).toEqual(new Set(granted.map((reservation) => reservation.requestId)));
    expect(feed.events.map((event) => event.used).sort((a, b) => a - b)).toEqual(Array.from({ length: fits }, (_, i) => (i + 1) * charged));
    const last = feed.events.find((event) => event.used === fits * charged);
    expect(last?.remaining).toBe(fits * AMOUNT - fits * charged);
  });

  it('keeps a team and a key within their limits in one burst, refuses a revoked key, and grants everything that fits', async () => {
    const teamFits = 10;
    const keyFits = 3;
    const team = await createTeam(gateway, admin.token, { tokenLimit: teamFits * AMOUNT, quotaPeriod: 'MONTHLY' });
    const members = [
      await createUser(gateway, admin.token, { teamId: team.id }),
      await createUser(gateway, admin.token, { teamId: team.id }),
      await createUser(gateway, admin.token, { teamId: team.id }),
    ];
    const key = await createApiKey(gateway, members[0].token, 'group-commit', { tokenLimit: keyFits * AMOUNT });
    const revoked = await createApiKey(gateway, members[1].token, 'revoked');
    dataOf(await gateway.gql(RevokeApiKeyDocument, { id: revoked.id }, members[1].token), 'revokeApiKey');

    // Key requests first, so that those the key refuses stand in the group ahead of the team's room.
    const requests = [
      ...Array.from({ length: 8 }, () => reserveRequest(members[0].id, key.id)),
      reserveRequest(members[1].id, revoked.id),
      ...Array.from({ length: 16 }, (_, i) => reserveRequest(members[1 + (i % 2)].id)),
    ];
    const { quota } = gateway.server.services;
    const outcomes = await Promise.allSettled(requests.map((request) => quota.reserve(request)));
    const grantedIndexes = outcomes.flatMap((outcome, index) => (outcome.status === 'fulfilled' ? [index] : []));
    const reasons = outcomes.flatMap((outcome) => (outcome.status === 'rejected' ? [outcome.reason as unknown] : []));

    expect(grantedIndexes).toHaveLength(teamFits);
    expect(grantedIndexes.filter((index) => index < 8)).toHaveLength(keyFits);
    expect(outcomes[8].status === 'rejected' && outcomes[8].reason instanceof UnauthenticatedError).toBe(true);
    const scopes = reasons.filter((reason) => reason instanceof QuotaExceededError).map((reason) => (reason as QuotaExceededError).refusal.scope);
    expect(scopes.filter((scope) => scope === 'API_KEY')).toHaveLength(8 - keyFits);
    expect(scopes.filter((scope) => scope === 'TEAM')).toHaveLength(16 - (teamFits - keyFits));
    expect(await levelLedger(gateway.databaseUrl, 'TEAM', team.id)).toEqual({ used: 0, reserved: teamFits * AMOUNT });
    expect(await levelLedger(gateway.databaseUrl, 'API_KEY', key.id)).toEqual({ used: 0, reserved: keyFits * AMOUNT });

    const reservations = grantedIndexes.map((index) => (outcomes[index] as PromiseFulfilledResult<Reservation>).value);
    await Promise.all(reservations.map((reservation) => reservation.settle(USAGE)));
    const charged = PROMPT + USAGE.completionTokens;
    expect(await levelLedger(gateway.databaseUrl, 'TEAM', team.id)).toEqual({ used: teamFits * charged, reserved: 0 });
    expect(await levelLedger(gateway.databaseUrl, 'API_KEY', key.id)).toEqual({ used: keyFits * charged, reserved: 0 });
    expect(await recordedSum(gateway.databaseUrl, 'team_id', team.id)).toBe(teamFits * charged);
    expect(await recordedSum(gateway.databaseUrl, 'api_key_id', key.id)).toBe(keyFits * charged);
  });
});
