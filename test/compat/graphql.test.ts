import { request as httpRequest } from 'node:http';
import { print } from 'graphql';
import { CachedUsageDocument, ToolChatDocument, ToolChatStreamDocument, type ChatMessageInput, type ToolChatStreamSubscription } from '../generated/graphql';
import { createUser, dataOf, eventually, onlyError, until, type SignedIn } from '../helpers/client';
import { ledger, usageRecords } from '../helpers/database';
import { resetSimulator, startWithAdmin, type TestGateway } from '../helpers/server';
import { simulatorPromptTokens } from '../helpers/tokens';

const THINKER = 'sim-thinker';
const WEATHER = {
  type: 'function',
  function: {
    name: 'get_weather',
    parameters: { type: 'object', properties: { city: { type: 'string' }, days: { type: 'integer', minimum: 1, maximum: 3 } }, required: ['city', 'days'] },
  },
};
const ASK: ChatMessageInput[] = [{ role: 'USER', content: 'Weather in Oslo, please: use get_weather.' }];

describe('GraphQL chat with tools, reasoning and cached tokens', () => {
  let gateway: TestGateway;
  let admin: string;
  let user: SignedIn;

  beforeAll(async () => {
    const started = await startWithAdmin({ simulator: { reasoningModels: [THINKER], enablePromptTokensDetails: true } });
    gateway = started.gateway;
    admin = started.admin.token;
    user = await createUser(gateway, admin, { tokenLimit: 100_000 });
  });
  afterEach(() => resetSimulator(gateway.simulator));
  afterAll(() => gateway.stop());

  it('runs a whole tool-calling loop over HTTP: toolCalls, a TOOL message answering them, the answer', async () => {
    const called = dataOf(await gateway.gql(ToolChatDocument, { input: { messages: ASK, tools: [WEATHER] } }, user.token), 'chat with tools').chat;
    expect(called.finishReason).toBe('tool_calls');
    expect(called.content).toBe('');
    const [call] = called.toolCalls;
    expect(call.name).toBe('get_weather');
    const args = JSON.parse(call.arguments) as { city: unknown; days: unknown };
    expect(typeof args.city).toBe('string');
    expect([1, 2, 3]).toContain(args.days);

    const messages: ChatMessageInput[] = [
      ...ASK,
      { role: 'ASSISTANT', content: null, toolCalls: called.toolCalls.map(({ id, name, arguments: argumentsJson }) => ({ id, name, arguments: argumentsJson })) },
      { role: 'TOOL', toolCallId: call.id, content: '{"forecast": "snow"}' },
    ];
    const answered = dataOf(await gateway.gql(ToolChatDocument, { input: { messages, tools: [WEATHER] } }, user.token), 'the answer').chat;
    expect(answered.finishReason).toBe('stop');
    expect(answered.toolCalls).toEqual([]);
    expect(answered.content.length).toBeGreaterThan(0);
    expect(answered.usage.promptTokens).toBeGreaterThan(called.usage.promptTokens);

    const rows = await usageRecords(gateway.databaseUrl, user.id);
    expect(rows.map((row) => [row.interface, row.prompt_tokens, row.prompt_count_source])).toEqual([
      ['graphql', called.usage.promptTokens, 'tokenize'],
      ['graphql', answered.usage.promptTokens, 'tokenize'],
    ]);
  });

  it('refuses a TOOL message without toolCallId, and tools that are not objects, before anything is sent', async () => {
    const before = gateway.simulator.stats.tokenizeRequests;
    const noId = await gateway.gql(ToolChatDocument, { input: { messages: [...ASK, { role: 'TOOL', content: 'done' }] } }, user.token);
    expect(onlyError(noId, 'BAD_USER_INPUT').extensions?.field).toBe('messages');
    const badTools = await gateway.gql(ToolChatDocument, { input: { messages: ASK, tools: ['get_weather'] } }, user.token);
    expect(onlyError(badTools, 'BAD_USER_INPUT').extensions?.field).toBe('tools');
    expect(gateway.simulator.stats.tokenizeRequests).toBe(before);
  });

  it('streams tool-call deltas over graphql-ws: a header with id and name, then argument pieces, then the usage', async () => {
    const whole = dataOf(await gateway.gql(ToolChatDocument, { input: { messages: ASK, tools: [WEATHER], seed: 4 } }, user.token), 'whole').chat;
    const { events, error } = await gateway.ws(user.token).collect(ToolChatStreamDocument, { input: { messages: ASK, tools: [WEATHER], seed: 4 } });
    expect(error).toBeNull();
    const chunks = events.map((event: ToolChatStreamSubscription) => event.chatStream);
    const deltas = chunks.flatMap((chunk) => chunk.toolCalls ?? []);
    expect(deltas[0]).toMatchObject({ index: 0, name: 'get_weather', arguments: '' });
    expect(deltas[0].id).toMatch(/^chatcmpl-tool-/);
    expect(deltas.map((delta) => delta.arguments ?? '').join('')).toBe(whole.toolCalls[0].arguments);
    const last = chunks.at(-1);
    expect(last?.finishReason).toBe('tool_calls');
    expect(last?.usage?.completionTokens).toBe(whole.usage.completionTokens);
  });

  it('streams a reasoning model\'s thinking as reasoning, then its content', async () => {
    const input = { model: THINKER, messages: [{ role: 'USER' as const, content: 'Ponder.' }] };
    const whole = dataOf(await gateway.gql(ToolChatDocument, { input }, user.token), 'whole').chat;
    expect(whole.reasoning?.length ?? 0).toBeGreaterThan(0);
    const { events } = await gateway.ws(user.token).collect(ToolChatStreamDocument, { input });
    const chunks = events.map((event) => event.chatStream);
    expect(chunks.map((chunk) => chunk.reasoning ?? '').join('')).toBe(whole.reasoning);
    expect(chunks.map((chunk) => chunk.delta).join('')).toBe(whole.content);
  });

  it('JSON mode through responseFormat', async () => {
    const responseFormat = { type: 'json_schema', json_schema: { name: 'point', schema: { type: 'object', properties: { x: { type: 'integer' }, y: { type: 'integer' } }, required: ['x', 'y'] } } };
    const answer = dataOf(await gateway.gql(ToolChatDocument, { input: { messages: ASK, responseFormat } }, user.token), 'json').chat;
    const point = JSON.parse(answer.content) as { x: unknown; y: unknown };
    expect(Number.isInteger(point.x) && Number.isInteger(point.y)).toBe(true);
  });

  it('a chat whose HTTP client hangs up aborts upstream at once and is charged its prompt, marked aborted', async () => {
    const fresh = await createUser(gateway, admin, { tokenLimit: 10_000 });
    const sim = gateway.simulator;
    sim.setLatency({ timeToFirstTokenMs: 5_000 });
    const before = { ...sim.stats };
    const body = JSON.stringify({ query: print(ToolChatDocument), variables: { input: { messages: [{ role: 'USER', content: 'Slowly.' }] } } });
    const req = httpRequest(gateway.server.url, {
      method: 'POST',
      headers: { authorization: `Bearer ${fresh.token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    });
    req.on('error', () => undefined);
    req.end(body);
    await until(() => sim.stats.chatRequests > before.chatRequests, 5_000, 'the chat to reach the simulator');
    req.destroy();
    await until(() => sim.stats.aborted > before.aborted, 2_000, 'the simulator to see the abort');
    const [row] = await eventually(async () => {
      const rows = await usageRecords(gateway.databaseUrl, fresh.id);
      return rows.length > 0 ? rows : undefined;
    });
    expect(row).toMatchObject({ interface: 'graphql', status: 'aborted', usage_source: 'estimated', completion_tokens: 0, prompt_tokens: simulatorPromptTokens([{ content: 'Slowly.' }]) });
    expect(await ledger(gateway.databaseUrl, fresh.id)).toMatchObject({ used: row.prompt_tokens, reserved: 0, reservations: 0 });
  });

  it('shows cached tokens on the answer, the records and the summary', async () => {
    const fresh = await createUser(gateway, admin);
    const content = `Background: ${'a long shared system prompt about the weather '.repeat(8)}`;
    const first = dataOf(await gateway.gql(ToolChatDocument, { input: { messages: [{ role: 'SYSTEM', content }, { role: 'USER', content: 'One?' }], maxTokens: 2 } }, fresh.token), 'first').chat;
    const second = dataOf(await gateway.gql(ToolChatDocument, { input: { messages: [{ role: 'SYSTEM', content }, { role: 'USER', content: 'Two?' }], maxTokens: 2 } }, fresh.token), 'second').chat;
    expect(first.usage.cachedTokens).toBe(0);
    expect(second.usage.cachedTokens).toBeGreaterThanOrEqual(64);
    const { usage, usageSummary } = dataOf(await gateway.gql(CachedUsageDocument, {}, fresh.token), 'usage');
    expect(usage.nodes.map((node) => node.cachedTokens)).toEqual([second.usage.cachedTokens, 0]);
    expect(usageSummary).toEqual([expect.objectContaining({ requests: 2, cachedTokens: second.usage.cachedTokens })]);
  });
});
