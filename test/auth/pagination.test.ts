import argon2 from 'argon2';
import { UsersDocument, type UsersQuery } from '../generated/graphql';
import { sql } from '../helpers/database';
import { startWithAdmin, type TestGateway } from '../helpers/server';
import { createUser, onlyError, signIn, type SignedIn } from '../helpers/client';

const PASSWORD = 'listed-user-password';
type Page = UsersQuery['users'];

describe('users pagination over 250 users', () => {
  let gateway: TestGateway;
  let admin: SignedIn;

  beforeAll(async () => {
    ({ gateway, admin } = await startWithAdmin());
    // One hash for all 250, inserted in one statement. Creation times repeat (7 distinct
    // values), so the order must break ties by id, or pages would skip and repeat users.
    const hash = await argon2.hash(PASSWORD, { type: argon2.argon2id, memoryCost: 19_456, timeCost: 2, parallelism: 1 });
    await sql(
      gateway.databaseUrl,
      `insert into users (id, email, password_hash, created_at)
       select gen_random_uuid(), format('page-%s@list.test', lpad(i::text, 3, '0')), $1, now() - make_interval(secs => 60 + i % 7)
         from generate_series(1, 250) as i`,
      [hash],
    );
    await sql(gateway.databaseUrl, 'insert into quota_accounts (user_id) select id from users on conflict do nothing');
  });
  afterAll(() => gateway.stop());

  const page = async (variables: { first?: number; after?: string; search?: string }): Promise<Page> => {
    const result = await gateway.gql(UsersDocument, variables, admin.token);
    expect(result.errors).toBeUndefined();
    return result.data!.users;
  };

  /** Follows endCursor until hasNextPage is false; returns the ids in order and the pages' sizes. */
  const walk = async (first: number, search?: string, midway?: () => Promise<void>): Promise<{ ids: string[]; sizes: number[]; totals: number[] }> => {
    const ids: string[] = [];
    const sizes: number[] = [];
    const totals: number[] = [];
    let after: string | undefined;
    for (let pages = 0; pages < 100; pages += 1) {
      const current = await page({ first, after, search });
      ids.push(...current.edges.map((edge) => edge.node.id));
      sizes.push(current.edges.length);
      totals.push(current.totalCount);
      if (current.edges.length > 0) expect(current.pageInfo.endCursor).toBe(current.edges.at(-1)?.cursor);
      if (!current.pageInfo.hasNextPage) {
        // The end is the end: asking past it gives nothing more.
        if (current.pageInfo.endCursor !== null) {
          const beyond = await page({ first, after: current.pageInfo.endCursor, search });
          expect(beyond.edges).toEqual([]);
          expect(beyond.pageInfo.hasNextPage).toBe(false);
        }
        return { ids, sizes, totals };
      }
      expect(current.edges).toHaveLength(first);
      after = current.pageInfo.endCursor ?? undefined;
      if (pages === 1 && midway !== undefined) await midway();
    }
    throw new Error('the walk did not end');
  };

  const idsInOrder = async (where = 'true', values: unknown[] = []): Promise<string[]> =>
    (await sql<{ id: string }>(gateway.databaseUrl, `select id from users where ${where} order by created_at, id`, values)).map((row) => row.id);

  it('walks every user exactly once, in a stable order, ending with hasNextPage false', async () => {
    const expected = await idsInOrder();
    expect(expected.length).toBeGreaterThanOrEqual(251);

    const { ids, sizes, totals } = await walk(37);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toEqual(expected);
    expect(sizes.slice(0, -1).every((size) => size === 37)).toBe(true);
    expect(new Set(totals)).toEqual(new Set([expected.length]));

    // The same walk twice gives the same order.
    expect((await walk(100)).ids).toEqual(expected);
  });

  it('stays exact when a user is created during the walk: it comes last, nobody is skipped or repeated', async () => {
    let created: SignedIn | undefined;
    const { ids } = await walk(40, undefined, async () => {
      created = await createUser(gateway, admin.token);
    });
    expect(created).toBeDefined();
    expect(ids).toEqual(await idsInOrder());
    expect(ids.at(-1)).toBe(created?.id);
  });

  it('gives 20 users when first is omitted', async () => {
    const current = await page({});
    expect(current.edges).toHaveLength(20);
    expect(current.pageInfo.hasNextPage).toBe(true);
  });

  it('filters by part of the email, case-insensitively, across pages', async () => {
    const expected = await idsInOrder("email like '%page-1%'");
    expect(expected).toHaveLength(100);
    const { ids, totals } = await walk(30, 'page-1');
    expect(ids).toEqual(expected);
    expect(new Set(totals)).toEqual(new Set([100]));

    const upper = await page({ search: 'PAGE-25', first: 100 });
    expect(upper.edges.map((edge) => edge.node.email)).toEqual(['page-250@list.test']);
    expect(upper.totalCount).toBe(1);
  });

  it('treats % and _ in search as plain characters', async () => {
    for (const search of ['%', 'page_1', 'page-1%']) {
      const current = await page({ search });
      expect([search, current.totalCount, current.edges]).toEqual([search, 0, []]);
    }
  });

  it('refuses a cursor it never gave out, and first out of range, with BAD_USER_INPUT', async () => {
    const forged = Buffer.from(JSON.stringify(['2020-01-01T00:00:00.000000Z', "x' or 1=1 --"])).toString('base64url');
    // '' included: only null means "from the start"; an empty string is a cursor that fails to
    // decode like any other (src/users/user.service.ts tests `after != null`).
    for (const after of ['garbage', '', forged, Buffer.from('[1,2]').toString('base64url')]) {
      const result = await gateway.gql(UsersDocument, { first: 10, after }, admin.token);
      expect(onlyError(result, 'BAD_USER_INPUT').extensions?.field).toBe('after');
    }
    for (const first of [-1, 101]) {
      expect(onlyError(await gateway.gql(UsersDocument, { first }, admin.token), 'BAD_USER_INPUT').extensions?.field).toBe('first');
    }
  });

  it('lists real accounts: a listed user signs in', async () => {
    const listed = await page({ search: 'page-007' });
    expect(listed.edges).toHaveLength(1);
    expect((await signIn(gateway, 'page-007@list.test', PASSWORD)).id).toBe(listed.edges[0].node.id);
  });
});
