import { createReadStream, type Stats } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import path from 'node:path';

/** URL prefix under which the bundles built by scripts/build-graphiql.mjs are served. */
export const GRAPHIQL_ASSET_PREFIX = '/graphiql/';

/**
 * Content-Security-Policy for the GraphiQL page. The bundle needs no inline script and no eval;
 * Monaco sets inline styles and GraphiQL's fonts and icons are data: URLs, and subscriptions
 * connect over WebSocket to the same host.
 */
export const GRAPHIQL_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "worker-src 'self' blob:",
  "connect-src 'self' ws: wss:",
  "img-src 'self' data:",
  "font-src 'self' data:",
  "object-src 'none'",
  "base-uri 'none'",
  "frame-ancestors 'none'",
].join('; ');

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.ttf': 'font/ttf',
  '.woff': 'font/woff',
  '.woff2': 'font/woff2',
};

const HTML_ESCAPES: Readonly<Record<string, string>> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (char) => HTML_ESCAPES[char] ?? char);
}

/** A path on this origin, so the page can never be pointed at another host. */
function assertSameOriginPath(name: string, value: string): void {
  if (!value.startsWith('/') || value.startsWith('//') || value.includes('\\')) {
    throw new Error(`graphiqlHtml: ${name} must be an absolute path on this origin, got ${JSON.stringify(value)}`);
  }
}

/**
 * The GraphiQL page. It holds no inline script or style, so it works under {@link GRAPHIQL_CSP};
 * the GraphQL endpoint reaches the bundle through a data- attribute.
 */
export function graphiqlHtml(opts: { title: string; assetBase: string; endpoint?: string }): string {
  const endpoint = opts.endpoint ?? '/graphql';
  assertSameOriginPath('assetBase', opts.assetBase);
  assertSameOriginPath('endpoint', endpoint);
  const base = opts.assetBase.endsWith('/') ? opts.assetBase : `${opts.assetBase}/`;
  const title = escapeHtml(opts.title);
  // An empty data: icon stops the browser asking for /favicon.ico, which the gateway does not serve.
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${title}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="${escapeHtml(`${base}graphiql.css`)}">
<script type="module" src="${escapeHtml(`${base}graphiql.js`)}"></script>
</head>
<body>
<div id="graphiql" data-endpoint="${escapeHtml(endpoint)}">Loading ${title}…</div>
<noscript>GraphiQL needs JavaScript.</noscript>
</body>
</html>
`;
}

/** Whether a request is a browser navigation that should get the GraphiQL page rather than GraphQL. */
export function wantsGraphiql(req: IncomingMessage): boolean {
  if (req.method !== 'GET') {
    return false;
  }
  const accept = req.headers.accept ?? '';
  return accept.split(',').some((range) => {
    const [type = '', ...params] = range.split(';').map((part) => part.trim().toLowerCase());
    // "text/html;q=0" is an explicit refusal, not a request for HTML.
    return type === 'text/html' && !params.some((param) => /^q=0(\.0*)?$/.test(param));
  });
}

function sendNotFound(res: ServerResponse): void {
  res.writeHead(404, {
    'Content-Type': 'text/plain; charset=utf-8',
    'X-Content-Type-Options': 'nosniff',
    'Cache-Control': 'no-store',
  });
  res.end('Not found\n');
}

/**
 * The file an asset URL names, or undefined when it names nothing servable: outside `assetDir`
 * (after decoding, so `%2e%2e` and encoded slashes are caught too), or of a type not served.
 */
function assetFile(assetDir: string, urlPath: string): string | undefined {
  const rawPath = urlPath.slice(GRAPHIQL_ASSET_PREFIX.length).split(/[?#]/, 1)[0] ?? '';
  let relative: string;
  try {
    relative = decodeURIComponent(rawPath);
  } catch {
    return undefined;
  }
  if (relative.includes('\0') || !Object.hasOwn(CONTENT_TYPES, path.extname(relative))) {
    return undefined;
  }
  const root = path.resolve(assetDir);
  const file = path.resolve(root, relative);
  return file.startsWith(root + path.sep) ? file : undefined;
}

function etagOf(stats: Stats): string {
  return `"${stats.size.toString(16)}-${Math.floor(stats.mtimeMs).toString(16)}"`;
}

async function sendAsset(req: IncomingMessage, res: ServerResponse, file: string): Promise<void> {
  const stats = await stat(file);
  if (!stats.isFile()) {
    sendNotFound(res);
    return;
  }
  const etag = etagOf(stats);
  // The file names carry no content hash, so browsers must revalidate; the ETag makes that a 304.
  const headers = {
    'Content-Type': CONTENT_TYPES[path.extname(file)],
    'Cache-Control': 'public, max-age=0, must-revalidate',
    ETag: etag,
    'X-Content-Type-Options': 'nosniff',
  };
  const ifNoneMatch = req.headers['if-none-match']?.split(',').map((tag) => tag.trim()) ?? [];
  if (ifNoneMatch.includes(etag)) {
    res.writeHead(304, headers);
    res.end();
    return;
  }
  res.writeHead(200, { ...headers, 'Content-Length': stats.size });
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  createReadStream(file)
    .on('error', (error) => res.destroy(error))
    .pipe(res);
}

/**
 * Serves a file built by scripts/build-graphiql.mjs. Returns false, leaving the response untouched,
 * when the request is not a GET/HEAD under {@link GRAPHIQL_ASSET_PREFIX}; anything else under the
 * prefix is answered here, with 404 for what is not a servable asset.
 */
export function serveGraphiqlAsset(
  req: IncomingMessage,
  res: ServerResponse,
  assetDir: string,
  urlPath: string,
): boolean {
  if ((req.method !== 'GET' && req.method !== 'HEAD') || !urlPath.startsWith(GRAPHIQL_ASSET_PREFIX)) {
    return false;
  }
  const file = assetFile(assetDir, urlPath);
  if (!file) {
    sendNotFound(res);
    return true;
  }
  // Mostly a missing file (stat fails); anything later only ends this one response.
  sendAsset(req, res, file).catch(() => {
    if (res.headersSent) {
      res.destroy();
    } else {
      sendNotFound(res);
    }
  });
  return true;
}
