// Bad input is refused before any reservation and before the upstream's chat endpoint: the
// error names its code and the argument at fault, nothing is charged, the model never runs.
import { ChatDocument, ChatStreamDocument, type ChatInput } from '../generated/graphql';
import { startWithAdmin, type TestGateway } from '../helpers/server';
import { codeOf, createUser, extensionsOf, type SignedIn } from '../helpers/client';
import { ledger, usageRecords } from '../helpers/database';

const hello = [{ role: 'USER' as const, content: 'Hello there.' }];
// About 5,000 tokens for the simulator: more than its 4,096-token context.
const tooLong = [{ role: 'USER' as const, content: 'word '.repeat(5_000) }];
// About 1,000 tokens: fits, but not with 4,000 more to generate.
const long = [{ role: 'USER' as const, content: 'word '.repeat(1_000) }];

const BAD_INPUTS: [label: string, field: string, input: ChatInput][] = [
  ['empty messages', 'messages', { messages: [] }],
  ['maxTokens 0', 'maxTokens', { messages: hello, maxTokens: 0 }],
  ['negative maxTokens', 'maxTokens', { messages: hello, maxTokens: -5 }],
  ["maxTokens above the model's max_model_len", 'maxTokens', { messages: hello, maxTokens: 5_000 }],
  ['prompt + maxTokens above the context', 'maxTokens', { messages: long, maxTokens: 4_000 }],
  ['temperature 3', 'temperature', { messages: hello, temperature: 3 }],
  ['negative temperature', 'temperature', { messages: hello, temperature: -0.5 }],
  ['topP 0', 'topP', { messages: hello, topP: 0 }],
  ['topP 1.5', 'topP', { messages: hello, topP: 1.5 }],
  ['an unknown model', 'model', { messages: hello, model: 'gpt-4o' }],
  ['too many stop sequences', 'stop', { messages: hello, stop: ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'] }],
  ['an empty stop sequence', 'stop', { messages: hello, stop: [''] }],
  ['a prompt longer than the context', 'messages', { messages: tooLong }],
];

describe('bad chat input', () => {
  let gateway: TestGateway;
  let admin: string;
  let user: SignedIn;

  beforeAll(async () => {
    ({ gateway, admin: { token: admin } } = await startWithAdmin());
    user = await createUser(gateway, admin, { tokenLimit: 100_000 });
  });
  afterAll(() => gateway.stop());

  async function expectNothingHappened(userId: string, chatRequestsBefore: number): Promise<void> {
    expect(gateway.simulator.stats.chatRequests).toBe(chatRequestsBefore);
    expect(await usageRecords(gateway.databaseUrl, userId)).toEqual([]);
    expect(await ledger(gateway.databaseUrl, userId)).toEqual({ used: 0, reserved: 0, reservations: 0 });
  }

  it.each(BAD_INPUTS)('chat with %s: BAD_USER_INPUT on `%s`, nothing charged, the simulator never sees it', async (_label, field, input) => {
    const before = gateway.simulator.stats.chatRequests;

    const result = await gateway.gql(ChatDocument, { input }, user.token);

    expect(result.data).toBeNull();
    expect(codeOf(result.errors)).toBe('BAD_USER_INPUT');
    expect(extensionsOf(result.errors)?.field).toBe(field);
    await expectNothingHappened(user.id, before);
  });

  it.each(BAD_INPUTS.filter(([label]) => ['empty messages', 'topP 1.5', 'an unknown model', 'a prompt longer than the context'].includes(label)))(
    'chatStream with %s: BAD_USER_INPUT on `%s`, nothing charged',
    async (_label, field, input) => {
      const before = gateway.simulator.stats.chatRequests;

      const outcome = await gateway.ws(user.token).collect(ChatStreamDocument, { input });

      expect(outcome.events).toEqual([]);
      expect(codeOf(outcome.error)).toBe('BAD_USER_INPUT');
      expect(extensionsOf(outcome.error)?.field).toBe(field);
      await expectNothingHappened(user.id, before);
    },
  );

  it('the context-length message says how long the prompt is and what the model holds', async () => {
    const result = await gateway.gql(ChatDocument, { input: { messages: tooLong } }, user.token);
    expect(result.errors?.[0]?.message).toMatch(/5008 tokens.*4096/);
  });

  it('a user with tokenLimit 0: QUOTA_EXCEEDED, and the simulator saw nothing', async () => {
    const broke = await createUser(gateway, admin, { tokenLimit: 0 });
    const before = gateway.simulator.stats.chatRequests;

    const chat = await gateway.gql(ChatDocument, { input: { messages: hello } }, broke.token);
    expect(codeOf(chat.errors)).toBe('QUOTA_EXCEEDED');
    const withMax = await gateway.gql(ChatDocument, { input: { messages: hello, maxTokens: 1 } }, broke.token);
    expect(codeOf(withMax.errors)).toBe('QUOTA_EXCEEDED');
    const stream = await gateway.ws(broke.token).collect(ChatStreamDocument, { input: { messages: hello } });
    expect(stream.events).toEqual([]);
    expect(codeOf(stream.error)).toBe('QUOTA_EXCEEDED');

    await expectNothingHappened(broke.id, before);
  });
});
