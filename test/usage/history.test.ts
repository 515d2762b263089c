import { UsageHistoryDocument, UsageSummaryDocument, type UsageHistoryQuery, type UsageHistoryQueryVariables } from '../generated/graphql';
import { createTestDatabase, sql } from '../helpers/database';
import { startWithAdmin, type TestGateway } from '../helpers/server';
import { chat, codeOf, createUser, type SignedIn } from '../helpers/client';

type Node = UsageHistoryQuery['usage']['edges'][number]['node'];

interface Seed {
  at: string;
  model: string;
  p: number;
  c: number;
}

const BASE = Date.parse('2026-03-01T21:00:00.000Z');
const MODELS = ['sim-alpha', 'sim-beta', 'sim-gamma'];

/**
 * 30 records over two UTC days (21:00 on March 1st to 01:50 on the 2nd), three of them at the
 * same instant (the keyset must break ties by id), one a microsecond before midnight and one at
 * midnight exactly.
 */
function seeds(): Seed[] {
  return Array.from({ length: 30 }, (_, i) => {
    let at = new Date(BASE + i * 10 * 60_000).toISOString().replace('Z', '123Z');
    if (i >= 10 && i <= 12) at = '2026-03-01T22:45:00.000000Z';
    if (i === 17) at = '2026-03-01T23:59:59.999999Z';
    if (i === 18) at = '2026-03-02T00:00:00.000000Z';
    return { at, model: MODELS[i % 3], p: 10 + i, c: 100 + 2 * i };
  });
}

async function insertRecords(databaseUrl: string, userId: string, rows: Seed[]): Promise<void> {
  await sql(
    databaseUrl,
    `insert into usage_records (request_id, user_id, model, interface, prompt_tokens, completion_tokens, total_tokens, charged_tokens,
                                usage_source, prompt_count_source, status, latency_ms, created_at)
     select gen_random_uuid(), $1, r.model, 'graphql', r.p, r.c, r.p + r.c, r.p + r.c, 'reported', 'tokenize', 'completed', 7, r.at::timestamptz
       from jsonb_to_recordset($2::jsonb) as r(model text, p int, c int, at text)`,
    [userId, JSON.stringify(rows)],
  );
}

