import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import path from 'node:path';

/** Where the page lives; its assets sit under `${USAGE_PAGE_PATH}/`. */
export const USAGE_PAGE_PATH = '/usage';

/**
 * Where scripts/build-usage-page.mjs puts the page: dist/public/usage, found from this module both
 * when it runs compiled (dist/src/usage-page) and from source (src/usage-page, as under jest).
 */
export const USAGE_PAGE_ASSET_DIR = ((): string => {
  const top = path.resolve(__dirname, '../..');
  return path.basename(top) === 'dist' ? path.join(top, 'public/usage') : path.join(top, 'dist/public/usage');
})();

/**
 * Content-Security-Policy of the page: its own script and styles only (nothing inline, no eval),
 * and connections to this origin, over HTTP for queries and WebSocket for subscriptions.
 */
export const USAGE_PAGE_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self' ws: wss:",
  "img-src 'self' data:",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/**
 * Everything servable, by URL: the files scripts/build-usage-page.mjs writes. A fixed list rather
 * than a directory lookup, so no URL can reach any other file.
 */
const FILES: Readonly<Record<string, { file: string; type: string }>> = {
  [USAGE_PAGE_PATH]: { file: 'index.html', type: 'text/html; charset=utf-8' },
  [`${USAGE_PAGE_PATH}/`]: { file: 'index.html', type: 'text/html; charset=utf-8' },
  [`${USAGE_PAGE_PATH}/usage.js`]: { file: 'usage.js', type: 'text/javascript; charset=utf-8' },
  [`${USAGE_PAGE_PATH}/usage.css`]: { file: 'usage.css', type: 'text/css; charset=utf-8' },
};

const SECURITY_HEADERS = {
  'content-security-policy': USAGE_PAGE_CSP,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
} as const;

function sendText(res: ServerResponse, status: number, text: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, {
    ...SECURITY_HEADERS,
    'content-type': 'text/plain; charset=utf-8',
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(text);
}

async function sendFile(req: IncomingMessage, res: ServerResponse, file: string, type: string): Promise<void> {
  let body: Buffer;
  try {
    body = await readFile(file);
  } catch {
    sendText(res, 404, 'Not found (was the usage page built? npm run build)\n');
    return;
  }
  res.writeHead(200, {
    ...SECURITY_HEADERS,
    'content-type': type,
    'content-length': body.length,
    // Unhashed file names: always revalidate, so a rebuilt page is picked up at once.
    'cache-control': 'no-cache',
  });
  res.end(req.method === 'HEAD' ? undefined : body);
}

/**
 * Serves the live usage page (`GET /usage`) and its assets from `assetDir` (dist/public/usage).
 * Returns false, leaving the response untouched, when `pathname` is not the page's; answers every
 * other request under `/usage/` itself (404 for unknown files, 405 for methods other than GET/HEAD).
 */
export function serveUsagePage(req: IncomingMessage, res: ServerResponse, assetDir: string, pathname: string): boolean {
  if (pathname !== USAGE_PAGE_PATH && !pathname.startsWith(`${USAGE_PAGE_PATH}/`)) return false;
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    sendText(res, 405, 'Method not allowed\n', { allow: 'GET, HEAD' });
    return true;
  }
  const entry = Object.hasOwn(FILES, pathname) ? FILES[pathname] : undefined;
  if (entry === undefined) {
    sendText(res, 404, 'Not found\n');
    return true;
  }
  sendFile(req, res, path.join(assetDir, entry.file), entry.type).catch(() => res.destroy());
  return true;
}
