import { Client } from 'pg';
import { ChangePasswordDocument, CreateApiKeyDocument, RevokeApiKeyDocument, UpdateUserDocument } from '../generated/graphql';
import { sql } from '../helpers/database';
import { startTestGateway, startWithAdmin, type TestGateway } from '../helpers/server';
import { chat, codeOf, createUser, extensionsOf, postGraphQL, signInAdmin, sleep, until, WsClient } from '../helpers/client';
import { RawSocket, wsErrors } from '../helpers/raw-socket';
import { requestIds, usageFeed } from './support';

const INIT_WAIT_MS = 300;
const MAX_MESSAGE_BYTES = 4096;
const MAX_BODY_BYTES = 4096;

describe('WebSocket life cycle', () => {
  let gateway: TestGateway;
  let admin: string;
  const raws: RawSocket[] = [];
  const clients: WsClient[] = [];

  const raw = async (): Promise<RawSocket> => {
    const socket = await RawSocket.connect(gateway.server.wsUrl);
    raws.push(socket);
    return socket;
  };
  const client = (authorization: string): WsClient => {
    const created = new WsClient(gateway.server.wsUrl, authorization);
    clients.push(created);
    return created;
  };
  /** Time from now until `socket` closes, with its code. */
  const closing = async (socket: RawSocket, withinMs: number): Promise<{ code: number; ms: number }> => {
    const closed = await socket.closedWithin(withinMs);
    if (closed === null) throw new Error(`the socket was still open after ${withinMs} ms`);
    return closed;
  };

  beforeAll(async () => {
    ({ gateway, admin: { token: admin } } = await startWithAdmin({
      simulator: { timeToFirstTokenMs: 0, interTokenLatencyMs: 0 },
      env: {
        WS_CONNECTION_INIT_WAIT_MS: String(INIT_WAIT_MS),
        WS_MAX_CONNECTIONS_PER_USER: '2',
        WS_MAX_MESSAGE_BYTES: String(MAX_MESSAGE_BYTES),
        HTTP_MAX_BODY_BYTES: String(MAX_BODY_BYTES),
      },
    }));
  });
  const cleanups: (() => void)[] = [];
  const afterThis = (cleanup: () => void): void => {
    cleanups.push(cleanup);
  };
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0)) cleanup();
    for (const socket of raws.splice(0)) socket.terminate();
    await Promise.all(clients.splice(0).map((created) => created.dispose()));
  });
  afterAll(() => gateway.stop());

  it('closes a socket that never sends connection_init with 4408', async () => {
    const socket = await raw();
    const started = Date.now();
    const { code } = await closing(socket, 3_000);
    expect(code).toBe(4408);
    expect(Date.now() - started).toBeGreaterThanOrEqual(INIT_WAIT_MS - 50);
    expect(Date.now() - started).toBeLessThan(INIT_WAIT_MS + 1_000);
  });

  it('closes with 4403 on connection_init without valid credentials', async () => {
    const user = await createUser(gateway, admin);
    const [{ token_version: tokenVersion }] = await sql<{ token_version: number }>(gateway.databaseUrl, 'select token_version from users where id = $1', [user.id]);
    const expired = gateway.server.services.auth.accessTokens.sign(user.id, tokenVersion, new Date(Date.now() - 3_600_000)).token;
    const forged = `${user.token.slice(0, -4)}AAAA`;
    for (const authorization of [null, 'Bearer nonsense', `Bearer ${forged}`, `Bearer ${expired}`, 'Bearer sk-not-a-key', user.token]) {
      const socket = await raw();
      expect({ authorization, outcome: await socket.init(authorization) }).toEqual({ authorization, outcome: 4403 });
    }
    // The same user with a good token is let in.
    const good = await raw();
    expect(await good.init(`Bearer ${user.token}`)).toBe('ack');
  });

  it('closes the socket promptly (4403) when the user is disabled', async () => {
    const user = await createUser(gateway, admin);
    const socket = await raw();
    expect(await socket.init(`Bearer ${user.token}`)).toBe('ack');
    await gateway.gql(UpdateUserDocument, { id: user.id, input: { disabled: true } }, admin);
    const { code, ms } = await closing(socket, 2_000);
    expect(code).toBe(4403);
    expect(ms).toBeLessThan(2_000);
  });

  it('closes the socket promptly (4403) when the tokenVersion is bumped by changePassword', async () => {
    const user = await createUser(gateway, admin);
    const socket = await raw();
    expect(await socket.init(`Bearer ${user.token}`)).toBe('ack');
    const changed = await gateway.gql(ChangePasswordDocument, { currentPassword: user.password, newPassword: 'another-password-456' }, user.token);
    expect(changed.data?.changePassword).toBe(true);
    const { code } = await closing(socket, 2_000);
    expect(code).toBe(4403);
    // And the old token opens no new socket.
    const again = await raw();
    expect(await again.init(`Bearer ${user.token}`)).toBe(4403);
  });

  it('closes the socket of a revoked API key promptly (4403), and only that one', async () => {
    const user = await createUser(gateway, admin);
    const created = await gateway.gql(CreateApiKeyDocument, { name: 'socket key' }, user.token);
    const key = created.data?.createApiKey;
    if (key == null) throw new Error(`createApiKey failed: ${JSON.stringify(created.errors)}`);
    const viaKey = await raw();
    expect(await viaKey.init(`Bearer ${key.secret}`)).toBe('ack');
    const viaToken = await raw();
    expect(await viaToken.init(`Bearer ${user.token}`)).toBe('ack');

    const revoked = await gateway.gql(RevokeApiKeyDocument, { id: key.apiKey.id }, user.token);
    expect(revoked.data?.revokeApiKey).toBe(true);
    const { code } = await closing(viaKey, 2_000);
    expect(code).toBe(4403);
    await sleep(200);
    expect(viaToken.closeCode).toBeNull();
    await viaToken.subscribe('q', '{ me { id } }');
    expect(await viaToken.answer('q')).toMatchObject({ type: 'next', payload: { data: { me: { id: user.id } } } });
  });

  it('refuses a third socket of a user (cap 2), and lets one in again once a slot is free', async () => {
    const user = await createUser(gateway, admin);
    const first = await raw();
    const second = await raw();
    expect(await first.init(`Bearer ${user.token}`)).toBe('ack');
    expect(await second.init(`Bearer ${user.token}`)).toBe('ack');
    const third = await raw();
    expect(await third.init(`Bearer ${user.token}`)).toBe(4029);
    // Another user is not affected.
    const other = await createUser(gateway, admin);
    const others = await raw();
    expect(await others.init(`Bearer ${other.token}`)).toBe('ack');

    first.close();
    await first.closed;
    await sleep(100);
    const fourth = await raw();
    expect(await fourth.init(`Bearer ${user.token}`)).toBe('ack');
  });

  it('does not count sockets that closed while their connection_init was being checked', async () => {
    const user = await createUser(gateway, admin);
    // Forget the cached credentials, so authentication has to read the users table ...
    await gateway.gql(UpdateUserDocument, { id: user.id, input: { tokenLimit: 123_456 } }, admin);
    // ... and hold that read until the sockets are gone.
    const lock = new Client({ connectionString: gateway.databaseUrl });
    await lock.connect();
    try {
      await lock.query('begin');
      await lock.query('lock table users in access exclusive mode');
      for (let i = 0; i < 3; i += 1) {
        const socket = await raw();
        await socket.send({ type: 'connection_init', payload: { authorization: `Bearer ${user.token}` } });
        await sleep(50);
        socket.close();
        await socket.closed;
      }
      await sleep(100);
    } finally {
      await lock.query('commit').catch(() => undefined);
      await lock.end();
    }
    await sleep(300);
    const first = await raw();
    const second = await raw();
    expect(await first.init(`Bearer ${user.token}`)).toBe('ack');
    expect(await second.init(`Bearer ${user.token}`)).toBe('ack');
  });

  it('refuses over the WebSocket, with the same code, a document HTTP refuses', async () => {
    const user = await createUser(gateway, admin);
    const socket = await raw();
    expect(await socket.init(`Bearer ${user.token}`)).toBe('ack');
    const documents = {
      unknownField: '{ me { id nope } }',
      unknownSubscriptionField: 'subscription { usageUpdated { requestId nope } }',
      badArgument: '{ usage(first: "ten") { pageInfo { hasNextPage } } }',
      syntax: '{ me { id ',
      twoAnonymous: '{ me { id } } { serverInfo { version } }',
      // Over the limits of src/graphql/validation.ts: depth (introspection too), aliases, tokens.
      overDeepIntrospection: `{ __schema { types { ${'ofType { '.repeat(20)}name${' }'.repeat(20)} } } }`,
      overDeepFanOut: '{ __schema { types { fields { type { fields { type { fields { type { fields { type { fields { name } } } } } } } } } } } }',
      tooManyAliases: `{ ${Array.from({ length: 40 }, (_, i) => `a${i}: me { id }`).join(' ')} }`,
      tooManyTokens: `query ($v: [[Int]] = ${'['.repeat(1100)}${']'.repeat(1100)}) { me { id } }`,
    };
    const messageOf = (errors: unknown): string | undefined => (Array.isArray(errors) ? (errors[0] as { message?: string }).message : undefined);
    const httpAnswers: Record<string, unknown> = {};
    for (const [name, query] of Object.entries(documents)) {
      const http = await postGraphQL(gateway.server.url, query, undefined, { token: user.token });
      httpAnswers[name] = { code: codeOf(http.body.errors), reason: extensionsOf(http.body.errors)?.reason, message: messageOf(http.body.errors) };
      await socket.subscribe(name, query);
      const errors = wsErrors([await socket.answer(name)]);
      expect({ name, ...{ code: codeOf(errors), reason: extensionsOf(errors)?.reason, message: messageOf(errors) } }).toEqual({ name, ...(httpAnswers[name] as object) });
    }
    // Each was refused for the reason meant, not by accident.
    expect(httpAnswers).toMatchObject({
      unknownField: { code: 'BAD_USER_INPUT', reason: 'GRAPHQL_VALIDATION_FAILED' },
      unknownSubscriptionField: { code: 'BAD_USER_INPUT', reason: 'GRAPHQL_VALIDATION_FAILED' },
      badArgument: { code: 'BAD_USER_INPUT', reason: 'GRAPHQL_VALIDATION_FAILED' },
      syntax: { code: 'BAD_USER_INPUT', reason: 'GRAPHQL_PARSE_FAILED' },
      twoAnonymous: { code: 'BAD_USER_INPUT', reason: 'GRAPHQL_VALIDATION_FAILED' },
      overDeepIntrospection: { code: 'BAD_USER_INPUT', reason: 'GRAPHQL_VALIDATION_FAILED', message: expect.stringMatching(/depth/i) },
      overDeepFanOut: { code: 'BAD_USER_INPUT', reason: 'GRAPHQL_VALIDATION_FAILED', message: expect.stringMatching(/depth/i) },
      tooManyAliases: { code: 'BAD_USER_INPUT', reason: 'GRAPHQL_VALIDATION_FAILED', message: expect.stringMatching(/alias/i) },
      tooManyTokens: { code: 'BAD_USER_INPUT', reason: 'GRAPHQL_PARSE_FAILED', message: expect.stringMatching(/tokens/i) },
    });
    expect(socket.closeCode).toBeNull();
  });

  it('refuses over the WebSocket, with the same code as HTTP, what graphql-js refuses only when executing', async () => {
    const user = await createUser(gateway, admin);
    const socket = await raw();
    expect(await socket.init(`Bearer ${user.token}`)).toBe('ack');
    const twoOperations = 'query A { me { id } } query B { serverInfo { version } }';
    const page = 'query Page($n: Int!) { usage(first: $n) { pageInfo { hasNextPage } } }';
    const requests: Record<string, { query: string; operationName?: string; variables: Record<string, unknown> }> = {
      unknownOperation: { query: twoOperations, operationName: 'C', variables: {} },
      noOperationName: { query: twoOperations, variables: {} },
      badVariable: { query: page, variables: { n: 'ten' } },
      missingVariable: { query: page, variables: {} },
    };
    const answers: Record<string, { http: unknown; ws: unknown }> = {};
    for (const [name, { query, operationName, variables }] of Object.entries(requests)) {
      const http = await postGraphQL(gateway.server.url, query, variables, { token: user.token, operationName });
      await socket.subscribe(name, query, variables, operationName);
      answers[name] = { http: codeOf(http.body.errors), ws: codeOf(wsErrors([await socket.answer(name)])) };
    }
    const bad = { http: 'BAD_USER_INPUT', ws: 'BAD_USER_INPUT' };
    expect(answers).toEqual({ unknownOperation: bad, noOperationName: bad, badVariable: bad, missingVariable: bad });
    // The operation that is named runs.
    await socket.subscribe('named', twoOperations, {}, 'B');
    expect(await socket.answer('named')).toMatchObject({ type: 'next', payload: { data: { serverInfo: { version: expect.any(String) } } } });
  });

  it('refuses introspection, when switched off, over the WebSocket as over HTTP', async () => {
    const closed = await startTestGateway({ simulator: gateway.simulator, databaseUrl: gateway.databaseUrl, env: { GRAPHQL_INTROSPECTION: 'false' } });
    try {
      const token = (await signInAdmin(closed)).token;
      const query = '{ __schema { queryType { name } } }';
      const http = await postGraphQL(closed.server.url, query, undefined, { token: token });
      expect(codeOf(http.body.errors)).toBe('BAD_USER_INPUT');
      const socket = await RawSocket.connect(closed.server.wsUrl);
      raws.push(socket);
      expect(await socket.init(`Bearer ${token}`)).toBe('ack');
      await socket.subscribe('introspect', query);
      const errors = wsErrors([await socket.answer('introspect')]);
      expect({ code: codeOf(errors), reason: extensionsOf(errors)?.reason }).toEqual({ code: 'BAD_USER_INPUT', reason: extensionsOf(http.body.errors)?.reason });
      expect(JSON.stringify(errors)).not.toContain('queryType":{');
    } finally {
      await closed.stop();
    }
  });

  it('closes a socket whose message is over WS_MAX_MESSAGE_BYTES (1009) and keeps serving others', async () => {
    // graphql-ws reports the ws library's RangeError on the console; expected here.
    const consoleError = jest.spyOn(console, 'error').mockImplementation(() => undefined);
    afterThis(() => consoleError.mockRestore());
    const user = await createUser(gateway, admin, { tokenLimit: 100_000 });
    const bystander = client(`Bearer ${user.token}`);
    const feed = usageFeed(bystander);
    await until(() => bystander.acknowledged, 5_000, 'connection_ack');

    const big = await raw();
    expect(await big.init(`Bearer ${user.token}`)).toBe('ack');
    const query = `{ me { id } } # ${'x'.repeat(MAX_MESSAGE_BYTES)}`;
    await big.subscribe('big', query);
    const { code } = await closing(big, 2_000);
    expect(code).toBe(1009);
    // HTTP refuses the same document as over its own limit.
    const http = await postGraphQL(gateway.server.url, query, undefined, { token: user.token });
    expect(http.status).toBe(413);
    expect(codeOf(http.body.errors)).toBe('BAD_USER_INPUT');
    // A big message before connection_init is refused the same way.
    const early = await raw();
    await early.send(JSON.stringify({ type: 'connection_init', payload: { pad: 'y'.repeat(MAX_MESSAGE_BYTES) } }));
    expect((await closing(early, 2_000)).code).toBe(1009);

    await sleep(200);
    const requestId = await chat(gateway, user.token, 'Still there?');
    await until(() => feed.events.length === 1, 5_000, "the bystander's event");
    expect(requestIds(feed)).toEqual([requestId]);
    expect(bystander.closeCode).toBeNull();
    expect(consoleError.mock.calls.every((call) => String(call[0]).includes('WebSocket'))).toBe(true);
  });
});
