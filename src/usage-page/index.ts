import path from 'node:path';
import type { StaticSite } from '../server/static-files';

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
 * The page and its assets, from `USAGE_PAGE_ASSET_DIR`: a fixed list rather than a directory
 * lookup, so no URL can reach any other file.
 */
export const usagePageSite: StaticSite = {
  prefix: USAGE_PAGE_PATH,
  dir: USAGE_PAGE_ASSET_DIR,
  files: { '': 'index.html', '/': 'index.html', '/usage.js': 'usage.js', '/usage.css': 'usage.css' },
  headers: {
    'content-security-policy': USAGE_PAGE_CSP,
    'referrer-policy': 'no-referrer',
    'cross-origin-opener-policy': 'same-origin',
  },
  missingHint: 'was the usage page built? npm run build',
};
