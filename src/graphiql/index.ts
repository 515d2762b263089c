import type { IncomingMessage } from 'node:http';

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
