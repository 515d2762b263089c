import { getIntrospectionQuery, print } from 'graphql';
import { ApiKeysDocument, ServerInfoDocument } from '../generated/graphql';
import { sql } from '../helpers/database';
import { requireBuilt, startTestGateway, type TestGateway } from '../helpers/server';
import { createUser, postGraphQL, signInAdmin, type SignedIn } from '../helpers/client';
import { RawSocket, expectWsErrors } from '../helpers/raw-socket';
import { expectErrors, expectStillServing, messages, rawRequest, type RawResponse } from './support';

const ALLOWED_ORIGIN = 'https://app.example.test';
const OTHER_ORIGIN = 'https://evil.example.test';

function expectNoStacktrace(text: string): void {
  expect(text).not.toMatch(/stacktrace|\bat [\w.<>]+ \(|node_modules|\/src\//);
}

/** The CSP's directives by name. */
function csp(response: RawResponse): Map<string, string[]> {
  const header = response.headers['content-security-policy'];
  expect(typeof header).toBe('string');
  return new Map(
    String(header)
      .split(';')
      .map((directive) => directive.trim().split(/\s+/))
      .filter((parts) => parts[0] !== '')
      .map(([name, ...values]) => [name, values]),
  );
}

describe('production mode (NODE_ENV=production, CORS_ALLOWED_ORIGINS set)', () => {
  let gateway: TestGateway;
  let user: SignedIn;

  beforeAll(async () => {
    gateway = await startTestGateway({ env: { NODE_ENV: 'production', LOG_LEVEL: 'silent', CORS_ALLOWED_ORIGINS: ALLOWED_ORIGIN } });
    expect(gateway.config.env).toBe('production');
    expect(gateway.config.graphql.introspection).toBe(false);
    expect(gateway.config.graphql.graphiql).toBe(false);
    user = await createUser(gateway, (await signInAdmin(gateway)).token, { tokenLimit: 1_000 });
  });
  afterAll(() => gateway.stop());

  it.each([
    ['__schema', '{ __schema { types { name } } }'],
    ['__type', '{ __type(name: "User") { fields { name } } }'],
    ['the full introspection query', getIntrospectionQuery()],
    ['__schema hidden in a fragment', '{ ...F } fragment F on Query { __schema { queryType { name } } }'],
  ])('introspection (%s) over HTTP → BAD_USER_INPUT, no schema in the answer', async (_label, query) => {
    for (const token of [undefined, user.token]) {
      const { status, body } = await postGraphQL(gateway.server.url, query, undefined, { token });
      expect(status).toBe(400);
      expect(body.data ?? null).toBeNull();
      expectErrors(body, 'BAD_USER_INPUT');
      expect(messages(body)).toMatch(/introspection/i);
      expect(JSON.stringify(body)).not.toMatch(/UsageRecord|QuotaUsage|"types"/);
      expectNoStacktrace(JSON.stringify(body));
    }
    await expectStillServing(gateway);
  });

  it('introspection over the WebSocket → BAD_USER_INPUT too', async () => {
    const socket = new RawSocket(gateway.server.wsUrl);
    try {
      expect(await socket.init(`Bearer ${user.token}`)).toBe('ack');
      const errors = expectWsErrors(await socket.run('i', '{ __schema { types { name } } }'), 'BAD_USER_INPUT');
      expect(errors.map((error) => error.message).join()).toMatch(/introspection/i);
    } finally {
      socket.close();
    }
  });

  it('__typename is not introspection: still answered', async () => {
    const { body } = await postGraphQL(gateway.server.url, '{ __typename serverInfo { __typename } }');
    expect(body).toEqual({ data: { __typename: 'Query', serverInfo: { __typename: 'ServerInfo' } } });
  });

  it('GraphiQL is not served: a browser GET /graphql gets no HTML page', async () => {
    const response = await rawRequest(gateway.server.url, { headers: { accept: 'text/html,application/xhtml+xml,*/*;q=0.8' } });
    expect(response.status).toBe(400);
    expect(String(response.headers['content-type'])).not.toMatch(/html/);
    expect(response.text).not.toMatch(/<html|graphiql/i);
    await expectStillServing(gateway);
  });

  it.each([
    ['an unknown field', '{ serverInf { version } }', 'serverInfo'],
    ['an unknown subfield', '{ serverInfo { versio } }', 'version'],
    ['an unknown enum value', '{ usageSummary(groupBy: DA) { key } }', 'DAY'],
    ['an unknown input field', 'mutation { chat(input: { mesages: [] }) { id } }', 'messages'],
    ['an unknown argument', '{ users(serch: "x") { totalCount } }', 'search'],
  ])('%s: BAD_USER_INPUT with no "Did you mean", no stack trace', async (_label, query, suggestion) => {
    const { body } = await postGraphQL(gateway.server.url, query, undefined, { token: user.token });
    expectErrors(body, 'BAD_USER_INPUT');
    const text = JSON.stringify(body);
    expect(text).not.toMatch(/Did you mean/i);
    expect(text).not.toContain(`"${suggestion}"`);
    expectNoStacktrace(text);
  });

  it('a variable with an unknown input field: BAD_USER_INPUT with no suggestion over HTTP; an unknown field none over the socket', async () => {
    const { body } = await postGraphQL(gateway.server.url, 'mutation($input: ChatInput!) { chat(input: $input) { id } }', { input: { mesages: [{ role: 'USER', content: 'hi' }] } }, { token: user.token });
    expectErrors(body, 'BAD_USER_INPUT');
    expect(JSON.stringify(body)).not.toMatch(/Did you mean/i);
    const socket = new RawSocket(gateway.server.wsUrl);
    try {
      expect(await socket.init(`Bearer ${user.token}`)).toBe('ack');
      const errors = expectWsErrors(await socket.run('v', '{ serverInf { version } }'), 'BAD_USER_INPUT');
      expect(JSON.stringify(errors)).not.toMatch(/Did you mean/i);
    } finally {
      socket.close();
    }
  });

  // The socket checks operation names and variables before execution (DocumentCache.prepare), as Apollo does over HTTP.
  it('bad variables or operation names over the socket → BAD_USER_INPUT, not INTERNAL_SERVER_ERROR', async () => {
    const socket = new RawSocket(gateway.server.wsUrl);
    try {
      expect(await socket.init(`Bearer ${user.token}`)).toBe('ack');
      const variableErrors = expectWsErrors(await socket.run('w', 'mutation($input: ChatInput!) { chat(input: $input) { id } }', { input: { mesages: [] } }), 'BAD_USER_INPUT');
      expect(JSON.stringify(variableErrors)).not.toMatch(/Did you mean/i);
      expectWsErrors(await socket.run('x', 'mutation($input: ChatInput!) { chat(input: $input) { id } }', { input: { messages: [{ role: 'USER', content: 'hi' }], maxTokens: 2_147_483_648 } }), 'BAD_USER_INPUT');
      expectWsErrors(await socket.run('y', 'query A { serverInfo { version } } query B { serverInfo { version } }'), 'BAD_USER_INPUT');
    } finally {
      socket.close();
    }
  });

  it('a database failure → INTERNAL_SERVER_ERROR with no SQL, table name or stack trace; the next request is served', async () => {
    await sql(gateway.databaseUrl, 'alter table api_keys rename to api_keys_hidden');
    try {
      const { body } = await postGraphQL(gateway.server.url, ApiKeysDocument, {}, { token: user.token });
      expect(body.data ?? null).toBeNull();
      const [error] = expectErrors(body, 'INTERNAL_SERVER_ERROR');
      expect(error.message).toBe('Internal server error.');
      const text = JSON.stringify(body);
      expect(text).not.toMatch(/api_keys|relation|select|postgres|sql/i);
      expectNoStacktrace(text);
      expect(Object.keys(error.extensions ?? {})).toEqual(['code']);
    } finally {
      await sql(gateway.databaseUrl, 'alter table api_keys_hidden rename to api_keys');
    }
    const { body } = await postGraphQL(gateway.server.url, ApiKeysDocument, {}, { token: user.token });
    expect(body.errors).toBeUndefined();
    await expectStillServing(gateway);
  });

  it('CORS: the preflight of the configured origin → 204 with its Access-Control-Allow-Origin', async () => {
    const response = await rawRequest(gateway.server.url, {
      method: 'OPTIONS',
      headers: { origin: ALLOWED_ORIGIN, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type, authorization' },
    });
    expect(response.status).toBe(204);
    expect(response.headers['access-control-allow-origin']).toBe(ALLOWED_ORIGIN);
    expect(String(response.headers['access-control-allow-headers'])).toMatch(/authorization/);
    expect(String(response.headers.vary)).toMatch(/Origin/);
    const post1 = await rawRequest(gateway.server.url, {
      headers: { origin: ALLOWED_ORIGIN, 'content-type': 'application/json' },
      body: JSON.stringify({ query: print(ServerInfoDocument) }),
    });
    expect(post1.status).toBe(200);
    expect(post1.headers['access-control-allow-origin']).toBe(ALLOWED_ORIGIN);
  });

  it.each([
    ['another origin', OTHER_ORIGIN],
    ['the allowed origin with another port', `${ALLOWED_ORIGIN}:8443`],
    ['the allowed origin over http', ALLOWED_ORIGIN.replace('https:', 'http:')],
    ['a suffix of the allowed origin', `${ALLOWED_ORIGIN}.evil.test`],
    ['null', 'null'],
  ])('CORS: %s gets no 204 preflight and no Access-Control-Allow-Origin', async (_label, origin) => {
    const preflight = await rawRequest(gateway.server.url, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST' } });
    expect(preflight.status).not.toBe(204);
    expect(preflight.headers['access-control-allow-origin']).toBeUndefined();
    const response = await rawRequest(gateway.server.url, {
      headers: { origin, 'content-type': 'application/json' },
      body: JSON.stringify({ query: print(ServerInfoDocument) }),
    });
    expect(response.headers['access-control-allow-origin']).toBeUndefined();
    expect(response.headers['access-control-allow-credentials']).toBeUndefined();
  });

  it('the OpenAI-compatible endpoint hides internals too: an unknown route is a plain 404', async () => {
    const response = await rawRequest(`${gateway.server.origin}/v1/../../etc/passwd`);
    expect(response.status).toBe(404);
    expectNoStacktrace(response.text);
  });
});

describe('defaults outside production (no CORS_ALLOWED_ORIGINS)', () => {
  let gateway: TestGateway;

  beforeAll(async () => {
    gateway = await startTestGateway();
  });
  afterAll(() => gateway.stop());

  it('CORS is off: an Origin gets no Access-Control-Allow-Origin, and its preflight no 204', async () => {
    expect(gateway.config.http.corsOrigins).toEqual([]);
    for (const origin of [OTHER_ORIGIN, ALLOWED_ORIGIN, gateway.server.origin]) {
      const response = await rawRequest(gateway.server.url, {
        headers: { origin, 'content-type': 'application/json' },
        body: JSON.stringify({ query: print(ServerInfoDocument) }),
      });
      expect(response.status).toBe(200);
      expect(response.headers['access-control-allow-origin']).toBeUndefined();
      const preflight = await rawRequest(gateway.server.url, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST' } });
      expect(preflight.status).not.toBe(204);
      expect(preflight.headers['access-control-allow-origin']).toBeUndefined();
      expect(preflight.headers['access-control-allow-methods']).toBeUndefined();
    }
    await expectStillServing(gateway);
  });

  function expectPageHeaders(response: RawResponse): void {
    const policy = csp(response);
    // Scripts from this origin only: no 'unsafe-inline', no 'unsafe-eval', no wildcard.
    expect(policy.get('script-src')).toEqual(["'self'"]);
    expect(policy.get('object-src')).toEqual(["'none'"]);
    expect(policy.get('frame-ancestors')).toEqual(["'none'"]);
    expect(response.headers['x-content-type-options']).toBe('nosniff');
    expect(response.headers['referrer-policy']).toBe('no-referrer');
  }

  it('GraphiQL (GET /graphql from a browser): CSP without inline script, nosniff, referrer-policy', async () => {
    const response = await rawRequest(gateway.server.url, { headers: { accept: 'text/html' } });
    expect(response.status).toBe(200);
    expect(String(response.headers['content-type'])).toMatch(/^text\/html/);
    expectPageHeaders(response);
    // No inline script for the CSP to have to allow.
    expect(response.text).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/i);
  });

  it('the usage page (GET /usage): CSP without inline script, nosniff, referrer-policy', async () => {
    // The page is served from dist/public/usage (src/usage-page): built, it is there to check.
    requireBuilt('dist/public/usage/index.html');
    const response = await rawRequest(`${gateway.server.origin}/usage`, { headers: { accept: 'text/html' } });
    expect(response.status).toBe(200);
    expect(String(response.headers['content-type'])).toMatch(/^text\/html/);
    expectPageHeaders(response);
    expect(response.text).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/i);
  });

  it('a file under /usage/ that the page does not have: a plain 404 with the same headers', async () => {
    const response = await rawRequest(`${gateway.server.origin}/usage/nowhere.js`);
    expect(response.status).toBe(404);
    expect(String(response.headers['content-type'])).toMatch(/^text\/plain/);
    expectPageHeaders(response);
  });

  it('every response carries nosniff and an x-request-id, JSON answers included', async () => {
    for (const response of [
      await rawRequest(gateway.server.url, { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: print(ServerInfoDocument) }) }),
      await rawRequest(`${gateway.server.origin}/nowhere`),
      await rawRequest(gateway.server.url, { headers: { 'content-type': 'application/json' }, body: '{' }),
    ]) {
      expect(response.headers['x-content-type-options']).toBe('nosniff');
      expect(response.headers['x-request-id']).toEqual(expect.stringMatching(/^[\w.-]{8,64}$/));
    }
  });

  it('x-request-id: a well-formed one is echoed, a hostile one replaced', async () => {
    const body = JSON.stringify({ query: print(ServerInfoDocument) });
    const echoed = await rawRequest(gateway.server.url, { headers: { 'content-type': 'application/json', 'x-request-id': 'client-req-12345' }, body });
    expect(echoed.headers['x-request-id']).toBe('client-req-12345');
    for (const hostile of ['short', 'a'.repeat(65), '<script>alert(1)</script>', 'id"}\u0020{"level":"fatal', '../../etc/passwd']) {
      const response = await rawRequest(gateway.server.url, { headers: { 'content-type': 'application/json', 'x-request-id': hostile }, body });
      expect(response.status).toBe(200);
      expect(response.headers['x-request-id']).not.toBe(hostile);
      expect(response.headers['x-request-id']).toEqual(expect.stringMatching(/^[0-9a-f-]{36}$/));
    }
  });
});
