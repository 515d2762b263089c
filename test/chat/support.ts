import type { Client } from 'graphql-ws';
import { print } from 'graphql';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { CreateUserDocument, LoginDocument, UpdateQuotaDocument, type QuotaPeriod } from '../generated/graphql';
import { TEST_ADMIN, type TestGateway } from '../helpers/server';

let counter = 0;

/** Signs in as the bootstrap admin. */
export async function adminToken(gateway: TestGateway): Promise<string> {
  const result = await gateway.gql(LoginDocument, { email: TEST_ADMIN.email, password: TEST_ADMIN.password });
  if (result.data == null) throw new Error(`admin login failed: ${JSON.stringify(result.errors)}`);
  return result.data.login.accessToken;
}

/** A new user with the given quota, signed in. */
export async function userWithQuota(
  gateway: TestGateway,
  admin: string,
  tokenLimit: number | null,
  quotaPeriod: QuotaPeriod = 'NONE',
): Promise<{ id: string; token: string; email: string }> {
  counter += 1;
  const email = `user${counter}-${Date.now()}@example.test`;
  const password = 'user-password-123';
  const created = await gateway.gql(CreateUserDocument, { input: { email, password, tokenLimit, quotaPeriod } }, admin);
  if (created.data == null) throw new Error(`createUser failed: ${JSON.stringify(created.errors)}`);
  const login = await gateway.gql(LoginDocument, { email, password });
  if (login.data == null) throw new Error(`login failed: ${JSON.stringify(login.errors)}`);
  return { id: created.data.createUser.id, token: login.data.login.accessToken, email };
}

export async function setQuota(gateway: TestGateway, admin: string, id: string, tokenLimit: number | null, quotaPeriod?: QuotaPeriod): Promise<void> {
  const result = await gateway.gql(UpdateQuotaDocument, { id, input: { tokenLimit, ...(quotaPeriod ? { quotaPeriod } : {}) } }, admin);
  if (result.data == null) throw new Error(`updateUser failed: ${JSON.stringify(result.errors)}`);
}

export interface SubscriptionOutcome<T> {
  readonly events: T[];
  readonly error: unknown;
}

/** Runs a subscription to its end (or until `stopAfter` events), collecting what arrived. */
export function collect<TData, TVariables extends Record<string, unknown>>(
  client: Client,
  document: TypedDocumentNode<TData, TVariables>,
  variables: TVariables,
  stopAfter = Number.POSITIVE_INFINITY,
): Promise<SubscriptionOutcome<TData>> {
  return new Promise((resolve) => {
    const events: TData[] = [];
    let settled = false;
    const finish = (error: unknown): void => {
      if (settled) return;
      settled = true;
      resolve({ events, error });
    };
    const unsubscribe = client.subscribe<TData>(
      { query: print(document), variables },
      {
        next: (value) => {
          if (value.errors !== undefined) {
            finish(value.errors);
            return;
          }
          if (value.data != null) events.push(value.data as TData);
          if (events.length >= stopAfter) {
            unsubscribe();
            finish(null);
          }
        },
        error: (error) => finish(error),
        complete: () => finish(null),
      },
    );
  });
}

export function errorCode(errors: unknown): string | undefined {
  if (!Array.isArray(errors)) return undefined;
  const first = errors[0] as { extensions?: { code?: string } } | undefined;
  return first?.extensions?.code;
}
