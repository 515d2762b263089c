import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { getIntrospectionQuery } from 'graphql';
import { ApiKeysDocument, LoginDocument, ServerInfoDocument } from '../generated/graphql';
import { sql } from '../helpers/database';
import { startWithAdmin, type TestGateway } from '../helpers/server';
import { createUser, postGraphQL, type SignedIn } from '../helpers/client';
import { RawSocket, expectWsErrors } from '../helpers/raw-socket';
import { expectErrors, expectSocketStillServing, expectStillServing, messages, parseJson, rawRequest, type RawResponse } from './support';

/**
 * Hostile documents and request bodies: every one refused with the contract's code, on HTTP
 * and on the WebSocket alike, and the server answering the next request as before.
 */
describe('hostile documents and bodies', () => {
  let gateway: TestGateway;
  let admin: string;
  let user: SignedIn;

  beforeAll(async () => {
    ({ gateway, admin: { token: admin } } = await startWithAdmin());
    user = await createUser(gateway, admin, { tokenLimit: 10_000 });
  });
  afterAll(() => gateway.stop());

  const nested = (open: string, levels: number, inner: string): string => `${`${open} { `.repeat(levels)}${inner}${' }'.repeat(levels)}`;

  /** Runs a document over an authenticated socket: the errors it gets, and the socket still serving. */
  async function overSocket(query: string, code = 'BAD_USER_INPUT'): Promise<string> {
    const socket = new RawSocket(gateway.server.wsUrl);
    try {
      expect(await socket.init(`Bearer ${user.token}`)).toBe('ack');
      const errors = expectWsErrors(await socket.run('attack', query), code);
      // The same socket still runs the next operation.
      const next = await socket.run('after', ServerInfoDocument as TypedDocumentNode<unknown, never>);
      expect(next.find((message) => message.type === 'next')).toMatchObject({ payload: { data: { serverInfo: { version: expect.any(String) } } } });
      return errors.map((error) => error.message).join('\n');
    } finally {
      socket.close();
    }
  }

  async function keyCount(): Promise<number> {
    const [row] = await sql<{ n: string }>(gateway.databaseUrl, 'select count(*) as n from api_keys where user_id = $1', [user.id]);
    return Number(row.n);
  }

  describe('depth bombs', () => {
    const bombs: [string, string][] = [
      ['a 30-deep ofType chain (valid against the schema)', `{ __type(name: "User") { ${nested('ofType', 30, 'name')} } }`],
      ['a 22-deep __schema walk (the graphql-armor __schema bypass)', `{ __schema { types { ${'fields { type { '.repeat(10)}name${' } }'.repeat(10)} } } }`],
      ['200 levels of nonsense fields', `{ ${nested('me', 200, 'id')} }`],
      ['depth hidden in fragments', `{ ...A } fragment A on Query { __type(name: "User") { ...B } } fragment B on __Type { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { name } } } } } } } } } }`],
    ];

    it.each(bombs)('HTTP: %s → BAD_USER_INPUT (depth)', async (_label, query) => {
      const { status, body } = await postGraphQL(gateway.server.url, query, undefined, { token: user.token });
      expect(status).toBe(400);
      expect(body.data ?? null).toBeNull();
      expectErrors(body, 'BAD_USER_INPUT');
      expect(messages(body)).toMatch(/depth limit/i);
      await expectStillServing(gateway);
    });

    it.each(bombs)('WebSocket: %s → BAD_USER_INPUT (depth)', async (_label, query) => {
      expect(await overSocket(query)).toMatch(/depth limit/i);
    });

    it('lets the introspection GraphiQL sends (depth 13) through, in development and test', async () => {
      const { status, body } = await postGraphQL(gateway.server.url, getIntrospectionQuery());
      expect(status).toBe(200);
      expect(body.errors).toBeUndefined();
    });
  });

  describe('alias bombs', () => {
    it('HTTP: 100 aliased serverInfo → BAD_USER_INPUT (aliases)', async () => {
      const query = `{ ${Array.from({ length: 100 }, (_, i) => `a${i}: serverInfo { version }`).join(' ')} }`;
      const { status, body } = await postGraphQL(gateway.server.url, query);
      expect(status).toBe(400);
      expect(body.data ?? null).toBeNull();
      expectErrors(body, 'BAD_USER_INPUT');
      expect(messages(body)).toMatch(/aliases limit/i);
      await expectStillServing(gateway);
    });

    it('WebSocket: 100 aliased serverInfo → BAD_USER_INPUT (aliases)', async () => {
      const query = `{ ${Array.from({ length: 100 }, (_, i) => `a${i}: serverInfo { version }`).join(' ')} }`;
      expect(await overSocket(query)).toMatch(/aliases limit/i);
    });

    it('aliases hidden in a fragment spread twice count twice', async () => {
      const aliases = Array.from({ length: 10 }, (_, i) => `a${i}: serverInfo { version }`).join(' ');
      const { body } = await postGraphQL(gateway.server.url, `{ ...F x: __typename ...F } fragment F on Query { ${aliases} }`);
      expectErrors(body, 'BAD_USER_INPUT');
      expect(messages(body)).toMatch(/aliases limit/i);
    });

    it('100 aliased logins are refused as a whole: not one attempt is counted, the victim can still sign in', async () => {
      const victim = await createUser(gateway, admin, { tokenLimit: 10 });
      const logins = Array.from({ length: 100 }, (_, i) => `l${i}: login(email: "${victim.email}", password: "guess-number-${i}") { accessToken }`);
      const { status, body } = await postGraphQL(gateway.server.url, `mutation { ${logins.join(' ')} }`);
      expect(status).toBe(400);
      expect(body.data ?? null).toBeNull();
      expectErrors(body, 'BAD_USER_INPUT');
      expect(messages(body)).toMatch(/aliases limit/i);
      const rows = await sql(gateway.databaseUrl, 'select subject, failures from login_throttle where subject = $1', [`account:${victim.email}`]);
      expect(rows).toEqual([]);
      const login = await postGraphQL(gateway.server.url, LoginDocument, { email: victim.email, password: victim.password });
      expect(login.body.errors).toBeUndefined();
      expect(login.body.data?.login.accessToken).toEqual(expect.any(String));
    });

    it('the most aliases allowed (15) of login: mutation fields run in order and the first refusal ends the operation, so one attempt is counted', async () => {
      const victim = await createUser(gateway, admin, { tokenLimit: 10 });
      const logins = Array.from({ length: 15 }, (_, i) => `l${i}: login(email: "${victim.email}", password: "guess-number-${i}") { accessToken }`);
      const { body } = await postGraphQL(gateway.server.url, `mutation { ${logins.join(' ')} }`);
      // login returns AuthPayload!: its error nulls the whole result and stops the serial execution.
      expect(body.data ?? null).toBeNull();
      expect((body.errors ?? []).map((error) => [error.path?.[0], error.extensions?.code])).toEqual([['l0', 'UNAUTHENTICATED']]);
      const rows = await sql<{ failures: number }>(gateway.databaseUrl, 'select failures from login_throttle where subject = $1', [`account:${victim.email}`]);
      expect(rows).toEqual([{ failures: 1 }]);
      await expectStillServing(gateway);
    });
  });

  describe('fragments', () => {
    const cycles: [string, string][] = [
      ['two fragments spreading each other', '{ ...A } fragment A on Query { serverInfo { version } ...B } fragment B on Query { ...A }'],
      ['a fragment spreading itself', '{ ...A } fragment A on Query { serverInfo { version } ...A }'],
      ['a cycle through a nested selection', '{ serverInfo { ...S } } fragment S on ServerInfo { version ...T } fragment T on ServerInfo { ...S }'],
    ];

    it.each(cycles)('HTTP: %s → BAD_USER_INPUT', async (_label, query) => {
      const { status, body } = await postGraphQL(gateway.server.url, query);
      expect(status).toBe(400);
      expect(body.data ?? null).toBeNull();
      expectErrors(body, 'BAD_USER_INPUT');
      expect(messages(body)).toMatch(/Cannot spread fragment/);
      await expectStillServing(gateway);
    });

    it.each(cycles)('WebSocket: %s → BAD_USER_INPUT', async (_label, query) => {
      expect(await overSocket(query)).toMatch(/Cannot spread fragment/);
    });

    it('a fragment fan-out (each fragment spreading the one below twice, 2^40 leaves) is refused quickly', async () => {
      const levels = 40;
      const fragments = [
        'fragment F0 on Query { serverInfo { version } }',
        ...Array.from({ length: levels }, (_, i) => `fragment F${i + 1} on Query { ...F${i} ...F${i} }`),
      ];
      const query = `{ ...F${levels} } ${fragments.join(' ')}`;
      const started = Date.now();
      const { body } = await postGraphQL(gateway.server.url, query);
      expect(Date.now() - started).toBeLessThan(2_000);
      expectErrors(body, 'BAD_USER_INPUT');
      expect(messages(body)).toMatch(/cost limit/i);
      await expectStillServing(gateway);
      expect(await overSocket(query)).toMatch(/cost limit/i);
    });
  });

  describe('token and directive limits', () => {
    const tooManyTokens = (): string => `{ serverInfo { ${'version '.repeat(2_100)} } }`;

    it(`HTTP: a document of more than GRAPHQL_MAX_TOKENS tokens → BAD_USER_INPUT`, async () => {
      expect(gateway.config.graphql.maxTokens).toBe(2_000);
      const { status, body } = await postGraphQL(gateway.server.url, tooManyTokens());
      expect(status).toBe(400);
      expectErrors(body, 'BAD_USER_INPUT');
      expect(messages(body)).toMatch(/contains more th\w+ 2000 tokens/);
      await expectStillServing(gateway);
    });

    it('WebSocket: a document of more than GRAPHQL_MAX_TOKENS tokens → BAD_USER_INPUT', async () => {
      expect(await overSocket(tooManyTokens())).toMatch(/contains more th\w+ 2000 tokens/);
    });

    it('HTTP and WebSocket: more directives than GRAPHQL_MAX_DIRECTIVES → BAD_USER_INPUT', async () => {
      const query = `{ serverInfo { version ${'@include(if: true) '.repeat(60)} } }`;
      const { body } = await postGraphQL(gateway.server.url, query);
      expectErrors(body, 'BAD_USER_INPUT');
      expect(messages(body)).toMatch(/directives limit/i);
      expect(await overSocket(query)).toMatch(/directives limit/i);
      await expectStillServing(gateway);
    });

    it('a list literal nested 900 deep in an argument → BAD_USER_INPUT, over HTTP and the socket', async () => {
      const stop = `${'['.repeat(900)}"x"${']'.repeat(900)}`;
      const query = `mutation { chat(input: { messages: [{ role: USER, content: "hi" }], stop: ${stop} }) { id } }`;
      const spent = await sql<{ used: string }>(gateway.databaseUrl, 'select used from quota_accounts where user_id = $1', [user.id]);
      const { body } = await postGraphQL(gateway.server.url, query, undefined, { token: user.token });
      expect(body.data ?? null).toBeNull();
      expectErrors(body, 'BAD_USER_INPUT');
      await overSocket(query);
      expect(await sql(gateway.databaseUrl, 'select used from quota_accounts where user_id = $1', [user.id])).toEqual(spent);
      await expectStillServing(gateway);
    });
  });

  describe('request bodies', () => {
    const bodyError = (response: RawResponse): unknown => parseJson(response.text);

    it('a 2 MB string argument → 413 BAD_USER_INPUT, refused before parsing', async () => {
      const password = 'x'.repeat(2 * 1024 * 1024);
      const response = await rawRequest(gateway.server.url, {
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ query: 'mutation($e: String!, $p: String!) { login(email: $e, password: $p) { accessToken } }', variables: { e: user.email, p: password } }),
      });
      expect(response.status).toBe(413);
      expect(bodyError(response)).toEqual({ errors: [{ message: expect.stringMatching(/over 1048576 bytes/), extensions: { code: 'BAD_USER_INPUT' } }] });
      const rows = await sql(gateway.databaseUrl, 'select 1 from login_throttle where subject = $1', [`account:${user.email}`]);
      expect(rows).toEqual([]);
      await expectStillServing(gateway);
    });

    it('a 2 MB string inline in the document, sent chunked (no content-length) → 413', async () => {
      const response = await rawRequest(gateway.server.url, {
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ query: `{ serverInfo { version } } # ${'y'.repeat(2 * 1024 * 1024)}` }),
        chunked: true,
      }).catch((error: NodeJS.ErrnoException) => error);
      // The server answers 413 and closes; a client still sending may see the reset instead.
      if (response instanceof Error) expect(response.code).toMatch(/ECONNRESET|EPIPE/);
      else expect(response.status).toBe(413);
      await expectStillServing(gateway);
    });

    it('a body just over HTTP_MAX_BODY_BYTES (padding in extensions) → 413; one just under is served', async () => {
      const limit = gateway.config.http.maxBodyBytes;
      const shape = (padding: number): string => JSON.stringify({ query: '{ serverInfo { version } }', extensions: { pad: 'p'.repeat(padding) } });
      const overhead = shape(0).length;
      const over = await rawRequest(gateway.server.url, { headers: { 'content-type': 'application/json' }, body: shape(limit - overhead + 1) });
      expect(over.status).toBe(413);
      expect(bodyError(over)).toMatchObject({ errors: [{ extensions: { code: 'BAD_USER_INPUT' } }] });
      const under = await rawRequest(gateway.server.url, { headers: { 'content-type': 'application/json' }, body: shape(limit - overhead) });
      expect(under.status).toBe(200);
      await expectStillServing(gateway);
    });

    it.each([
      ['truncated JSON', '{"query": "{ serverInfo { version } }"'],
      ['a trailing comma', '{"query": "{ serverInfo { version } }",}'],
      ['not JSON at all', 'query { serverInfo { version } }'],
      ['a lone quote', '"'],
    ])('malformed JSON (%s) → 400 BAD_USER_INPUT', async (_label, body) => {
      const response = await rawRequest(gateway.server.url, { headers: { 'content-type': 'application/json' }, body });
      expect(response.status).toBe(400);
      expect(bodyError(response)).toEqual({ errors: [{ message: 'The request body is not valid JSON.', extensions: { code: 'BAD_USER_INPUT' } }] });
      await expectStillServing(gateway);
    });

    it.each([
      ['a JSON string', '"{ serverInfo { version } }"'],
      ['null', 'null'],
      ['a number', '42'],
      ['an object without a query', '{"variables": {}}'],
      ['a query that is not a string', '{"query": {"kind": "Document"}}'],
      ['variables that are not an object', '{"query": "{ serverInfo { version } }", "variables": [1, 2]}'],
    ])('well-formed JSON that is no GraphQL request (%s) → 400 BAD_USER_INPUT', async (_label, body) => {
      const response = await rawRequest(gateway.server.url, { headers: { 'content-type': 'application/json' }, body });
      expect(response.status).toBe(400);
      expect(bodyError(response)).toMatchObject({ errors: [{ extensions: { code: 'BAD_USER_INPUT' } }] });
      await expectStillServing(gateway);
    });

    it('JSON nested 100 000 levels deep in the variables → 400 BAD_USER_INPUT, not a crash', async () => {
      const deep = `${'['.repeat(100_000)}${']'.repeat(100_000)}`;
      const body = `{"query": "mutation($input: ChatInput!) { chat(input: $input) { id } }", "variables": {"input": {"messages": ${deep}}}}`;
      const before = gateway.simulator.stats.chatRequests;
      const response = await rawRequest(gateway.server.url, { headers: { 'content-type': 'application/json', authorization: `Bearer ${user.token}` }, body });
      expect(response.status).toBe(400);
      expect(bodyError(response)).toMatchObject({ errors: [{ extensions: { code: 'BAD_USER_INPUT' } }] });
      expect(gateway.simulator.stats.chatRequests).toBe(before);
      await expectStillServing(gateway);
    });

    it('a batched array → 400 BAD_USER_INPUT, and none of its operations runs', async () => {
      const before = await keyCount();
      const operation = { query: 'mutation { createApiKey(name: "batched") { secret } }' };
      const response = await rawRequest(gateway.server.url, {
        headers: { 'content-type': 'application/json', authorization: `Bearer ${user.token}` },
        body: JSON.stringify([operation, operation, { query: '{ serverInfo { version } }' }]),
      });
      expect(response.status).toBe(400);
      expect(bodyError(response)).toMatchObject({ errors: [{ extensions: { code: 'BAD_USER_INPUT' } }] });
      expect(await keyCount()).toBe(before);
      await expectStillServing(gateway);
    });
  });

  describe('cross-site requests (Apollo CSRF prevention)', () => {
    const bodyOf = (response: RawResponse): unknown => parseJson(response.text);
    const mutation = JSON.stringify({ query: 'mutation { createApiKey(name: "csrf") { secret } }' });

    it.each([
      ['text/plain', 'text/plain'],
      ['text/plain with a charset', 'text/plain;charset=UTF-8'],
      ['application/x-www-form-urlencoded', 'application/x-www-form-urlencoded'],
      ['multipart/form-data', 'multipart/form-data; boundary=xyz'],
      ['no content type', undefined],
    ])('a POST with %s → 400, and the mutation did not run', async (_label, contentType) => {
      const before = await keyCount();
      const response = await rawRequest(gateway.server.url, {
        headers: { ...(contentType === undefined ? {} : { 'content-type': contentType }), authorization: `Bearer ${user.token}` },
        body: mutation,
      });
      expect(response.status).toBe(400);
      expect(bodyOf(response)).toMatchObject({ errors: [{ message: expect.stringMatching(/Cross-Site Request Forgery/), extensions: { code: 'BAD_USER_INPUT' } }] });
      expect(response.text).not.toContain('"secret"');
      expect(await keyCount()).toBe(before);
      await expectStillServing(gateway);
    });

    it('a GET query without a preflight-forcing header → 400 (blocked as CSRF); with one it is served', async () => {
      const url = `${gateway.server.url}?query=${encodeURIComponent('{ apiKeys { id } }')}`;
      const blocked = await rawRequest(url, { headers: { authorization: `Bearer ${user.token}` } });
      expect(blocked.status).toBe(400);
      expect(bodyOf(blocked)).toMatchObject({ errors: [{ message: expect.stringMatching(/Cross-Site Request Forgery/), extensions: { code: 'BAD_USER_INPUT' } }] });
      const allowed = await rawRequest(url, { headers: { authorization: `Bearer ${user.token}`, 'apollo-require-preflight': 'true' } });
      expect(allowed.status).toBe(200);
    });

    it('a GET mutation, even with the preflight header → refused (405), and the mutation did not run', async () => {
      const before = await keyCount();
      const url = `${gateway.server.url}?query=${encodeURIComponent('mutation { createApiKey(name: "get") { secret } }')}`;
      const response = await rawRequest(url, { headers: { authorization: `Bearer ${user.token}`, 'apollo-require-preflight': 'true' } });
      expect(response.status).toBe(405);
      expect(bodyOf(response)).toMatchObject({ errors: [{ message: expect.stringMatching(/only support query operations/), extensions: { code: 'BAD_USER_INPUT' } }] });
      expect(response.text).not.toContain('"secret"');
      expect(await keyCount()).toBe(before);
      const { body } = await postGraphQL(gateway.server.url, ApiKeysDocument, {}, { token: user.token });
      expect(body.data?.apiKeys).toHaveLength(before);
    });
  });

  describe('WebSocket frames', () => {
    it('a frame over WS_MAX_MESSAGE_BYTES closes that socket with 1009; another socket is unaffected', async () => {
      const limit = gateway.config.ws.maxMessageBytes;
      const bystander = new RawSocket(gateway.server.wsUrl);
      const attacker = new RawSocket(gateway.server.wsUrl);
      try {
        expect(await bystander.init(`Bearer ${user.token}`)).toBe('ack');
        expect(await attacker.init(`Bearer ${user.token}`)).toBe('ack');
        await attacker.send({ id: 'big', type: 'subscribe', payload: { query: `{ serverInfo { version } } # ${'z'.repeat(limit)}` } });
        expect((await attacker.closed).code).toBe(1009);
        const next = await bystander.run('still', ServerInfoDocument as TypedDocumentNode<unknown, never>);
        expect(next.find((message) => message.type === 'next')).toMatchObject({ payload: { data: { serverInfo: { version: expect.any(String) } } } });
      } finally {
        bystander.close();
        attacker.close();
      }
      await expectSocketStillServing(gateway, user.token);
    });

    it('an over-large frame before connection_init also closes with 1009', async () => {
      const socket = new RawSocket(gateway.server.wsUrl);
      await socket.send('x'.repeat(gateway.config.ws.maxMessageBytes + 1));
      expect((await socket.closed).code).toBe(1009);
      await expectSocketStillServing(gateway, user.token);
    });

    it('one operation more than WS_MAX_SUBSCRIPTIONS_PER_SOCKET on a socket → RATE_LIMITED; the others keep running', async () => {
      const limit = gateway.config.ws.maxSubscriptionsPerSocket;
      const socket = new RawSocket(gateway.server.wsUrl);
      try {
        expect(await socket.init(`Bearer ${user.token}`)).toBe('ack');
        for (let i = 0; i < limit; i += 1) await socket.send({ id: `s${i}`, type: 'subscribe', payload: { query: 'subscription { usageUpdated { used } }' } });
        // A refusal comes at once; a subscription accepted in its place just waits for events.
        const over = await socket.run('over', 'subscription { usageUpdated { used } }', undefined, 1, 1_500);
        expectWsErrors(over, 'RATE_LIMITED');
        expect(socket.messages.filter((message) => message.type === 'error' && message.id !== 'over')).toEqual([]);
        expect(socket.closeCode).toBeNull();
      } finally {
        socket.close();
      }
    });

    it('a frame that is not JSON, or not a protocol message, closes the socket with 4400', async () => {
      for (const frame of ['not json', '{"type":"subscribe"}', '[1,2,3]']) {
        const socket = new RawSocket(gateway.server.wsUrl);
        expect(await socket.init(`Bearer ${user.token}`)).toBe('ack');
        await socket.send(frame);
        expect((await socket.closed).code).toBe(4400);
      }
      await expectSocketStillServing(gateway, user.token);
    });
  });
});
