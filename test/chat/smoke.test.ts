import { ChatDocument, ChatStreamDocument, ModelsDocument, MyUsageDocument, UsersDocument } from '../generated/graphql';
import { startTestGateway, type TestGateway } from '../helpers/server';
import { createUser, signInAdmin } from '../helpers/client';

describe('chat, end to end', () => {
  let gateway: TestGateway;
  beforeAll(async () => {
    gateway = await startTestGateway();
  });
  afterAll(() => gateway.stop());

  it('lists models, answers chat and chatStream, and moves me.usage by what each reported', async () => {
    const admin = (await signInAdmin(gateway)).token;
    const user = await createUser(gateway, admin, { tokenLimit: 10_000 });
    const models = await gateway.gql(ModelsDocument, {}, user.token);
    expect(models.data?.models.map((model) => model.id)).toEqual(['sim-llama-3-8b']);

    const chat = await gateway.gql(ChatDocument, { input: { messages: [{ role: 'USER', content: 'Hello there, how are you?' }] } }, user.token);
    expect(chat.errors).toBeUndefined();
    expect(chat.data?.chat.content.length).toBeGreaterThan(0);
    const chatTotal = chat.data?.chat.usage.totalTokens ?? 0;

    const stream = await gateway.ws(user.token).collect(ChatStreamDocument, {
      input: { messages: [{ role: 'USER', content: 'Stream please' }], maxTokens: 5 },
    });
    expect(stream.error).toBeNull();
    const chunks = stream.events.map((event) => event.chatStream);
    expect(chunks.slice(0, -1).every((chunk) => chunk.usage === null && chunk.delta !== '')).toBe(true);
    const last = chunks.at(-1);
    expect(last?.finishReason).toBe('length');
    expect(last?.usage?.completionTokens).toBe(5);

    const usage = await gateway.gql(MyUsageDocument, {}, user.token);
    expect(usage.data?.me.usage).toMatchObject({
      used: chatTotal + (last?.usage?.totalTokens ?? 0),
      limit: 10_000,
      reserved: 0,
    });
  });

  it('reads the usage of a whole page of users at once, each user their own', async () => {
    const admin = (await signInAdmin(gateway)).token;
    const users = await Promise.all([100, 200, 300].map((limit) => createUser(gateway, admin, { tokenLimit: limit })));
    const spent: Record<string, number> = {};
    for (const [index, user] of users.entries()) {
      spent[user.id] = 0;
      for (let round = 0; round <= index; round++) {
        const chat = await gateway.gql(ChatDocument, { input: { messages: [{ role: 'USER', content: 'Hi' }], maxTokens: 3 } }, user.token);
        spent[user.id] += chat.data?.chat.usage.totalTokens ?? Number.NaN;
      }
    }
    const page = await gateway.gql(UsersDocument, { search: '@example.test' }, admin);
    expect(page.errors).toBeUndefined();
    const byId = new Map(page.data?.users.nodes.map((node) => [node.id, node.usage]));
    for (const [index, user] of users.entries()) {
      const limit = [100, 200, 300][index];
      expect(byId.get(user.id)).toEqual({ used: spent[user.id], limit, remaining: limit - spent[user.id], reserved: 0, periodStart: null, periodEnd: null });
    }
  });
});
