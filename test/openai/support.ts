import type OpenAI from 'openai';
import type { QuotaPeriod } from '../generated/graphql';
import { createApiKey, createUser, openaiClient, type SignedIn } from '../helpers/client';
import type { TestGateway } from '../helpers/server';

/** A fresh user with an API key, and an SDK client on that key: what an OpenAI client starts from. */
export async function sdkUser(
  gateway: TestGateway,
  adminToken: string,
  tokenLimit: number | null = 100_000,
  quotaPeriod: QuotaPeriod = 'NONE',
): Promise<{ user: SignedIn; key: { secret: string; id: string }; client: OpenAI }> {
  const user = await createUser(gateway, adminToken, { tokenLimit, quotaPeriod });
  const key = await createApiKey(gateway, user.token, 'openai-test');
  return { user, key, client: openaiClient(gateway, key.secret) };
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
