// A plain chat with max_tokens is reserved with an upper bound of its prompt (UTF-8 bytes + the
// template's overhead, probed per model with /tokenize) instead of a /tokenize call; the exact
// count runs only when it decides something. What is charged is still what vLLM reports.
import { request as httpRequest } from 'node:http';
import OpenAI, { type BadRequestError, type RateLimitError } from 'openai';
import type { ChatCompletionMessageParam } from 'openai/resources/chat/completions';
import pino from 'pino';
import { boundInputsOf, PromptBounds } from '../../src/chat/prompt-bound';
import type { ChatMessage, UpstreamChatParams } from '../../src/chat/chat-request';
import { Upstream } from '../../src/chat/upstream';
import { startSimulator, type Simulator } from '../../src/simulator';
import { eventually, until, usageOf } from '../helpers/client';
import { ledger, usageRecords, type UsageRecordRow } from '../helpers/database';
import { startWithAdmin, type TestGateway } from '../helpers/server';
import { simulatorPromptTokens } from '../helpers/tokens';
import { openaiGateway, rejection, sdkUser } from '../openai/support';

const MODEL = 'sim-llama-3-8b';
/** A model whose template wraps each non-empty content in two more tokens than a count of empty turns shows. */
const TAGGED = 'sim-tagged';
const CONTEXT = 1024;
// One token for the simulator, 35 bytes: a bound far above the count.
const LONG_WORD = 'Supercalifragilisticexpialidocious ';
// Punctuation is a token a byte: a bound with no room above the count.
const DENSE = '!?'.repeat(4);

/** The prompt as the simulator counts it, asked of its /tokenize directly (not through the gateway). */
async function exactCount(simulator: Simulator, model: string, messages: readonly ChatMessage[]): Promise<number> {
  const response = await fetch(`${simulator.origin}/tokenize`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages }),
  });
  return ((await response.json()) as { count: number }).count;
}

async function recordsOf(gateway: TestGateway, userId: string, count: number): Promise<UsageRecordRow[]> {
  return eventually(async () => {
    const rows = await usageRecords(gateway.databaseUrl, userId);
    return rows.length >= count ? rows : undefined;
  }, 5_000, `${count} usage records`);
}

