import type { Database } from '../db/database';
import type { Fleet } from '../upstreams/fleet';
import { VERSION } from '../version';
import { sendJson } from './http';
import type { Route } from './router';

/**
 * `/healthz`: the process answers (liveness). `/readyz`: it can serve chat: its database answers
 * and at least one upstream is in rotation; the JSON says which part is missing.
 */
export function healthRoutes(db: Database, fleet: Fleet): Route[] {
  return [
    { path: '/healthz', handle: (_req, res) => sendJson(res, 200, { status: 'ok', version: VERSION }) },
    {
      path: '/readyz',
      handle: async (_req, res) => {
        const members = fleet.status();
        const upstreams = { healthy: members.filter((member) => member.healthy).length, total: members.length };
        const database = await db.query('select 1').then(
          () => 'up' as const,
          () => 'down' as const,
        );
        if (database === 'down') return sendJson(res, 503, { status: 'unavailable', reason: 'database unreachable', database, upstreams });
        if (upstreams.healthy === 0) return sendJson(res, 503, { status: 'unavailable', reason: 'no upstream in rotation', database, upstreams });
        sendJson(res, 200, { status: 'ready', database, upstreams });
      },
    },
  ];
}
