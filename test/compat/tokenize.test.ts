import OpenAI from 'openai';
import pino from 'pino';
import { Upstream } from '../../src/chat/upstream';
import { startSimulator, type Simulator } from '../../src/simulator';

const MODEL = 'sim-llama-3-8b';

/** The gateway's upstream client against a real simulator: what exact counting does on each answer of /tokenize. */
describe('Upstream.tokenize tells an unknown model from a missing route', () => {
  let sim: Simulator;
  let bare: Simulator;
  const upstreams: Upstream[] = [];

  function upstreamOf(simulator: Simulator): Upstream {
    const upstream = new Upstream({ baseUrl: simulator.url, apiKey: null, timeoutMs: 5_000, log: pino({ level: 'silent' }) });
    upstreams.push(upstream);
    return upstream;
  }

  beforeAll(async () => {
    sim = await startSimulator({ models: [MODEL] });
    bare = await startSimulator({ tokenizeEndpoint: false });
  });
  afterAll(async () => {
    await Promise.all(upstreams.map((upstream) => upstream.close()));
    await Promise.all([sim.stop(), bare.stop()]);
  });

  it('a 404 NotFoundError for a model fails that count, and exact counting stays on', async () => {
    const upstream = upstreamOf(sim);
    const unknown = await upstream.tokenize({ model: 'gone-model', prompt: 'Hello' }).catch((error: unknown) => error);
    expect(unknown).toBeInstanceOf(OpenAI.APIError);
    expect((unknown as InstanceType<typeof OpenAI.APIError>).status).toBe(404);
    expect(await upstream.tokenize({ model: MODEL, prompt: 'Hello' })).toBe(2);
  });

  it('a 400 keeps vLLM\'s param', async () => {
    const upstream = upstreamOf(sim);
    const refused = await upstream
      .tokenize({ model: MODEL, messages: [{ role: 'user', content: 'x' }], add_generation_prompt: true, continue_final_message: true })
      .catch((error: unknown) => error);
    expect(refused).toMatchObject({ name: 'UpstreamRejectedError', status: 400, param: 'continue_final_message' });
  });

  it('FastAPI\'s {"detail":"Not Found"} means there is no /tokenize: counts fall back, and it is not asked again', async () => {
    const upstream = upstreamOf(bare);
    expect(await upstream.tokenize({ model: MODEL, prompt: 'Hello' })).toBeNull();
    expect(await upstream.tokenize({ model: MODEL, prompt: 'Hello' })).toBeNull();
    expect(bare.stats.tokenizeRequests).toBe(0);
  });
});
