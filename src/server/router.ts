import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Config } from '../config';
import { requestScope, type Logger } from '../logger';
import { sendJson } from './http';

/** What the router worked out about a request before handing it on. */
export interface RequestScope {
  readonly requestId: string;
  readonly pathname: string;
  readonly search: string;
}

export interface Route {
  /** An exact path, or with `prefix` the path and everything below it (`/usage`, `/usage/…`). */
  readonly path: string;
  readonly prefix?: boolean;
  handle(req: IncomingMessage, res: ServerResponse, scope: RequestScope): Promise<void> | void;
}

const REQUEST_ID = /^[\w.-]{8,64}$/;

/**
 * The one router of the HTTP server: request id, CORS, the access log and a route table
 * (exact paths by map, prefixes in order), the same for every route.
 */
export function createRouter(routes: readonly Route[], config: Config, log: Logger): (req: IncomingMessage, res: ServerResponse) => void {
  const exact = new Map(routes.filter((route) => route.prefix !== true).map((route) => [route.path, route]));
  const prefixed = routes.filter((route) => route.prefix === true);
  const cors = new Set(config.http.corsOrigins);
  const routeOf = (pathname: string): Route | undefined =>
    exact.get(pathname) ?? prefixed.find((route) => pathname === route.path || pathname.startsWith(`${route.path}/`));

  const handle = async (req: IncomingMessage, res: ServerResponse, scope: RequestScope): Promise<void> => {
    const origin = req.headers.origin;
    if (origin !== undefined && cors.has(origin)) {
      res.setHeader('access-control-allow-origin', origin);
      res.setHeader('vary', 'Origin');
      if (req.method === 'OPTIONS') {
        res.writeHead(204, {
          'access-control-allow-methods': 'GET, POST, OPTIONS',
          'access-control-allow-headers': 'authorization, content-type, apollo-require-preflight, x-request-id, x-session-id',
          'access-control-max-age': '600',
        });
        res.end();
        return;
      }
    }
    const route = routeOf(scope.pathname);
    if (route === undefined) return sendJson(res, 404, { error: 'not found' });
    await route.handle(req, res, scope);
  };

  return (req, res) => {
    const incoming = req.headers['x-request-id'];
    const requestId = typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : randomUUID();
    res.setHeader('x-request-id', requestId);
    res.setHeader('x-content-type-options', 'nosniff');
    const started = performance.now();
    const { pathname, search } = new URL(req.url ?? '/', 'http://gateway');
    res.once('finish', () => {
      log.info({ requestId, method: req.method, path: pathname, status: res.statusCode, ms: Math.round(performance.now() - started) }, 'http request');
    });
    requestScope.run({ requestId }, () => {
      handle(req, res, { requestId, pathname, search }).catch((error: unknown) => {
        log.error({ err: error }, 'unhandled error in an HTTP request');
        if (!res.headersSent) sendJson(res, 500, { errors: [{ message: 'Internal server error.', extensions: { code: 'INTERNAL_SERVER_ERROR' } }] });
        else res.destroy();
      });
    });
  };
}
