import OpenAI from 'openai';

import { countTokens, startSimulator, type Simulator } from '../../src/simulator';

const MODEL = 'sim-llama-3-8b';
const QUESTION = [{ role: 'user' as const, content: 'Hello, world! How are you today?' }];

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

interface Chunk {
  id: string;
  object: string;
  model: string;
  choices: Array<{
    index: number;
    delta: { role?: string; content?: string };
    finish_reason: string | null;
    stop_reason?: string | null;
  }>;
  usage?: Usage;
}

interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: number };
}

function clientFor(sim: Simulator, apiKey = 'unused'): OpenAI {
  return new OpenAI({ baseURL: sim.url, apiKey, maxRetries: 0 });
}

function postJson(url: string, body: unknown, init: RequestInit = {}): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    ...init,
    headers: { 'content-type': 'application/json', ...init.headers },
    body: JSON.stringify(body),
  });
}

/** The `data:` payloads of an SSE body, in order. */
async function readEvents(response: Response): Promise<string[]> {
  const text = await response.text();
  return text
    .split('\n\n')
    .filter((frame) => frame.startsWith('data: '))
    .map((frame) => frame.slice('data: '.length));
}

function parseChunks(events: string[]): Chunk[] {
  return events.filter((event) => event !== '[DONE]').map((event) => JSON.parse(event) as Chunk);
}

async function waitFor(condition: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Reads a streamed body until `count` SSE frames have arrived. */
async function readFrames(reader: ReadableStreamDefaultReader<Uint8Array>, count: number): Promise<string> {
  const decoder = new TextDecoder();
  let text = '';
  while (text.split('\n\n').length - 1 < count) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
  }
  return text;
}

