// What a user is charged is what the upstream (vLLM) reports, never the gateway's own guess:
// the simulator's tokenizer is deliberately unlike tiktoken's cl100k_base, so a charge computed
// with tiktoken would show here.
import { ChatDocument, ChatStreamDocument, MyUsageDocument, UpdateUserDocument } from '../generated/graphql';
import { startWithAdmin, type TestGateway } from '../helpers/server';
import { createUser } from '../helpers/client';
import { ledger, usageRecords } from '../helpers/database';
import { simulatorPromptTokens, tiktokenCount } from '../helpers/tokens';

// Three long words: 3 tokens for the simulator, 32 for tiktoken.
const LONG_WORDS = 'Supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis';
// 64 dots: 64 tokens for the simulator, 1 for tiktoken.
const DOTS = '.'.repeat(64);

function simulatorTokensSince(gateway: TestGateway, before: { promptTokens: number; completionTokens: number }): { prompt: number; completion: number } {
  return {
    prompt: gateway.simulator.stats.promptTokens - before.promptTokens,
    completion: gateway.simulator.stats.completionTokens - before.completionTokens,
  };
}

describe('charging what vLLM reports', () => {
  let gateway: TestGateway;
  let admin: string;

  beforeAll(async () => {
    ({ gateway, admin: { token: admin } } = await startWithAdmin());
  });
  afterAll(() => gateway.stop());

  it('charges the simulator-reported usage of a chat, not a tiktoken count', async () => {
    const user = await createUser(gateway, admin, { tokenLimit: 10_000 });
    const messages = [{ role: 'USER' as const, content: LONG_WORDS }];
    const expectedPrompt = simulatorPromptTokens(messages);
    expect(expectedPrompt).toBe(11);
    expect(tiktokenCount(LONG_WORDS)).toBeGreaterThan(20); // the two tokenizers really disagree
    const before = { ...gateway.simulator.stats };

    const result = await gateway.gql(ChatDocument, { input: { messages } }, user.token);

    expect(result.errors).toBeUndefined();
    const chat = result.data!.chat;
    const seen = simulatorTokensSince(gateway, before);
    expect(chat.usage).toEqual({ promptTokens: expectedPrompt, completionTokens: seen.completion, totalTokens: expectedPrompt + seen.completion });
    expect(seen.prompt).toBe(expectedPrompt);
    const [record, ...others] = await usageRecords(gateway.databaseUrl, user.id);
    expect(others).toHaveLength(0);
    expect(record).toMatchObject({
      request_id: chat.id,
      prompt_tokens: expectedPrompt,
      completion_tokens: seen.completion,
      total_tokens: expectedPrompt + seen.completion,
      charged_tokens: expectedPrompt + seen.completion,
      usage_source: 'reported',
      prompt_count_source: 'tokenize',
      status: 'completed',
    });
    const me = await gateway.gql(MyUsageDocument, {}, user.token);
    expect(me.data?.me.usage).toMatchObject({ used: expectedPrompt + seen.completion, reserved: 0, remaining: 10_000 - expectedPrompt - seen.completion });
  });

  it('ends chatStream with a chunk whose usage is the usage record', async () => {
    const user = await createUser(gateway, admin, { tokenLimit: 10_000 });
    const messages = [{ role: 'USER' as const, content: `${LONG_WORDS} ${DOTS}` }];
    const before = { ...gateway.simulator.stats };

    const outcome = await gateway.ws(user.token).collect(ChatStreamDocument, { input: { messages } });

    expect(outcome.error).toBeNull();
    const chunks = outcome.events.map((event) => event.chatStream);
    const last = chunks.at(-1)!;
    // usage only on the last chunk, which ends the answer
    expect(chunks.slice(0, -1).every((chunk) => chunk.usage == null && chunk.finishReason == null)).toBe(true);
    expect(last.finishReason).toBe('stop');
    const seen = simulatorTokensSince(gateway, before);
    expect(last.usage).toEqual({ promptTokens: simulatorPromptTokens(messages), completionTokens: seen.completion, totalTokens: simulatorPromptTokens(messages) + seen.completion });
    const records = await usageRecords(gateway.databaseUrl, user.id);
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({
      request_id: last.id,
      prompt_tokens: last.usage!.promptTokens,
      completion_tokens: last.usage!.completionTokens,
      total_tokens: last.usage!.totalTokens,
      charged_tokens: last.usage!.totalTokens,
      usage_source: 'reported',
      status: 'completed',
    });
    expect(chunks.every((chunk) => chunk.id === last.id)).toBe(true);
    expect(await ledger(gateway.databaseUrl, user.id)).toEqual({ used: last.usage!.totalTokens, reserved: 0, reservations: 0 });
  });

  it('caps max_tokens to what remains when the client gives none, instead of refusing', async () => {
    const user = await createUser(gateway, admin, { tokenLimit: 10_000 });
    const first = await gateway.gql(ChatDocument, { input: { messages: [{ role: 'USER', content: 'Warm up.' }] } }, user.token);
    expect(first.errors).toBeUndefined();
    const spent = first.data!.chat.usage.totalTokens;
    const messages = [{ role: 'USER' as const, content: 'Tell me a long story about the sea.' }];
    const prompt = simulatorPromptTokens(messages);
    // Room for the prompt and 5 tokens of answer: far less than the answer the model would give.
    expect((await gateway.gql(UpdateUserDocument, { id: user.id, input: { tokenLimit: spent + prompt + 5 } }, admin)).errors).toBeUndefined();
    const before = { ...gateway.simulator.stats };

    const result = await gateway.gql(ChatDocument, { input: { messages } }, user.token);

    expect(result.errors).toBeUndefined();
    expect(result.data!.chat.finishReason).toBe('length');
    expect(result.data!.chat.usage).toEqual({ promptTokens: prompt, completionTokens: 5, totalTokens: prompt + 5 });
    expect(gateway.simulator.stats.chatRequests - before.chatRequests).toBe(1);
    const me = await gateway.gql(MyUsageDocument, {}, user.token);
    expect(me.data?.me.usage).toMatchObject({ used: spent + prompt + 5, remaining: 0, reserved: 0 });

    // Now nothing remains: the next one is refused and never reaches the simulator.
    const refused = await gateway.gql(ChatDocument, { input: { messages } }, user.token);
    expect(refused.errors?.[0]?.extensions?.code).toBe('QUOTA_EXCEEDED');
    expect(gateway.simulator.stats.chatRequests - before.chatRequests).toBe(1);
  });

  it('caps a stream the same way', async () => {
    const messages = [{ role: 'USER' as const, content: 'Tell me a long story about the sea.' }];
    const prompt = simulatorPromptTokens(messages);
    const user = await createUser(gateway, admin, { tokenLimit: prompt + 4 });

    const outcome = await gateway.ws(user.token).collect(ChatStreamDocument, { input: { messages } });

    expect(outcome.error).toBeNull();
    const last = outcome.events.at(-1)!.chatStream;
    expect(last.finishReason).toBe('length');
    expect(last.usage).toEqual({ promptTokens: prompt, completionTokens: 4, totalTokens: prompt + 4 });
    expect(outcome.events.filter((event) => event.chatStream.delta !== '')).toHaveLength(4);
    expect(await ledger(gateway.databaseUrl, user.id)).toEqual({ used: prompt + 4, reserved: 0, reservations: 0 });
  });
});

