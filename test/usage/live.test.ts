import { MeterCreateApiKeyDocument, MeterUpdateUserDocument } from '../generated/graphql';
import { startTestGateway, type TestGateway } from '../helpers/server';
import { adminLogin, busSubscribers, chat, codeOf, createUser, meUsage, sleep, until, WsClient, type LiveFeed, type TestUser } from './support';

/** Subscriptions register on the server shortly after `subscribe` is sent. */
const SETTLE_MS = 250;

describe('usageUpdated on one gateway', () => {
  let gateway: TestGateway;
  let admin: string;
  let alice: TestUser;
  let bob: TestUser;
  const clients: WsClient[] = [];

  const connect = (token: string): WsClient => {
    const client = WsClient.bearer(gateway, token);
    clients.push(client);
    return client;
  };
  const ready = async (...feeds: { client: WsClient }[]): Promise<void> => {
    await until(() => feeds.every((feed) => feed.client.acknowledged), 5_000, 'connection_ack');
    await sleep(SETTLE_MS);
  };

  beforeAll(async () => {
    gateway = await startTestGateway({ simulator: { timeToFirstTokenMs: 0, interTokenLatencyMs: 0 } });
    admin = await adminLogin(gateway);
    alice = await createUser(gateway, admin, { tokenLimit: 50_000 });
    bob = await createUser(gateway, admin, { tokenLimit: null });
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((client) => client.dispose()));
  });
  afterAll(() => gateway.stop());

  it('gives a user exactly their own events, one per settled chat, with used and remaining as me.usage reads afterwards', async () => {
    const aliceClient = connect(alice.token);
    const aliceFeed = aliceClient.usage();
    const aliceExplicit = aliceClient.usage(alice.id);
    const bobClient = connect(bob.token);
    const bobFeed = bobClient.usage();
    await ready({ client: aliceClient }, { client: bobClient });

    const aliceRequests: string[] = [];
    for (let i = 0; i < 3; i += 1) {
      const requestId = await chat(gateway, alice.token, `Question number ${i}`);
      aliceRequests.push(requestId);
      await until(() => aliceFeed.events.length === i + 1, 5_000, `alice's event ${i + 1}`);
      const event = aliceFeed.events[i];
      const usage = await meUsage(gateway, alice.token);
      expect(event).toMatchObject({ requestId, userId: alice.id, used: usage.used, remaining: usage.remaining });
      expect(event.totalTokens).toBe(event.promptTokens + event.completionTokens);
      expect(event.remaining).toBe(50_000 - usage.used);
    }
    const bobRequest = await chat(gateway, bob.token);
    await until(() => bobFeed.events.length === 1, 5_000, "bob's event");
    const bobUsage = await meUsage(gateway, bob.token);
    expect(bobFeed.events[0]).toMatchObject({ requestId: bobRequest, userId: bob.id, used: bobUsage.used, remaining: null });

    await sleep(300); // anything stray or doubled would arrive by now
    expect(aliceFeed.requestIds()).toEqual(aliceRequests);
    expect(aliceExplicit.requestIds()).toEqual(aliceRequests);
    expect(bobFeed.requestIds()).toEqual([bobRequest]);
    expect([aliceFeed, aliceExplicit, bobFeed].map((feed) => feed.errors)).toEqual([undefined, undefined, undefined]);
    // `used` grows by exactly each request's tokens.
    const used = aliceFeed.events.map((event) => event.used);
    for (let i = 1; i < used.length; i += 1) expect(used[i] - used[i - 1]).toBe(aliceFeed.events[i].totalTokens);
  });

  it("refuses a user asking for someone else's events with FORBIDDEN", async () => {
    const client = connect(alice.token);
    const feed = client.usage(bob.id);
    await until(() => feed.ended, 5_000, 'the refusal');
    expect(codeOf(feed.errors)).toBe('FORBIDDEN');
    // The connection itself stays usable for what is allowed.
    const own = client.usage();
    await sleep(SETTLE_MS);
    await chat(gateway, bob.token);
    const mine = await chat(gateway, alice.token);
    await until(() => own.events.length === 1, 5_000, "alice's own event");
    await sleep(200);
    expect(own.requestIds()).toEqual([mine]);
    expect(feed.events).toEqual([]);
  });

  it("gives an admin one user's events with userId, and everyone's without", async () => {
    const client = connect(admin);
    const aliceOnly = client.usage(alice.id);
    const everyone = client.usage();
    await ready({ client });

    const expectedAll: string[] = [];
    const expectedAlice: string[] = [];
    for (const [user, token] of [
      [alice, alice.token],
      [bob, bob.token],
      [alice, alice.token],
      [null, admin],
    ] as const) {
      const requestId = await chat(gateway, token);
      expectedAll.push(requestId);
      if (user === alice) expectedAlice.push(requestId);
    }
    await until(() => everyone.events.length >= expectedAll.length && aliceOnly.events.length >= expectedAlice.length, 5_000, 'admin feeds');
    await sleep(300);
    expect(everyone.requestIds().sort()).toEqual([...expectedAll].sort());
    expect(aliceOnly.requestIds().sort()).toEqual([...expectedAlice].sort());
    expect(new Set(aliceOnly.events.map((event) => event.userId))).toEqual(new Set([alice.id]));
  });

  it('takes the everyone-feed away at once from an admin demoted to USER (access token: socket closed)', async () => {
    const second = await createUser(gateway, admin, { role: 'ADMIN' });
    const client = connect(second.token);
    const feed: LiveFeed = client.usage();
    await ready({ client });
    const before = await chat(gateway, alice.token);
    await until(() => feed.events.length === 1, 5_000, 'the first event');
    expect(feed.requestIds()).toEqual([before]);

    const demoted = await gateway.gql(MeterUpdateUserDocument, { id: second.id, input: { role: 'USER' } }, admin);
    expect(demoted.data?.updateUser.role).toBe('USER');
    const started = Date.now();
    await until(() => feed.ended, 2_000, 'the feed of the demoted admin to end');
    expect(Date.now() - started).toBeLessThan(2_000);
    // Closed as revoked credentials (4403), or the subscription refused the next delivery.
    expect(client.closeCode === 4403 || codeOf(feed.errors) === 'FORBIDDEN').toBe(true);

    await chat(gateway, bob.token);
    await sleep(300);
    expect(feed.requestIds()).toEqual([before]);
  });

  it('refuses the next delivery to an admin demoted to USER whose socket holds an API key (still valid after the demotion)', async () => {
    const third = await createUser(gateway, admin, { role: 'ADMIN' });
    const key = await gateway.gql(MeterCreateApiKeyDocument, { name: 'watcher' }, third.token);
    const secret = key.data?.createApiKey.secret;
    if (secret === undefined) throw new Error(`createApiKey failed: ${JSON.stringify(key.errors)}`);
    const client = new WsClient(gateway.server.wsUrl, `Bearer ${secret}`);
    clients.push(client);
    const feed = client.usage();
    await ready({ client });
    const before = await chat(gateway, bob.token);
    await until(() => feed.events.length === 1, 5_000, 'the first event');

    await gateway.gql(MeterUpdateUserDocument, { id: third.id, input: { role: 'USER' } }, admin);
    await sleep(300); // the credentials-changed notification has been handled by now
    const after = await chat(gateway, bob.token);
    await until(() => feed.ended, 2_000, 'the feed of the demoted admin to end');
    expect(client.closeCode === 4403 || codeOf(feed.errors) === 'FORBIDDEN').toBe(true);
    expect(feed.requestIds()).toEqual([before]);
    expect(feed.requestIds()).not.toContain(after);
  });

  it('leaves no bus subscription behind: unsubscribed, refused, closed by the server or by the client', async () => {
    // Every earlier test's clients were disposed after it; the demoted admins' were closed by the server.
    await until(() => busSubscribers(gateway) === 0, 2_000, 'the bus to have no subscribers');
    const client = connect(alice.token);
    const kept = client.usage();
    const dropped = client.usage();
    await ready({ client });
    expect(busSubscribers(gateway)).toBe(2);
    dropped.unsubscribe();
    await until(() => busSubscribers(gateway) === 1, 2_000, 'the unsubscribed one to go');
    await client.dispose();
    await until(() => busSubscribers(gateway) === 0, 2_000, 'the bus to have no subscribers');
    expect(kept.ended).toBe(true);
  });
});
