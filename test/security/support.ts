import { mkdirSync } from 'node:fs';
import { createServer as createHttpServer, request, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { Writable } from 'node:stream';
import { print, type ExecutionResult, type GraphQLFormattedError } from 'graphql';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import WebSocket from 'ws';
import { loadConfig, type Config } from '../../src/config';
import { createLogger } from '../../src/logger';
import { createServer, type GatewayServer } from '../../src/server';
import { startSimulator, type Simulator, type SimulatorOptions } from '../../src/simulator';
import { SecurityMeDocument, SecurityServerInfoDocument } from '../generated/graphql';
import { createTestDatabase, sql } from '../helpers/database';
import { TEST_ADMIN, TEST_JWT_SECRET, type TestGateway } from '../helpers/server';

export interface RawResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly text: string;
}

/**
 * One HTTP request with full control over method, headers and body (no content-type is added,
 * `chunked: true` sends no content-length). The connection is not reused.
 */
export function rawRequest(
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: string | Buffer; chunked?: boolean } = {},
): Promise<RawResponse> {
  const body = options.body === undefined ? undefined : Buffer.isBuffer(options.body) ? options.body : Buffer.from(options.body, 'utf8');
  const headers: Record<string, string> = { ...options.headers };
  if (body !== undefined && options.chunked !== true) headers['content-length'] = String(body.length);
  return new Promise((resolve, reject) => {
    const req = request(url, { method: options.method ?? (body === undefined ? 'GET' : 'POST'), agent: false, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', (error: NodeJS.ErrnoException) => {
      // The server may answer 413 and close while the client is still sending: the answer
      // was already delivered through the response callback, or the test will see this error.
      reject(error);
    });
    if (body !== undefined && options.chunked === true) {
      // Several writes, so the body really is chunked.
      const step = 64 * 1024;
      for (let offset = 0; offset < body.length; offset += step) req.write(body.subarray(offset, offset + step));
      req.end();
    } else {
      req.end(body);
    }
  });
}

export interface GraphQLResponse<TData> {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: ExecutionResult<TData>;
}

/** POST /graphql, JSON, with a document (typed or a string), variables and a bearer token. */
export async function post<TData = Record<string, unknown>, TVariables = Record<string, unknown>>(
  gateway: TestGateway,
  document: TypedDocumentNode<TData, TVariables> | string,
  variables?: TVariables,
  options: { token?: string; headers?: Record<string, string> } = {},
): Promise<GraphQLResponse<TData>> {
  const response = await rawRequest(gateway.server.url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(options.token === undefined ? {} : { authorization: `Bearer ${options.token}` }),
      ...options.headers,
    },
    body: JSON.stringify({ query: typeof document === 'string' ? document : print(document), variables }),
  });
  return { status: response.status, headers: response.headers, body: parseJson(response.text) as ExecutionResult<TData> };
}

export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`expected JSON, got: ${text.slice(0, 300)}`);
  }
}

/** Every error of a response; at least one, and each carries `code`. Returns them. */
export function expectErrors(result: ExecutionResult<unknown>, code: string): readonly GraphQLFormattedError[] {
  if (result.errors === undefined || result.errors.length === 0) {
    throw new Error(`expected ${code}, got ${JSON.stringify(result).slice(0, 500)}`);
  }
  expect(result.errors.map((error) => error.extensions?.code)).toEqual(result.errors.map(() => code));
  return result.errors;
}

/** The errors' messages, joined: for asserting which rule refused a document. */
export function messages(result: ExecutionResult<unknown>): string {
  return (result.errors ?? []).map((error) => error.message).join('\n');
}

/** The server still answers a plain query over HTTP, after whatever the test threw at it. */
export async function expectStillServing(gateway: TestGateway): Promise<void> {
  const { status, body } = await post(gateway, SecurityServerInfoDocument);
  expect(status).toBe(200);
  expect(body.errors).toBeUndefined();
  expect(body.data?.serverInfo.version).toEqual(expect.any(String));
}

/** `me.usage.used` of the token's user. */
export async function usedOf(gateway: TestGateway, token: string): Promise<number> {
  const { body } = await post(gateway, SecurityMeDocument, {}, { token });
  if (body.data == null) throw new Error(`me failed: ${JSON.stringify(body.errors)}`);
  expect(body.data.me.usage.reserved).toBe(0);
  return body.data.me.usage.used;
}

