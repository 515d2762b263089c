import type OpenAI from 'openai';
import type { QuotaPeriod } from '../generated/graphql';
import { createApiKey, createUser, openaiClient, type SignedIn } from '../helpers/client';
import { resetSimulator, startWithAdmin, type TestGateway, type TestGatewayOptions } from '../helpers/server';

export interface OpenAIEnv {
  readonly gateway: TestGateway;
  /** The admin's access token. */
  readonly admin: string;
}

/**
 * The file's gateway and admin, started before its tests and stopped after them; the simulator
 * is reset after each test, as these tests inject faults and latency.
 */
export function openaiGateway(options: TestGatewayOptions = {}): OpenAIEnv {
  const env = {} as { gateway: TestGateway; admin: string };
  beforeAll(async () => {
    const started = await startWithAdmin(options);
    env.gateway = started.gateway;
    env.admin = started.admin.token;
  });
  afterEach(() => resetSimulator(env.gateway.simulator));
  afterAll(() => env.gateway.stop());
  return env;
}

/** A fresh user with an API key, and an SDK client on that key: what an OpenAI client starts from. */
export async function sdkUser(
  { gateway, admin }: OpenAIEnv,
  tokenLimit: number | null = 100_000,
  quotaPeriod: QuotaPeriod = 'NONE',
): Promise<{ user: SignedIn; key: { secret: string; id: string }; client: OpenAI }> {
  const user = await createUser(gateway, admin, { tokenLimit, quotaPeriod });
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