describe('vLLM simulator', () => {
  let sim: Simulator;
  let client: OpenAI;

  beforeAll(async () => {
    sim = await startSimulator({ models: [MODEL, 'sim-alias'], maxModelLen: 4096 });
    client = clientFor(sim);
  });

  afterAll(async () => {
    await sim.stop();
  });

  beforeEach(() => {
    sim.resetStats();
  });

  describe('GET /v1/models', () => {
    it('lists every served name as a vLLM ModelCard', async () => {
      const response = await fetch(`${sim.url}/models`);
      const body = (await response.json()) as { object: string; data: Array<Record<string, unknown>> };
      expect(body.object).toBe('list');
      expect(body.data.map((card) => card['id'])).toEqual([MODEL, 'sim-alias']);
      expect(body.data[0]).toMatchObject({
        object: 'model',
        owned_by: 'vllm',
        root: MODEL,
        parent: null,
        max_model_len: 4096,
        permission: [expect.objectContaining({ object: 'model_permission', allow_sampling: true })],
      });
      const listed = await client.models.list();
      expect(listed.data.map((model) => model.id)).toEqual([MODEL, 'sim-alias']);
    });
  });

  describe('non-streaming chat completions', () => {
    it('answers with content, finish_reason and usage that includes the EOS token', async () => {
      const completion = await client.chat.completions.create({ model: MODEL, messages: QUESTION });
      expect(completion.id).toMatch(/^chatcmpl-[0-9a-f]{32}$/);
      expect(completion.object).toBe('chat.completion');
      expect(completion.model).toBe(MODEL);
      const [choice] = completion.choices;
      expect(choice?.message.role).toBe('assistant');
      expect(choice?.finish_reason).toBe('stop');
      expect(choice?.logprobs).toBeNull();
      const content = choice?.message.content ?? '';
      // 1 BOS + (4 + 9 content tokens) + 3 for the generation prompt.
      expect(completion.usage).toEqual({
        prompt_tokens: 17,
        completion_tokens: countTokens(content) + 1,
        total_tokens: 17 + countTokens(content) + 1,
        prompt_tokens_details: null,
      });
      expect(countTokens(content)).toBeGreaterThanOrEqual(16);
      expect(countTokens(content)).toBeLessThanOrEqual(48);
      expect(sim.stats).toEqual({
        chatRequests: 1,
        completionRequests: 0,
        embeddingRequests: 0,
        completed: 1,
        aborted: 0,
        failed: 0,
        promptTokens: 17,
        cachedTokens: 0,
        completionTokens: countTokens(content) + 1,
        tokenizeRequests: 0,
        tokenizedTokens: 0,
      });
    });

    it('is deterministic for a prompt, varies with the seed, and names the first served model', async () => {
      const first = await client.chat.completions.create({ model: 'sim-alias', messages: QUESTION });
      const second = await client.chat.completions.create({ model: MODEL, messages: QUESTION });
      const seeded = await client.chat.completions.create({ model: MODEL, messages: QUESTION, seed: 42 });
      expect(first.choices[0]?.message.content).toBe(second.choices[0]?.message.content);
      expect(seeded.choices[0]?.message.content).not.toBe(first.choices[0]?.message.content);
      expect(first.model).toBe(MODEL);
    });

    it('uses X-Request-Id for the completion id', async () => {
      const response = await postJson(
        `${sim.url}/chat/completions`,
        { messages: QUESTION },
        { headers: { 'x-request-id': 'trace-123' } },
      );
      expect(((await response.json()) as { id: string }).id).toBe('chatcmpl-trace-123');
    });

    it('stops after exactly max_tokens with finish_reason "length"', async () => {
      const completion = await client.chat.completions.create({ model: MODEL, messages: QUESTION, max_tokens: 5 });
      expect(completion.choices[0]?.finish_reason).toBe('length');
      expect(completion.usage?.completion_tokens).toBe(5);
      expect(countTokens(completion.choices[0]?.message.content ?? '')).toBe(5);
    });

    it('generates max_tokens tokens with ignore_eos', async () => {
      const response = await postJson(`${sim.url}/chat/completions`, {
        messages: QUESTION,
        max_tokens: 300,
        ignore_eos: true,
      });
      const body = (await response.json()) as { usage: Usage; choices: Array<{ finish_reason: string }> };
      expect(body.usage.completion_tokens).toBe(300);
      expect(body.choices[0]?.finish_reason).toBe('length');
    });

    it('cuts the answer before a stop string and reports it as stop_reason', async () => {
      const full = (await client.chat.completions.create({ model: MODEL, messages: QUESTION })).choices[0]?.message
        .content as string;
      const words = full.split(' ');
      const stop = ` ${words[Math.floor(words.length / 2)]}`;
      const expected = full.slice(0, full.indexOf(stop));

      const response = await postJson(`${sim.url}/chat/completions`, { messages: QUESTION, stop: [stop] });
      const body = (await response.json()) as {
        usage: Usage;
        choices: Array<{ message: { content: string }; finish_reason: string; stop_reason: string }>;
      };
      expect(body.choices[0]).toMatchObject({
        message: { content: expected },
        finish_reason: 'stop',
        stop_reason: stop,
      });
      // The token that completed the stop string was generated, so it counts.
      expect(body.usage.completion_tokens).toBe(countTokens(expected) + 1);

      const included = await postJson(`${sim.url}/chat/completions`, {
        messages: QUESTION,
        stop,
        include_stop_str_in_output: true,
      });
      const includedBody = (await included.json()) as { choices: Array<{ message: { content: string } }> };
      expect(includedBody.choices[0]?.message.content).toBe(expected + stop);
    });
  });

  describe('streaming chat completions', () => {
    it('sends the role first, one chunk per token, then a usage chunk with empty choices', async () => {
      const whole = await client.chat.completions.create({ model: MODEL, messages: QUESTION });
      const stream = await client.chat.completions.create({
        model: MODEL,
        messages: QUESTION,
        stream: true,
        stream_options: { include_usage: true },
      });
      const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
      for await (const chunk of stream) chunks.push(chunk);

      expect(chunks[0]?.choices[0]?.delta).toEqual({ role: 'assistant', content: '' });
      const usageChunk = chunks.at(-1);
      expect(usageChunk?.choices).toEqual([]);
      expect(usageChunk?.usage).toEqual({
        prompt_tokens: whole.usage?.prompt_tokens,
        completion_tokens: whole.usage?.completion_tokens,
        total_tokens: whole.usage?.total_tokens,
      });
      const tokenChunks = chunks.slice(1, -1);
      expect(tokenChunks).toHaveLength(whole.usage?.completion_tokens ?? -1);
      expect(tokenChunks.at(-1)?.choices[0]?.finish_reason).toBe('stop');
      expect(tokenChunks.slice(0, -1).every((chunk) => chunk.choices[0]?.finish_reason === null)).toBe(true);
      expect(tokenChunks.map((chunk) => chunk.choices[0]?.delta.content).join('')).toBe(
        whole.choices[0]?.message.content,
      );
      expect(chunks.every((chunk) => chunk.object === 'chat.completion.chunk' && chunk.id === chunks[0]?.id)).toBe(
        true,
      );
      expect(chunks.slice(0, -1).every((chunk) => chunk.usage === undefined)).toBe(true);
    });

    it('sends no usage without stream_options, and [DONE] last', async () => {
      const response = await postJson(`${sim.url}/chat/completions`, { messages: QUESTION, stream: true });
      expect(response.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
      const events = await readEvents(response);
      expect(events.at(-1)).toBe('[DONE]');
      expect(parseChunks(events).every((chunk) => chunk.usage === undefined && chunk.choices.length === 1)).toBe(true);
    });

    it('puts cumulative usage on every chunk with continuous_usage_stats', async () => {
      const response = await postJson(`${sim.url}/chat/completions`, {
        messages: QUESTION,
        stream: true,
        max_tokens: 6,
        stream_options: { include_usage: true, continuous_usage_stats: true },
      });
      const chunks = parseChunks(await readEvents(response));
      expect(chunks.map((chunk) => chunk.usage?.completion_tokens)).toEqual([0, 1, 2, 3, 4, 5, 6, 6]);
      expect(chunks.every((chunk) => chunk.usage?.prompt_tokens === 17)).toBe(true);
      expect(chunks.every((chunk) => chunk.usage?.total_tokens === 17 + (chunk.usage?.completion_tokens ?? 0))).toBe(
        true,
      );
      expect(chunks.at(-1)?.choices).toEqual([]);
      expect(chunks.at(-2)?.choices[0]?.finish_reason).toBe('length');
    });

    it('streams exactly max_tokens content chunks when the limit ends the answer', async () => {
      const stream = await client.chat.completions.create({
        model: MODEL,
        messages: QUESTION,
        stream: true,
        max_tokens: 4,
        stream_options: { include_usage: true },
      });
      const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
      for await (const chunk of stream) chunks.push(chunk);
      expect(chunks).toHaveLength(1 + 4 + 1);
      expect(chunks[4]?.choices[0]?.finish_reason).toBe('length');
      expect(chunks[5]?.usage?.completion_tokens).toBe(4);
    });

    it('streams the same text as the whole answer when a stop string cuts it', async () => {
      const full = (await client.chat.completions.create({ model: MODEL, messages: QUESTION })).choices[0]?.message
        .content as string;
      const stop = full.split(' ').slice(6, 8).join(' ');
      const response = await postJson(`${sim.url}/chat/completions`, { messages: QUESTION, stream: true, stop });
      const chunks = parseChunks(await readEvents(response));
      expect(chunks.map((chunk) => chunk.choices[0]?.delta.content ?? '').join('')).toBe(
        full.slice(0, full.indexOf(stop)),
      );
      expect(chunks.at(-1)?.choices[0]).toMatchObject({ finish_reason: 'stop', stop_reason: stop });
    });
  });

  describe('POST /tokenize', () => {
    it('counts a chat exactly as prompt_tokens of the completion', async () => {
      const messages = [
        { role: 'system', content: 'You are terse.' },
        { role: 'user', content: [{ type: 'text', text: "What's 2+2?" }, { type: 'text', text: 'Explain.' }] },
        { role: 'assistant', content: '4' },
        { role: 'user', content: 'Why?' },
      ];
      const tokenized = await postJson(`${sim.origin}/tokenize`, { model: MODEL, messages });
      const tokens = (await tokenized.json()) as { count: number; max_model_len: number; tokens: number[] };
      const completion = await postJson(`${sim.url}/chat/completions`, { model: MODEL, messages });
      const usage = ((await completion.json()) as { usage: Usage }).usage;

      expect(tokens.count).toBe(usage.prompt_tokens);
      expect(tokens.tokens).toHaveLength(tokens.count);
      expect(tokens.max_model_len).toBe(4096);
      // 1 BOS + (4+4) + (4+9) + (4+1) + (4+2) + 3 for the generation prompt
      expect(tokens.count).toBe(36);
    });

    it('tokenizes a plain prompt with a BOS token and can return token strings', async () => {
      const response = await postJson(`${sim.origin}/tokenize`, { prompt: 'Hello, world!', return_token_strs: true });
      expect(await response.json()).toMatchObject({
        count: 5,
        token_strs: ['<|begin_of_text|>', 'Hello', ',', 'world', '!'],
      });
    });

    it('answers 404 for an unknown model', async () => {
      const response = await postJson(`${sim.origin}/tokenize`, { model: 'nope', prompt: 'x' });
      expect(response.status).toBe(404);
    });
  });

  describe('validation errors', () => {
    it('refuses a prompt longer than the context with vLLM\'s message', async () => {
      const long = 'word '.repeat(5000);
      const error = await client.chat.completions
        .create({ model: MODEL, messages: [{ role: 'user', content: long }] })
        .catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(OpenAI.BadRequestError);
      const badRequest = error as InstanceType<typeof OpenAI.BadRequestError>;
      expect(badRequest.status).toBe(400);
      expect(badRequest.message).toMatch(/maximum context length is (\d+)/);
      expect(/maximum context length is (\d+)/.exec(badRequest.message)?.[1]).toBe('4096');
      expect(badRequest.message).toContain('your request has 5008 input tokens');
      expect(badRequest.param).toBe('input_tokens');
      expect(sim.stats.chatRequests).toBe(0);
    });

    it('refuses prompt + max_tokens over the context', async () => {
      const response = await postJson(`${sim.url}/chat/completions`, { messages: QUESTION, max_tokens: 4090 });
      expect(response.status).toBe(400);
      const body = (await response.json()) as ErrorBody;
      expect(body.error).toEqual({
        message:
          "'max_tokens' or 'max_completion_tokens' is too large: 4090. This model's maximum context length is " +
          '4096 tokens and your request has 17 input tokens (4090 > 4096 - 17). (parameter=max_tokens, value=4090)',
        type: 'BadRequestError',
        param: 'max_tokens',
        code: 400,
      });
      expect(body.error.message).toMatch(/maximum context length is (\d+)/);
      const fits = await postJson(`${sim.url}/chat/completions`, { messages: QUESTION, max_completion_tokens: 4079 });
      expect(fits.status).toBe(200);
    });

    it('answers 404 NotFoundError for an unknown model', async () => {
      const error = await client.chat.completions
        .create({ model: 'gpt-4', messages: QUESTION })
        .catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(OpenAI.NotFoundError);
      expect((error as InstanceType<typeof OpenAI.NotFoundError>).message).toContain('The model `gpt-4` does not exist.');
    });

    it.each([
      ['malformed JSON', '{"messages": [', 'Bad Request', expect.stringMatching(/^body\.\d+$/)],
      ['missing messages', JSON.stringify({ model: MODEL }), 'Bad Request', 'body.messages'],
      ['max_tokens below 1', JSON.stringify({ messages: QUESTION, max_tokens: 0 }), 'BadRequestError', 'max_tokens'],
      ['temperature above 2', JSON.stringify({ messages: QUESTION, temperature: 2.5 }), 'BadRequestError', 'temperature'],
      ['negative temperature', JSON.stringify({ messages: QUESTION, temperature: -1 }), 'BadRequestError', 'temperature'],
      ['stream_options without stream', JSON.stringify({ messages: QUESTION, stream_options: { include_usage: true } }), 'Bad Request', 'stream_options'],
    ])('answers 400 for %s', async (_case: string, body: string, type: string, param: unknown) => {
      const response = await fetch(`${sim.url}/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
      });
      expect(response.status).toBe(400);
      const error = ((await response.json()) as ErrorBody).error;
      expect(error).toMatchObject({ type, param, code: 400 });
      expect(sim.stats.chatRequests).toBe(0);
    });

    it('reports the temperature the way Python prints it', async () => {
      const response = await postJson(`${sim.url}/chat/completions`, { messages: QUESTION, temperature: 3 });
      expect(((await response.json()) as ErrorBody).error.message).toBe(
        'temperature must be in [0, 2], got 3.0. (parameter=temperature, value=3.0)',
      );
    });
  });

  describe('fault injection', () => {
    it('fail-before answers 500 InternalServerError, by model suffix or header', async () => {
      const bySuffix = await client.chat.completions
        .create({ model: `${MODEL}@fail-before`, messages: QUESTION, stream: true })
        .catch((caught: unknown) => caught);
      expect(bySuffix).toBeInstanceOf(OpenAI.InternalServerError);

      const byHeader = await postJson(
        `${sim.url}/chat/completions`,
        { messages: QUESTION },
        { headers: { 'x-sim-fault': 'fail-before' } },
      );
      expect(byHeader.status).toBe(500);
      expect(((await byHeader.json()) as ErrorBody).error).toEqual({
        message: 'Internal server error',
        type: 'InternalServerError',
        param: null,
        code: 500,
      });
      expect(sim.stats).toMatchObject({ chatRequests: 2, failed: 2, completed: 0, completionTokens: 0 });
    });

    it('fail-mid sends an error event and [DONE] after N tokens on a 200 stream', async () => {
      const response = await postJson(`${sim.url}/chat/completions`, {
        model: `${MODEL}@fail-mid`,
        messages: QUESTION,
        stream: true,
        stream_options: { include_usage: true },
      });
      expect(response.status).toBe(200);
      const events = await readEvents(response);
      expect(events).toHaveLength(1 + 3 + 2);
      expect(JSON.parse(events[4] ?? '')).toEqual({
        error: { message: 'Internal server error', type: 'InternalServerError', param: null, code: 500 },
      });
      expect(events[5]).toBe('[DONE]');
      expect(sim.stats).toMatchObject({ chatRequests: 1, failed: 1, completionTokens: 3 });
    });

    it('fail-mid makes the SDK throw mid-stream; x-sim-fault-after moves the failure', async () => {
      const stream = await client.chat.completions.create(
        { model: MODEL, messages: QUESTION, stream: true },
        { headers: { 'x-sim-fault': 'fail-mid', 'x-sim-fault-after': '5' } },
      );
      const contents: string[] = [];
      const error = await (async () => {
        for await (const chunk of stream) contents.push(chunk.choices[0]?.delta.content ?? '');
      })().catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(OpenAI.APIError);
      expect(contents).toHaveLength(1 + 5);
    });

    it('fail-mid on a non-streaming request answers 500', async () => {
      const response = await postJson(`${sim.url}/chat/completions`, { model: `${MODEL}@fail-mid:2`, messages: QUESTION });
      expect(response.status).toBe(500);
      expect(sim.stats).toMatchObject({ failed: 1, completionTokens: 2 });
    });

    it('no-usage never sends usage, even when asked', async () => {
      const response = await postJson(
        `${sim.url}/chat/completions`,
        {
          messages: QUESTION,
          stream: true,
          stream_options: { include_usage: true, continuous_usage_stats: true },
        },
        { headers: { 'x-sim-fault': 'no-usage' } },
      );
      const events = await readEvents(response);
      const chunks = parseChunks(events);
      expect(events.at(-1)).toBe('[DONE]');
      expect(chunks.every((chunk) => chunk.usage === undefined && chunk.choices.length === 1)).toBe(true);
      expect(chunks.at(-1)?.choices[0]?.finish_reason).toBe('stop');
      expect(sim.stats.completed).toBe(1);
    });

    it('hang sends stream headers and then nothing until the client leaves', async () => {
      const controller = new AbortController();
      const response = await postJson(
        `${sim.url}/chat/completions`,
        { model: `${MODEL}@hang`, messages: QUESTION, stream: true },
        { signal: controller.signal },
      );
      expect(response.status).toBe(200);
      const reader = response.body?.getReader();
      const read = reader?.read();
      const first = await Promise.race([read, new Promise((resolve) => setTimeout(() => resolve('silence'), 150))]);
      expect(first).toBe('silence');
      expect(sim.stats).toMatchObject({ chatRequests: 1, aborted: 0 });
      controller.abort();
      await read?.catch(() => undefined);
      await waitFor(() => sim.stats.aborted === 1);
      expect(sim.stats.completionTokens).toBe(0);
    });

    it('hang:N streams N tokens first; a non-streaming hang never answers', async () => {
      const controller = new AbortController();
      const response = await postJson(
        `${sim.url}/chat/completions`,
        { model: `${MODEL}@hang:2`, messages: QUESTION, stream: true },
        { signal: controller.signal },
      );
      const reader = response.body?.getReader();
      if (reader === undefined) throw new Error('no body');
      const text = await readFrames(reader, 3);
      expect(text.split('\n\n').filter((frame) => frame.startsWith('data: '))).toHaveLength(3);
      controller.abort();
      await waitFor(() => sim.stats.aborted === 1);
      expect(sim.stats.completionTokens).toBe(2);

      const whole = await postJson(
        `${sim.url}/chat/completions`,
        { messages: QUESTION },
        { headers: { 'x-sim-fault': 'hang' }, signal: AbortSignal.timeout(100) },
      ).catch((caught: unknown) => caught);
      // fetch rejects with a DOMException from another realm than jest's Error.
      expect(whole).toMatchObject({ name: 'TimeoutError' });
      await waitFor(() => sim.stats.aborted === 2);
    });

    it('refuses an unknown fault header and treats an unknown suffix as an unknown model', async () => {
      const header = await postJson(
        `${sim.url}/chat/completions`,
        { messages: QUESTION },
        { headers: { 'x-sim-fault': 'explode' } },
      );
      expect(header.status).toBe(400);
      const suffix = await postJson(`${sim.url}/chat/completions`, { model: `${MODEL}@explode`, messages: QUESTION });
      expect(suffix.status).toBe(404);
      expect(sim.stats.chatRequests).toBe(0);
    });
  });

  describe('health and routing', () => {
    it('answers /health with an empty 200 and unknown routes like FastAPI', async () => {
      const health = await fetch(`${sim.origin}/health`);
      expect(health.status).toBe(200);
      expect(await health.text()).toBe('');
      const missing = await fetch(`${sim.url}/audio/transcriptions`, { method: 'POST' });
      expect(missing.status).toBe(404);
      expect(await missing.json()).toEqual({ detail: 'Not Found' });
    });
  });
});

describe('vLLM simulator with an API key', () => {
  let sim: Simulator;

  beforeAll(async () => {
    sim = await startSimulator({ apiKey: 'secret-key' });
  });

  afterAll(async () => {
    await sim.stop();
  });

  it('answers 401 {"error":"Unauthorized"} on /v1/* without the right bearer token', async () => {
    const wrong = await clientFor(sim, 'wrong-key')
      .models.list()
      .catch((caught: unknown) => caught);
    expect(wrong).toBeInstanceOf(OpenAI.AuthenticationError);

    const missing = await fetch(`${sim.url}/chat/completions`, { method: 'POST', body: '{}' });
    expect(missing.status).toBe(401);
    expect(await missing.json()).toEqual({ error: 'Unauthorized' });
    expect(sim.stats.chatRequests).toBe(0);
  });

  it('serves /v1/* with the key and leaves /tokenize and /health open', async () => {
    const completion = await clientFor(sim, 'secret-key').chat.completions.create({
      model: MODEL,
      messages: QUESTION,
    });
    expect(completion.usage?.prompt_tokens).toBe(17);
    expect((await postJson(`${sim.origin}/tokenize`, { messages: QUESTION })).status).toBe(200);
    expect((await fetch(`${sim.origin}/health`)).status).toBe(200);
  });
});

describe('vLLM simulator without /tokenize', () => {
  it('answers 404 there, like a server without the endpoint', async () => {
    const sim = await startSimulator({ tokenizeEndpoint: false });
    try {
      const response = await postJson(`${sim.origin}/tokenize`, { prompt: 'x' });
      expect(response.status).toBe(404);
    } finally {
      await sim.stop();
    }
  });
});

describe('vLLM simulator timing and client disconnects', () => {
  it('waits time-to-first-token, then the inter-token latency per token', async () => {
    const sim = await startSimulator({ timeToFirstTokenMs: 80, interTokenLatencyMs: 20 });
    try {
      const started = Date.now();
      const response = await postJson(`${sim.url}/chat/completions`, { messages: QUESTION, stream: true, max_tokens: 5 });
      const reader = response.body?.getReader();
      if (reader === undefined) throw new Error('no body');
      await readFrames(reader, 2);
      const firstToken = Date.now() - started;
      await readFrames(reader, 10);
      const total = Date.now() - started;
      expect(firstToken).toBeGreaterThanOrEqual(75);
      expect(total).toBeGreaterThanOrEqual(75 + 4 * 20 - 10);

      sim.setLatency({ timeToFirstTokenMs: 0, interTokenLatencyMs: 0 });
      const fastStart = Date.now();
      await (await postJson(`${sim.url}/chat/completions`, { messages: QUESTION, max_tokens: 40 })).json();
      expect(Date.now() - fastStart).toBeLessThan(75);
    } finally {
      await sim.stop();
    }
  });

  it('stops generating as soon as a streaming client goes away', async () => {
    const sim = await startSimulator({ interTokenLatencyMs: 2 });
    try {
      const controller = new AbortController();
      const response = await postJson(
        `${sim.url}/chat/completions`,
        { messages: QUESTION, stream: true, max_tokens: 2000, ignore_eos: true },
        { signal: controller.signal },
      );
      const reader = response.body?.getReader();
      if (reader === undefined) throw new Error('no body');
      await readFrames(reader, 5);
      controller.abort();
      await waitFor(() => sim.stats.aborted === 1);
      const generated = sim.stats.completionTokens;
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(sim.stats.completionTokens).toBe(generated);
      expect(generated).toBeLessThan(2000);
      expect(sim.stats).toMatchObject({ chatRequests: 1, completed: 0, aborted: 1, failed: 0 });
    } finally {
      await sim.stop();
    }
  });

  it('notices a disconnect even with zero latency', async () => {
    const sim = await startSimulator({ maxModelLen: 200_000 });
    try {
      const controller = new AbortController();
      const response = await postJson(
        `${sim.url}/chat/completions`,
        { messages: QUESTION, stream: true, max_tokens: 150_000, ignore_eos: true },
        { signal: controller.signal },
      );
      const reader = response.body?.getReader();
      if (reader === undefined) throw new Error('no body');
      await readFrames(reader, 2);
      controller.abort();
      await waitFor(() => sim.stats.aborted === 1);
      expect(sim.stats.completionTokens).toBeLessThan(150_000);
    } finally {
      await sim.stop();
    }
  });

  it('counts a non-streaming client that gives up as aborted', async () => {
    const sim = await startSimulator({ timeToFirstTokenMs: 1000 });
    try {
      const outcome = await postJson(
        `${sim.url}/chat/completions`,
        { messages: QUESTION },
        { signal: AbortSignal.timeout(50) },
      ).catch((caught: unknown) => caught);
      expect(outcome).toMatchObject({ name: 'TimeoutError' });
      await waitFor(() => sim.stats.aborted === 1);
      expect(sim.stats.completionTokens).toBe(0);
    } finally {
      await sim.stop();
    }
  });
});