describe('prompt bounds: a chat with max_tokens reserved without /tokenize', () => {
  const env = openaiGateway({ simulator: { models: [MODEL], taggedContentModels: [TAGGED], maxModelLen: CONTEXT } });
  const stats = (): Simulator['stats'] => ({ ...env.gateway.simulator.stats });

  /**
   * Sends chats with max_tokens until one reaches the simulator without a /tokenize call: the
   * first is counted exactly and has the model's template probed in the background.
   */
  async function calibrate(client: OpenAI, model: string): Promise<void> {
    await until(
      async () => {
        const before = stats().tokenizeRequests;
        await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Hello there, how are you?' }], max_tokens: 1 });
        return stats().tokenizeRequests === before;
      },
      5_000,
      `a chat of ${model} without /tokenize`,
    );
  }

  beforeAll(async () => {
    const { client } = await sdkUser(env, null);
    await calibrate(client, MODEL);
  });

  it('asks no /tokenize for a chat, whole or streamed, and charges exactly the prompt vLLM reports', async () => {
    const { user, client } = await sdkUser(env);
    const messages: ChatCompletionMessageParam[] = [
      { role: 'system', content: 'You answer briefly.' },
      { role: 'user', content: 'Count to three, please.' },
    ];
    const exact = await exactCount(env.gateway.simulator, MODEL, messages as ChatMessage[]);
    const before = stats();

    const whole = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 8 });
    const chunks = [];
    for await (const chunk of await client.chat.completions.create({ model: MODEL, messages, max_tokens: 8, stream: true, stream_options: { include_usage: true } })) {
      chunks.push(chunk);
    }

    const after = stats();
    expect(after.chatRequests - before.chatRequests).toBe(2);
    expect(after.tokenizeRequests).toBe(before.tokenizeRequests);
    const streamed = chunks.at(-1)?.usage;
    expect(whole.usage?.prompt_tokens).toBe(exact);
    expect(streamed?.prompt_tokens).toBe(exact);
    const rows = await recordsOf(env.gateway, user.id, 2);
    expect(rows.map((row) => [row.prompt_tokens, row.completion_tokens, row.prompt_count_source, row.usage_source])).toEqual([
      [exact, whole.usage?.completion_tokens, 'bound', 'reported'],
      [exact, streamed?.completion_tokens, 'bound', 'reported'],
    ]);
    const charged = (whole.usage?.total_tokens ?? 0) + (streamed?.total_tokens ?? 0);
    expect(await ledger(env.gateway.databaseUrl, user.id)).toEqual({ used: charged, reserved: 0, reservations: 0 });
  });

  it('counts a chat without max_tokens exactly: its answer is capped to the context left by that count', async () => {
    const { client } = await sdkUser(env);
    const before = stats();
    const answer = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Hello there.' }] });
    expect(answer.usage?.prompt_tokens).toBe(simulatorPromptTokens([{ content: 'Hello there.' }]));
    expect(stats().tokenizeRequests - before.tokenizeRequests).toBe(1);
  });

  it('admits a chat whose bound exceeds the quota but whose exact count fits; refuses, by its exact count, one that does not fit', async () => {
    const content = LONG_WORD.repeat(4).trim();
    const messages: ChatCompletionMessageParam[] = [{ role: 'user', content }];
    const exact = simulatorPromptTokens([{ content }]);
    const maxTokens = 10;
    expect(Buffer.byteLength(content)).toBeGreaterThan(exact + maxTokens);
    const fits = await sdkUser(env, exact + maxTokens);
    const before = stats();

    const answer = await fits.client.chat.completions.create({ model: MODEL, messages, max_tokens: maxTokens });

    expect(answer.usage?.prompt_tokens).toBe(exact);
    expect(stats().tokenizeRequests - before.tokenizeRequests).toBe(1);
    const [record] = await recordsOf(env.gateway, fits.user.id, 1);
    expect(record).toMatchObject({ prompt_tokens: exact, prompt_count_source: 'tokenize', charged_tokens: answer.usage?.total_tokens });
    expect(await ledger(env.gateway.databaseUrl, fits.user.id)).toEqual({ used: answer.usage?.total_tokens, reserved: 0, reservations: 0 });

    const short = await sdkUser(env, exact + maxTokens - 1);
    const chatsBefore = stats().chatRequests;
    const refused = await rejection(() => short.client.chat.completions.create({ model: MODEL, messages, max_tokens: maxTokens }));
    expect(refused).toBeInstanceOf(OpenAI.RateLimitError);
    expect((refused as RateLimitError).code).toBe('insufficient_quota');
    expect((refused as RateLimitError).message).toContain(`needs ${exact + maxTokens} tokens`);
    expect(stats().chatRequests).toBe(chatsBefore);
    expect(await ledger(env.gateway.databaseUrl, short.user.id)).toEqual({ used: 0, reserved: 0, reservations: 0 });
    expect(await usageRecords(env.gateway.databaseUrl, short.user.id)).toEqual([]);
  });

  it('counts a prompt whose bound would not fit the context exactly: admitted when it fits, refused when it does not', async () => {
    const { user, client } = await sdkUser(env);
    const content = LONG_WORD.repeat(40).trim();
    const exact = simulatorPromptTokens([{ content }]);
    const maxTokens = 100;
    expect(Buffer.byteLength(content) + maxTokens).toBeGreaterThan(CONTEXT);
    expect(exact + maxTokens).toBeLessThan(CONTEXT);
    const before = stats();

    const answer = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content }], max_tokens: maxTokens });

    expect(answer.usage?.prompt_tokens).toBe(exact);
    expect(stats().tokenizeRequests - before.tokenizeRequests).toBe(1);
    const [record] = await recordsOf(env.gateway, user.id, 1);
    expect(record).toMatchObject({ prompt_tokens: exact, prompt_count_source: 'tokenize' });

    const tooLong = '.'.repeat(CONTEXT - 60);
    const chatsBefore = stats().chatRequests;
    const refused = await rejection(() => client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: tooLong }], max_tokens: maxTokens }));
    expect(refused).toBeInstanceOf(OpenAI.BadRequestError);
    expect((refused as BadRequestError).message).toContain(`${simulatorPromptTokens([{ content: tooLong }])} prompt tokens exceeds the context length`);
    expect(stats().chatRequests).toBe(chatsBefore);
  });

  it('never overspends a quota under 20 concurrent chats', async () => {
    const limit = 200;
    const { user, client } = await sdkUser(env, limit);
    const messages: ChatCompletionMessageParam[] = [{ role: 'user', content: 'Count to three, please.' }];

    const outcomes = await Promise.allSettled(Array.from({ length: 20 }, () => client.chat.completions.create({ model: MODEL, messages, max_tokens: 20 })));

    const answered = outcomes.flatMap((outcome) => (outcome.status === 'fulfilled' ? [outcome.value] : []));
    const refusals = outcomes.flatMap((outcome) => (outcome.status === 'rejected' ? [outcome.reason as unknown] : []));
    expect(answered.length).toBeGreaterThan(0);
    // Each answer takes at least its prompt and a token: 20 of them cannot fit.
    expect(refusals.length).toBeGreaterThan(0);
    expect(refusals.every((refusal) => refusal instanceof OpenAI.RateLimitError && refusal.code === 'insufficient_quota')).toBe(true);
    const charged = answered.reduce((sum, answer) => sum + (answer.usage?.total_tokens ?? 0), 0);
    const rows = await recordsOf(env.gateway, user.id, answered.length);
    expect(rows).toHaveLength(answered.length);
    expect(rows.every((row) => row.prompt_tokens === simulatorPromptTokens([{ content: 'Count to three, please.' }]))).toBe(true);
    expect(await ledger(env.gateway.databaseUrl, user.id)).toEqual({ used: charged, reserved: 0, reservations: 0 });
    expect(charged).toBeLessThanOrEqual(limit);
    expect((await usageOf(env.gateway, user.token)).used).toBe(charged);
  });

  it('charges a whole answer its client left before vLLM reported anything the exact prompt, not the bound', async () => {
    const { user, key } = await sdkUser(env);
    const sim = env.gateway.simulator;
    sim.setLatency({ timeToFirstTokenMs: 5_000 });
    const content = 'Take your time, please.';
    const exact = simulatorPromptTokens([{ content }]);
    const before = stats();
    const body = JSON.stringify({ model: MODEL, messages: [{ role: 'user', content }], max_tokens: 10 });
    const req = httpRequest(`${env.gateway.server.origin}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key.secret}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    });
    req.on('error', () => undefined);
    req.end(body);
    await until(() => sim.stats.chatRequests > before.chatRequests, 5_000, 'the request to reach the simulator');
    expect(sim.stats.tokenizeRequests).toBe(before.tokenizeRequests);
    req.destroy();

    const [row] = await recordsOf(env.gateway, user.id, 1);
    expect(row).toMatchObject({ status: 'aborted', usage_source: 'estimated', prompt_count_source: 'bound', completion_tokens: 0, prompt_tokens: exact });
    // Counted once the client had gone, for the charge.
    expect(sim.stats.tokenizeRequests - before.tokenizeRequests).toBe(1);
    expect(await ledger(env.gateway.databaseUrl, user.id)).toEqual({ used: exact, reserved: 0, reservations: 0 });
  });

  it('charges a stream cut before any usage the exact prompt, not the bound', async () => {
    const { user, client } = await sdkUser(env);
    const sim = env.gateway.simulator;
    sim.setFault('no-usage');
    sim.setLatency({ interTokenLatencyMs: 40 });
    const content = 'Tell me about the sea, please.';
    const stream = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content }], max_tokens: 30, stream: true });
    let deltas = 0;
    for await (const chunk of stream) {
      if ((chunk.choices[0]?.delta.content ?? '') !== '') deltas += 1;
      if (deltas === 3) break;
    }

    const [row] = await recordsOf(env.gateway, user.id, 1);
    expect(row).toMatchObject({ status: 'aborted', usage_source: 'estimated', prompt_count_source: 'bound', prompt_tokens: simulatorPromptTokens([{ content }]) });
    expect(row.completion_tokens).toBeGreaterThanOrEqual(3);
    expect(await ledger(env.gateway.databaseUrl, user.id)).toEqual({ used: row.charged_tokens, reserved: 0, reservations: 0 });
  });

  it("raises a model's calibration once a prompt takes more than its bound: a chat that does not fit is then refused", async () => {
    const { client } = await sdkUser(env, null);
    await calibrate(client, TAGGED);
    const messages: ChatCompletionMessageParam[] = [{ role: 'user', content: DENSE }];
    const exact = await exactCount(env.gateway.simulator, TAGGED, messages as ChatMessage[]);
    const maxTokens = 5;
    const limit = exact + maxTokens - 1;

    // The template is larger than its probe of empty turns showed: this bound is below the
    // prompt, and the chat is let through, but charged no more than the quota holds.
    const first = await sdkUser(env, limit);
    const before = stats();
    const answer = await first.client.chat.completions.create({ model: TAGGED, messages, max_tokens: maxTokens });
    expect(stats().tokenizeRequests).toBe(before.tokenizeRequests);
    expect(answer.usage?.prompt_tokens).toBe(exact);
    const [record] = await recordsOf(env.gateway, first.user.id, 1);
    expect(record).toMatchObject({ prompt_tokens: exact, prompt_count_source: 'bound' });
    expect(await ledger(env.gateway.databaseUrl, first.user.id)).toEqual({ used: record.charged_tokens, reserved: 0, reservations: 0 });
    expect(record.charged_tokens).toBeLessThanOrEqual(limit);

    // vLLM's report raised the calibration: the same chat's bound now covers the prompt, so it is counted and refused.
    const second = await sdkUser(env, limit);
    const refused = await rejection(() => second.client.chat.completions.create({ model: TAGGED, messages, max_tokens: maxTokens }));
    expect(refused).toBeInstanceOf(OpenAI.RateLimitError);
    expect((refused as RateLimitError).message).toContain(`needs ${exact + maxTokens} tokens`);
    expect(await ledger(env.gateway.databaseUrl, second.user.id)).toEqual({ used: 0, reserved: 0, reservations: 0 });

    // The raise is per message, so a longer conversation of the same template is covered too.
    const conversation: ChatCompletionMessageParam[] = [
      { role: 'user', content: DENSE },
      { role: 'assistant', content: DENSE },
      { role: 'user', content: DENSE },
    ];
    const longer = await exactCount(env.gateway.simulator, TAGGED, conversation as ChatMessage[]);
    const third = await sdkUser(env, longer + maxTokens - 1);
    const alsoRefused = await rejection(() => third.client.chat.completions.create({ model: TAGGED, messages: conversation, max_tokens: maxTokens }));
    expect(alsoRefused).toBeInstanceOf(OpenAI.RateLimitError);
    expect((alsoRefused as RateLimitError).message).toContain(`needs ${longer + maxTokens} tokens`);
  });
});

describe('PROMPT_COUNT=exact', () => {
  let gateway: TestGateway;
  let admin: string;

  beforeAll(async () => {
    ({ gateway, admin: { token: admin } } = await startWithAdmin({ env: { PROMPT_COUNT: 'exact' } }));
  });
  afterAll(() => gateway.stop());

  it('counts every chat with /tokenize before it is reserved, max_tokens or not', async () => {
    const { user, client } = await sdkUser({ gateway, admin });
    const before = gateway.simulator.stats.tokenizeRequests;
    for (let i = 0; i < 5; i += 1) {
      await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: `Question ${i}?` }], max_tokens: 3 });
    }
    expect(gateway.simulator.stats.tokenizeRequests - before).toBe(5);
    const rows = await recordsOf(gateway, user.id, 5);
    expect(rows.every((row) => row.prompt_count_source === 'tokenize')).toBe(true);
  });
});

describe('PromptBounds against the simulator\'s /tokenize', () => {
  let simulator: Simulator;
  let upstream: Upstream;
  const bounds = new PromptBounds(pino({ level: 'silent' }));

  beforeAll(async () => {
    simulator = await startSimulator({ models: [MODEL] });
    upstream = new Upstream({ baseUrl: simulator.url, apiKey: null, timeoutMs: 5_000, log: pino({ level: 'silent' }) });
    bounds.calibrate(MODEL, upstream);
    await eventually(() => bounds.bound(MODEL, { bytes: 0, messages: 1 }) ?? undefined, 5_000, 'the calibration');
  });
  afterAll(async () => {
    await upstream.close();
    await simulator.stop();
  });

  const body = (messages: ChatMessage[], extra: Record<string, unknown> = {}): UpstreamChatParams => ({ model: MODEL, messages, ...extra });

  const CONTENTS = [
    '',
    ' ',
    'a',
    '.',
    'Hello, world!',
    '!!!???...,,,;;;',
    'naïve café, crème brûlée',
    '日本語のテキストです。',
    '👩‍👩‍👧‍👦🎉🚀 emoji',
    'ŝ̷̨̛̳ṭ̶̩̉ṙ̴̖a̸̧͝ñ̷g̷e̸ zalgo',
    '\n\t  \r\n',
    '<|eot_id|><|start_header_id|>user<|end_header_id|>',
    'word '.repeat(300),
    '{"json": [1, 2, 3], "nested": {"a": null}}',
  ];

  it('is at least the exact count for a spread of contents, alone and in conversations of every probed role', async () => {
    const conversations: ChatMessage[][] = [
      ...CONTENTS.map((content) => [{ role: 'user', content }]),
      ...CONTENTS.map((content) => [{ role: 'system', content }, { role: 'user', content }]),
      CONTENTS.map((content, index) => ({ role: ['system', 'user', 'assistant'][index % 3], content })),
      [{ role: 'user', content: [{ type: 'text', text: 'part one' }, { type: 'text', text: '' }, { type: 'text', text: '😀' }] }],
      [{ role: 'system', content: 'a' }, { role: 'system', content: 'b' }, { role: 'assistant', content: '' }, { role: 'assistant', content: '' }],
    ];
    for (const messages of conversations) {
      const inputs = boundInputsOf(body(messages));
      expect(inputs).not.toBeNull();
      const bound = bounds.bound(MODEL, inputs!);
      const exact = await upstream.tokenize({ model: MODEL, messages });
      expect({ messages, fits: bound! >= exact! }).toEqual({ messages, fits: true });
    }
  });

  it('is the exact count for empty turns: the probe measured the template, not more', async () => {
    for (const roles of [['user'], ['system', 'user'], ['user', 'assistant', 'user', 'assistant']]) {
      const messages = roles.map((role) => ({ role, content: '' }));
      expect(bounds.bound(MODEL, boundInputsOf(body(messages))!)).toBe(await upstream.tokenize({ model: MODEL, messages }));
    }
  });

  it('stands for no chat with anything else the template renders', () => {
    const user = { role: 'user', content: 'Hi' };
    expect(boundInputsOf(body([user], { tools: [{ type: 'function', function: { name: 'f', parameters: {} } }] }))).toBeNull();
    expect(boundInputsOf(body([user], { chat_template_kwargs: { enable_thinking: false } }))).toBeNull();
    expect(boundInputsOf(body([user], { reasoning_effort: 'none' }))).toBeNull();
    expect(boundInputsOf(body([user], { add_generation_prompt: false }))).toBeNull();
    expect(boundInputsOf(body([user], { chat_template: '{{ messages }}' }))).toBeNull();
    expect(boundInputsOf(body([{ role: 'user', content: 'Hi', name: 'ann' }]))).toBeNull();
    expect(boundInputsOf(body([{ role: 'tool', content: '{}', tool_call_id: 'call-1' }]))).toBeNull();
    expect(boundInputsOf(body([{ role: 'assistant', content: null, tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: '{}' } }] }]))).toBeNull();
    expect(boundInputsOf(body([{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:' } }] }]))).toBeNull();
    expect(boundInputsOf(body([{ role: 'user', content: [{ type: 'text', text: 'Hi', cache_control: {} }] }]))).toBeNull();
    expect(boundInputsOf(body([user], { temperature: 0.5, top_p: 0.9, seed: 1 }))).toEqual({ bytes: 2, messages: 1 });
  });
});
