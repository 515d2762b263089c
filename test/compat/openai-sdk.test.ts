import { request as httpRequest } from 'node:http';
import OpenAI from 'openai';
import type { ChatCompletionCreateParamsNonStreaming, ChatCompletionMessageParam, ChatCompletionTool } from 'openai/resources/chat/completions';
import { z } from 'zod';
import { CachedUsageUpdatedDocument } from '../generated/graphql';
import { eventually, until, usageOf } from '../helpers/client';
import { ledger, usageRecords, type UsageRecordRow } from '../helpers/database';
import { simulatorPromptTokens } from '../helpers/tokens';
import { openaiGateway, rejection, sdkUser } from '../openai/support';

const MODEL = 'sim-llama-3-8b';
const THINKER = 'sim-thinker';
const EMBEDDER = 'sim-embedder';

const weatherArguments = z.object({ city: z.string().min(1), unit: z.enum(['celsius', 'fahrenheit']) });
const WEATHER: ChatCompletionTool = {
  type: 'function',
  function: { name: 'get_weather', description: 'The weather in a city.', parameters: z.toJSONSchema(weatherArguments) as Record<string, unknown> },
};
const ASK: ChatCompletionMessageParam[] = [{ role: 'user', content: 'What is the weather in Paris? Call get_weather.' }];

/** vLLM's fields beyond OpenAI's types. */
type VllmBody = ChatCompletionCreateParamsNonStreaming & Record<string, unknown>;
type Reasoned = { reasoning?: string | null };