export async function usageRecordCount(gateway: TestGateway, userId: string): Promise<number> {
  const [row] = await sql<{ n: string }>(gateway.databaseUrl, 'select count(*) as n from usage_records where user_id = $1', [userId]);
  return Number(row.n);
}

/** What a user has spent, to compare before and after an attack: nothing may change. */
export async function spendOf(gateway: TestGateway, user: { id: string; token: string }): Promise<{ used: number; records: number }> {
  return { used: await usedOf(gateway, user.token), records: await usageRecordCount(gateway, user.id) };
}

// ---------------------------------------------------------------------------------------------
// WebSocket: a bare graphql-transport-ws client, to see close codes and frames as they are.

export type WsMessage =
  | { type: 'connection_ack'; payload?: unknown }
  | { type: 'next'; id: string; payload: ExecutionResult<unknown> }
  | { type: 'error'; id: string; payload: GraphQLFormattedError[] }
  | { type: 'complete'; id: string }
  | { type: 'ping' | 'pong'; payload?: unknown };

export interface Closed {
  readonly code: number;
  readonly reason: string;
}

export class RawSocket {
  readonly socket: WebSocket;
  readonly received: WsMessage[] = [];
  readonly closed: Promise<Closed>;
  private readonly opened: Promise<void>;
  private waiters: (() => void)[] = [];

  constructor(url: string) {
    this.socket = new WebSocket(url, 'graphql-transport-ws');
    this.opened = new Promise((resolve, reject) => {
      this.socket.once('open', () => resolve());
      this.socket.once('error', reject);
    });
    this.closed = new Promise((resolve) => {
      this.socket.once('close', (code, reason) => {
        resolve({ code, reason: reason.toString('utf8') });
        this.wake();
      });
    });
    this.socket.on('error', () => {
      // Surfaces as 'close'.
    });
    this.socket.on('message', (data: WebSocket.RawData) => {
      this.received.push(JSON.parse(data.toString()) as WsMessage);
      this.wake();
    });
  }

  private wake(): void {
    for (const waiter of this.waiters.splice(0)) waiter();
  }

  async send(message: unknown): Promise<void> {
    await this.opened;
    await new Promise<void>((resolve, reject) => this.socket.send(typeof message === 'string' ? message : JSON.stringify(message), (error) => (error ? reject(error) : resolve())));
  }

