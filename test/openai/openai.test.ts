import type OpenAI from 'openai';
import type { ChatCompletionChunk, ChatCompletionMessageParam } from 'openai/resources/chat/completions';
import { ChatDocument, UsageUpdatedDocument } from '../generated/graphql';
import { eventually, openaiClient, until, usageOf } from '../helpers/client';
import { ledger, usageRecords } from '../helpers/database';
import { simulatorPromptTokens } from '../helpers/tokens';
import { openaiGateway, sdkUser } from './support';

const MODEL = 'sim-llama-3-8b';

describe('OpenAI-compatible endpoint through the official SDK', () => {
  const env = openaiGateway();


  it('lists the served models, with an API key and with an access token', async () => {
    const { user, client } = await sdkUser(env);
    const models = await client.models.list();
    expect(models.data.map((model) => model.id)).toEqual([MODEL]);
    expect(models.data[0].object).toBe('model');

    const withToken = await openaiClient(env.gateway, user.token).models.list();
    expect(withToken.data.map((model) => model.id)).toEqual([MODEL]);
  });

  it('completes a chat: the usage is the simulator\'s and the record\'s, marked openai', async () => {
    const { user, key, client } = await sdkUser(env);
    const messages: ChatCompletionMessageParam[] = [
      { role: 'system', content: 'You are terse.' },
      { role: 'user', content: 'Say something in lorem ipsum, please.' },
    ];
    const before = { ...env.gateway.simulator.stats };
    const { data: completion, response } = await client.chat.completions.create({ model: MODEL, messages, seed: 7 }).withResponse();
    const after = { ...env.gateway.simulator.stats };

    expect(completion.object).toBe('chat.completion');
    expect(completion.choices).toHaveLength(1);
    expect(completion.choices[0].message.role).toBe('assistant');
    expect(completion.choices[0].message.content?.length ?? 0).toBeGreaterThan(0);
    expect(completion.choices[0].finish_reason).toBe('stop');

    const usage = completion.usage;
    expect(usage).toBeDefined();
    expect(after.chatRequests - before.chatRequests).toBe(1);
    expect(usage?.prompt_tokens).toBe(after.promptTokens - before.promptTokens);
    expect(usage?.prompt_tokens).toBe(simulatorPromptTokens([{ content: 'You are terse.' }, { content: 'Say something in lorem ipsum, please.' }]));
    expect(usage?.completion_tokens).toBe(after.completionTokens - before.completionTokens);
    expect(usage?.total_tokens).toBe((usage?.prompt_tokens ?? 0) + (usage?.completion_tokens ?? 0));

    const rows = await usageRecords(env.gateway.databaseUrl, user.id);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      request_id: response.headers.get('x-usage-request-id'),
      api_key_id: key.id,
      model: MODEL,
      interface: 'openai',
      status: 'completed',
      usage_source: 'reported',
      prompt_tokens: usage?.prompt_tokens,
      completion_tokens: usage?.completion_tokens,
      charged_tokens: usage?.total_tokens,
    });
    expect((await usageOf(env.gateway, user.token)).used).toBe(usage?.total_tokens);
    expect(await ledger(env.gateway.databaseUrl, user.id)).toMatchObject({ reserved: 0, reservations: 0 });
  });

  it('passes an allow-listed vLLM sampling parameter through to the upstream', async () => {
    const { client } = await sdkUser(env);
    // top_k is accepted; ignore_eos reaches the simulator, which then generates exactly max_tokens.
    const completion = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'Keep going.' }],
      max_tokens: 60,
      top_k: 5,
      ignore_eos: true,
    } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(completion.choices[0].finish_reason).toBe('length');
    expect(completion.usage?.completion_tokens).toBe(60);
  });

  async function readAll(stream: AsyncIterable<ChatCompletionChunk>): Promise<ChatCompletionChunk[]> {
    const chunks: ChatCompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    return chunks;
  }

  it('streams to the end without include_usage: chunks come through, none carries usage, the record has the reported usage', async () => {
    const { user, client } = await sdkUser(env);
    const messages: ChatCompletionMessageParam[] = [{ role: 'user', content: 'Stream a short answer.' }];
    const before = { ...env.gateway.simulator.stats };
    const chunks = await readAll(await client.chat.completions.create({ model: MODEL, messages, stream: true, seed: 3 }));
    const after = { ...env.gateway.simulator.stats };

    const content = chunks.map((chunk) => chunk.choices[0]?.delta.content ?? '').join('');
    expect(chunks.length).toBeGreaterThan(2);
    expect(content.length).toBeGreaterThan(0);
    expect(chunks.every((chunk) => chunk.object === 'chat.completion.chunk')).toBe(true);
    // No usage chunk (empty choices) and no usage on any chunk.
    expect(chunks.every((chunk) => chunk.choices.length === 1)).toBe(true);
    expect(chunks.filter((chunk) => chunk.usage != null)).toEqual([]);
    expect(chunks.at(-1)?.choices[0].finish_reason).toBe('stop');

    const rows = await eventually(async () => {
      const found = await usageRecords(env.gateway.databaseUrl, user.id);
      return found.length > 0 ? found : undefined;
    });
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      interface: 'openai',
      status: 'completed',
      usage_source: 'reported',
      prompt_tokens: after.promptTokens - before.promptTokens,
      completion_tokens: after.completionTokens - before.completionTokens,
    });
    expect(rows[0].prompt_tokens).toBe(simulatorPromptTokens([{ content: 'Stream a short answer.' }]));

    // The same request with the same seed, not streamed: the same answer and usage.
    const whole = await client.chat.completions.create({ model: MODEL, messages, seed: 3 });
    expect(whole.choices[0].message.content).toBe(content);
    expect(whole.usage?.completion_tokens).toBe(rows[0].completion_tokens);
  });

  it('streams to the end with include_usage: the final chunk has empty choices and the usage, which the record repeats', async () => {
    const { user, client } = await sdkUser(env);
    const before = { ...env.gateway.simulator.stats };
    const chunks = await readAll(
      await client.chat.completions.create({
        model: MODEL,
        messages: [{ role: 'user', content: 'Stream with usage.' }],
        stream: true,
        stream_options: { include_usage: true },
      }),
    );
    const after = { ...env.gateway.simulator.stats };

    const last = chunks.at(-1);
    expect(last?.choices).toEqual([]);
    expect(last?.usage).toEqual({
      prompt_tokens: after.promptTokens - before.promptTokens,
      completion_tokens: after.completionTokens - before.completionTokens,
      total_tokens: after.promptTokens - before.promptTokens + (after.completionTokens - before.completionTokens),
    });
    // Only the final chunk carries usage (the gateway's continuous usage from vLLM stays inside).
    expect(chunks.slice(0, -1).filter((chunk) => chunk.usage != null)).toEqual([]);
    expect(chunks.slice(0, -1).every((chunk) => chunk.choices.length === 1)).toBe(true);

    const rows = await usageRecords(env.gateway.databaseUrl, user.id);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      interface: 'openai',
      status: 'completed',
      prompt_tokens: last?.usage?.prompt_tokens,
      completion_tokens: last?.usage?.completion_tokens,
      charged_tokens: last?.usage?.total_tokens,
    });
    expect((await usageOf(env.gateway, user.token)).used).toBe(last?.usage?.total_tokens);
  });

  it('a stream aborted by the client stops upstream and is charged once for what was generated', async () => {
    const { user, client } = await sdkUser(env);
    const request = { model: MODEL, messages: [{ role: 'user' as const, content: 'Tell me a long story.' }], seed: 11 };
    // The full answer's length, at full speed (then forgotten: only the aborted request is looked at below).
    const full = await client.chat.completions.create(request);
    const fullCompletion = full.usage?.completion_tokens ?? 0;
    expect(fullCompletion).toBeGreaterThan(10);
    const recordsBefore = (await usageRecords(env.gateway.databaseUrl, user.id)).length;
    const usedBefore = (await usageOf(env.gateway, user.token)).used;

    env.gateway.simulator.setLatency({ timeToFirstTokenMs: 20, interTokenLatencyMs: 60 });
    const before = { ...env.gateway.simulator.stats };
    const stream = await client.chat.completions.create({ ...request, stream: true });
    let received = 0;
    let caught: unknown = null;
    try {
      for await (const chunk of stream) {
        if ((chunk.choices[0]?.delta.content ?? '') !== '') received += 1;
        if (received === 3) stream.controller.abort();
      }
    } catch (error) {
      caught = error;
    }
    // The SDK ends a stream aborted through its controller quietly (openai's Stream returns on
    // an AbortError): the loop just stops, no error of any kind reaches the caller.
    expect(caught).toBeNull();
    expect(received).toBe(3);

    await eventually(async () => (env.gateway.simulator.stats.aborted > before.aborted ? true : undefined), 5_000, 'the simulator to see the abort');
    const rows = await eventually(async () => {
      const found = await usageRecords(env.gateway.databaseUrl, user.id);
      return found.length > recordsBefore ? found : undefined;
    }, 5_000, 'the usage record of the aborted stream');
    // Nothing else gets settled later.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const settled = (await usageRecords(env.gateway.databaseUrl, user.id)).slice(recordsBefore);
    expect(settled).toHaveLength(1);
    const [record] = rows.slice(recordsBefore);
    const after = { ...env.gateway.simulator.stats };
    expect(after.aborted - before.aborted).toBe(1);
    expect(after.completed - before.completed).toBe(0);
    expect(record.interface).toBe('openai');
    expect(record.status).toBe('aborted');
    expect(record.completion_tokens).toBeGreaterThanOrEqual(received);
    expect(record.completion_tokens).toBeLessThan(fullCompletion);
    expect(record.completion_tokens).toBeLessThanOrEqual(after.completionTokens - before.completionTokens);
    expect(record.prompt_tokens).toBe(full.usage?.prompt_tokens);
    expect(record.charged_tokens).toBe(record.prompt_tokens + record.completion_tokens);

    expect((await usageOf(env.gateway, user.token)).used).toBe(usedBefore + record.charged_tokens);
    expect(await ledger(env.gateway.databaseUrl, user.id)).toMatchObject({ reserved: 0, reservations: 0, used: usedBefore + record.charged_tokens });
  });

  it('a usageUpdated subscriber receives the event of an OpenAI-endpoint request', async () => {
    const { user, client } = await sdkUser(env);
    const ws = env.gateway.ws(user.token);
    const events = ws.collect(UsageUpdatedDocument, {}, 1);
    await until(() => ws.acknowledged, 5_000, 'connection_ack');
    // The subscribe message follows the connection at once; give the server a moment to register it.
    await new Promise((resolve) => setTimeout(resolve, 250));

    const { data: completion, response } = await client.chat.completions
      .create({ model: MODEL, messages: [{ role: 'user', content: 'Publish my usage.' }] })
      .withResponse();
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      events,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error('no usageUpdated event within 5 s')), 5_000);
      }),
    ]).finally(() => clearTimeout(timer));
    expect(outcome.error).toBeNull();
    expect(outcome.events).toHaveLength(1);
    const event = outcome.events[0].usageUpdated;
    const used = (await usageOf(env.gateway, user.token)).used;
    expect(event).toMatchObject({
      requestId: response.headers.get('x-usage-request-id'),
      userId: user.id,
      model: MODEL,
      promptTokens: completion.usage?.prompt_tokens,
      completionTokens: completion.usage?.completion_tokens,
      totalTokens: completion.usage?.total_tokens,
      used,
      remaining: 100_000 - used,
    });
    expect(used).toBe(completion.usage?.total_tokens);
  });

  it('GraphQL chat and OpenAI calls of one user share one quota', async () => {
    const { user, client } = await sdkUser(env, 100_000);
    const graphql = await env.gateway.gql(ChatDocument, { input: { messages: [{ role: 'USER', content: 'Hello from GraphQL.' }] } }, user.token);
    expect(graphql.errors).toBeUndefined();
    const completion = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Hello from OpenAI.' }] });
    const chunks = await readAll(
      await client.chat.completions.create({
        model: MODEL,
        messages: [{ role: 'user', content: 'Hello from an OpenAI stream.' }],
        stream: true,
        stream_options: { include_usage: true },
      }),
    );
    const streamed = chunks.at(-1)?.usage;

    const expected = (graphql.data?.chat.usage.totalTokens ?? 0) + (completion.usage?.total_tokens ?? 0) + (streamed?.total_tokens ?? 0);
    expect(expected).toBeGreaterThan(0);
    const rows = await usageRecords(env.gateway.databaseUrl, user.id);
    expect(rows.map((row) => row.interface)).toEqual(['graphql', 'openai', 'openai']);
    expect(rows.reduce((sum, row) => sum + row.charged_tokens, 0)).toBe(expected);
    expect((await usageOf(env.gateway, user.token)).used).toBe(expected);
    expect(await ledger(env.gateway.databaseUrl, user.id)).toMatchObject({ used: expected, reserved: 0, reservations: 0 });
  });
});
