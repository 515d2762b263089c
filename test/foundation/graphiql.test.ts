import { ServerInfoDocument } from '../generated/graphql';
import { startTestGateway, type TestGateway } from '../helpers/server';
import { ensureGraphiqlBuild } from './build';

const BROWSER_ACCEPT = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';

let gateway: TestGateway;

beforeAll(async () => {
  // The page's script and styles are bundled by `npm run build`; `npm test` builds before jest.
  await ensureGraphiqlBuild();
  gateway = await startTestGateway();
}, 120_000);

afterAll(() => gateway.stop());

function browserGet(path = '/graphql'): Promise<Response> {
  return fetch(`${gateway.server.origin}${path}`, { headers: { accept: BROWSER_ACCEPT } });
}

describe('GraphiQL on the gateway', () => {
  it('is served to a browser at GET /graphql, under a CSP, with no external URL in it', async () => {
    const response = await browserGet();
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/html/);
    const csp = response.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("default-src 'self'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toMatch(/https?:/);
    const html = await response.text();
    expect(html).toContain('id="graphiql"');
    expect(html).not.toMatch(/https?:\/\//);
    expect(html).not.toMatch(/(?:src|href)="\/\//);
  });

  it("serves the page's script and stylesheet itself", async () => {
    const html = await (await browserGet()).text();
    const script = /<script[^>]*\bsrc="([^"]+)"/.exec(html)?.[1];
    const stylesheet = /<link[^>]*rel="stylesheet"[^>]*href="([^"]+)"/.exec(html)?.[1];
    expect(script).toMatch(/^\/[^/]/);
    expect(stylesheet).toMatch(/^\/[^/]/);

    for (const [asset, type] of [
      [script, /^text\/javascript/],
      [stylesheet, /^text\/css/],
    ] as const) {
      const response = await fetch(`${gateway.server.origin}${asset}`);
      expect({ asset, status: response.status }).toEqual({ asset, status: 200 });
      expect(response.headers.get('content-type')).toMatch(type);
      expect((await response.arrayBuffer()).byteLength).toBeGreaterThan(1000);
    }
  });

  it('leaves POST /graphql to GraphQL', async () => {
    const result = await gateway.gql(ServerInfoDocument);
    expect(result.status).toBe(200);
    expect(result.errors).toBeUndefined();
    expect(result.data?.serverInfo.version).toMatch(/^\d+\.\d+\.\d+/);
  });

  it('does not serve the page to a GET that does not ask for HTML', async () => {
    const query = encodeURIComponent('{ serverInfo { version } }');
    const response = await fetch(`${gateway.server.origin}/graphql?query=${query}`, {
      headers: { accept: 'application/graphql-response+json, application/json', 'apollo-require-preflight': 'true' },
    });
    expect(response.headers.get('content-type')).not.toMatch(/text\/html/);
    const body = (await response.json()) as { data?: { serverInfo?: { version?: string } } };
    expect(body.data?.serverInfo?.version).toMatch(/^\d+\.\d+\.\d+/);

    const bare = await fetch(`${gateway.server.origin}/graphql`, { headers: { accept: 'application/json' } });
    expect(bare.headers.get('content-type')).not.toMatch(/text\/html/);
    expect(await bare.text()).not.toContain('id="graphiql"');
  });
});