  /** Waits for a message matching `predicate`, or for the socket to close (then null). */
  async waitFor(predicate: (message: WsMessage) => boolean, timeoutMs = 5_000): Promise<WsMessage | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.received.find(predicate);
      if (found !== undefined) return found;
      if (this.socket.readyState === WebSocket.CLOSED) return null;
      if (Date.now() > deadline) throw new Error(`timed out waiting on the socket; got ${JSON.stringify(this.received)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** connection_init with the authorization; true when acknowledged, false when the socket closed. */
  async init(authorization?: string): Promise<boolean> {
    await this.send({ type: 'connection_init', payload: authorization === undefined ? {} : { authorization } });
    const ack = await this.waitFor((message) => message.type === 'connection_ack');
    return ack !== null;
  }

  /**
   * Subscribes and collects until `complete`, `error`, `stopAfter` next messages or the socket
   * closing; returns the messages of this id.
   */
  async run(id: string, query: string | TypedDocumentNode<unknown, never>, variables?: Record<string, unknown>, stopAfter = 1, timeoutMs = 10_000): Promise<WsMessage[]> {
    await this.send({ id, type: 'subscribe', payload: { query: typeof query === 'string' ? query : print(query), variables } });
    const mine = (): WsMessage[] => this.received.filter((message) => 'id' in message && message.id === id);
    await this.waitFor(
      () => mine().some((message) => message.type === 'complete' || message.type === 'error') || mine().filter((message) => message.type === 'next').length >= stopAfter,
      timeoutMs,
    );
    return mine();
  }

  close(): void {
    if (this.socket.readyState === WebSocket.OPEN || this.socket.readyState === WebSocket.CONNECTING) this.socket.close(1000);
  }
}

/** The errors of a socket operation: from an `error` message, or from a `next` carrying errors. */
export function wsErrors(messagesOfId: readonly WsMessage[]): readonly GraphQLFormattedError[] {
  for (const message of messagesOfId) {
    if (message.type === 'error') return message.payload;
    if (message.type === 'next' && message.payload.errors !== undefined) return message.payload.errors;
  }
  throw new Error(`expected errors on the socket, got ${JSON.stringify(messagesOfId).slice(0, 500)}`);
}

export function expectWsErrors(messagesOfId: readonly WsMessage[], code: string): readonly GraphQLFormattedError[] {
  const errors = wsErrors(messagesOfId);
  expect(errors.length).toBeGreaterThan(0);
  expect(errors.map((error) => error.extensions?.code)).toEqual(errors.map(() => code));
  expect(messagesOfId.some((message) => message.type === 'next' && message.payload.data != null)).toBe(false);
  return errors;
}

/** The socket still serves: a fresh authenticated socket runs a query. */
export async function expectSocketStillServing(gateway: TestGateway, token: string): Promise<void> {
  const socket = new RawSocket(gateway.server.wsUrl);
  try {
    expect(await socket.init(`Bearer ${token}`)).toBe(true);
    const result = await socket.run('alive', SecurityServerInfoDocument as TypedDocumentNode<unknown, never>);
    const next = result.find((message) => message.type === 'next');
    expect(next?.type === 'next' ? next.payload.errors : 'no next').toBeUndefined();
  } finally {
    socket.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Upstream observation: a pass-through proxy in front of the simulator that counts the paths
// the gateway asks for (the simulator's own stats do not count /tokenize).

export interface CountingProxy {
  readonly url: string;
  readonly hits: Map<string, number>;
  hitsOf(path: string): number;
  stop(): Promise<void>;
}

export async function startCountingProxy(simulator: Simulator): Promise<CountingProxy> {
  const hits = new Map<string, number>();
  const target = new URL(simulator.origin);
  const server: Server = createHttpServer((req, res) => {
    const pathname = (req.url ?? '/').split('?')[0];
    hits.set(pathname, (hits.get(pathname) ?? 0) + 1);
    const upstream = request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
      (upstreamRes) => {
        res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.headers);
        upstreamRes.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    hits,
    hitsOf: (pathname) => hits.get(pathname) ?? 0,
    stop: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

// ---------------------------------------------------------------------------------------------
// A gateway whose log lines are captured, built the way startTestGateway builds its own.

export interface LogCapture {
  /** Every line as written, unparsed: what a secret grep must look at. */
  readonly raw: string[];
  readonly stream: Writable;
  parsed(): Record<string, unknown>[];
}

export function captureLogs(): LogCapture {
  const raw: string[] = [];
  let pending = '';
  const stream = new Writable({
    write(chunk: Buffer | string, _encoding, callback) {
      pending += chunk.toString();
      let newline = pending.indexOf('\n');
      while (newline >= 0) {
        raw.push(pending.slice(0, newline));
        pending = pending.slice(newline + 1);
        newline = pending.indexOf('\n');
      }
      callback();
    },
  });
  return { raw, stream, parsed: () => raw.map((line) => JSON.parse(line) as Record<string, unknown>) };
}

export interface LoggedGateway extends TestGateway {
  readonly logs: LogCapture;
}

export async function startLoggedGateway(options: { env?: Record<string, string>; simulator?: SimulatorOptions } = {}): Promise<LoggedGateway> {
  const simulator = await startSimulator(options.simulator ?? {});
  const databaseUrl = await createTestDatabase();
  const dataDir = path.join(process.env.TEST_ROOT ?? '/tmp', `data-${process.pid}-${Math.random().toString(36).slice(2)}`);
  mkdirSync(dataDir, { recursive: true, mode: 0o755 });
  const config: Config = loadConfig({
    NODE_ENV: 'test',
    PORT: '0',
    DATABASE_URL: databaseUrl,
    VLLM_BASE_URL: simulator.url,
    JWT_SECRET: TEST_JWT_SECRET,
    ADMIN_EMAIL: TEST_ADMIN.email,
    ADMIN_PASSWORD: TEST_ADMIN.password,
    DATA_DIR: dataDir,
    PASSWORD_HASH_MEMORY_KIB: '19456',
    PASSWORD_HASH_TIME_COST: '2',
    PASSWORD_HASH_PARALLELISM: '1',
    ...options.env,
  });
  const logs = captureLogs();
  const server: GatewayServer = await createServer(config, { log: createLogger({ logLevel: 'debug' }, logs.stream) });
  const gateway: LoggedGateway = {
    server,
    simulator,
    databaseUrl,
    config,
    logs,
    async gql(document, variables, token) {
      const { status, body } = await post(gateway, document, variables, { token });
      return { ...(body as ExecutionResult<never>), status };
    },
    ws() {
      throw new Error('use RawSocket with a logged gateway');
    },
    async stop() {
      await server.stop();
      await simulator.stop();
    },
  };
  return gateway;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
