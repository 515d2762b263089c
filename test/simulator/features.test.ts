import OpenAI from 'openai';
import type { ChatCompletionChunk, ChatCompletionMessageParam, ChatCompletionTool } from 'openai/resources/chat/completions';
import { z } from 'zod';

import { countTokens, startSimulator, type Simulator } from '../../src/simulator';

const MODEL = 'sim-llama-3-8b';
const THINKER = 'sim-thinker';
const EMBEDDER = 'sim-embedder';

const weatherArguments = z.object({
  city: z.string().min(1),
  unit: z.enum(['celsius', 'fahrenheit']),
  days: z.number().int().min(1).max(7),
  hourly: z.boolean().optional(),
});
const WEATHER: ChatCompletionTool = {
  type: 'function',
  function: { name: 'get_weather', description: 'The forecast for a city.', parameters: z.toJSONSchema(weatherArguments) as Record<string, unknown> },
};
const TIME: ChatCompletionTool = {
  type: 'function',
  function: { name: 'get_time', parameters: { type: 'object', properties: { zone: { type: 'string' } }, required: ['zone'] } },
};

function postJson(url: string, body: unknown): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
}

async function chunksOf(stream: AsyncIterable<ChatCompletionChunk>): Promise<ChatCompletionChunk[]> {
  const chunks: ChatCompletionChunk[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

describe('vLLM simulator: what real clients send', () => {
  let sim: Simulator;
  let client: OpenAI;

  beforeAll(async () => {
    sim = await startSimulator({ models: [MODEL], reasoningModels: [THINKER], embeddingModels: [EMBEDDER], enablePromptTokensDetails: true });
    client = new OpenAI({ baseURL: sim.url, apiKey: 'unused', maxRetries: 0 });
  });

  afterAll(() => sim.stop());

  beforeEach(() => {
    sim.resetStats();
    sim.clearPrefixCache();
  });

  describe('tools', () => {
    const ask: ChatCompletionMessageParam[] = [{ role: 'user', content: 'What is the weather in Paris? Use get_weather.' }];

    it('"auto" calls the tool the user names, with arguments valid against its schema, then answers its result', async () => {
      const called = await client.chat.completions.create({ model: MODEL, messages: ask, tools: [TIME, WEATHER] });
      const [choice] = called.choices;
      expect(choice.finish_reason).toBe('tool_calls');
      expect(choice.message.content).toBeNull();
      const [call] = choice.message.tool_calls ?? [];
      expect(call).toMatchObject({ id: expect.stringMatching(/^chatcmpl-tool-[0-9a-f]{32}$/), type: 'function', function: { name: 'get_weather' } });
      if (call?.type !== 'function') throw new Error('expected a function call');
      const args: unknown = JSON.parse(call.function.arguments);
      expect(weatherArguments.safeParse(args).success).toBe(true);

      // The same request makes the same arguments.
      const again = await client.chat.completions.create({ model: MODEL, messages: ask, tools: [TIME, WEATHER] });
      const repeated = again.choices[0].message.tool_calls?.[0];
      expect(repeated?.type === 'function' ? repeated.function.arguments : null).toBe(call.function.arguments);

      const answered = await client.chat.completions.create({
        model: MODEL,
        tools: [TIME, WEATHER],
        messages: [...ask, { role: 'assistant', content: null, tool_calls: [call] }, { role: 'tool', tool_call_id: call.id, content: '{"temp": 21}' }],
      });
      expect(answered.choices[0].finish_reason).toBe('stop');
      expect(answered.choices[0].message.tool_calls).toBeUndefined();
      expect(answered.choices[0].message.content?.length ?? 0).toBeGreaterThan(0);
    });

    it('counts tools and earlier tool calls in the prompt, and /tokenize counts the same', async () => {
      const call = { id: 'call-1', type: 'function' as const, function: { name: 'get_time', arguments: '{"zone": "UTC"}' } };
      const messages: ChatCompletionMessageParam[] = [
        { role: 'user', content: 'Time?' },
        { role: 'assistant', content: null, tool_calls: [call] },
        { role: 'tool', tool_call_id: 'call-1', content: '12:00' },
      ];
      const answer = await client.chat.completions.create({ model: MODEL, messages, tools: [TIME] });
      const tools = countTokens(JSON.stringify(TIME));
      const toolCall = 2 + countTokens(`{"name": "get_time", "arguments": {"zone": "UTC"}}`);
      expect(answer.usage?.prompt_tokens).toBe(1 + (4 + tools) + (4 + 2) + (4 + toolCall) + (4 + 3) + 3);
      const tokenized = (await (await postJson(`${sim.origin}/tokenize`, { model: MODEL, messages, tools: [TIME] })).json()) as { count: number };
      expect(tokenized.count).toBe(answer.usage?.prompt_tokens);
      expect(sim.stats).toMatchObject({ tokenizeRequests: 1, tokenizedTokens: tokenized.count });
    });

    it('"required" and a named tool always call; a named call finishes with "stop"; "none" answers in text', async () => {
      const required = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Hi.' }], tools: [TIME, WEATHER], tool_choice: 'required' });
      expect(required.choices[0]).toMatchObject({ finish_reason: 'tool_calls', message: { content: '' } });
      expect(required.choices[0].message.tool_calls?.[0]).toMatchObject({ function: { name: 'get_time' } });

      const named = await client.chat.completions.create({
        model: MODEL,
        messages: ask,
        tools: [TIME, WEATHER],
        tool_choice: { type: 'function', function: { name: 'get_time' } },
      });
      expect(named.choices[0].finish_reason).toBe('stop');
      expect(named.choices[0].message.tool_calls?.[0]).toMatchObject({ function: { name: 'get_time' } });

      const none = await client.chat.completions.create({ model: MODEL, messages: ask, tools: [WEATHER], tool_choice: 'none' });
      expect(none.choices[0].message.tool_calls).toBeUndefined();
      expect(none.choices[0].finish_reason).toBe('stop');
    });

    it('streams the call as vLLM does: a header delta, argument fragments, finish "tool_calls"; the SDK reassembles it', async () => {
      const whole = await client.chat.completions.create({ model: MODEL, messages: ask, tools: [WEATHER], seed: 5 });
      const chunks = await chunksOf(
        await client.chat.completions.create({ model: MODEL, messages: ask, tools: [WEATHER], seed: 5, stream: true, stream_options: { include_usage: true } }),
      );
      const deltas = chunks.flatMap((chunk) => chunk.choices.flatMap((choice) => choice.delta.tool_calls ?? []));
      expect(deltas[0]).toEqual({ index: 0, id: expect.stringMatching(/^chatcmpl-tool-/), type: 'function', function: { name: 'get_weather', arguments: '' } });
      expect(deltas.slice(1).every((delta) => delta.id === undefined && delta.function?.name === undefined)).toBe(true);
      const streamedArguments = deltas.map((delta) => delta.function?.arguments ?? '').join('');
      const wholeCall = whole.choices[0].message.tool_calls?.[0];
      expect(streamedArguments).toBe(wholeCall?.type === 'function' ? wholeCall.function.arguments : null);
      expect(chunks.at(-2)?.choices[0].finish_reason).toBe('tool_calls');
      expect(chunks.at(-1)?.usage?.completion_tokens).toBe(whole.usage?.completion_tokens);

      const runner = client.chat.completions.stream({ model: MODEL, messages: ask, tools: [WEATHER], seed: 5 });
      const final = await runner.finalChatCompletion();
      const reassembled = final.choices[0].message.tool_calls?.[0];
      expect(reassembled?.type === 'function' ? reassembled.function : null).toEqual({ name: 'get_weather', arguments: streamedArguments });
    });

    it('refuses tool_choice the way vLLM validates it, naming the parameter', async () => {
      const cases: Array<[Record<string, unknown>, string]> = [
        [{ tools: [] }, 'tools'],
        [{ tool_choice: 'auto' }, 'tool_choice'],
        [{ tools: [WEATHER], tool_choice: { type: 'function', function: { name: 'nope' } } }, 'tool_choice'],
        [{ tools: [WEATHER], tool_choice: 'sometimes' }, 'tool_choice'],
      ];
      for (const [extra, param] of cases) {
        const response = await postJson(`${sim.url}/chat/completions`, { model: MODEL, messages: ask, ...extra });
        expect(response.status).toBe(400);
        expect(((await response.json()) as { error: { param: string } }).error.param).toBe(param);
      }
      expect(sim.stats.chatRequests).toBe(0);
    });

    it('without --enable-auto-tool-choice refuses "auto" with vLLM\'s message', async () => {
      const strict = await startSimulator({ autoToolChoice: false });
      try {
        const response = await postJson(`${strict.url}/chat/completions`, { messages: ask, tools: [WEATHER] });
        expect(response.status).toBe(400);
        expect(((await response.json()) as { error: { message: string } }).error.message).toBe(
          '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set',
        );
      } finally {
        await strict.stop();
      }
    });
  });

  it('n: several choices, each counted; choice 0 is the n = 1 answer; streamed per choice with per-choice continuous usage', async () => {
    const messages: ChatCompletionMessageParam[] = [{ role: 'user', content: 'Three ways, please.' }];
    const single = await client.chat.completions.create({ model: MODEL, messages });
    const three = await client.chat.completions.create({ model: MODEL, messages, n: 3 });
    expect(three.choices.map((choice) => choice.index)).toEqual([0, 1, 2]);
    expect(three.choices[0].message.content).toBe(single.choices[0].message.content);
    expect(new Set(three.choices.map((choice) => choice.message.content)).size).toBe(3);
    const total = three.choices.reduce((sum, choice) => sum + countTokens(choice.message.content ?? '') + 1, 0);
    expect(three.usage?.completion_tokens).toBe(total);

    const response = await postJson(`${sim.url}/chat/completions`, {
      model: MODEL,
      messages,
      n: 2,
      max_tokens: 3,
      stream: true,
      stream_options: { include_usage: true, continuous_usage_stats: true },
    });
    const text = await response.text();
    const chunks = text
      .split('\n\n')
      .filter((frame) => frame.startsWith('data: {'))
      .map((frame) => JSON.parse(frame.slice(6)) as ChatCompletionChunk);
    expect(chunks.slice(0, 2).map((chunk) => chunk.choices[0].delta)).toEqual([
      { role: 'assistant', content: '' },
      { role: 'assistant', content: '' },
    ]);
    const ofChoice = (index: number) => chunks.filter((chunk) => chunk.choices[0]?.index === index).map((chunk) => chunk.usage?.completion_tokens);
    expect(ofChoice(0)).toEqual([0, 1, 2, 3]);
    expect(ofChoice(1)).toEqual([0, 1, 2, 3]);
    expect(chunks.at(-1)?.usage?.completion_tokens).toBe(6);
  });

  it('logprobs: one entry per generated token with top_logprobs alternatives; refused without logprobs', async () => {
    const answer = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Hi.' }], max_tokens: 6, logprobs: true, top_logprobs: 3 });
    const entries = answer.choices[0].logprobs?.content ?? [];
    expect(entries).toHaveLength(6);
    expect(entries.map((entry) => entry.token).join('')).toBe(answer.choices[0].message.content);
    expect(entries.every((entry) => entry.top_logprobs.length === 3 && entry.top_logprobs[0].token === entry.token && entry.logprob <= 0)).toBe(true);

    const streamed = await chunksOf(
      await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Hi.' }], max_tokens: 6, logprobs: true, stream: true }),
    );
    expect(streamed.filter((chunk) => chunk.choices[0]?.logprobs?.content?.length === 1)).toHaveLength(6);

    const refused = await postJson(`${sim.url}/chat/completions`, { messages: [{ role: 'user', content: 'Hi.' }], top_logprobs: 2 });
    expect(refused.status).toBe(400);
    expect(((await refused.json()) as { error: { param: string } }).error.param).toBe('top_logprobs');
  });

  it('JSON mode: json_object and json_schema give JSON content, valid against the schema', async () => {
    const object = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'JSON please.' }], response_format: { type: 'json_object' } });
    expect(() => JSON.parse(object.choices[0].message.content ?? '') as unknown).not.toThrow();

    const schema = z.object({ name: z.string(), tags: z.array(z.string()).min(2), score: z.number().min(0).max(1) });
    const structured = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'A record.' }],
      response_format: { type: 'json_schema', json_schema: { name: 'record', schema: z.toJSONSchema(schema) as Record<string, unknown> } },
    });
    const content = structured.choices[0].message.content ?? '';
    expect(schema.safeParse(JSON.parse(content)).success).toBe(true);
    expect(structured.usage?.completion_tokens).toBe(countTokens(content) + 1);
  });

  it('a reasoning model thinks first (reasoning, then content); enable_thinking: false skips it and costs 2 prompt tokens', async () => {
    const messages: ChatCompletionMessageParam[] = [{ role: 'user', content: 'Think it over.' }];
    const answer = await client.chat.completions.create({ model: THINKER, messages });
    const message = answer.choices[0].message as typeof answer.choices[0]['message'] & { reasoning?: string | null };
    expect(answer.model).toBe(THINKER);
    expect(countTokens(message.reasoning ?? '')).toBeGreaterThanOrEqual(16);
    expect(message.content?.length ?? 0).toBeGreaterThan(0);
    // Reasoning, its </think>, the content and its EOS.
    expect(answer.usage?.completion_tokens).toBe(countTokens(message.reasoning ?? '') + 1 + countTokens(message.content ?? '') + 1);

    const chunks = await chunksOf(await client.chat.completions.create({ model: THINKER, messages, stream: true }));
    const deltas = chunks.map((chunk) => chunk.choices[0]?.delta as { reasoning?: string; content?: string } | undefined);
    expect(deltas.map((delta) => delta?.reasoning ?? '').join('')).toBe(message.reasoning);
    expect(deltas.map((delta) => delta?.content ?? '').join('')).toBe(message.content);

    const plain = await client.chat.completions.create({ model: THINKER, messages, chat_template_kwargs: { enable_thinking: false } } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect((plain.choices[0].message as { reasoning?: string | null }).reasoning).toBeNull();
    expect(plain.usage?.prompt_tokens).toBe((answer.usage?.prompt_tokens ?? 0) + 2);
    const tokenized = (await (await postJson(`${sim.origin}/tokenize`, { model: THINKER, messages, chat_template_kwargs: { enable_thinking: false } })).json()) as { count: number };
    expect(tokenized.count).toBe(plain.usage?.prompt_tokens);
  });

  it('reports cached tokens for a repeated prefix, in whole blocks of 16, separately per cache_salt', async () => {
    const long = 'lorem ipsum dolor sit amet '.repeat(12);
    const first = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: long }] });
    expect(first.usage?.prompt_tokens_details).toEqual({ cached_tokens: 0 });
    const again = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: `${long} And more.` }] });
    const prompt = first.usage?.prompt_tokens ?? 0;
    expect(again.usage?.prompt_tokens_details?.cached_tokens).toBe(Math.floor((prompt - 3 - 1) / 16) * 16);
    const salted = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: long }], cache_salt: 'tenant-b' } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(salted.usage?.prompt_tokens_details).toEqual({ cached_tokens: 0 });

    const chunks = await chunksOf(await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: long }], stream: true, stream_options: { include_usage: true } }));
    expect(chunks.at(-1)?.usage?.prompt_tokens_details?.cached_tokens).toBe(Math.floor((prompt - 1) / 16) * 16);
    expect(sim.stats.cachedTokens).toBeGreaterThan(0);
  });

  describe('/v1/completions', () => {
    it('completes a prompt: 16 tokens when max_tokens is absent, the prompt counted with its BOS, n and echo', async () => {
      const completion = await client.completions.create({ model: MODEL, prompt: 'Once upon a time', n: 2, echo: true, seed: 1 });
      expect(completion.object).toBe('text_completion');
      expect(completion.id).toMatch(/^cmpl-/);
      expect(completion.choices.map((choice) => choice.index)).toEqual([0, 1]);
      expect(completion.choices.every((choice) => choice.text.startsWith('Once upon a time') && choice.finish_reason === 'length')).toBe(true);
      expect(completion.usage).toMatchObject({ prompt_tokens: 5, completion_tokens: 32 });
      expect(sim.stats).toMatchObject({ completionRequests: 1, promptTokens: 5, completionTokens: 32 });

      const two = await client.completions.create({ model: MODEL, prompt: ['a b', 'c'], max_tokens: 2, logprobs: 2 });
      expect(two.choices).toHaveLength(2);
      expect(two.usage?.prompt_tokens).toBe(3 + 2);
      expect(two.choices[0].logprobs?.tokens).toHaveLength(2);
      expect(Object.keys(two.choices[0].logprobs?.top_logprobs?.[0] ?? {})).toHaveLength(2);
    });

    it('streams text chunks and a final usage chunk', async () => {
      const stream = await client.completions.create({ model: MODEL, prompt: 'Go on', max_tokens: 4, stream: true, stream_options: { include_usage: true } });
      const chunks = [];
      for await (const chunk of stream) chunks.push(chunk);
      expect(chunks).toHaveLength(5);
      expect(chunks[3].choices[0].finish_reason).toBe('length');
      expect(chunks[4]).toMatchObject({ choices: [], usage: { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 } });
      const whole = await client.completions.create({ model: MODEL, prompt: 'Go on', max_tokens: 4 });
      expect(chunks.map((chunk) => chunk.choices[0]?.text ?? '').join('')).toBe(whole.choices[0].text);
    });

    it('refuses suffix, as vLLM does', async () => {
      const response = await postJson(`${sim.url}/completions`, { prompt: 'x', suffix: 'y' });
      expect(response.status).toBe(400);
    });
  });

  describe('/v1/embeddings', () => {
    it('embeds each input as a unit vector, float or base64 (which the SDK decodes to the same), counting prompt tokens', async () => {
      const floats = await client.embeddings.create({ model: EMBEDDER, input: ['Hello, world!', 'Bye'], encoding_format: 'float' });
      expect(floats.data.map((item) => item.index)).toEqual([0, 1]);
      expect(floats.data[0].embedding).toHaveLength(384);
      expect(Math.hypot(...floats.data[0].embedding)).toBeCloseTo(1, 5);
      expect(floats.usage).toEqual({ prompt_tokens: 5 + 2, total_tokens: 7, completion_tokens: 0, prompt_tokens_details: null });

      // The SDK asks for base64 by default and decodes it.
      const decoded = await client.embeddings.create({ model: EMBEDDER, input: 'Hello, world!', dimensions: 8 });
      expect(decoded.data[0].embedding).toHaveLength(8);
      expect(Math.hypot(...decoded.data[0].embedding)).toBeCloseTo(1, 5);
      expect(sim.stats).toMatchObject({ embeddingRequests: 2, completed: 2 });
    });

    it('serves embeddings only on an embedding model, and nothing else there', async () => {
      const generative = await postJson(`${sim.url}/embeddings`, { model: MODEL, input: 'x' });
      expect(generative.status).toBe(400);
      expect(((await generative.json()) as { error: { message: string } }).error.message).toBe('The model does not support Embeddings API');
      const chat = await postJson(`${sim.url}/chat/completions`, { model: EMBEDDER, messages: [{ role: 'user', content: 'x' }] });
      expect(chat.status).toBe(400);
    });
  });
});
