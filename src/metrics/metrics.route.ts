import { createHash, timingSafeEqual } from 'node:crypto';
import type { Config } from '../config';
import { sendJson } from '../server/http';
import type { Route } from '../server/router';
import type { MetricsExposition } from './metrics';

const sha256 = (text: string): Buffer => createHash('sha256').update(text).digest();

/**
 * `GET /metrics` in Prometheus' text format. With METRICS_TOKEN set, only to its bearer; in
 * production without one it is not served at all (the figures tell an outsider too much).
 */
export function metricsRoutes(config: Config, metrics: MetricsExposition): Route[] {
  const token = config.metrics.token;
  if (token === null && config.env === 'production') return [];
  // Hashes compared, so that neither the length nor the content of the token leaks through timing.
  const expected = token === null ? null : sha256(token);
  return [
    {
      path: '/metrics',
      handle: async (req, res) => {
        if (req.method !== 'GET') return sendJson(res, 405, { error: 'method not allowed' }, { allow: 'GET' });
        if (expected !== null) {
          const header = req.headers.authorization ?? '';
          const given = header.startsWith('Bearer ') ? header.slice('Bearer '.length) : '';
          if (!timingSafeEqual(sha256(given), expected)) {
            return sendJson(res, 401, { error: 'a bearer token is required' }, { 'www-authenticate': 'Bearer realm="metrics"' });
          }
        }
        let body: string;
        try {
          body = await metrics.text();
        } catch {
          // With several workers the figures are gathered from each by the primary, which may not manage in time.
          return sendJson(res, 503, { error: 'metrics are unavailable right now' }, { 'retry-after': '1' });
        }
        res.writeHead(200, { 'content-type': metrics.contentType, 'cache-control': 'no-store' });
        res.end(body);
      },
    },
  ];
}
