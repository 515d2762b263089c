import OpenAI, { type APIError, type RateLimitError } from 'openai';
import type { ChatCompletionCreateParamsNonStreaming } from 'openai/resources/chat/completions';
import { RateLimitedError } from '../../src/errors';
import { toOpenAIError } from '../../src/openai/openai-errors';
import { UpdateUserDocument, RevokeApiKeyDocument } from '../generated/graphql';
import { startTestGateway } from '../helpers/server';
import { eventually, openaiClient, usageOf } from '../helpers/client';
import { ledger, usageRecords } from '../helpers/database';
import { openaiGateway, rejection, sdkUser } from './support';

const MODEL = 'sim-llama-3-8b';
const HELLO = [{ role: 'user' as const, content: 'Hello there.' }];

describe('OpenAI-compatible endpoint: errors in OpenAI\'s shape', () => {
  const env = openaiGateway();


  /** Expects the SDK to throw `type`, and nothing to have reached the upstream's chat endpoint. */
  async function refusedBeforeUpstream<T extends APIError>(type: abstract new (...args: never[]) => T, call: () => Promise<unknown>): Promise<T> {
    const before = { ...env.gateway.simulator.stats }.chatRequests;
    const error = await rejection(call);
    expect(error).toBeInstanceOf(type);
    expect({ ...env.gateway.simulator.stats }.chatRequests).toBe(before);
    return error as T;
  }

  it('quota exceeded: RateLimitError 429, not to be retried, nothing sent upstream, nothing charged', async () => {
    const { user, client } = await sdkUser(env, 30);
    const error = await refusedBeforeUpstream(OpenAI.RateLimitError, () =>
      client.chat.completions.create({ model: MODEL, messages: HELLO, max_tokens: 100 }),
    );
    expect(error.status).toBe(429);
    expect(error.code).toBe('insufficient_quota');
    expect(error.headers?.get('x-should-retry')).toBe('false');
    // A lifetime quota never resets: no Retry-After.
    expect(error.headers?.get('retry-after')).toBeNull();
    expect(await usageRecords(env.gateway.databaseUrl, user.id)).toEqual([]);
    expect((await usageOf(env.gateway, user.token)).used).toBe(0);

    // The stream form is refused the same way.
    await refusedBeforeUpstream(OpenAI.RateLimitError, () =>
      client.chat.completions.create({ model: MODEL, messages: HELLO, max_tokens: 100, stream: true }),
    );
  });

  it('quota exceeded on a daily quota: Retry-After until the next UTC midnight', async () => {
    const { client } = await sdkUser(env, 30, 'DAILY');
    const error = await refusedBeforeUpstream(OpenAI.RateLimitError, () =>
      client.chat.completions.create({ model: MODEL, messages: HELLO, max_tokens: 100 }),
    );
    const now = new Date();
    const midnight = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1);
    const retryAfter = Number(error.headers?.get('retry-after'));
    expect(retryAfter).toBeGreaterThan(0);
    expect(Math.abs(retryAfter - (midnight - now.getTime()) / 1000)).toBeLessThan(10);
    expect(error.headers?.get('x-should-retry')).toBe('false');
  });

  it('rate limited: RateLimitError 429 with Retry-After, nothing sent upstream', async () => {
    // A second instance on the same database and simulator, with a per-user request limit.
    const limited = await startTestGateway({ simulator: env.gateway.simulator, databaseUrl: env.gateway.databaseUrl, env: { RATE_LIMIT_REQUESTS_PER_MINUTE: '2' } });
    try {
      const { user, key } = await sdkUser(env);
      const client = openaiClient(limited, key.secret);
      let refused: unknown = null;
      // Two fit in a minute; a third is refused (a fourth and fifth cover a minute turning meanwhile).
      for (let attempt = 0; attempt < 5 && refused === null; attempt += 1) {
        const before = { ...env.gateway.simulator.stats }.chatRequests;
        try {
          await client.chat.completions.create({ model: MODEL, messages: HELLO, max_tokens: 5 });
        } catch (error) {
          refused = error;
          expect({ ...env.gateway.simulator.stats }.chatRequests).toBe(before);
        }
      }
      expect(refused).toBeInstanceOf(OpenAI.RateLimitError);
      const error = refused as RateLimitError;
      expect(error.status).toBe(429);
      expect(error.code).toBe('rate_limit_exceeded');
      const retryAfter = Number(error.headers?.get('retry-after'));
      expect(retryAfter).toBeGreaterThanOrEqual(1);
      expect(retryAfter).toBeLessThanOrEqual(60);
      // Refused requests are not charged.
      const rows = await usageRecords(env.gateway.databaseUrl, user.id);
      expect(rows.every((row) => row.status === 'completed')).toBe(true);
      expect((await usageOf(env.gateway, user.token)).used).toBe(rows.reduce((sum, row) => sum + row.charged_tokens, 0));
    } finally {
      await limited.stop();
    }
  });

  it('rate limited maps to 429 with Retry-After', () => {
    const mapped = toOpenAIError(new RateLimitedError('Slow down.', 7));
    expect(mapped.status).toBe(429);
    expect(mapped.headers['retry-after']).toBe('7');
    expect(mapped.body.error).toMatchObject({ message: 'Slow down.', code: 'rate_limit_exceeded' });
  });

  it('a bad key: AuthenticationError 401', async () => {
    const bogus = openaiClient(env.gateway, 'sk-this-key-does-not-exist-0123456789');
    const error = await refusedBeforeUpstream(OpenAI.AuthenticationError, () => bogus.chat.completions.create({ model: MODEL, messages: HELLO }));
    expect(error.status).toBe(401);
    expect(error.type).toBe('authentication_error');
    expect(await rejection(() => bogus.models.list())).toBeInstanceOf(OpenAI.AuthenticationError);
    expect(await rejection(() => openaiClient(env.gateway, 'not-even-a-token').models.list())).toBeInstanceOf(OpenAI.AuthenticationError);

    // A revoked key is a bad key.
    const { user, key, client } = await sdkUser(env);
    await client.models.list();
    const revoked = await env.gateway.gql(RevokeApiKeyDocument, { id: key.id }, user.token);
    expect(revoked.data?.revokeApiKey).toBe(true);
    await eventually(async () => ((await rejection(() => client.models.list())) instanceof OpenAI.AuthenticationError ? true : undefined), 3_000, 'the revoked key to be refused');
  });

  it('a disabled user\'s key: PermissionDeniedError 403, nothing sent upstream', async () => {
    const { user, client } = await sdkUser(env);
    await client.models.list();
    const disabled = await env.gateway.gql(UpdateUserDocument, { id: user.id, input: { disabled: true } }, env.admin);
    expect(disabled.data?.updateUser.disabled).toBe(true);
    const error = await refusedBeforeUpstream(OpenAI.PermissionDeniedError, () => client.chat.completions.create({ model: MODEL, messages: HELLO }));
    expect(error.status).toBe(403);
    expect(await usageRecords(env.gateway.databaseUrl, user.id)).toEqual([]);
  });

  it.each([
    ['priority', 1],
    ['cache_salt', 'another-tenant'],
    ['kv_transfer_params', { do_remote_prefill: true }],
    ['ec_transfer_params', { do_remote_encode: true }],
  ])('%s is the gateway\'s to set: BadRequestError 400 naming it, nothing sent upstream', async (field, value) => {
    const { user, client } = await sdkUser(env);
    const body = { model: MODEL, messages: HELLO, [field]: value } as unknown as ChatCompletionCreateParamsNonStreaming;
    const error = await refusedBeforeUpstream(OpenAI.BadRequestError, () => client.chat.completions.create(body));
    expect(error.status).toBe(400);
    expect(error.param).toBe(field);
    expect(error.type).toBe('invalid_request_error');
    const completion = await refusedBeforeUpstream(OpenAI.BadRequestError, () =>
      client.completions.create({ model: MODEL, prompt: 'Hi', [field]: value } as unknown as OpenAI.CompletionCreateParamsNonStreaming),
    );
    expect(completion.param).toBe(field);
    expect(await usageRecords(env.gateway.databaseUrl, user.id)).toEqual([]);
    expect(await ledger(env.gateway.databaseUrl, user.id)).toMatchObject({ used: 0, reserved: 0, reservations: 0 });
  });

  it('stream_options without stream is a 400 on stream_options, as in vLLM; an empty one passes', async () => {
    const { client } = await sdkUser(env);
    const error = await refusedBeforeUpstream(OpenAI.BadRequestError, () =>
      client.chat.completions.create({ model: MODEL, messages: HELLO, stream_options: { include_usage: true } }),
    );
    expect(error.param).toBe('stream_options');
    const passes = await client.chat.completions.create({ model: MODEL, messages: HELLO, max_tokens: 3, stream_options: {} } as ChatCompletionCreateParamsNonStreaming);
    expect(passes.usage?.completion_tokens).toBe(3);
  });

  it('vLLM\'s own 400s keep vLLM\'s param and release the reservation', async () => {
    const { user, client } = await sdkUser(env);
    const tool = { type: 'function' as const, function: { name: 'get_time', parameters: { type: 'object', properties: {} } } };
    const misnamed = await rejection(() =>
      client.chat.completions.create({ model: MODEL, messages: HELLO, tools: [tool], tool_choice: { type: 'function', function: { name: 'nope' } } }),
    );
    expect(misnamed).toBeInstanceOf(OpenAI.BadRequestError);
    expect((misnamed as APIError).param).toBe('tool_choice');
    const logprobs = await rejection(() => client.chat.completions.create({ model: MODEL, messages: HELLO, top_logprobs: 2 }));
    expect((logprobs as APIError).param).toBe('top_logprobs');
    expect(await usageRecords(env.gateway.databaseUrl, user.id)).toEqual([]);
    expect(await ledger(env.gateway.databaseUrl, user.id)).toMatchObject({ used: 0, reserved: 0, reservations: 0 });
  });

  it('an unknown model: BadRequestError 400 on model', async () => {
    const { client } = await sdkUser(env);
    const error = await refusedBeforeUpstream(OpenAI.BadRequestError, () => client.chat.completions.create({ model: 'gpt-4o', messages: HELLO }));
    expect(error.status).toBe(400);
    expect(error.param).toBe('model');
  });

  it('a context too long: BadRequestError 400, nothing sent upstream', async () => {
    const { user, client } = await sdkUser(env, null);
    // The answer asked for does not fit beside the prompt.
    const tooMuch = await refusedBeforeUpstream(OpenAI.BadRequestError, () =>
      client.chat.completions.create({ model: MODEL, messages: HELLO, max_tokens: 4_090 }),
    );
    expect(tooMuch.status).toBe(400);
    expect(tooMuch.message).toMatch(/context length/);
    // The prompt alone does not fit.
    const longPrompt = await refusedBeforeUpstream(OpenAI.BadRequestError, () =>
      client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'word '.repeat(5_000) }] }),
    );
    expect(longPrompt.status).toBe(400);
    expect(await usageRecords(env.gateway.databaseUrl, user.id)).toEqual([]);
  });

  it('the upstream failing before any token: InternalServerError 502, nothing charged', async () => {
    const { user, client } = await sdkUser(env);
    env.gateway.simulator.setFault('fail-before');
    const before = { ...env.gateway.simulator.stats };
    const error = await rejection(() => client.chat.completions.create({ model: MODEL, messages: HELLO }));
    expect(error).toBeInstanceOf(OpenAI.InternalServerError);
    expect((error as APIError).status).toBe(502);
    expect((error as APIError).type).toBe('upstream_error');

    const streamError = await rejection(() => client.chat.completions.create({ model: MODEL, messages: HELLO, stream: true }));
    expect(streamError).toBeInstanceOf(OpenAI.InternalServerError);
    expect((streamError as APIError).status).toBe(502);
    expect({ ...env.gateway.simulator.stats }.failed - before.failed).toBe(2);

    expect(await usageRecords(env.gateway.databaseUrl, user.id)).toEqual([]);
    expect(await ledger(env.gateway.databaseUrl, user.id)).toMatchObject({ used: 0, reserved: 0, reservations: 0 });
  });

  it('the upstream failing mid-stream: an in-band error, charged for the tokens produced', async () => {
    const { user, client } = await sdkUser(env);
    env.gateway.simulator.setFault('fail-mid:4');
    const stream = await client.chat.completions.create({ model: MODEL, messages: HELLO, stream: true });
    let content = 0;
    const error = await rejection(async () => {
      for await (const chunk of stream) if ((chunk.choices[0]?.delta.content ?? '') !== '') content += 1;
    });
    expect(error).toBeInstanceOf(OpenAI.APIError);
    expect((error as APIError).code).toBe('upstream_error');
    expect(content).toBe(4);
    const rows = await usageRecords(env.gateway.databaseUrl, user.id);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ interface: 'openai', status: 'upstream_error', completion_tokens: 4 });
    expect(await ledger(env.gateway.databaseUrl, user.id)).toMatchObject({ used: rows[0].charged_tokens, reserved: 0, reservations: 0 });
  });

  it('the upstream timing out: InternalServerError 504, nothing charged', async () => {
    // A second instance on the same database and simulator, with a short upstream timeout.
    const impatient = await startTestGateway({ simulator: env.gateway.simulator, databaseUrl: env.gateway.databaseUrl, env: { VLLM_TIMEOUT_MS: '400' } });
    try {
      const { user, key } = await sdkUser(env);
      const client = openaiClient(impatient, key.secret);
      env.gateway.simulator.setFault('hang');
      const error = await rejection(() => client.chat.completions.create({ model: MODEL, messages: HELLO }));
      expect(error).toBeInstanceOf(OpenAI.InternalServerError);
      expect((error as APIError).status).toBe(504);
      const streamError = await rejection(() => client.chat.completions.create({ model: MODEL, messages: HELLO, stream: true }));
      expect((streamError as APIError).status).toBe(504);
      expect(await usageRecords(env.gateway.databaseUrl, user.id)).toEqual([]);
      expect(await ledger(env.gateway.databaseUrl, user.id)).toMatchObject({ used: 0, reserved: 0, reservations: 0 });
    } finally {
      env.gateway.simulator.setFault(null);
      await impatient.stop();
    }
  });

  it('wrong method and malformed JSON are refused in OpenAI\'s shape', async () => {
    const { key } = await sdkUser(env);
    const headers = { authorization: `Bearer ${key.secret}`, 'content-type': 'application/json' };
    const getChat = await fetch(`${env.gateway.server.origin}/v1/chat/completions`, { headers });
    expect(getChat.status).toBe(405);
    expect(((await getChat.json()) as { error: { type: string } }).error.type).toBe('invalid_request_error');
    const badJson = await fetch(`${env.gateway.server.origin}/v1/chat/completions`, { method: 'POST', headers, body: '{"model":' });
    expect(badJson.status).toBe(400);
    expect(((await badJson.json()) as { error: { message: string } }).error.message).toMatch(/JSON/);
  });
});
