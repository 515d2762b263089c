import type { Database } from '../db/database';
import type { Fleet } from '../upstreams/fleet';
import { VERSION } from '../version';
import { sendJson } from './http';
import type { Route } from './router';

/**
 * `/healthz`: the process answers (liveness). `/readyz`: it can serve chat: its database answers
 * and at least one upstream is in rotation; the JSON says which part is missing.
 */
export function healthRoutes(db: Database, fleet: Fleet, databaseWaitMs: number): Route[] {
  return [
    { path: '/healthz', handle: (_req, res) => sendJson(res, 200, { status: 'ok', version: VERSION }) },
    {
      path: '/readyz',
      handle: async (_req, res) => {
        const members = fleet.status();
        const upstreams = { healthy: members.filter((member) => member.healthy).length, total: members.length };
        const database = (await databaseAnswers(db, databaseWaitMs)) ? ('up' as const) : ('down' as const);
        if (database === 'down') return sendJson(res, 503, { status: 'unavailable', reason: 'database unreachable', database, upstreams });
        if (upstreams.healthy === 0) return sendJson(res, 503, { status: 'unavailable', reason: 'no upstream in rotation', database, upstreams });
        sendJson(res, 200, { status: 'ready', database, upstreams });
      },
    },
  ];
}

/**
 * Whether `select 1` answers within `waitMs`: a probe must answer in about that long even on a
 * pooled connection to a server that went silent, which the statement's own timeout ends only later.
 */
function databaseAnswers(db: Database, waitMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), waitMs);
    db.query('select 1').then(
      () => resolve(true),
      () => resolve(false),
    ).finally(() => clearTimeout(timer));
  });
}
