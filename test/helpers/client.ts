import { randomBytes } from 'node:crypto';
import { request, type IncomingHttpHeaders } from 'node:http';
import { print, type ExecutionResult, type GraphQLFormattedError } from 'graphql';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { createClient, type Client } from 'graphql-ws';
import OpenAI from 'openai';
import WebSocket from 'ws';
import {
  ChatDocument,
  CreateApiKeyDocument,
  CreateUserDocument,
  LoginDocument,
  MyUsageDocument,
  type MyUsageQuery,
  type QuotaPeriod,
  type Role,
} from '../generated/graphql';
import type { TestGateway } from './server';

/**
 * What most helpers below need of a gateway: its GraphQL endpoint. A TestGateway is one; so is
 * anything else that sends a typed document to a gateway (a gateway process, say).
 */
export type GraphQLEndpoint = Pick<TestGateway, 'gql'>;

/** The bootstrap admin of every test gateway (startTestGateway passes it as ADMIN_EMAIL/ADMIN_PASSWORD). */
export const TEST_ADMIN = { email: 'admin@example.test', password: 'admin-password-123' } as const;

// ---------------------------------------------------------------------------------------------
// Waiting

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` until it gives a value other than undefined, or fails after `timeoutMs` naming `what`. */
export async function eventually<T>(check: () => T | undefined | Promise<T | undefined>, timeoutMs = 5_000, what = 'a condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** Waits until `check` holds, or fails after `timeoutMs` naming `what`. */
export async function until(check: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  await eventually(async () => ((await check()) ? true : undefined), timeoutMs, what);
}

// ---------------------------------------------------------------------------------------------
// Errors

/** The single error of a result, asserting that there is exactly one and that it has `code`. */
export function onlyError(result: ExecutionResult<unknown>, code: string): GraphQLFormattedError {
  if (result.errors === undefined || result.errors.length !== 1) {
    throw new Error(`expected exactly one ${code} error, got ${JSON.stringify(result.errors ?? result.data)}`);
  }
  const [error] = result.errors;
  expect(error.extensions?.code).toBe(code);
  return error;
}

/**
 * The extensions of the first error in `errors`, which may be what a subscription ended with
 * (GraphQL errors, or a CloseEvent, which has none): undefined when there is no such error.
 */
export function extensionsOf(errors: unknown): Record<string, unknown> | undefined {
  if (!Array.isArray(errors)) return undefined;
  return (errors[0] as { extensions?: Record<string, unknown> } | undefined)?.extensions;
}

export function codeOf(errors: unknown): unknown {
  return extensionsOf(errors)?.code;
}

// ---------------------------------------------------------------------------------------------
// GraphQL over HTTP

export interface GraphQLResponse<TData> {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: ExecutionResult<TData>;
}

export interface PostOptions {
  /** Sent as `Bearer <token>`; `headers.authorization` wins over it. */
  token?: string;
  headers?: Record<string, string>;
  /** Any 127.0.0.0/8 address reaches a server on 127.0.0.1: a client address of the test's choosing. */
  localAddress?: string;
}

/**
 * POST a GraphQL request (a typed document or a raw text) to `url`, as JSON, on a connection of
 * its own, and return the status, headers and parsed body: for what `gateway.gql` does not show.
 */
export function postGraphQL<TData = Record<string, unknown>, TVariables = Record<string, unknown>>(
  url: string,
  document: TypedDocumentNode<TData, TVariables> | string,
  variables?: TVariables,
  options: PostOptions & { operationName?: string } = {},
): Promise<GraphQLResponse<TData>> {
  const payload = JSON.stringify({
    query: typeof document === 'string' ? document : print(document),
    variables,
    ...(options.operationName === undefined ? {} : { operationName: options.operationName }),
  });
  const headers = {
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(payload)),
    ...(options.token === undefined ? {} : { authorization: `Bearer ${options.token}` }),
    ...options.headers,
  };
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', agent: false, localAddress: options.localAddress, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        try {
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: JSON.parse(text) as ExecutionResult<TData> });
        } catch {
          reject(new Error(`expected JSON from ${url}, got ${res.statusCode}: ${text.slice(0, 300)}`));
        }
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(payload);
  });
}

/** A typed GraphQL request: the parsed response and the HTTP status. */
export async function gql<TData, TVariables>(
  url: string,
  document: TypedDocumentNode<TData, TVariables>,
  variables?: TVariables,
  token?: string,
): Promise<ExecutionResult<TData> & { status: number }> {
  const { status, body } = await postGraphQL(url, document, variables, { token });
  return { ...body, status };
}

/** The data of a result, or a failure naming `what` and the errors: for set-up steps that must work. */
export function dataOf<TData>(result: ExecutionResult<TData>, what: string): TData {
  if (result.errors !== undefined || result.data == null) throw new Error(`${what} failed: ${JSON.stringify(result.errors)}`);
  return result.data;
}

// ---------------------------------------------------------------------------------------------
// Users

export interface SignedIn {
  readonly id: string;
  readonly email: string;
  readonly password: string;
  readonly role: Role;
  /** The access token. */
  readonly token: string;
  readonly refreshToken: string;
  readonly expiresAt: string;
}

let emails = 0;

/** An email no other test uses, in this process or another. */
export function uniqueEmail(label = 'user'): string {
  emails += 1;
  return `${label}-${emails}-${randomBytes(3).toString('hex')}@example.test`;
}

/** A password that satisfies the policy (12 to 256 characters). */
export function strongPassword(): string {
  return `pw-${randomBytes(9).toString('hex')}`;
}

export async function signIn(gateway: GraphQLEndpoint, email: string, password: string): Promise<SignedIn> {
  const { login } = dataOf(await gateway.gql(LoginDocument, { email, password }), `login of ${email}`);
  return { id: login.user.id, email, password, role: login.user.role, token: login.accessToken, refreshToken: login.refreshToken, expiresAt: login.expiresAt };
}

export function signInAdmin(gateway: TestGateway): Promise<SignedIn> {
  return signIn(gateway, TEST_ADMIN.email, TEST_ADMIN.password);
}

export interface NewUser {
  role?: Role;
  /** null: unlimited (the default). */
  tokenLimit?: number | null;
  quotaPeriod?: QuotaPeriod;
  email?: string;
  password?: string;
  teamId?: string | null;
}

/** Creates a user through `createUser` (as the admin whose access token is `adminToken`) and signs them in. */
export async function createUser(gateway: GraphQLEndpoint, adminToken: string, user: NewUser = {}): Promise<SignedIn> {
  const email = user.email ?? uniqueEmail();
  const password = user.password ?? strongPassword();
  dataOf(await gateway.gql(CreateUserDocument, { input: { ...user, email, password } }, adminToken), `createUser ${email}`);
  return signIn(gateway, email, password);
}

/** A new API key of the user behind `token`, with a budget of its own when `budget` gives one. */
export async function createApiKey(
  gateway: GraphQLEndpoint,
  token: string,
  name = 'test key',
  budget: { tokenLimit?: number | null; quotaPeriod?: QuotaPeriod } = {},
): Promise<{ id: string; secret: string; prefix: string }> {
  const { createApiKey: created } = dataOf(await gateway.gql(CreateApiKeyDocument, { name, ...budget }, token), 'createApiKey');
  return { id: created.apiKey.id, secret: created.secret, prefix: created.apiKey.prefix };
}

/** `me.usage` of the user behind `token`. */
export async function usageOf(gateway: GraphQLEndpoint, token: string): Promise<MyUsageQuery['me']['usage']> {
  return dataOf(await gateway.gql(MyUsageDocument, {}, token), 'me.usage').me.usage;
}

/** One small chat over GraphQL; returns its request id (the ChatCompletion id). */
export async function chat(gateway: GraphQLEndpoint, token: string, content = 'Count to three, please.', maxTokens = 5): Promise<string> {
  return dataOf(await gateway.gql(ChatDocument, { input: { messages: [{ role: 'USER', content }], maxTokens } }, token), 'chat').chat.id;
}

// ---------------------------------------------------------------------------------------------
// graphql-ws

/** A subscription in progress: what arrived, and how it ended. */
export interface Feed<TEvent> {
  readonly events: TEvent[];
  /** GraphQL errors, or what closed the socket (a CloseEvent or an Error); null while none came. */
  readonly error: unknown;
  /** True once the server completed it or it failed; not after unsubscribe(). */
  readonly ended: boolean;
  /** Settles at the first error, at the end, or after `stopAfter` events (then unsubscribed). */
  readonly done: Promise<{ events: TEvent[]; error: unknown }>;
  unsubscribe(): void;
}

/** The graphql-ws client (the real one, over `ws`), reporting how its socket went. */
export class WsClient {
  readonly client: Client;
  /** The close code of the socket once it closed. */
  closeCode: number | null = null;
  acknowledged = false;

  /** `authorization` goes in connection_init as it is (null: none at all). */
  constructor(wsUrl: string, authorization: string | null) {
    this.client = createClient({
      url: wsUrl,
      webSocketImpl: WebSocket,
      lazy: true,
      retryAttempts: 0,
      connectionParams: authorization === null ? {} : { authorization },
      on: {
        connected: () => {
          this.acknowledged = true;
        },
        closed: (event) => {
          this.closeCode = (event as { code?: number }).code ?? -1;
        },
      },
    });
  }

  /** Subscribes (or runs a query or mutation) and keeps what arrives, mapped by `pick`. */
  watch<TData, TVariables, TEvent = TData>(
    document: TypedDocumentNode<TData, TVariables>,
    variables: TVariables,
    options: { pick?: (data: TData) => TEvent; stopAfter?: number } = {},
  ): Feed<TEvent> {
    const pick = options.pick ?? ((data: TData) => data as unknown as TEvent);
    const stopAfter = options.stopAfter ?? Number.POSITIVE_INFINITY;
    let settle: (outcome: { events: TEvent[]; error: unknown }) => void = () => undefined;
    const feed = {
      events: [] as TEvent[],
      error: null as unknown,
      ended: false,
      done: new Promise<{ events: TEvent[]; error: unknown }>((resolve) => {
        settle = resolve;
      }),
      unsubscribe: () => undefined as void,
    };
    const finish = (): void => settle({ events: feed.events, error: feed.error });
    feed.unsubscribe = this.client.subscribe<TData>(
      { query: print(document), variables: variables as Record<string, unknown> },
      {
        next: (result) => {
          if (result.errors !== undefined) {
            feed.error = result.errors;
            finish();
          }
          if (result.data != null) feed.events.push(pick(result.data as TData));
          if (feed.events.length >= stopAfter) {
            feed.unsubscribe();
            finish();
          }
        },
        error: (error) => {
          feed.error = error;
          feed.ended = true;
          finish();
        },
        complete: () => {
          feed.ended = true;
          finish();
        },
      },
    );
    return feed;
  }

  /** Runs an operation to its end (or until `stopAfter` events), collecting what arrived. */
  collect<TData, TVariables>(document: TypedDocumentNode<TData, TVariables>, variables: TVariables, stopAfter?: number): Promise<{ events: TData[]; error: unknown }> {
    return this.watch(document, variables, { stopAfter }).done;
  }

  dispose(): Promise<void> {
    return Promise.resolve(this.client.dispose());
  }
}

// ---------------------------------------------------------------------------------------------
// The OpenAI-compatible endpoint

/** The official OpenAI SDK pointed at the gateway's /v1: only the base URL and the key change. */
export function openaiClient(gateway: { readonly server: Pick<TestGateway['server'], 'origin'> }, apiKey: string): OpenAI {
  return new OpenAI({ baseURL: `${gateway.server.origin}/v1`, apiKey, maxRetries: 0, timeout: 15_000 });
}
