import { UpdateUserDocument } from '../generated/graphql';
import { sql } from '../helpers/database';
import { startTestGateway, type TestGateway } from '../helpers/server';
import { startSimulator, type Simulator } from '../../src/simulator';
import { chat, createUser, signInAdmin, sleep, until, usageOf, type Feed, type SignedIn, type WsClient } from '../helpers/client';
import { busSubscribers, requestIds, usageFeed, type UsageEventData } from './support';
// Deterministic (mulberry32), so a failure can be replayed with the same seed.
import { seededRandom } from '../../src/simulator/generation';

const USERS = 8;
const SOCKETS_PER_USER = 3;
const CHATS = 40;
const IN_FLIGHT = 8;

describe('usageUpdated across two gateways on one database', () => {
  let simulator: Simulator;
  let a: TestGateway;
  let b: TestGateway;
  let admin: string;
  const clients: WsClient[] = [];

  const connect = (gateway: TestGateway, token: string): WsClient => {
    const client = gateway.ws(token);
    clients.push(client);
    return client;
  };

  beforeAll(async () => {
    simulator = await startSimulator({ timeToFirstTokenMs: 0, interTokenLatencyMs: 0 });
    a = await startTestGateway({ simulator });
    b = await startTestGateway({ simulator, databaseUrl: a.databaseUrl });
    admin = (await signInAdmin(a)).token;
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((client) => client.dispose()));
  });
  afterAll(async () => {
    await b?.stop();
    await a?.stop();
    await simulator?.stop();
  });

  it('delivers an event settled on A to a subscriber on B, once', async () => {
    const user = await createUser(a, admin);
    const onB = connect(b, user.token);
    const feed = usageFeed(onB);
    await until(() => onB.acknowledged, 5_000, 'connection_ack');
    await sleep(250);
    const requestId = await chat(a, user.token);
    await until(() => feed.events.length === 1, 5_000, 'the event on B');
    await sleep(300);
    expect(requestIds(feed)).toEqual([requestId]);
    expect(feed.events[0].used).toBe((await usageOf(b, user.token)).used);
  });

  it("gives every subscriber exactly its user's events, none twice, none from another user; admins get all, once", async () => {
    const seed = Date.now() % 100_000;
    const rand = seededRandom(seed);
    const users: SignedIn[] = [];
    for (let i = 0; i < USERS; i += 1) users.push(await createUser(i % 2 === 0 ? a : b, admin, { tokenLimit: i % 3 === 0 ? null : 1_000_000 }));

    // Three sockets per user spread over both instances; one of them asks with its own userId.
    const feeds = new Map<string, Feed<UsageEventData>[]>();
    for (const [index, user] of users.entries()) {
      const own: Feed<UsageEventData>[] = [];
      for (let s = 0; s < SOCKETS_PER_USER; s += 1) {
        const client = connect((index + s) % 2 === 0 ? a : b, user.token);
        own.push(usageFeed(client, s === 2 ? user.id : undefined));
      }
      feeds.set(user.id, own);
    }
    const adminOnA = connect(a, admin);
    const adminOnB = connect(b, admin);
    const everyone = [usageFeed(adminOnA), usageFeed(adminOnB)];
    const watched = users[3];
    const oneUser = usageFeed(adminOnB, watched.id);
    await until(() => clients.every((client) => client.acknowledged), 10_000, 'every connection_ack');
    await sleep(300);

    // Random chats on random instances, several in flight at once.
    const plan = Array.from({ length: CHATS }, () => ({ user: users[Math.floor(rand() * USERS)], gateway: rand() < 0.5 ? a : b }));
    const expected = new Map<string, string[]>(users.map((user) => [user.id, []]));
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < plan.length) {
        const { user, gateway } = plan[next];
        next += 1;
        expected.get(user.id)?.push(await chat(gateway, user.token, `Say something ${next}`));
      }
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
    const all = [...expected.values()].flat();
    expect(all).toHaveLength(CHATS);

    const complete = (): boolean =>
      everyone.every((feed) => feed.events.length >= CHATS) &&
      users.every((user) => (feeds.get(user.id) ?? []).every((feed) => feed.events.length >= (expected.get(user.id) ?? []).length));
    await until(complete, 10_000, `every event to arrive (seed ${seed})`);
    await sleep(500); // duplicates or strays would arrive by now

    const sorted = (ids: string[]): string[] => [...ids].sort();
    for (const user of users) {
      const want = sorted(expected.get(user.id) ?? []);
      for (const feed of feeds.get(user.id) ?? []) {
        expect({ seed, user: user.id, got: sorted(requestIds(feed)) }).toEqual({ seed, user: user.id, got: want });
        expect(feed.events.every((event) => event.userId === user.id)).toBe(true);
        expect(feed.error).toBeNull();
      }
      // The last event a subscriber saw carries the user's final usage.
      const events = (feeds.get(user.id) ?? [])[0].events;
      if (events.length > 0) {
        const final = await usageOf(a, user.token);
        expect(Math.max(...events.map((event) => event.used))).toBe(final.used);
        const [ledger] = await sql<{ used: string }>(a.databaseUrl, 'select used from quota_accounts where user_id = $1', [user.id]);
        expect(Number(ledger.used)).toBe(final.used);
      }
    }
    for (const feed of everyone) {
      expect(sorted(requestIds(feed))).toEqual(sorted(all));
      expect(new Set(requestIds(feed)).size).toBe(CHATS);
    }
    expect(sorted(requestIds(oneUser))).toEqual(sorted(expected.get(watched.id) ?? []));
    // One usage record per chat, each published once.
    const [records] = await sql<{ n: string }>(a.databaseUrl, 'select count(*) as n from usage_records where request_id = any($1::uuid[])', [all]);
    expect(Number(records.n)).toBe(CHATS);

    // Once the sockets are gone, no subscription stays registered on either instance.
    await Promise.all(clients.splice(0).map((client) => client.dispose()));
    await until(() => busSubscribers(a) === 0 && busSubscribers(b) === 0, 3_000, 'both buses to have no subscribers');
  });

  it('closes a socket on B when the user is disabled on A', async () => {
    const user = await createUser(a, admin);
    const onB = connect(b, user.token);
    const feed = usageFeed(onB);
    await until(() => onB.acknowledged, 5_000, 'connection_ack');
    const disabled = await a.gql(UpdateUserDocument, { id: user.id, input: { disabled: true } }, admin);
    expect(disabled.data?.updateUser.disabled).toBe(true);
    const started = Date.now();
    await until(() => onB.closeCode !== null, 2_000, 'the socket on B to close');
    expect(onB.closeCode).toBe(4403);
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(feed.ended).toBe(true);
  });
});
