import OpenAI from 'openai';
import { OpenAiCreateApiKeyDocument, OpenAiMyUsageDocument } from '../generated/graphql';
import { sql } from '../helpers/database';
import type { TestGateway } from '../helpers/server';

/** An official OpenAI SDK client pointed at the gateway: only the base URL and the key change. */
export function openaiClient(gateway: TestGateway, apiKey: string): OpenAI {
  return new OpenAI({ baseURL: `${gateway.server.origin}/v1`, apiKey, maxRetries: 0, timeout: 15_000 });
}

/** A new API key of the user behind `token`; its secret. */
export async function apiKeyOf(gateway: TestGateway, token: string, name = 'openai-test'): Promise<{ secret: string; id: string }> {
  const result = await gateway.gql(OpenAiCreateApiKeyDocument, { name }, token);
  if (result.data == null) throw new Error(`createApiKey failed: ${JSON.stringify(result.errors)}`);
  return { secret: result.data.createApiKey.secret, id: result.data.createApiKey.apiKey.id };
}

export async function usedOf(gateway: TestGateway, token: string): Promise<number> {
  const result = await gateway.gql(OpenAiMyUsageDocument, {}, token);
  if (result.data == null) throw new Error(`me failed: ${JSON.stringify(result.errors)}`);
  return result.data.me.usage.used;
}

export interface OpenAIRecordRow extends Record<string, unknown> {
  request_id: string;
  api_key_id: string | null;
  model: string;
  interface: 'graphql' | 'openai';
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  charged_tokens: number;
  usage_source: 'reported' | 'estimated';
  status: string;
}

/** The user's usage records, oldest first, straight from PostgreSQL. */
export function records(gateway: TestGateway, userId: string): Promise<OpenAIRecordRow[]> {
  return sql<OpenAIRecordRow>(
    gateway.databaseUrl,
    `select request_id, api_key_id, model, interface, prompt_tokens, completion_tokens, total_tokens, charged_tokens,
            usage_source, status
       from usage_records where user_id = $1 order by id`,
    [userId],
  );
}

/** The simulator's counters, copied (they are live). */
export function statsOf(gateway: TestGateway): TestGateway['simulator']['stats'] {
  return { ...gateway.simulator.stats };
}

/** Runs `call`, expecting it to reject; returns what it threw. */
export async function rejection(call: () => Promise<unknown>): Promise<unknown> {
  try {
    await call();
  } catch (error) {
    return error;
  }
  throw new Error('expected the call to fail, but it succeeded');
}
