import { Client } from 'pg';
import { ADVISORY_LOCK_KEYS } from '../../src/db/advisory-locks';
import type { Clock } from '../../src/clock';
import { AuditLogDocument, UpdateUserDocument, type AuditLogQuery, type AuditLogQueryVariables } from '../generated/graphql';
import { createTestDatabase, sql } from '../helpers/database';
import { startTestGateway, startWithAdmin, type TestGateway } from '../helpers/server';
import { createApiKey, createUser, dataOf, onlyError, signIn, strongPassword, TEST_ADMIN, type SignedIn } from '../helpers/client';

type Entry = AuditLogQuery['auditLog']['nodes'][number];

const DAY_MS = 86_400_000;

describe('auditLog', () => {
  let gateway: TestGateway;
  let admin: SignedIn;
  /** The server's clock runs this far from the real one: entries can be written in the past. */
  let offsetMs = 0;
  const clock: Clock = { now: () => new Date(Date.now() + offsetMs) };

  beforeAll(async () => {
    ({ gateway, admin } = await startWithAdmin({ clock }));
  });
  afterEach(() => {
    offsetMs = 0;
  });
  afterAll(() => gateway.stop());

  const auditLog = (variables: AuditLogQueryVariables, token = admin.token) => gateway.gql(AuditLogDocument, variables, token);
  const entries = async (variables: AuditLogQueryVariables): Promise<Entry[]> =>
    dataOf(await auditLog({ first: 500, ...variables }), 'auditLog').auditLog.nodes;

  it('is for admins only: FORBIDDEN to a user (access token or API key), UNAUTHENTICATED to anyone else', async () => {
    const user = await createUser(gateway, admin.token);
    const key = await createApiKey(gateway, user.token);
    for (const token of [user.token, key.secret]) {
      const result = await auditLog({}, token);
      onlyError(result, 'FORBIDDEN');
      expect(result.data ?? null).toBeNull();
    }
    onlyError(await gateway.gql(AuditLogDocument, {}), 'UNAUTHENTICATED');
  });

  it('pages newest first with cursors, never skipping or repeating an entry', async () => {
    const user = await createUser(gateway, admin.token);
    const keys: string[] = [];
    for (let i = 0; i < 6; i += 1) keys.push((await createApiKey(gateway, user.token, `key ${i}`)).id);

    const all = await entries({ actorId: user.id });
    // The sign-in of createUser, then the six keys, newest first.
    expect(all.map((entry) => entry.action)).toEqual([...Array(6).fill('API_KEY_CREATED'), 'LOGIN']);
    expect(all.slice(0, 6).map((entry) => (entry.details as { apiKeyId: string }).apiKeyId)).toEqual([...keys].reverse());
    const times = all.map((entry) => Date.parse(entry.at));
    expect(times).toEqual([...times].sort((a, b) => b - a));

    const pages: Entry[][] = [];
    let after: string | null = null;
    for (;;) {
      const page: AuditLogQuery['auditLog'] = dataOf(await auditLog({ actorId: user.id, first: 3, after }), 'page').auditLog;
      pages.push(page.nodes);
      expect(page.edges.map((edge) => edge.node.id)).toEqual(page.nodes.map((node) => node.id));
      expect(page.pageInfo.endCursor).toBe(page.edges.at(-1)?.cursor ?? null);
      if (!page.pageInfo.hasNextPage) break;
      after = page.pageInfo.endCursor;
    }
    expect(pages.map((page) => page.length)).toEqual([3, 3, 1]);
    expect(pages.flat()).toEqual(all);
  });

  it('filters by action, actor and target user, each narrowing the others', async () => {
    const user = await createUser(gateway, admin.token);
    dataOf(await gateway.gql(UpdateUserDocument, { id: user.id, input: { tokenLimit: 10 } }, admin.token), 'updateUser');

    expect((await entries({ targetUserId: user.id })).map((entry) => entry.action)).toEqual(['USER_UPDATED', 'LOGIN', 'USER_CREATED']);
    expect((await entries({ targetUserId: user.id, actorId: admin.id })).map((entry) => entry.action)).toEqual(['USER_UPDATED', 'USER_CREATED']);
    expect((await entries({ targetUserId: user.id, action: 'LOGIN' })).map((entry) => entry.actorId)).toEqual([user.id]);
    expect(await entries({ targetUserId: user.id, actorId: admin.id, action: 'LOGIN' })).toEqual([]);

    const updates = await entries({ action: 'USER_UPDATED' });
    expect(updates.length).toBeGreaterThan(0);
    expect(updates.every((entry) => entry.action === 'USER_UPDATED')).toBe(true);
    const byAdmin = await entries({ actorId: admin.id });
    expect(byAdmin.every((entry) => entry.actorId === admin.id)).toBe(true);
  });

  it('refuses malformed arguments with BAD_USER_INPUT naming them', async () => {
    for (const [variables, field] of [
      [{ actorId: 'not-a-user-id' }, 'actorId'],
      [{ targetUserId: '12' }, 'targetUserId'],
      [{ first: 501 }, 'first'],
      [{ first: -1 }, 'first'],
      [{ after: 'bm90IGEgY3Vyc29y' }, 'after'],
    ] as const) {
      expect(onlyError(await auditLog(variables), 'BAD_USER_INPUT').extensions?.field).toBe(field);
    }
  });

  it('is append-only in the database itself: no statement changes or removes an entry', async () => {
    for (const statement of ["update audit_log set ip = '10.0.0.1'", 'delete from audit_log', 'truncate audit_log']) {
      await expect(sql(gateway.databaseUrl, statement)).rejects.toThrow(/audit_log is append-only/);
    }
    expect((await entries({})).length).toBeGreaterThan(0);
  });

  it('names no actor nor address for what the gateway does itself: the first admin, created or promoted at start', async () => {
    const databaseUrl = await createTestDatabase();
    const first = await startTestGateway({ databaseUrl, simulator: gateway.simulator });
    const firstAdmin = await signIn(first, TEST_ADMIN.email, TEST_ADMIN.password);
    const user = await createUser(first, firstAdmin.token);
    await first.stop();
    // With no enabled admin left, the next start promotes the ADMIN_EMAIL user, with ADMIN_PASSWORD.
    await sql(databaseUrl, "update users set disabled = true where role = 'ADMIN'");
    const password = strongPassword();
    const next = await startTestGateway({ databaseUrl, simulator: gateway.simulator, env: { ADMIN_EMAIL: user.email, ADMIN_PASSWORD: password } });
    try {
      const promoted = await signIn(next, user.email, password);
      const read = (targetUserId: string) => next.gql(AuditLogDocument, { targetUserId }, promoted.token);
      const created = dataOf(await read(firstAdmin.id), 'auditLog').auditLog.nodes.filter((entry) => entry.action === 'USER_CREATED');
      expect(created).toEqual([
        expect.objectContaining({
          actorId: null,
          ip: null,
          details: { email: TEST_ADMIN.email, role: 'ADMIN', tokenLimit: null, quotaPeriod: 'NONE', teamId: null },
        }),
      ]);
      const updates = dataOf(await read(user.id), 'auditLog').auditLog.nodes.filter((entry) => entry.action === 'USER_UPDATED');
      expect(updates).toEqual([
        expect.objectContaining({
          actorId: null,
          ip: null,
          details: { changes: { role: { old: 'USER', new: 'ADMIN' }, password: { old: '[redacted]', new: '[redacted]' } } },
        }),
      ]);
    } finally {
      await next.stop();
    }
  });

  describe('retention (AUDIT_RETENTION_DAYS, 365 by default)', () => {
    /** An entry (an API key created by `user`) written `daysAgo` days in the past; its key's id tells it apart. */
    async function entryDaysAgo(user: SignedIn, daysAgo: number): Promise<string> {
      offsetMs = -daysAgo * DAY_MS;
      try {
        return (await createApiKey(gateway, user.token, `${daysAgo} days ago`)).id;
      } finally {
        offsetMs = 0;
      }
    }

    const keyIdsIn = async (user: SignedIn): Promise<string[]> =>
      (await entries({ actorId: user.id, action: 'API_KEY_CREATED' })).map((entry) => (entry.details as { apiKeyId: string }).apiKeyId);

    it('a gateway that starts deletes the entries older than the retention, and keeps the rest', async () => {
      const user = await createUser(gateway, admin.token);
      const expired = await entryDaysAgo(user, 366);
      const kept = await entryDaysAgo(user, 364);
      expect(await keyIdsIn(user)).toEqual([kept, expired]);

      // The job runs at start, then hourly: a second instance on the same database prunes now.
      const second = await startTestGateway({ databaseUrl: gateway.databaseUrl, simulator: gateway.simulator });
      await second.stop();
      expect(await keyIdsIn(user)).toEqual([kept]);
    });

    it('instances take turns: while another holds the turn, a prune skips and deletes nothing', async () => {
      const user = await createUser(gateway, admin.token);
      const expired = await entryDaysAgo(user, 400);
      const other = new Client({ connectionString: gateway.databaseUrl });
      await other.connect();
      try {
        await other.query('select pg_advisory_lock($1)', [ADVISORY_LOCK_KEYS.auditPrune]);
        expect(await gateway.server.services.audit.prune()).toBeNull();
        expect(await keyIdsIn(user)).toEqual([expired]);
        await other.query('select pg_advisory_unlock($1)', [ADVISORY_LOCK_KEYS.auditPrune]);
      } finally {
        await other.end();
      }
      expect(await gateway.server.services.audit.prune()).toBe(1);
      expect(await keyIdsIn(user)).toEqual([]);
    });
  });
});
