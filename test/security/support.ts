import { createServer as createHttpServer, request, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import type { ExecutionResult, GraphQLFormattedError } from 'graphql';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { createLogger } from '../../src/logger';
import type { Simulator, SimulatorOptions } from '../../src/simulator';
import { ServerInfoDocument } from '../generated/graphql';
import { postGraphQL, usageOf } from '../helpers/client';
import { usageRecords } from '../helpers/database';
import { RawSocket } from '../helpers/raw-socket';
import { startTestGateway, type TestGateway } from '../helpers/server';

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
  const { status, body } = await postGraphQL(gateway.server.url, ServerInfoDocument);
  expect(status).toBe(200);
  expect(body.errors).toBeUndefined();
  expect(body.data?.serverInfo.version).toEqual(expect.any(String));
}

/** What a user has spent, to compare before and after an attack: nothing may change. */
export async function spendOf(gateway: TestGateway, user: { id: string; token: string }): Promise<{ used: number; records: number }> {
  const usage = await usageOf(gateway, user.token);
  // Nothing may stay reserved either: a refused request that left a reservation behind would
  // hold part of the quota for good.
  expect(usage.reserved).toBe(0);
  return { used: usage.used, records: (await usageRecords(gateway.databaseUrl, user.id)).length };
}

/** The socket still serves: a fresh authenticated socket runs a query. */
export async function expectSocketStillServing(gateway: TestGateway, token: string): Promise<void> {
  const socket = new RawSocket(gateway.server.wsUrl);
  try {
    expect(await socket.init(`Bearer ${token}`)).toBe('ack');
    const result = await socket.run('alive', ServerInfoDocument as TypedDocumentNode<unknown, never>);
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

/** A test gateway whose every log line (debug and up) is captured. */
export async function startLoggedGateway(options: { env?: Record<string, string>; simulator?: SimulatorOptions | Simulator } = {}): Promise<LoggedGateway> {
  const logs = captureLogs();
  const gateway = await startTestGateway({ ...options, log: createLogger({ logLevel: 'debug' }, logs.stream) });
  return { ...gateway, logs };
}
