import { ServerInfoDocument } from '../generated/graphql';
import { startTestGateway, type TestGateway } from '../helpers/server';

describe('serverInfo', () => {
  let gateway: TestGateway;
  beforeAll(async () => {
    gateway = await startTestGateway();
  });
  afterAll(() => gateway.stop());

  it('answers without credentials, naming the upstream without its credentials', async () => {
    const result = await gateway.gql(ServerInfoDocument);
    expect(result.errors).toBeUndefined();
    expect(result.data?.serverInfo).toEqual({
      version: expect.stringMatching(/^\d+\.\d+\.\d+/),
      upstreamBaseUrl: gateway.simulator.url,
      simulator: false,
      environment: 'test',
    });
  });
});
