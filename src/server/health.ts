import type { Database } from '../db/database';
import { VERSION } from '../version';
import { sendJson } from './http';
import type { Route } from './router';

/** `/healthz`: the process answers. `/readyz`: and its database does. */
export function healthRoutes(db: Database): Route[] {
  return [
    { path: '/healthz', handle: (_req, res) => sendJson(res, 200, { status: 'ok', version: VERSION }) },
    {
      path: '/readyz',
      handle: async (_req, res) => {
        try {
          await db.query('select 1');
          sendJson(res, 200, { status: 'ready' });
        } catch {
          sendJson(res, 503, { status: 'unavailable', reason: 'database unreachable' });
        }
      },
    },
  ];
}
