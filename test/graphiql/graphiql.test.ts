import { existsSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { request, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import path from 'node:path';
import { GRAPHIQL_ASSET_PREFIX, graphiqlHtml, wantsGraphiql } from '../../src/graphiql';
import { startTestGateway, type TestGateway } from '../helpers/server';

const repoRoot = path.resolve(__dirname, '../..');
// Hosts the page must never load from: the machines it runs on have no route to them.
const CDN_HOSTS = [
  'unpkg.com',
  'jsdelivr.net',
  'esm.sh',
  'cdnjs.cloudflare.com',
  'skypack.dev',
  'jspm.io',
  'jspm.dev',
  'fonts.googleapis.com',
  'fonts.gstatic.com',
];

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

let gateway: TestGateway;
let port: number;
/** Beside the built assets (dist/public/graphiql), servable by extension: only the containment check keeps it private. */
const secretFile = path.join(repoRoot, 'dist/public/secret.js');

// node:http sends the path exactly as given, unlike fetch, which would normalise away the "..".
function get(rawPath: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: rawPath, method, headers }, (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }),
      );
    });
    req.on('error', reject);
    req.end();
  });
}

beforeAll(async () => {
  // The gateway's own router and static-file server, serving what `npm run build` wrote.
  if (!existsSync(path.join(repoRoot, 'dist/public/graphiql/graphiql.js'))) {
    throw new Error('dist/public/graphiql is missing: run `npm run build` before this test (npm test does).');
  }
  await writeFile(secretFile, 'secret');
  gateway = await startTestGateway();
  port = Number(new URL(gateway.server.origin).port);
}, 120_000);

afterAll(async () => {
  await gateway.stop();
  await rm(secretFile, { force: true });
});

const BROWSER_ACCEPT = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';

function referencedAssets(html: string): string[] {
  return [...html.matchAll(/(?:src|href)="([^"]+)"/g)]
    .map((match) => match[1] ?? '')
    .filter((ref) => !ref.startsWith('data:'));
}

describe('GraphiQL page', () => {
  it('is served to browsers, with no external URL in it', async () => {
    const reply = await get('/graphql', { accept: BROWSER_ACCEPT });
    expect(reply.status).toBe(200);
    expect(reply.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(reply.body).toContain('<div id="graphiql"');
    expect(reply.body).not.toMatch(/https?:\/\//);
    expect(reply.body).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    expect(referencedAssets(reply.body)).toEqual(['/graphiql/graphiql.css', '/graphiql/graphiql.js']);
  });

  it('is not what GraphQL clients get', () => {
    const fakeRequest = (method: string, accept?: string) => ({ method, headers: { accept } }) as IncomingMessage;
    expect(wantsGraphiql(fakeRequest('GET', BROWSER_ACCEPT))).toBe(true);
    expect(wantsGraphiql(fakeRequest('GET', 'application/graphql-response+json, application/json;q=0.9'))).toBe(false);
    expect(wantsGraphiql(fakeRequest('GET', '*/*'))).toBe(false);
    expect(wantsGraphiql(fakeRequest('GET'))).toBe(false);
    expect(wantsGraphiql(fakeRequest('GET', 'text/html;q=0, application/json'))).toBe(false);
    expect(wantsGraphiql(fakeRequest('POST', BROWSER_ACCEPT))).toBe(false);
  });

  it('escapes the title and refuses asset bases on other origins', () => {
    expect(graphiqlHtml({ title: '<b>&', assetBase: '/x/' })).toContain('<title>&lt;b&gt;&amp;</title>');
    expect(() => graphiqlHtml({ title: 't', assetBase: 'https://cdn.example/' })).toThrow();
    expect(() => graphiqlHtml({ title: 't', assetBase: '//cdn.example/' })).toThrow();
  });
});

describe('GraphiQL assets', () => {
  const expectedTypes: Record<string, string> = {
    '.js': 'text/javascript; charset=utf-8',
    '.css': 'text/css; charset=utf-8',
    '.ttf': 'font/ttf',
    '.woff2': 'font/woff2',
  };

  async function expectAsset(assetPath: string): Promise<Reply> {
    const reply = await get(assetPath);
    expect({ assetPath, status: reply.status }).toEqual({ assetPath, status: 200 });
    expect(reply.headers['content-type']).toBe(expectedTypes[path.extname(assetPath)]);
    expect(reply.headers['x-content-type-options']).toBe('nosniff');
    expect(reply.headers['cache-control']).toBeDefined();
    return reply;
  }

  it('answers for everything the page, its stylesheet and its script load', async () => {
    const page = await get('/graphql', { accept: BROWSER_ACCEPT });
    const replies = new Map<string, Reply>();
    for (const assetPath of referencedAssets(page.body)) {
      replies.set(assetPath, await expectAsset(assetPath));
    }

    const css = replies.get('/graphiql/graphiql.css')?.body ?? '';
    const cssRefs = [...css.matchAll(/url\(\s*["']?([^"')]+)/g)]
      .map((match) => match[1] ?? '')
      .filter((ref) => !ref.startsWith('data:') && !ref.startsWith('#'));
    for (const ref of cssRefs) {
      expect(ref).not.toMatch(/^[a-z][a-z0-9+.-]*:|^\/\//i);
      await expectAsset(new URL(ref, `http://localhost${GRAPHIQL_ASSET_PREFIX}graphiql.css`).pathname);
    }

    const js = replies.get('/graphiql/graphiql.js')?.body ?? '';
    for (const worker of ['editor.worker.js', 'json.worker.js', 'graphql.worker.js']) {
      expect(js).toContain(worker);
      await expectAsset(`${GRAPHIQL_ASSET_PREFIX}${worker}`);
    }
  });

  it('loads nothing from a CDN', async () => {
    for (const asset of ['graphiql.js', 'graphiql.css', 'editor.worker.js', 'json.worker.js', 'graphql.worker.js']) {
      const { body } = await get(`${GRAPHIQL_ASSET_PREFIX}${asset}`);
      for (const host of CDN_HOSTS) {
        expect({ asset, host, found: body.includes(host) }).toEqual({ asset, host, found: false });
      }
    }
  });

  it('revalidates with the ETag and answers HEAD without a body', async () => {
    const first = await get('/graphiql/graphiql.css');
    const etag = first.headers.etag ?? '';
    expect(etag).not.toBe('');
    expect((await get('/graphiql/graphiql.css', { 'if-none-match': etag })).status).toBe(304);
    const head = await get('/graphiql/graphiql.css', {}, 'HEAD');
    expect(head.status).toBe(200);
    expect(head.body).toBe('');
  });

  it.each([
    '/graphiql/../package.json',
    '/graphiql/../secret.js',
    '/graphiql/%2e%2e/secret.js',
    '/graphiql/..%2fsecret.js',
    '/graphiql/%2e%2e%2f%2e%2e%2fpackage.json',
    '/graphiql/..\\secret.js',
    '/graphiql/%00graphiql.js',
    '/graphiql/%E0%A4%A',
    '/graphiql/',
    '/graphiql/missing.js',
  ])('answers 404 for %s', async (rawPath) => {
    const reply = await get(rawPath);
    expect(reply.status).toBe(404);
    expect(reply.body).not.toContain('secret');
  });

  it('answers 404 outside the assets and 405 to methods other than GET and HEAD', async () => {
    expect((await get('/package.json')).status).toBe(404);
    const post = await get('/graphiql/graphiql.js', {}, 'POST');
    expect(post.status).toBe(405);
    expect(post.headers.allow).toBe('GET, HEAD');
  });
});
