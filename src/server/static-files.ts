import { createReadStream, type Stats } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import path from 'node:path';
import type { Route } from './router';

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.ttf': 'font/ttf',
  '.woff': 'font/woff',
  '.woff2': 'font/woff2',
};

export interface StaticSite {
  /** URL prefix, without a trailing slash: `/usage`, `/graphiql`. */
  readonly prefix: string;
  /** The folder the build wrote the files to. */
  readonly dir: string;
  /**
   * URL path below the prefix → file, when only a fixed list may be served; without it, any
   * file of a served type inside `dir` is.
   */
  readonly files?: Readonly<Record<string, string>>;
  /** Added to every answer (a CSP for pages, say). */
  readonly headers?: Readonly<Record<string, string>>;
  /** Said in the 404 for a listed file that is missing. */
  readonly missingHint?: string;
}

function sendText(res: ServerResponse, site: StaticSite, status: number, text: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, {
    ...site.headers,
    'content-type': 'text/plain; charset=utf-8',
    'x-content-type-options': 'nosniff',
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(text);
}

/**
 * The file a URL names, or undefined when it names nothing servable: not on the list, outside
 * `dir` (after decoding, so `%2e%2e` and encoded slashes are caught too), or of a type not served.
 */
function fileOf(site: StaticSite, pathname: string): string | undefined {
  const below = pathname.slice(site.prefix.length);
  if (site.files !== undefined) {
    const listed = Object.hasOwn(site.files, below) ? site.files[below] : undefined;
    return listed === undefined ? undefined : path.join(site.dir, listed);
  }
  let relative: string;
  try {
    relative = decodeURIComponent(below.replace(/^\//, ''));
  } catch {
    return undefined;
  }
  if (relative.includes('\0') || !Object.hasOwn(CONTENT_TYPES, path.extname(relative))) return undefined;
  const root = path.resolve(site.dir);
  const file = path.resolve(root, relative);
  return file.startsWith(root + path.sep) ? file : undefined;
}

function etagOf(stats: Stats): string {
  return `"${stats.size.toString(16)}-${Math.floor(stats.mtimeMs).toString(16)}"`;
}

async function sendFile(req: IncomingMessage, res: ServerResponse, site: StaticSite, file: string): Promise<void> {
  let stats: Stats;
  try {
    stats = await stat(file);
    if (!stats.isFile()) throw new Error('not a file');
  } catch {
    sendText(res, site, 404, site.missingHint === undefined || site.files === undefined ? 'Not found\n' : `Not found (${site.missingHint})\n`);
    return;
  }
  const etag = etagOf(stats);
  // The file names carry no content hash, so browsers must revalidate; the ETag makes that a 304.
  const headers = {
    ...site.headers,
    'content-type': CONTENT_TYPES[path.extname(file)] ?? 'application/octet-stream',
    'cache-control': 'no-cache',
    etag,
    'x-content-type-options': 'nosniff',
  };
  const ifNoneMatch = req.headers['if-none-match']?.split(',').map((tag) => tag.trim()) ?? [];
  if (ifNoneMatch.includes(etag)) {
    res.writeHead(304, headers);
    res.end();
    return;
  }
  res.writeHead(200, { ...headers, 'content-length': stats.size });
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  createReadStream(file)
    .on('error', (error) => res.destroy(error))
    .pipe(res);
}

/** The route of one folder of built files: GET and HEAD only, revalidated by ETag. */
export function staticRoute(site: StaticSite): Route {
  return {
    path: site.prefix,
    prefix: true,
    handle: async (req, res, scope) => {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        sendText(res, site, 405, 'Method not allowed\n', { allow: 'GET, HEAD' });
        return;
      }
      const file = fileOf(site, scope.pathname);
      if (file === undefined) {
        sendText(res, site, 404, 'Not found\n');
        return;
      }
      await sendFile(req, res, site, file);
    },
  };
}
