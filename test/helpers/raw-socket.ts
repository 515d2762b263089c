import { print, type ExecutionResult, type GraphQLFormattedError } from 'graphql';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import WebSocket from 'ws';

/** A message of the graphql-transport-ws protocol, as the server sent it. */
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

const idOf = (message: WsMessage): string | undefined => ('id' in message ? message.id : undefined);

/**
 * The graphql-transport-ws protocol spoken by hand over `ws`, for what a well-behaved client
 * never does (no connection_init, oversized frames, a subscribe before the ack) and to see
 * close codes and frames exactly as the server sent them.
 */
export class RawSocket {
  readonly messages: WsMessage[] = [];
  readonly closed: Promise<Closed>;
  closeCode: number | null = null;
  private readonly socket: WebSocket;
  private readonly opened: Promise<void>;
  private waiters: (() => void)[] = [];

  constructor(wsUrl: string) {
    this.socket = new WebSocket(wsUrl, 'graphql-transport-ws');
    this.opened = new Promise((resolve, reject) => {
      this.socket.once('open', () => resolve());
      this.socket.once('error', reject);
    });
    // Awaited only by send(); a socket refused before it opened must not reject unobserved.
    this.opened.catch(() => undefined);
    this.closed = new Promise((resolve) => {
      this.socket.once('close', (code, reason) => {
        this.closeCode = code;
        resolve({ code, reason: reason.toString('utf8') });
        this.wake();
      });
    });
    // A refused or reset socket surfaces as 'close'; it must not become an unhandled 'error'.
    this.socket.on('error', () => undefined);
    this.socket.on('message', (data: WebSocket.RawData) => {
      this.messages.push(JSON.parse(data.toString()) as WsMessage);
      this.wake();
    });
  }

  static async connect(wsUrl: string): Promise<RawSocket> {
    const raw = new RawSocket(wsUrl);
    await raw.opened;
    return raw;
  }

  private wake(): void {
    for (const waiter of this.waiters.splice(0)) waiter();
  }

  /** Sends a message (an object as JSON, a string as it is) once the socket is open. */
  async send(message: object | string): Promise<void> {
    await this.opened;
    const data = typeof message === 'string' ? message : JSON.stringify(message);
    await new Promise<void>((resolve, reject) => this.socket.send(data, (error) => (error ? reject(error) : resolve())));
  }

  /** Waits for a message matching `predicate`, or for the socket to close (then null). */
  async waitFor(predicate: (message: WsMessage) => boolean, timeoutMs = 5_000): Promise<WsMessage | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.messages.find(predicate);
      if (found !== undefined) return found;
      if (this.closeCode !== null) return null;
      if (Date.now() > deadline) throw new Error(`timed out waiting on the socket; got ${JSON.stringify(this.messages)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Sends connection_init (`authorization` as it is; null: none); resolves 'ack' or the close code that answered it. */
  async init(authorization: string | null): Promise<'ack' | number> {
    await this.send({ type: 'connection_init', payload: authorization === null ? {} : { authorization } });
    const ack = await this.waitFor((message) => message.type === 'connection_ack', 10_000);
    return ack !== null ? 'ack' : (await this.closed).code;
  }

  subscribe(id: string, query: string | TypedDocumentNode<unknown, never>, variables: Record<string, unknown> = {}, operationName?: string): Promise<void> {
    const text = typeof query === 'string' ? query : print(query);
    return this.send({ id, type: 'subscribe', payload: { query: text, variables, ...(operationName === undefined ? {} : { operationName }) } });
  }

  /** The first `next` or `error` message of operation `id`. */
  async answer(id: string, timeoutMs = 5_000): Promise<WsMessage> {
    const found = await this.waitFor((message) => idOf(message) === id && (message.type === 'next' || message.type === 'error'), timeoutMs);
    if (found === null) throw new Error(`the socket closed (${this.closeCode}) before answering ${id}`);
    return found;
  }

  /**
   * Subscribes and collects until `complete`, `error`, `stopAfter` next messages or the socket
   * closing; returns the messages of this id.
   */
  async run(id: string, query: string | TypedDocumentNode<unknown, never>, variables?: Record<string, unknown>, stopAfter = 1, timeoutMs = 10_000): Promise<WsMessage[]> {
    await this.subscribe(id, query, variables);
    const mine = (): WsMessage[] => this.messages.filter((message) => idOf(message) === id);
    await this.waitFor(
      () => mine().some((message) => message.type === 'complete' || message.type === 'error') || mine().filter((message) => message.type === 'next').length >= stopAfter,
      timeoutMs,
    );
    return mine();
  }

  /** How the socket closed, or null when it is still open after `withinMs`. */
  async closedWithin(withinMs: number): Promise<{ code: number; ms: number } | null> {
    const started = Date.now();
    let timer: NodeJS.Timeout | undefined;
    const closed = await Promise.race([this.closed, new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), withinMs)))]);
    clearTimeout(timer);
    return closed === null ? null : { code: closed.code, ms: Date.now() - started };
  }

  close(): void {
    if (this.socket.readyState === WebSocket.OPEN || this.socket.readyState === WebSocket.CONNECTING) this.socket.close(1000);
  }

  terminate(): void {
    this.socket.terminate();
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

/** At least one error, each with `code`, and no data on any `next`. */
export function expectWsErrors(messagesOfId: readonly WsMessage[], code: string): readonly GraphQLFormattedError[] {
  const errors = wsErrors(messagesOfId);
  expect(errors.length).toBeGreaterThan(0);
  expect(errors.map((error) => error.extensions?.code)).toEqual(errors.map(() => code));
  expect(messagesOfId.some((message) => message.type === 'next' && message.payload.data != null)).toBe(false);
  return errors;
}