describe('charging what vLLM reports when it has no /tokenize', () => {
  let gateway: TestGateway;
  let admin: string;

  beforeAll(async () => {
    ({ gateway, admin: { token: admin } } = await startWithAdmin({ simulator: { tokenizeEndpoint: false } }));
  });
  afterAll(() => gateway.stop());

  it.each([
    // tiktoken over-counts this prompt: the reservation is generous, the charge is not.
    ['tiktoken over-counts', LONG_WORDS, null],
    // tiktoken under-counts this prompt ten times over: the charge must still be what vLLM reported.
    ['tiktoken under-counts', DOTS, 8],
  ])('%s: the prompt count falls back to tiktoken, the charge is what vLLM reported', async (_label, content, maxTokens) => {
    const user = await createUser(gateway, admin, { tokenLimit: 10_000 });
    const messages = [{ role: 'USER' as const, content }];
    const before = { ...gateway.simulator.stats };

    const result = await gateway.gql(ChatDocument, { input: { messages, maxTokens } }, user.token);

    expect(result.errors).toBeUndefined();
    const chat = result.data!.chat;
    const seen = simulatorTokensSince(gateway, before);
    expect(seen.prompt).toBe(simulatorPromptTokens(messages));
    expect(chat.usage).toEqual({ promptTokens: seen.prompt, completionTokens: seen.completion, totalTokens: seen.prompt + seen.completion });
    const records = await usageRecords(gateway.databaseUrl, user.id);
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({
      request_id: chat.id,
      prompt_tokens: seen.prompt,
      completion_tokens: seen.completion,
      charged_tokens: seen.prompt + seen.completion,
      usage_source: 'reported',
      prompt_count_source: 'tiktoken',
    });
    const me = await gateway.gql(MyUsageDocument, {}, user.token);
    expect(me.data?.me.usage).toMatchObject({ used: seen.prompt + seen.completion, reserved: 0 });
    expect((await ledger(gateway.databaseUrl, user.id)).reservations).toBe(0);
  });

  it('never charges past the limit when the estimate was too low', async () => {
    const messages = [{ role: 'USER' as const, content: DOTS }];
    // tiktoken's guess (with its margin) fits in the limit; what vLLM reports does not.
    const limit = 40;
    const user = await createUser(gateway, admin, { tokenLimit: limit });

    const result = await gateway.gql(ChatDocument, { input: { messages, maxTokens: 8 } }, user.token);

    expect(result.errors).toBeUndefined();
    const records = await usageRecords(gateway.databaseUrl, user.id);
    expect(records).toHaveLength(1);
    expect(records[0].total_tokens).toBe(simulatorPromptTokens(messages) + 8);
    // All that fit is charged, and not one token more.
    expect(records[0].charged_tokens).toBe(limit);
    const me = await gateway.gql(MyUsageDocument, {}, user.token);
    expect(me.data?.me.usage).toMatchObject({ used: limit, remaining: 0, reserved: 0 });
  });
});
