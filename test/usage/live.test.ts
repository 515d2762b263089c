import { CreateApiKeyDocument, UpdateUserDocument } from '../generated/graphql';
import { startWithAdmin, type TestGateway } from '../helpers/server';
import { chat, codeOf, createUser, sleep, until, usageOf, WsClient, type Feed, type SignedIn } from '../helpers/client';
import { busSubscribers, requestIds, usageFeed, type UsageEventData } from './support';

/** Subscriptions register on the server shortly after `subscribe` is sent. */
const SETTLE_MS = 250;

describe('usageUpdated on one gateway', () => {
  let gateway: TestGateway;
  let admin: string;
  let alice: SignedIn;
  let bob: SignedIn;
  const clients: WsClient[] = [];

  const connect = (token: string): WsClient => {
    const client = gateway.ws(token);
    clients.push(client);
    return client;
  };
  const ready = async (...feeds: { client: WsClient }[]): Promise<void> => {
    await until(() => feeds.every((feed) => feed.client.acknowledged), 5_000, 'connection_ack');
    await sleep(SETTLE_MS);
  };

  beforeAll(async () => {
    ({ gateway, admin: { token: admin } } = await startWithAdmin({ simulator: { timeToFirstTokenMs: 0, interTokenLatencyMs: 0 } }));
    alice = await createUser(gateway, admin, { tokenLimit: 50_000 });
    bob = await createUser(gateway, admin, { tokenLimit: null });
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((client) => client.dispose()));
  });
  afterAll(() => gateway.stop());

  it('gives a user exactly their own events, one per settled chat, with used and remaining as me.usage reads afterwards', async () => {
    const aliceClient = connect(alice.token);
    const aliceFeed = usageFeed(aliceClient);
    const aliceExplicit = usageFeed(aliceClient, alice.id);
    const bobClient = connect(bob.token);
    const bobFeed = usageFeed(bobClient);
    await ready({ client: aliceClient }, { client: bobClient });

    const aliceRequests: string[] = [];
    for (let i = 0; i < 3; i += 1) {
      const requestId = await chat(gateway, alice.token, `Question number ${i}`);
      aliceRequests.push(requestId);
      await until(() => aliceFeed.events.length === i + 1, 5_000, `alice's event ${i + 1}`);
      const event = aliceFeed.events[i];
      const usage = await usageOf(gateway, alice.token);
      expect(event).toMatchObject({ requestId, userId: alice.id, used: usage.used, remaining: usage.remaining });
      expect(event.totalTokens).toBe(event.promptTokens + event.completionTokens);
      expect(event.remaining).toBe(50_000 - usage.used);
    }
    const bobRequest = await chat(gateway, bob.token);
    await until(() => bobFeed.events.length === 1, 5_000, "bob's event");
    const bobUsage = await usageOf(gateway, bob.token);
    expect(bobFeed.events[0]).toMatchObject({ requestId: bobRequest, userId: bob.id, used: bobUsage.used, remaining: null });

    await sleep(300); // anything stray or doubled would arrive by now
    expect(requestIds(aliceFeed)).toEqual(aliceRequests);
    expect(requestIds(aliceExplicit)).toEqual(aliceRequests);
    expect(requestIds(bobFeed)).toEqual([bobRequest]);
    expect([aliceFeed, aliceExplicit, bobFeed].map((feed) => feed.error)).toEqual([null, null, null]);
    // `used` grows by exactly each request's tokens.
    const used = aliceFeed.events.map((event) => event.used);
    for (let i = 1; i < used.length; i += 1) expect(used[i] - used[i - 1]).toBe(aliceFeed.events[i].totalTokens);
  });

  it("refuses a user asking for someone else's events with FORBIDDEN", async () => {
    const client = connect(alice.token);
    const feed = usageFeed(client, bob.id);
    await until(() => feed.ended, 5_000, 'the refusal');
    expect(codeOf(feed.error)).toBe('FORBIDDEN');
    // The connection itself stays usable for what is allowed.
    const own = usageFeed(client);
    await sleep(SETTLE_MS);
    await chat(gateway, bob.token);
    const mine = await chat(gateway, alice.token);
    await until(() => own.events.length === 1, 5_000, "alice's own event");
    await sleep(200);
    expect(requestIds(own)).toEqual([mine]);
    expect(feed.events).toEqual([]);
  });

  it("gives an admin one user's events with userId, and everyone's without", async () => {
    const client = connect(admin);
    const aliceOnly = usageFeed(client, alice.id);
    const everyone = usageFeed(client);
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
    expect(requestIds(everyone).sort()).toEqual([...expectedAll].sort());
    expect(requestIds(aliceOnly).sort()).toEqual([...expectedAlice].sort());
    expect(new Set(aliceOnly.events.map((event) => event.userId))).toEqual(new Set([alice.id]));
  });

  it('takes the everyone-feed away at once from an admin demoted to USER (access token: socket closed)', async () => {
    const second = await createUser(gateway, admin, { role: 'ADMIN' });
    const client = connect(second.token);
    const feed: Feed<UsageEventData> = usageFeed(client);
    await ready({ client });
    const before = await chat(gateway, alice.token);
    await until(() => feed.events.length === 1, 5_000, 'the first event');
    expect(requestIds(feed)).toEqual([before]);

    const demoted = await gateway.gql(UpdateUserDocument, { id: second.id, input: { role: 'USER' } }, admin);
    expect(demoted.data?.updateUser.role).toBe('USER');
    const started = Date.now();
    await until(() => feed.ended, 2_000, 'the feed of the demoted admin to end');
    expect(Date.now() - started).toBeLessThan(2_000);
    // The role change ends the access token (its tokenVersion is stale): the server re-checks
    // the user's sockets and closes this one as revoked, before any further event.
    expect(client.closeCode).toBe(4403);

    await chat(gateway, bob.token);
    await sleep(300);
    expect(requestIds(feed)).toEqual([before]);
  });

  it('refuses the next delivery to an admin demoted to USER whose socket holds an API key (still valid after the demotion)', async () => {
    const third = await createUser(gateway, admin, { role: 'ADMIN' });
    const key = await gateway.gql(CreateApiKeyDocument, { name: 'watcher' }, third.token);
    const secret = key.data?.createApiKey.secret;
    if (secret === undefined) throw new Error(`createApiKey failed: ${JSON.stringify(key.errors)}`);
    const client = new WsClient(gateway.server.wsUrl, `Bearer ${secret}`);
    clients.push(client);
    const feed = usageFeed(client);
    await ready({ client });
    const before = await chat(gateway, bob.token);
    await until(() => feed.events.length === 1, 5_000, 'the first event');

    await gateway.gql(UpdateUserDocument, { id: third.id, input: { role: 'USER' } }, admin);
    await sleep(300); // the credentials-changed notification has been handled by now
    const after = await chat(gateway, bob.token);
    await until(() => feed.ended, 2_000, 'the feed of the demoted admin to end');
    // An API key outlives the demotion, so the socket stays open: the subscription itself
    // refuses the next event, now that its viewer is no admin.
    expect(codeOf(feed.error)).toBe('FORBIDDEN');
    // The lazy graphql-ws client then closes its idle socket itself (1000), not the server (4403).
    await until(() => client.closeCode !== null, 2_000, 'the idle client to close its socket');
    expect(client.closeCode).toBe(1000);
    expect(requestIds(feed)).toEqual([before]);
    expect(requestIds(feed)).not.toContain(after);
  });

  it('leaves no bus subscription behind: unsubscribed, refused, closed by the server or by the client', async () => {
    // Every earlier test's clients were disposed after it; the demoted admins' were closed by the server.
    await until(() => busSubscribers(gateway) === 0, 2_000, 'the bus to have no subscribers');
    const client = connect(alice.token);
    const kept = usageFeed(client);
    const dropped = usageFeed(client);
    await ready({ client });
    expect(busSubscribers(gateway)).toBe(2);
    dropped.unsubscribe();
    await until(() => busSubscribers(gateway) === 1, 2_000, 'the unsubscribed one to go');
    await client.dispose();
    await until(() => busSubscribers(gateway) === 0, 2_000, 'the bus to have no subscribers');
    expect(kept.ended).toBe(true);
  });
});