describe('usage history and summary', () => {
  let gateway: TestGateway;
  let admin: string;
  let alice: SignedIn;
  let bob: SignedIn;
  const aliceSeeds = seeds();

  /** Every page of `usage`, following endCursor. */
  const walk = async (token: string, variables: UsageHistoryQueryVariables): Promise<{ nodes: Node[]; pages: number[] }> => {
    const nodes: Node[] = [];
    const pages: number[] = [];
    let after: string | null = null;
    for (let page = 0; page < 100; page += 1) {
      const result: { data?: UsageHistoryQuery | null; errors?: unknown } = await gateway.gql(UsageHistoryDocument, { ...variables, after }, token);
      if (result.data == null) throw new Error(`usage failed: ${JSON.stringify(result.errors)}`);
      const connection: UsageHistoryQuery['usage'] = result.data.usage;
      nodes.push(...connection.edges.map((edge) => edge.node));
      pages.push(connection.edges.length);
      if (!connection.pageInfo.hasNextPage) return { nodes, pages };
      expect(connection.pageInfo.endCursor).toBe(connection.edges.at(-1)?.cursor);
      after = connection.pageInfo.endCursor ?? null;
    }
    throw new Error('more than 100 pages');
  };
  /** The ids of a user's records, newest first, straight from PostgreSQL. */
  const truth = async (userId: string, from?: string, to?: string): Promise<string[]> => {
    const rows = await sql<{ id: string }>(
      gateway.databaseUrl,
      `select id::text as id from usage_records
        where user_id = $1 and ($2::timestamptz is null or created_at >= $2) and ($3::timestamptz is null or created_at < $3)
        order by created_at desc, id desc`,
      [userId, from ?? null, to ?? null],
    );
    return rows.map((row) => row.id);
  };

  beforeAll(async () => {
    // Sessions far from UTC: day buckets, ranges and cursors must not depend on the session time zone.
    const databaseUrl = await createTestDatabase();
    const name = new URL(databaseUrl).pathname.slice(1);
    await sql(databaseUrl, `alter database ${name} set timezone to 'Pacific/Kiritimati'`);
    ({ gateway, admin: { token: admin } } = await startWithAdmin({ databaseUrl, simulator: { timeToFirstTokenMs: 0, interTokenLatencyMs: 0 } }));
    alice = await createUser(gateway, admin);
    bob = await createUser(gateway, admin);
    await insertRecords(gateway.databaseUrl, alice.id, aliceSeeds);
  });
  afterAll(() => gateway.stop());

  it("walks a user's records newest first, each exactly once, across pages", async () => {
    const requestId = await chat(gateway, alice.token);
    const expected = await truth(alice.id);
    expect(expected).toHaveLength(31);

    const { nodes, pages } = await walk(alice.token, { first: 7 });
    expect(pages).toEqual([7, 7, 7, 7, 3]);
    expect(nodes.map((node) => node.id)).toEqual(expected);
    expect(new Set(nodes.map((node) => node.id)).size).toBe(31);
    // The chat just made is the newest, under its request id.
    expect(nodes[0]).toMatchObject({ requestId, userId: alice.id });
    for (let i = 1; i < nodes.length; i += 1) expect(Date.parse(nodes[i - 1].createdAt)).toBeGreaterThanOrEqual(Date.parse(nodes[i].createdAt));
    expect(nodes.every((node) => node.userId === alice.id && node.totalTokens === node.promptTokens + node.completionTokens)).toBe(true);

    // A page size that divides the total ends with hasNextPage false on the last full page.
    const even = await walk(alice.token, { first: 31 });
    expect(even.pages).toEqual([31]);
    // Nobody else's records, and an empty history is one empty page.
    const empty = await gateway.gql(UsageHistoryDocument, {}, bob.token);
    expect(empty.data?.usage).toEqual({ edges: [], pageInfo: { hasNextPage: false, endCursor: null } });
  });

  it('filters by from (inclusive) and to (exclusive), also across pages', async () => {
    const from = '2026-03-01T22:45:00.000Z'; // the instant three records share
    const to = '2026-03-02T00:00:00.000Z'; // a record sits exactly here, and is left out
    const expected = await truth(alice.id, from, to);
    const inside = aliceSeeds.filter((seed) => Date.parse(seed.at) >= Date.parse(from) && Date.parse(seed.at) < Date.parse(to));
    expect(expected).toHaveLength(inside.length);
    const { nodes } = await walk(alice.token, { from, to, first: 2 });
    expect(nodes.map((node) => node.id)).toEqual(expected);
    expect(nodes.map((node) => node.createdAt)).toContain('2026-03-01T23:59:59.999Z');
    expect(nodes.filter((node) => node.createdAt === '2026-03-01T22:45:00.000Z')).toHaveLength(3);

    const onlyFrom = await walk(alice.token, { from: '2026-03-02T00:00:00.000Z', first: 50 });
    expect(onlyFrom.nodes.map((node) => node.id)).toEqual(await truth(alice.id, '2026-03-02T00:00:00.000Z'));
  });

  it("refuses another user's history to a USER (FORBIDDEN) and gives it to an ADMIN", async () => {
    const asBob = await gateway.gql(UsageHistoryDocument, { userId: alice.id }, bob.token);
    expect(codeOf(asBob.errors)).toBe('FORBIDDEN');
    expect(asBob.data).toBeNull();
    const summaryAsBob = await gateway.gql(UsageSummaryDocument, { userId: alice.id, groupBy: 'MODEL' }, bob.token);
    expect(codeOf(summaryAsBob.errors)).toBe('FORBIDDEN');

    const asAdmin = await walk(admin, { userId: alice.id, first: 500 });
    expect(asAdmin.nodes.map((node) => node.id)).toEqual(await truth(alice.id));
    // Asking for yourself by id is fine for anyone.
    const own = await gateway.gql(UsageHistoryDocument, { userId: bob.id }, bob.token);
    expect(own.errors).toBeUndefined();
  });

  it('refuses bad cursors and out-of-range arguments with BAD_USER_INPUT', async () => {
    const shapes = [
      'garbage',
      Buffer.from(JSON.stringify(['2026-03-01T22:45:00.000000Z', 'not-a-number'])).toString('base64url'),
      Buffer.from(JSON.stringify(['yesterday', '1'])).toString('base64url'),
      Buffer.from('{"a":1}').toString('base64url'),
    ];
    for (const after of shapes) {
      const result = await gateway.gql(UsageHistoryDocument, { after }, alice.token);
      expect({ after, code: codeOf(result.errors) }).toEqual({ after, code: 'BAD_USER_INPUT' });
    }
    for (const first of [-1, 501]) {
      const result = await gateway.gql(UsageHistoryDocument, { first }, alice.token);
      expect({ first, code: codeOf(result.errors) }).toEqual({ first, code: 'BAD_USER_INPUT' });
    }
    const backwards = await gateway.gql(UsageHistoryDocument, { from: '2026-03-02T00:00:00Z', to: '2026-03-01T00:00:00Z' }, alice.token);
    expect(codeOf(backwards.errors)).toBe('BAD_USER_INPUT');
  });

  it('sums by UTC day and by model to the totals of the records', async () => {
    const range = { from: '2026-03-01T00:00:00.000Z', to: '2026-03-03T00:00:00.000Z' };
    const totals = (rows: Seed[]): { requests: number; promptTokens: number; completionTokens: number; totalTokens: number; chargedTokens: number } => ({
      requests: rows.length,
      promptTokens: rows.reduce((sum, row) => sum + row.p, 0),
      completionTokens: rows.reduce((sum, row) => sum + row.c, 0),
      totalTokens: rows.reduce((sum, row) => sum + row.p + row.c, 0),
      chargedTokens: rows.reduce((sum, row) => sum + row.p + row.c, 0),
    });

    const byDay = await gateway.gql(UsageSummaryDocument, { ...range, groupBy: 'DAY' }, alice.token);
    expect(byDay.errors).toBeUndefined();
    const days = ['2026-03-01', '2026-03-02'];
    expect(byDay.data?.usageSummary).toEqual(
      days.map((day) => ({
        key: day,
        day: `${day}T00:00:00.000Z`,
        model: null,
        userId: null,
        teamId: null,
        apiKeyId: null,
        ...totals(aliceSeeds.filter((seed) => seed.at.startsWith(day))),
      })),
    );
    // The microsecond before midnight and midnight itself land on their own days.
    expect(aliceSeeds.filter((seed) => seed.at.startsWith('2026-03-01'))).toHaveLength(18);

    const byModel = await gateway.gql(UsageSummaryDocument, { ...range, groupBy: 'MODEL' }, alice.token);
    expect(byModel.data?.usageSummary).toEqual(
      [...MODELS].sort().map((model) => ({ key: model, day: null, model, userId: null, teamId: null, apiKeyId: null, ...totals(aliceSeeds.filter((seed) => seed.model === model)) })),
    );

    // A range narrows the buckets; an admin sees the same for the user.
    const narrow = { from: '2026-03-02T00:00:00.000Z', to: '2026-03-02T01:00:00.000Z' };
    const narrowed = await gateway.gql(UsageSummaryDocument, { ...narrow, userId: alice.id, groupBy: 'DAY' }, admin);
    expect(narrowed.data?.usageSummary).toEqual([
      {
        key: '2026-03-02',
        day: '2026-03-02T00:00:00.000Z',
        model: null,
        userId: null,
        teamId: null,
        apiKeyId: null,
        ...totals(aliceSeeds.filter((seed) => seed.at >= narrow.from.replace('.000Z', '') && Date.parse(seed.at) < Date.parse(narrow.to))),
      },
    ]);
  });

  it("reads one user's history through usage_records_user_created_index", async () => {
    // Enough rows of other users, over the same days, that neither a sequential scan nor the
    // time-only index would be the right plan.
    const others = [bob, await createUser(gateway, admin), await createUser(gateway, admin)];
    for (const other of others) {
      await sql(
        gateway.databaseUrl,
        `insert into usage_records (request_id, user_id, model, interface, prompt_tokens, completion_tokens, total_tokens, charged_tokens,
                                    usage_source, prompt_count_source, status, latency_ms, created_at)
         select gen_random_uuid(), $1, 'sim-alpha', 'graphql', 1, 1, 2, 2, 'reported', 'tokenize', 'completed', 1,
                timestamptz '2026-03-01T00:00:00Z' + make_interval(secs => n * 20)
           from generate_series(1, 7000) as n`,
        [other.id],
      );
    }
    await sql(gateway.databaseUrl, 'analyze usage_records');
    const plan = async (text: string, values: unknown[]): Promise<string> => {
      const rows = await sql<{ 'QUERY PLAN': unknown }>(gateway.databaseUrl, `explain (format json) ${text}`, values);
      return JSON.stringify(rows[0]['QUERY PLAN']);
    };
    const columns = 'id, request_id, user_id, model, created_at';
    const firstPage = await plan(`select ${columns} from usage_records where user_id = $1 order by created_at desc, id desc limit 51`, [alice.id]);
    const nextPage = await plan(
      `select ${columns} from usage_records where user_id = $1 and (created_at, id) < ($2::timestamptz, $3::bigint) order by created_at desc, id desc limit 51`,
      [alice.id, '2026-03-01T23:00:00Z', '1000'],
    );
    const busyUser = await plan(
      `select ${columns} from usage_records where user_id = $1 and created_at >= $2 and created_at < $3 order by created_at desc, id desc limit 51`,
      [bob.id, '2026-03-01T00:10:00Z', '2026-03-01T04:00:00Z'],
    );
    const busyFirstPage = await plan(`select ${columns} from usage_records where user_id = $1 order by created_at desc, id desc limit 51`, [bob.id]);
    const summary = await plan(
      `select model, count(*), sum(total_tokens) from usage_records where user_id = $1 and created_at >= $2 and created_at < $3 group by 1`,
      [alice.id, '2026-03-01T00:00:00Z', '2026-03-03T00:00:00Z'],
    );
    for (const [name, text] of Object.entries({ firstPage, nextPage, busyUser, busyFirstPage, summary })) {
      expect({ name, usesIndex: text.includes('"Index Name":"usage_records_user_created_index"') }).toEqual({ name, usesIndex: true });
      expect({ name, seqScan: text.includes('"Node Type":"Seq Scan"') }).toEqual({ name, seqScan: false });
    }
    // A busy user's pages read rows in index order and stop at the limit: no sort of all 7000.
    expect(busyUser).not.toContain('"Node Type":"Sort"');
    expect(busyFirstPage).not.toContain('"Node Type":"Sort"');
  });
});