describe('Real clients through the gateway: the official openai SDK', () => {
  const env = openaiGateway({ simulator: { reasoningModels: [THINKER], embeddingModels: [EMBEDDER], enablePromptTokensDetails: true } });

  /** The records written since `before`, once there are `count` of them. */
  async function newRecords(userId: string, count: number): Promise<UsageRecordRow[]> {
    return eventually(async () => {
      const rows = await usageRecords(env.gateway.databaseUrl, userId);
      return rows.length >= count ? rows : undefined;
    }, 5_000, `${count} usage records`);
  }

  it('runs a tool round trip: tool_calls, the tool message, the answer; each prompt counted exactly with the tools', async () => {
    const { user, client } = await sdkUser(env);
    const sim = env.gateway.simulator;
    const before = { ...sim.stats };
    const called = await client.chat.completions.create({ model: MODEL, messages: ASK, tools: [WEATHER] });
    const [choice] = called.choices;
    expect(choice.finish_reason).toBe('tool_calls');
    expect(choice.message.content).toBeNull();
    const call = choice.message.tool_calls?.[0];
    if (call?.type !== 'function') throw new Error('expected a function call');
    expect(call.function.name).toBe('get_weather');
    const args = weatherArguments.parse(JSON.parse(call.function.arguments));

    const answered = await client.chat.completions.create({
      model: MODEL,
      tools: [WEATHER],
      messages: [...ASK, choice.message, { role: 'tool', tool_call_id: call.id, content: JSON.stringify({ ...args, temperature: 21 }) }],
    });
    expect(answered.choices[0].finish_reason).toBe('stop');
    expect(answered.choices[0].message.content?.length ?? 0).toBeGreaterThan(0);

    const after = { ...sim.stats };
    // /tokenize was given the tools and the tool turns: its counts are the prompts vLLM charged.
    expect(after.tokenizedTokens - before.tokenizedTokens).toBe(after.promptTokens - before.promptTokens);
    const rows = await newRecords(user.id, 2);
    expect(rows.map((row) => [row.prompt_count_source, row.usage_source, row.status])).toEqual([
      ['tokenize', 'reported', 'completed'],
      ['tokenize', 'reported', 'completed'],
    ]);
    expect(rows[0]).toMatchObject({ prompt_tokens: called.usage?.prompt_tokens, completion_tokens: called.usage?.completion_tokens });
    expect(rows[1].prompt_tokens).toBe(answered.usage?.prompt_tokens);
  });

  it('streams tool-call deltas that the SDK reassembles (finalChatCompletion), charged what vLLM reported', async () => {
    const { user, client } = await sdkUser(env);
    const whole = await client.chat.completions.create({ model: MODEL, messages: ASK, tools: [WEATHER], seed: 9 });
    const runner = client.chat.completions.stream({ model: MODEL, messages: ASK, tools: [WEATHER], seed: 9, stream_options: { include_usage: true } });
    const fragments: string[] = [];
    runner.on('chunk', (chunk) => {
      for (const delta of chunk.choices[0]?.delta.tool_calls ?? []) fragments.push(delta.function?.arguments ?? '');
    });
    const final = await runner.finalChatCompletion();
    const streamed = final.choices[0].message.tool_calls?.[0];
    const wholeCall = whole.choices[0].message.tool_calls?.[0];
    if (streamed?.type !== 'function' || wholeCall?.type !== 'function') throw new Error('expected function calls');
    expect(streamed.function).toEqual(wholeCall.function);
    expect(fragments.length).toBeGreaterThan(2);
    expect(final.choices[0].finish_reason).toBe('tool_calls');
    expect(final.usage?.completion_tokens).toBe(whole.usage?.completion_tokens);
    const rows = await newRecords(user.id, 2);
    expect(rows[1]).toMatchObject({ usage_source: 'reported', completion_tokens: whole.usage?.completion_tokens });
  });

  it('n: 2 gives both choices, charged together, and reserves max_tokens for each', async () => {
    const { user, client } = await sdkUser(env, 100);
    const two = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Two takes.' }], n: 2, max_tokens: 20 });
    expect(two.choices.map((choice) => choice.index)).toEqual([0, 1]);
    const [row] = await newRecords(user.id, 1);
    expect(row.completion_tokens).toBe(two.usage?.completion_tokens);
    expect(row.completion_tokens).toBeGreaterThan(20);

    // max_tokens that fits once beside the prompt in what remains, but not twice.
    const prompt = two.usage?.prompt_tokens ?? 0;
    const fitsOnce = 100 - (two.usage?.total_tokens ?? 0) - prompt;
    expect(fitsOnce).toBeGreaterThan(0);
    const refused = await rejection(() => client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Two takes.' }], n: 2, max_tokens: fitsOnce }));
    expect(refused).toBeInstanceOf(OpenAI.RateLimitError);
    const once = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Two takes.' }], n: 1, max_tokens: fitsOnce });
    expect(once.choices).toHaveLength(1);
    expect(await ledger(env.gateway.databaseUrl, user.id)).toMatchObject({ used: (two.usage?.total_tokens ?? 0) + (once.usage?.total_tokens ?? 0), reserved: 0, reservations: 0 });
  });

  it('passes messages of every role through: developer, a named user with content parts; counted exactly', async () => {
    const { user, client } = await sdkUser(env);
    const sim = env.gateway.simulator;
    const before = { ...sim.stats };
    const answer = await client.chat.completions.create({
      model: MODEL,
      messages: [
        { role: 'developer', content: 'Answer briefly.' },
        { role: 'system', content: [{ type: 'text', text: 'You are a forecaster.' }] },
        { role: 'user', name: 'ana', content: [{ type: 'text', text: 'Tomorrow?' }, { type: 'text', text: 'In Oslo.' }] },
      ],
      max_tokens: 4,
    });
    expect(answer.choices[0].finish_reason).toBe('length');
    const after = { ...sim.stats };
    expect(after.tokenizedTokens - before.tokenizedTokens).toBe(answer.usage?.prompt_tokens);
    expect(answer.usage?.prompt_tokens).toBe(1 + (4 + 3) + (4 + 5) + (4 + 2 + 3) + 3);
    const [row] = await newRecords(user.id, 1);
    expect(row.prompt_tokens).toBe(answer.usage?.prompt_tokens);
  });

  it('refuses more choices than CHAT_MAX_CHOICES, naming n', async () => {
    const { client } = await sdkUser(env);
    const error = await rejection(() => client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Hi.' }], n: 17 }));
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    expect((error as InstanceType<typeof OpenAI.BadRequestError>).param).toBe('n');
  });

  it('passes logprobs through', async () => {
    const { client } = await sdkUser(env);
    const answer = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Hi.' }], max_tokens: 5, logprobs: true, top_logprobs: 2 });
    const entries = answer.choices[0].logprobs?.content ?? [];
    expect(entries).toHaveLength(5);
    expect(entries.every((entry) => entry.top_logprobs.length === 2)).toBe(true);
  });

  it('JSON mode: the content is JSON of the schema', async () => {
    const { client } = await sdkUser(env);
    const schema = z.object({ title: z.string(), year: z.number().int().min(1900).max(2100) });
    const answer = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'A film, as JSON.' }],
      response_format: { type: 'json_schema', json_schema: { name: 'film', schema: z.toJSONSchema(schema) as Record<string, unknown> } },
    });
    expect(schema.safeParse(JSON.parse(answer.choices[0].message.content ?? '')).success).toBe(true);
  });

  it('a reasoning model: reasoning passes through, whole and streamed; thinking switched off is counted exactly', async () => {
    const { user, client } = await sdkUser(env);
    const messages: ChatCompletionMessageParam[] = [{ role: 'user', content: 'Think first.' }];
    const answer = await client.chat.completions.create({ model: THINKER, messages });
    const reasoning = (answer.choices[0].message as Reasoned).reasoning ?? '';
    expect(reasoning.length).toBeGreaterThan(0);
    const chunks = [];
    for await (const chunk of await client.chat.completions.create({ model: THINKER, messages, stream: true })) chunks.push(chunk);
    expect(chunks.map((chunk) => (chunk.choices[0]?.delta as Reasoned | undefined)?.reasoning ?? '').join('')).toBe(reasoning);

    const sim = env.gateway.simulator;
    for (const body of [{ chat_template_kwargs: { enable_thinking: false } }, { reasoning_effort: 'none' }]) {
      const before = { ...sim.stats };
      const plain = await client.chat.completions.create({ model: THINKER, messages, ...body } as VllmBody);
      expect((plain.choices[0].message as Reasoned).reasoning).toBeNull();
      const after = { ...sim.stats };
      expect(after.tokenizedTokens - before.tokenizedTokens).toBe(plain.usage?.prompt_tokens);
      expect(plain.usage?.prompt_tokens).toBe((answer.usage?.prompt_tokens ?? 0) + 2);
    }
    const rows = await newRecords(user.id, 4);
    expect(rows.every((row) => row.prompt_count_source === 'tokenize' && row.usage_source === 'reported')).toBe(true);
  });

  it('a stream cut without usage is estimated from the reasoning and tool-call argument deltas of every choice', async () => {
    const { user, client } = await sdkUser(env);
    env.gateway.simulator.setFault('no-usage');
    let deltas = 0;
    const stream = await client.chat.completions.create({ model: THINKER, messages: ASK, tools: [WEATHER], n: 2, stream: true });
    for await (const chunk of stream) {
      const delta = chunk.choices[0]?.delta as (typeof chunk.choices)[number]['delta'] & Reasoned;
      if ((delta?.content ?? '') !== '' || (delta?.reasoning ?? '') !== '' || (delta?.tool_calls ?? []).some((call) => (call.function?.arguments ?? '') !== '' || (call.function?.name ?? '') !== '')) deltas += 1;
    }
    const [row] = await newRecords(user.id, 1);
    expect(row.usage_source).toBe('estimated');
    expect(row.completion_tokens).toBe(deltas);
    // Both choices thought (16+ tokens each) before calling the tool.
    expect(row.completion_tokens).toBeGreaterThan(32);
  });

  it('serves /v1/completions as JSON and SSE, metered like chat, 16 tokens when max_tokens is absent', async () => {
    const { user, client } = await sdkUser(env);
    const completion = await client.completions.create({ model: MODEL, prompt: 'Once upon a time', n: 2 });
    expect(completion.choices).toHaveLength(2);
    expect(completion.usage).toMatchObject({ prompt_tokens: 5, completion_tokens: 32 });
    const chunks = [];
    for await (const chunk of await client.completions.create({ model: MODEL, prompt: 'Go on', max_tokens: 4, stream: true, stream_options: { include_usage: true } })) chunks.push(chunk);
    expect(chunks.at(-1)).toMatchObject({ choices: [], usage: { prompt_tokens: 3, completion_tokens: 4 } });
    expect(chunks.slice(0, -1).every((chunk) => chunk.usage == null)).toBe(true);
    const rows = await newRecords(user.id, 2);
    expect(rows.map((row) => [row.interface, row.prompt_tokens, row.completion_tokens, row.usage_source])).toEqual([
      ['openai', 5, 32, 'reported'],
      ['openai', 3, 4, 'reported'],
    ]);
    expect((await usageOf(env.gateway, user.token)).used).toBe(5 + 32 + 3 + 4);
  });

  it('serves /v1/embeddings (base64 as the SDK asks, decoded by it), charging the prompt tokens', async () => {
    const { user, client } = await sdkUser(env);
    const embedded = await client.embeddings.create({ model: EMBEDDER, input: ['Hello, world!', 'Bye'] });
    expect(embedded.data.map((item) => item.embedding.length)).toEqual([384, 384]);
    expect(embedded.usage).toMatchObject({ prompt_tokens: 7, total_tokens: 7 });
    const [row] = await newRecords(user.id, 1);
    expect(row).toMatchObject({ prompt_tokens: 7, completion_tokens: 0, charged_tokens: 7, usage_source: 'reported', status: 'completed' });
    expect(await ledger(env.gateway.databaseUrl, user.id)).toMatchObject({ used: 7, reserved: 0, reservations: 0 });
    const refused = await rejection(() => client.embeddings.create({ model: MODEL, input: 'x' }));
    expect(refused).toBeInstanceOf(OpenAI.BadRequestError);
  });

  it('a client that disconnects from a JSON request aborts it upstream at once: charged the prompt, estimated, aborted', async () => {
    const { user, key } = await sdkUser(env);
    const sim = env.gateway.simulator;
    sim.setLatency({ timeToFirstTokenMs: 5_000 });
    const before = { ...sim.stats };
    const body = JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'Take your time.' }] });
    const req = httpRequest(`${env.gateway.server.origin}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key.secret}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    });
    req.on('error', () => undefined);
    req.end(body);
    await until(() => sim.stats.chatRequests > before.chatRequests, 5_000, 'the request to reach the simulator');
    const abortedAt = Date.now();
    req.destroy();
    await until(() => sim.stats.aborted > before.aborted, 2_000, 'the simulator to see the abort');
    expect(Date.now() - abortedAt).toBeLessThan(1_000);
    const [row] = await newRecords(user.id, 1);
    expect(row).toMatchObject({ status: 'aborted', usage_source: 'estimated', completion_tokens: 0, prompt_tokens: simulatorPromptTokens([{ content: 'Take your time.' }]) });
    expect(await ledger(env.gateway.databaseUrl, user.id)).toMatchObject({ used: row.prompt_tokens, reserved: 0, reservations: 0 });
  });

  it('records vLLM\'s cached prompt tokens, and the usage event carries them', async () => {
    const { user, client } = await sdkUser(env);
    const ws = env.gateway.ws(user.token);
    const feed = ws.watch(CachedUsageUpdatedDocument, {}, { pick: (data) => data.usageUpdated, stopAfter: 2 });
    await until(() => ws.acknowledged, 5_000, 'connection_ack');
    await new Promise((resolve) => setTimeout(resolve, 250));
    const long = `Context: ${'the quick brown fox jumps over the lazy dog '.repeat(10)}`;
    const first = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: long }], max_tokens: 3 });
    const second = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: `${long} Again?` }], max_tokens: 3 });
    expect(first.usage?.prompt_tokens_details?.cached_tokens).toBe(0);
    const cached = second.usage?.prompt_tokens_details?.cached_tokens ?? 0;
    expect(cached).toBeGreaterThanOrEqual(80);
    expect(cached % 16).toBe(0);
    const rows = await newRecords(user.id, 2);
    expect(rows.map((row) => row.cached_tokens)).toEqual([0, cached]);
    const { events } = await feed.done;
    expect(events.map((event) => event.cachedTokens)).toEqual([0, cached]);
  });
});
