import { LoginDocument } from '../generated/graphql';
import { startTestGateway, type TestGateway } from '../helpers/server';
import { chat, createUser, signInAdmin, sleep, until, WsClient } from '../helpers/client';
import { RawSocket } from '../helpers/raw-socket';
import { requestIds, usageFeed } from './support';

/** The shortest TTL the configuration allows: this file waits for one token to run out. */
const TTL_SECONDS = 10;

describe('WebSocket and access token expiry', () => {
  let gateway: TestGateway;
  const clients: WsClient[] = [];
  const raws: RawSocket[] = [];

  beforeAll(async () => {
    gateway = await startTestGateway({
      simulator: { timeToFirstTokenMs: 0, interTokenLatencyMs: 0 },
      env: { ACCESS_TOKEN_TTL_SECONDS: String(TTL_SECONDS) },
    });
  });
  afterAll(async () => {
    for (const socket of raws) socket.terminate();
    await Promise.all(clients.map((client) => client.dispose()));
    await gateway.stop();
  });

  it('closes the socket (4401) when its access token expires, and refuses the token afterwards (4403)', async () => {
    const admin = (await signInAdmin(gateway)).token;
    const user = await createUser(gateway, admin);
    const signedIn = await gateway.gql(LoginDocument, { email: user.email, password: user.password });
    const token = signedIn.data?.login.accessToken;
    const expiresAt = Date.parse(signedIn.data?.login.expiresAt ?? '');
    if (token === undefined || Number.isNaN(expiresAt)) throw new Error(`login failed: ${JSON.stringify(signedIn.errors)}`);
    expect(expiresAt - Date.now()).toBeGreaterThan((TTL_SECONDS - 2) * 1000);

    const client = gateway.ws(token);
    clients.push(client);
    const feed = usageFeed(client);
    const socket = await RawSocket.connect(gateway.server.wsUrl);
    raws.push(socket);
    expect(await socket.init(`Bearer ${token}`)).toBe('ack');
    await until(() => client.acknowledged, 5_000, 'connection_ack');
    await sleep(250);

    // Working until then.
    const requestId = await chat(gateway, token);
    await until(() => feed.events.length === 1, 5_000, 'the event before expiry');
    expect(requestIds(feed)).toEqual([requestId]);

    const closed = await socket.closedWithin(expiresAt - Date.now() + 3_000);
    const closedAt = Date.now();
    expect(closed?.code).toBe(4401);
    expect(closedAt).toBeGreaterThanOrEqual(expiresAt - 100);
    expect(closedAt).toBeLessThan(expiresAt + 1_500);
    await until(() => client.closeCode !== null, 1_500, 'the graphql-ws client to be closed');
    expect(client.closeCode).toBe(4401);
    expect(feed.ended).toBe(true);

    const again = await RawSocket.connect(gateway.server.wsUrl);
    raws.push(again);
    expect(await again.init(`Bearer ${token}`)).toBe(4403);
  }, 30_000);
});
