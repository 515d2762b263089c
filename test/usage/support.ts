import { print, type ExecutionResult } from 'graphql';
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import {
  MeterChatDocument,
  MeterCreateUserDocument,
  MeterLoginDocument,
  MeterMeDocument,
  MeterUsageUpdatedDocument,
  type MeterUsageUpdatedSubscription,
  type Role,
} from '../generated/graphql';
import type { PgUsageBus } from '../../src/usage/usage-bus';
import { TEST_ADMIN, type TestGateway } from '../helpers/server';

export type UsageEventData = MeterUsageUpdatedSubscription['usageUpdated'];

export const PASSWORD = 'usage-test-password-1';
let counter = 0;

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until `check` holds, or fails after `timeoutMs` naming `what`. */
export async function until(check: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

export function codeOf(errors: unknown): string | undefined {
  if (!Array.isArray(errors)) return undefined;
  return (errors[0] as { extensions?: { code?: string } } | undefined)?.extensions?.code;
}

export function reasonOf(errors: unknown): string | undefined {
  if (!Array.isArray(errors)) return undefined;
  return (errors[0] as { extensions?: { reason?: string } } | undefined)?.extensions?.reason;
}

export interface TestUser {
  readonly id: string;
  readonly email: string;
  readonly token: string;
}

/** Creates a user through `createUser` (as `admin`) and signs them in. */
export async function createUser(
  gateway: TestGateway,
  admin: string,
  options: { role?: Role; tokenLimit?: number | null } = {},
): Promise<TestUser> {
  counter += 1;
  const email = `meter${counter}-${process.pid}-${Date.now()}@example.test`;
  const created = await gateway.gql(
    MeterCreateUserDocument,
    { input: { email, password: PASSWORD, role: options.role ?? 'USER', tokenLimit: options.tokenLimit ?? null } },
    admin,
  );
  if (created.data == null) throw new Error(`createUser failed: ${JSON.stringify(created.errors)}`);
  return { id: created.data.createUser.id, email, token: await login(gateway, email, PASSWORD) };
}

export async function login(gateway: TestGateway, email: string, password: string): Promise<string> {
  const result = await gateway.gql(MeterLoginDocument, { email, password });
  if (result.data == null) throw new Error(`login failed: ${JSON.stringify(result.errors)}`);
  return result.data.login.accessToken;
}

/** One small chat; returns its request id (the ChatCompletion id). */
export async function chat(gateway: TestGateway, token: string, content = 'Count to three, please.'): Promise<string> {
  const result = await gateway.gql(MeterChatDocument, { input: { messages: [{ role: 'USER', content }], maxTokens: 5 } }, token);
  if (result.data == null) throw new Error(`chat failed: ${JSON.stringify(result.errors)}`);
  return result.data.chat.id;
}

export async function meUsage(gateway: TestGateway, token: string): Promise<{ used: number; remaining: number | null }> {
  const result = await gateway.gql(MeterMeDocument, {}, token);
  if (result.data == null) throw new Error(`me failed: ${JSON.stringify(result.errors)}`);
  return { used: result.data.me.usage.used, remaining: result.data.me.usage.remaining ?? null };
}

/** A graphql-ws client (the real one, over `ws`) that reports how its socket ended. */
export class WsClient {
  readonly client: Client;
  /** The close code of the socket once it closed. */
  closeCode: number | null = null;
  acknowledged = false;

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

  static bearer(gateway: TestGateway, token: string): WsClient {
    return new WsClient(gateway.server.wsUrl, `Bearer ${token}`);
  }

  /** Subscribes to usageUpdated; the feed collects what arrives. */
  usage(userId?: string | null): LiveFeed {
    return new LiveFeed(this.client, userId);
  }

  async dispose(): Promise<void> {
    await this.client.dispose();
  }
}

/** A usageUpdated subscription in progress: its events, and how it ended. */
export class LiveFeed {
  readonly events: UsageEventData[] = [];
  /** GraphQL errors (or the CloseEvent) that ended it. */
  errors: unknown = undefined;
  ended = false;
  private readonly stop: () => void;

  constructor(client: Client, userId?: string | null) {
    this.stop = client.subscribe<MeterUsageUpdatedSubscription>(
      { query: print(MeterUsageUpdatedDocument), variables: userId === undefined ? {} : { userId } },
      {
        next: (result: ExecutionResult<MeterUsageUpdatedSubscription>) => {
          if (result.errors !== undefined) this.errors = result.errors;
          if (result.data != null) this.events.push(result.data.usageUpdated);
        },
        error: (error) => {
          this.errors = error;
          this.ended = true;
        },
        complete: () => {
          this.ended = true;
        },
      },
    );
  }

  requestIds(): string[] {
    return this.events.map((event) => event.requestId);
  }

  unsubscribe(): void {
    this.stop();
  }
}

/** A message of the graphql-transport-ws protocol, as the server sent it. */
export interface ProtocolMessage {
  type: string;
  id?: string;
  payload?: unknown;
}

/**
 * The graphql-transport-ws protocol spoken by hand over `ws`, for what a well-behaved client
 * never does: no connection_init, oversized frames, exact close codes.
 */
export class RawSocket {
  readonly messages: ProtocolMessage[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  readonly opened: Promise<void>;
  closeCode: number | null = null;
  private readonly socket: WebSocket;

  constructor(wsUrl: string) {
    this.socket = new WebSocket(wsUrl, 'graphql-transport-ws');
    this.opened = new Promise((resolve, reject) => {
      this.socket.once('open', () => resolve());
      this.socket.once('error', reject);
    });
    this.closed = new Promise((resolve) => {
      this.socket.once('close', (code, reason) => {
        this.closeCode = code;
        resolve({ code, reason: reason.toString() });
      });
    });
    // A refused or reset socket must not become an unhandled 'error' event.
    this.socket.on('error', () => undefined);
    this.socket.on('message', (data) => {
      this.messages.push(JSON.parse(String(data)) as ProtocolMessage);
    });
  }

  static async connect(wsUrl: string): Promise<RawSocket> {
    const raw = new RawSocket(wsUrl);
    await raw.opened;
    return raw;
  }

  send(message: object): void {
    this.socket.send(JSON.stringify(message));
  }

  sendRaw(data: string): void {
    this.socket.send(data);
  }

  /** Sends connection_init; resolves 'ack' or the close code that answered it. */
  async init(authorization: string | null): Promise<'ack' | number> {
    this.send({ type: 'connection_init', payload: authorization === null ? {} : { authorization } });
    const acked = (): boolean => this.messages.some((message) => message.type === 'connection_ack');
    await until(() => acked() || this.closeCode !== null, 10_000, 'connection_ack or close');
    return acked() ? 'ack' : (this.closeCode as number);
  }

  /** How the socket closed, or null when it is still open after `withinMs`. */
  async closedWithin(withinMs: number): Promise<{ code: number; ms: number } | null> {
    const started = Date.now();
    let timer: NodeJS.Timeout | undefined;
    const closed = await Promise.race([this.closed, new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), withinMs)))]);
    clearTimeout(timer);
    return closed === null ? null : { code: closed.code, ms: Date.now() - started };
  }

  subscribe(id: string, query: string, variables: Record<string, unknown> = {}, operationName?: string): void {
    this.send({ id, type: 'subscribe', payload: { query, variables, ...(operationName === undefined ? {} : { operationName }) } });
  }

  /** Waits for the first `next` or `error` message of subscription `id`. */
  async answer(id: string, timeoutMs = 5_000): Promise<ProtocolMessage> {
    await until(() => this.messages.some((message) => message.id === id && (message.type === 'next' || message.type === 'error')), timeoutMs, `an answer to ${id}`);
    return this.messages.find((message) => message.id === id && (message.type === 'next' || message.type === 'error')) as ProtocolMessage;
  }

  terminate(): void {
    this.socket.terminate();
  }

  close(): void {
    this.socket.close();
  }
}

/** A POST /graphql with a raw query text, as a client that does not use codegen would send. */
export async function postRaw(
  gateway: TestGateway,
  query: string,
  token?: string,
  extra: { variables?: Record<string, unknown>; operationName?: string } = {},
): Promise<{ status: number; body: ExecutionResult }> {
  const response = await fetch(gateway.server.url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) },
    body: JSON.stringify({ query, ...extra }),
  });
  return { status: response.status, body: (await response.json()) as ExecutionResult };
}

/** Signs in as the bootstrap admin. */
export function adminLogin(gateway: TestGateway): Promise<string> {
  return login(gateway, TEST_ADMIN.email, TEST_ADMIN.password);
}

/**
 * Live subscriptions registered on the gateway's usage bus: a white-box look at PgUsageBus,
 * to show that ended subscriptions do not stay registered.
 */
export function busSubscribers(gateway: TestGateway): number {
  return (gateway.server.services.usageBus as PgUsageBus).subscriberCount;
}
