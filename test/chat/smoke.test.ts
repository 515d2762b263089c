import { ChatDocument, ChatStreamDocument, ModelsDocument, MyUsageDocument } from '../generated/graphql';
import { startTestGateway, type TestGateway } from '../helpers/server';
import { adminToken, collect, userWithQuota } from './support';

describe('chat smoke', () => {
  let gateway: TestGateway;
  beforeAll(async () => {
    gateway = await startTestGateway();
  });
  afterAll(() => gateway.stop());

  it('chats, streams and moves usage', async () => {
    const admin = await adminToken(gateway);
    const user = await userWithQuota(gateway, admin, 10_000);
    const models = await gateway.gql(ModelsDocument, {}, user.token);
    expect(models.data?.models[0].id).toBe('sim-llama-3-8b');
    const chat = await gateway.gql(ChatDocument, { input: { messages: [{ role: 'USER', content: 'Hello there, how are you?' }] } }, user.token);
    expect(chat.errors).toBeUndefined();
    console.log(JSON.stringify(chat.data));
    const stream = await collect(gateway.ws(user.token), ChatStreamDocument, { input: { messages: [{ role: 'USER', content: 'Stream please' }], maxTokens: 5 } });
    console.log(JSON.stringify(stream));
    const usage = await gateway.gql(MyUsageDocument, {}, user.token);
    console.log(JSON.stringify(usage.data));
  });
});
