import { createHash, randomBytes } from 'node:crypto';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import {
  ChangePasswordDocument,
  ChatDocument,
  ChatStreamDocument,
  CreateApiKeyDocument,
  CreateUserDocument,
  LoginDocument,
  LogoutDocument,
  MeDocument,
  RefreshDocument,
  ServerInfoDocument,
} from '../generated/graphql';
import { sql } from '../helpers/database';
import { TEST_JWT_SECRET } from '../helpers/server';
import { postGraphQL, sleep, TEST_ADMIN } from '../helpers/client';
import { RawSocket } from '../helpers/raw-socket';
import { rawRequest, startLoggedGateway, type LoggedGateway, type RawResponse } from './support';

const secretValue = (label: string): string => `${label}-${randomBytes(12).toString('hex')}`;
const VLLM_KEY = secretValue('vllm-key');

interface Secret {
  readonly label: string;
  readonly value: string;
}

/**
 * Secrets never reach the logs, nor any answer except the one that hands them out (login and
 * refresh their tokens, createApiKey its key); every log line written while serving an HTTP
 * request carries that request's id, the one echoed in x-request-id.
 */
describe('secrets and request ids in logs and answers', () => {
  let gateway: LoggedGateway;
  const secrets: Secret[] = [];
  const answers: { what: string; text: string }[] = [];
  /** HTTP requests whose log lines must carry the id the response echoed. */
  const windows: { what: string; requestId: string; lines: Record<string, unknown>[] }[] = [];
  /** Log lines written while a socket operation failed upstream. */
  let socketStart = 0;
  let socketEnd = 0;

  const keep = (label: string, value: string): string => {
    expect(value.length).toBeGreaterThan(8);
    secrets.push({ label, value });
    return value;
  };

  /**
   * Access tokens carry no jti: two signed in the same second for the same user and token
   * version are the same string, so a login or refresh may hand out one already seen. Those
   * answers may hold them; nothing else may.
   */
  const accessTokens = (): string[] => secrets.filter((secret) => secret.label.includes('access token')).map((secret) => secret.value);

  /** An answer must not hold any secret known before it was sent (it may hand out new ones). */
  function checkAnswer(what: string, text: string, allowed: readonly string[] = []): void {
    answers.push({ what, text });
    for (const secret of secrets) {
      if (text.includes(secret.value) && !allowed.includes(secret.value)) throw new Error(`${what}: the answer holds ${secret.label}`);
    }
  }

  /**
   * Waits for the request's own "http request" line (the last one written for a request, on
   * 'finish'): everything logged while serving it comes between `start` and that line. Requests
   * are sent one at a time, so it is the first such line after `start`.
   */
  async function waitForRequestLine(start: number): Promise<number> {
    for (let attempt = 0; attempt < 1_000; attempt += 1) {
      const index = gateway.logs.raw.findIndex((line, at) => at >= start && line.includes('"msg":"http request"'));
      if (index >= 0) return index;
      await sleep(5);
    }
    throw new Error('no "http request" log line');
  }

  async function observed(what: string, send: () => Promise<RawResponse>, allowed: readonly string[] = []): Promise<RawResponse> {
    const start = gateway.logs.raw.length;
    const response = await send();
    const requestId = response.headers['x-request-id'];
    expect(typeof requestId).toBe('string');
    const end = await waitForRequestLine(start);
    windows.push({ what, requestId: String(requestId), lines: gateway.logs.raw.slice(start, end + 1).map((line) => JSON.parse(line) as Record<string, unknown>) });
    checkAnswer(what, response.text, allowed);
    return response;
  }

  async function graphql<TData, TVariables>(
    what: string,
    document: TypedDocumentNode<TData, TVariables>,
    variables?: TVariables,
    token?: string,
    allowed: readonly string[] = [],
  ): Promise<TData | null> {
    let data: TData | null = null;
    await observed(what, async () => {
      const { status, headers, body } = await postGraphQL(gateway.server.url, document, variables, { token });
      data = (body.data ?? null) as TData | null;
      return { status, headers, text: JSON.stringify(body) };
    }, allowed);
    return data;
  }

  beforeAll(async () => {
    gateway = await startLoggedGateway({ env: { VLLM_API_KEY: VLLM_KEY }, simulator: { apiKey: VLLM_KEY } });
    keep('VLLM_API_KEY', VLLM_KEY);
    keep('JWT_SECRET', TEST_JWT_SECRET);
    keep('the admin password', TEST_ADMIN.password);

    // Sign-in, user creation, refresh, API keys, chat through every door, failures of each.
    const adminLogin = await graphql('admin login', LoginDocument, { email: TEST_ADMIN.email, password: TEST_ADMIN.password });
    const admin = keep('the admin access token', adminLogin?.login.accessToken ?? '');
    keep('the admin refresh token', adminLogin?.login.refreshToken ?? '');

    const email = `secret-user-${randomBytes(4).toString('hex')}@example.test`;
    const password = keep('the user password', secretValue('pw'));
    await graphql('createUser', CreateUserDocument, { input: { email, password, tokenLimit: 100_000 } }, admin);
    await graphql('createUser with a weak password', CreateUserDocument, { input: { email: `weak-${email}`, password: keep('a weak password', 'Wk-9zq!xQ') } }, admin);

    const login = await graphql('user login', LoginDocument, { email, password });
    const access1 = keep('the first access token', login?.login.accessToken ?? '');
    const refresh1 = keep('the first refresh token', login?.login.refreshToken ?? '');
    const refreshed = await graphql('refresh', RefreshDocument, { refreshToken: refresh1 }, undefined, accessTokens());
    const access2 = keep('the refreshed access token', refreshed?.refresh.accessToken ?? '');
    const refresh2 = keep('the refreshed refresh token', refreshed?.refresh.refreshToken ?? '');

    const created = await graphql('createApiKey', CreateApiKeyDocument, { name: 'secret-test' }, access2);
    const apiKey = keep('the API key', created?.createApiKey.secret ?? '');

    const wrong = keep('a wrong password', secretValue('wrong'));
    await graphql('failed login (wrong password)', LoginDocument, { email, password: wrong });
    await graphql('failed login (unknown email)', LoginDocument, { email: `nobody-${email}`, password: wrong });
    await graphql('failed login (the password typed as the email)', LoginDocument, { email: password, password });
    await graphql('me with the access token', MeDocument, {}, access2);
    await graphql('me with the API key', MeDocument, {}, apiKey);
    await graphql('me with a forged key', MeDocument, {}, keep('a forged API key', `sk-${randomBytes(32).toString('base64url')}`));

    const chat = await graphql('chat (GraphQL, access token)', ChatDocument, { input: { messages: [{ role: 'USER', content: 'hello there' }], maxTokens: 8 } }, access2);
    expect(chat?.chat.usage.totalTokens).toBeGreaterThan(0);
    await graphql('chat (GraphQL, API key)', ChatDocument, { input: { messages: [{ role: 'USER', content: 'hello again' }], maxTokens: 8 } }, apiKey);
    const openai = await observed('chat (OpenAI-compatible, API key)', () =>
      rawRequest(`${gateway.server.origin}/v1/chat/completions`, {
        headers: { 'content-type': 'application/json', authorization: `Bearer ${apiKey}` },
        body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 8 }),
      }),
    );
    expect(openai.status).toBe(200);
    await observed('OpenAI-compatible models', () => rawRequest(`${gateway.server.origin}/v1/models`, { headers: { authorization: `Bearer ${apiKey}` } }));

    gateway.simulator.setFault('fail-before');
    try {
      await graphql('chat with the upstream failing', ChatDocument, { input: { messages: [{ role: 'USER', content: 'fail' }], maxTokens: 8 } }, access2);
    } finally {
      gateway.simulator.setFault(null);
    }

    const socket = new RawSocket(gateway.server.wsUrl);
    try {
      expect(await socket.init(`Bearer ${apiKey}`)).toBe('ack');
      await socket.run('s', ChatStreamDocument as TypedDocumentNode<unknown, never>, { input: { messages: [{ role: 'USER', content: 'stream' }], maxTokens: 8 } }, 100);
      checkAnswer('chatStream over the socket', JSON.stringify(socket.messages));
    } finally {
      socket.close();
    }

    // A failure while serving a socket operation: its log line should name the operation.
    gateway.simulator.setFault('fail-before');
    const failing = new RawSocket(gateway.server.wsUrl);
    try {
      expect(await failing.init(`Bearer ${access2}`)).toBe('ack');
      socketStart = gateway.logs.raw.length;
      await failing.run('f', ChatStreamDocument as TypedDocumentNode<unknown, never>, { input: { messages: [{ role: 'USER', content: 'fail' }], maxTokens: 8 } }, 100);
      socketEnd = gateway.logs.raw.length;
      checkAnswer('chatStream over the socket, upstream failing', JSON.stringify(failing.messages));
    } finally {
      failing.close();
      gateway.simulator.setFault(null);
    }

    // A database failure while a secret is a query parameter: the error is logged, the secret
    // (its hash is what the query holds) is not, and the answer says nothing of SQL.
    const session = await graphql('login for the database failure', LoginDocument, { email, password }, undefined, accessTokens());
    const refresh3 = keep('the refresh token of the failing refresh', session?.login.refreshToken ?? '');
    // The failing statement holds the token's hash as a parameter: that stays out of the logs too.
    keep('the hash of that refresh token', createHash('sha256').update(refresh3).digest('hex'));
    keep('the access token of the failing refresh', session?.login.accessToken ?? '');
    await sql(gateway.databaseUrl, 'alter table refresh_sessions rename to refresh_sessions_hidden');
    try {
      await observed('refresh while the database fails', async () => {
        const { status, headers, body } = await postGraphQL(gateway.server.url, RefreshDocument, { refreshToken: refresh3 });
        expect(body.errors?.map((error) => [error.extensions?.code, error.message])).toEqual([['INTERNAL_SERVER_ERROR', 'Internal server error.']]);
        return { status, headers, text: JSON.stringify(body) };
      });
    } finally {
      await sql(gateway.databaseUrl, 'alter table refresh_sessions_hidden rename to refresh_sessions');
    }

    await graphql('refresh with a used refresh token (reuse)', RefreshDocument, { refreshToken: refresh1 });
    await graphql('logout', LogoutDocument, { refreshToken: refresh2 });
    const newPassword = keep('the new password', secretValue('new-pw'));
    await graphql('changePassword with a wrong current password', ChangePasswordDocument, { currentPassword: wrong, newPassword }, access1);
    await graphql('changePassword', ChangePasswordDocument, { currentPassword: password, newPassword }, access1);
    await graphql('login with the new password', LoginDocument, { email, password: newPassword }, undefined, accessTokens());
    await graphql('serverInfo', ServerInfoDocument);
    // Let background work (usage events, notifications) log whatever it logs.
    await sleep(200);
  });
  afterAll(() => gateway.stop());

  it('the scenario exercised the gateway: log lines were captured at debug level', () => {
    expect(gateway.logs.raw.length).toBeGreaterThan(windows.length);
    expect(secrets.length).toBeGreaterThanOrEqual(15);
    const messages = gateway.logs.parsed().map((line) => line.msg);
    expect(messages).toEqual(expect.arrayContaining(['signed in', 'sign-in refused', 'API key created', 'http request', 'unexpected error in a GraphQL operation']));
  });

  it('no log line holds any secret (passwords, tokens, API keys, VLLM_API_KEY, JWT_SECRET)', () => {
    const leaks: string[] = [];
    for (const line of gateway.logs.raw) {
      for (const secret of secrets) if (line.includes(secret.value)) leaks.push(`${secret.label}: ${line.slice(0, 300)}`);
    }
    expect(leaks).toEqual([]);
  });

  it('no answer held a secret other than the ones it handed out', () => {
    // checkAnswer threw at the time otherwise; here, that every answer was looked at.
    expect(answers.length).toBeGreaterThanOrEqual(20);
    const handedOut = answers.filter((answer) => /^(admin login|user login|refresh|createApiKey|login for the database failure|login with the new password)$/.test(answer.what));
    expect(handedOut).toHaveLength(6);
  });

  it('every log line written while serving a GraphQL request carries the requestId echoed in x-request-id', () => {
    const graphqlWindows = windows.filter((window) => !window.what.startsWith('chat (OpenAI-compatible'));
    expect(graphqlWindows.length).toBeGreaterThanOrEqual(20);
    const wrong: string[] = [];
    for (const window of graphqlWindows) {
      expect(window.lines.length).toBeGreaterThan(0);
      for (const line of window.lines) {
        if (line.requestId !== window.requestId) wrong.push(`${window.what}: ${JSON.stringify(line).slice(0, 300)}`);
      }
    }
    expect(wrong).toEqual([]);
    // Lines from inside the request (not only the final "http request" one) were checked.
    expect(graphqlWindows.some((window) => window.lines.some((line) => line.msg === 'signed in'))).toBe(true);
    expect(graphqlWindows.some((window) => window.lines.some((line) => line.msg === 'upstream refused a request'))).toBe(true);
  });

  it('the OpenAI-compatible chat: its log lines carry the requestId its response echoes', () => {
    const window = windows.find((entry) => entry.what === 'chat (OpenAI-compatible, API key)');
    expect(window).toBeDefined();
    for (const line of window?.lines ?? []) expect(line.requestId).toBe(window?.requestId);
  });

  it('lines logged while serving a socket operation carry a requestId', () => {
    const lines = gateway.logs.raw.slice(socketStart, socketEnd).map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(lines.map((line) => line.msg)).toContain('upstream refused a request');
    for (const line of lines) expect(line.requestId).toEqual(expect.any(String));
  });

  it('the unexpected database error is logged with its cause, without the values of the statement', () => {
    const [line] = gateway.logs.parsed().filter((entry) => entry.msg === 'unexpected error in a GraphQL operation');
    const message = (line.err as { message?: string } | undefined)?.message ?? '';
    expect(message).toMatch(/relation "refresh_sessions" does not exist/);
    // Prepared statements carry their values apart from the text: none may reach the message.
    expect(message).not.toMatch(/[0-9a-f]{64}/);
    expect(message).not.toMatch(/rt_[\w-]{20,}/);
  });

  it('every line has the structured shape: JSON with level, time, msg and the service name', () => {
    for (const line of gateway.logs.parsed()) {
      expect(line).toEqual(expect.objectContaining({ level: expect.any(String), time: expect.any(String), msg: expect.any(String), service: 'vllm-gateway' }));
    }
  });
});
