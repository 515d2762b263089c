import { request } from 'node:http';
import { randomBytes } from 'node:crypto';
import { print, type ExecutionResult, type GraphQLFormattedError } from 'graphql';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import type { Client } from 'graphql-ws';
import { AuthCreateUserDocument, AuthLoginDocument, type CreateUserInput } from '../generated/graphql';
import { TEST_ADMIN, type TestGateway } from '../helpers/server';

let counter = 0;

/** An email no other test uses. */
export function uniqueEmail(label = 'user'): string {
  counter += 1;
  return `${label}-${counter}-${randomBytes(3).toString('hex')}@example.test`;
}

/** A password that satisfies the policy (12 to 256 characters). */
export function strongPassword(): string {
  return `pw-${randomBytes(9).toString('hex')}`;
}

/** The single error of a result, asserting that there is exactly one and that it has `code`. */
export function onlyError(result: ExecutionResult<unknown>, code: string): GraphQLFormattedError {
  if (result.errors === undefined || result.errors.length !== 1) {
    throw new Error(`expected exactly one ${code} error, got ${JSON.stringify(result.errors ?? result.data)}`);
  }
  const [error] = result.errors;
  expect(error.extensions?.code).toBe(code);
  return error;
}

export interface SignedIn {
  id: string;
  email: string;
  password: string;
  accessToken: string;
  refreshToken: string;
}

export async function login(gateway: TestGateway, email: string, password: string): Promise<SignedIn> {
  const result = await gateway.gql(AuthLoginDocument, { email, password });
  if (result.errors !== undefined || result.data == null) throw new Error(`login of ${email} failed: ${JSON.stringify(result.errors)}`);
  const { accessToken, refreshToken, user } = result.data.login;
  return { id: user.id, email, password, accessToken, refreshToken };
}

export function loginAdmin(gateway: TestGateway): Promise<SignedIn> {
  return login(gateway, TEST_ADMIN.email, TEST_ADMIN.password);
}

/** Creates a user through `createUser` (as `adminToken`) and signs them in. */
export async function createUser(
  gateway: TestGateway,
  adminToken: string,
  input: Partial<CreateUserInput> = {},
): Promise<SignedIn> {
  const email = input.email ?? uniqueEmail();
  const password = input.password ?? strongPassword();
  const created = await gateway.gql(AuthCreateUserDocument, { input: { ...input, email, password } }, adminToken);
  if (created.errors !== undefined) throw new Error(`createUser failed: ${JSON.stringify(created.errors)}`);
  return login(gateway, email, password);
}

export interface RawResponse<TData> {
  status: number;
  body: ExecutionResult<TData>;
}

/**
 * POST /graphql with full control over the headers and the client's source address (any
 * 127.0.0.0/8 address reaches a server listening on 127.0.0.1), for what `gateway.gql` cannot
 * send: odd Authorization headers, and requests from several "client addresses".
 */
export function postGraphQL<TData, TVariables>(
  url: string,
  document: TypedDocumentNode<TData, TVariables> | string,
  variables: TVariables | undefined,
  options: { headers?: Record<string, string>; localAddress?: string } = {},
): Promise<RawResponse<TData>> {
  const payload = JSON.stringify({ query: typeof document === 'string' ? document : print(document), variables });
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'POST',
        agent: false,
        localAddress: options.localAddress,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), ...options.headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          try {
            resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as ExecutionResult<TData> });
          } catch (error) {
            reject(error instanceof Error ? error : new Error(String(error)));
          }
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** The socket closed instead of answering: `code` is the WebSocket close code (4403: refused at connection_init). */
export class SocketClosedError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
  ) {
    super(`socket closed: ${code} ${reason}`);
  }
}

function asError(error: unknown): Error {
  if (error instanceof Error) return error;
  const event = error as { code?: unknown; reason?: unknown } | null;
  if (event !== null && typeof event === 'object' && typeof event.code === 'number') {
    return new SocketClosedError(event.code, String(event.reason ?? ''));
  }
  return new Error(JSON.stringify(error));
}

/**
 * What bad credentials get over graphql-ws: the connection refused (close 4401/4403), or
 * the operation answered with UNAUTHENTICATED. Never data.
 */
export async function expectWsRefused<TData, TVariables>(
  client: Client,
  document: TypedDocumentNode<TData, TVariables>,
  variables?: TVariables,
): Promise<void> {
  let outcome: ExecutionResult<TData> | SocketClosedError;
  try {
    outcome = await wsExecute(client, document, variables);
  } catch (error) {
    if (!(error instanceof SocketClosedError)) throw error;
    outcome = error;
  }
  if (outcome instanceof SocketClosedError) {
    expect([4401, 4403]).toContain(outcome.code);
  } else {
    expect(outcome.data ?? null).toBeNull();
    onlyError(outcome, 'UNAUTHENTICATED');
  }
}

/** Runs one operation (query, mutation or a subscription's first event) over graphql-ws. */
export function wsExecute<TData, TVariables>(
  client: Client,
  document: TypedDocumentNode<TData, TVariables>,
  variables?: TVariables,
): Promise<ExecutionResult<TData>> {
  return new Promise((resolve, reject) => {
    let result: ExecutionResult<TData> | undefined;
    const unsubscribe = client.subscribe<TData>(
      { query: print(document), variables: variables as Record<string, unknown> | undefined },
      {
        next: (value) => {
          result = value as ExecutionResult<TData>;
          unsubscribe();
          resolve(result);
        },
        error: (error: unknown) => reject(asError(error)),
        complete: () => {
          if (result === undefined) reject(new Error('the operation completed without a result'));
        },
      },
    );
  });
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
