import type { Client } from 'graphql-ws';
import { print } from 'graphql';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { CreateUserDocument, LoginDocument, UpdateQuotaDocument, type QuotaPeriod } from '../generated/graphql';
import { get_encoding } from 'tiktoken';
import { countTokens } from '../../src/simulator';
import { sql } from '../helpers/database';
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

/** `extensions.field` of the first error: the argument a form would mark. */
export function errorField(errors: unknown): string | undefined {
  if (!Array.isArray(errors)) return undefined;
  const first = errors[0] as { extensions?: { field?: string } } | undefined;
  return first?.extensions?.field;
}

/** The first error's extensions, whole. */
export function errorExtensions(errors: unknown): Record<string, unknown> | undefined {
  if (!Array.isArray(errors)) return undefined;
  return (errors[0] as { extensions?: Record<string, unknown> } | undefined)?.extensions;
}

export interface UsageRecordRow extends Record<string, unknown> {
  request_id: string;
  model: string;
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  charged_tokens: number;
  usage_source: 'reported' | 'estimated';
  prompt_count_source: 'tokenize' | 'tiktoken';
  status: string;
  created_at: Date;
}

/** The user's usage records, oldest first, read straight from PostgreSQL. */
export function usageRecords(gateway: TestGateway, userId: string): Promise<UsageRecordRow[]> {
  return sql<UsageRecordRow>(
    gateway.databaseUrl,
    `select request_id, model, prompt_tokens, completion_tokens, total_tokens, charged_tokens, usage_source,
            prompt_count_source, status, created_at
       from usage_records where user_id = $1 order by id`,
    [userId],
  );
}

/** The user's ledger row and open reservations, straight from PostgreSQL. */
export async function ledger(gateway: TestGateway, userId: string): Promise<{ used: number; reserved: number; reservations: number }> {
  const [account] = await sql<{ used: string; reserved: string }>(gateway.databaseUrl, 'select used, reserved from quota_accounts where user_id = $1', [userId]);
  const [open] = await sql<{ n: string }>(gateway.databaseUrl, 'select count(*) as n from quota_reservations where user_id = $1', [userId]);
  return { used: Number(account.used), reserved: Number(account.reserved), reservations: Number(open.n) };
}

/** Waits until `check` returns a value other than undefined, or fails after `timeoutMs`. */
export async function eventually<T>(check: () => Promise<T | undefined>, timeoutMs = 5_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/**
 * The prompt the simulator counts (and vLLM would report): its own tokenizer and its Llama-3
 * shaped template, 1 BOS + per message (4 + content tokens) + 3 for the generation prompt.
 */
export function simulatorPromptTokens(messages: readonly { content: string }[]): number {
  return 1 + messages.reduce((sum, message) => sum + 4 + countTokens(message.content), 0) + 3;
}

/** tiktoken's cl100k_base count of a text: what the gateway would guess on its own. */
export function tiktokenCount(text: string): number {
  const encoder = get_encoding('cl100k_base');
  try {
    return encoder.encode_ordinary(text).length;
  } finally {
    encoder.free();
  }
}
