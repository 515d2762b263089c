import type { Database } from '../db/database';
import type { Fleet } from '../upstreams/fleet';
import { VERSION } from '../version';
import { sendJson } from './http';
import type { Route } from './router';

/** `/healthz`: the process answers. `/readyz`: and its database does (with the upstreams' state beside it). */
export function healthRoutes(db: Database, fleet: Fleet): Route[] {
  return [
    { path: '/healthz', handle: (_req, res) => sendJson(res, 200, { status: 'ok', version: VERSION }) },
    {
      path: '/readyz',
      handle: async (_req, res) => {
        const members = fleet.status();
        const upstreams = { healthy: members.filter((member) => member.healthy).length, total: members.length };
        try {
          await db.query('select 1');
          sendJson(res, 200, { status: 'ready', database: 'up', upstreams });
        } catch {
          sendJson(res, 503, { status: 'unavailable', reason: 'database unreachable', database: 'down', upstreams });
        }
      },
    },
  ];
}
