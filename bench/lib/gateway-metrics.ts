// What our gateway's own /metrics says about a stretch of load: the time its requests spent
// outside vLLM, and how the ledger's group commit batched them.

/** Sums of the counters the bench reads, over every label set. */
export interface GatewayMetricsSample {
  overheadSeconds: number;
  requests: number;
  reserveItems: number;
  reserveStatements: number;
  settleItems: number;
  settleStatements: number;
}

const READ: Record<string, keyof GatewayMetricsSample> = {
  'gateway_overhead_seconds_sum': 'overheadSeconds',
  'gateway_overhead_seconds_count': 'requests',
  'gateway_ledger_statement_items_sum|reserve': 'reserveItems',
  'gateway_ledger_statement_items_count|reserve': 'reserveStatements',
  'gateway_ledger_statement_items_sum|settle': 'settleItems',
  'gateway_ledger_statement_items_count|settle': 'settleStatements',
};

/** One scrape of `origin`/metrics with its bearer token. */
export async function scrapeGatewayMetrics(origin: string, token: string): Promise<GatewayMetricsSample> {
  const response = await fetch(`${origin}/metrics`, { headers: { authorization: `Bearer ${token}` } });
  if (!response.ok) throw new Error(`GET /metrics answered ${response.status}`);
  const sample: GatewayMetricsSample = { overheadSeconds: 0, requests: 0, reserveItems: 0, reserveStatements: 0, settleItems: 0, settleStatements: 0 };
  for (const line of (await response.text()).split('\n')) {
    const match = /^(\w+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (match === null) continue;
    const statement = /statement="(\w+)"/.exec(match[2] ?? '')?.[1];
    const field = READ[statement === undefined ? (match[1] as string) : `${match[1]}|${statement}`];
    if (field !== undefined) sample[field] += Number(match[3]);
  }
  return sample;
}

function combine(a: GatewayMetricsSample, b: GatewayMetricsSample, sign: 1 | -1): GatewayMetricsSample {
  const result = { ...a };
  for (const key of Object.keys(result) as (keyof GatewayMetricsSample)[]) result[key] += sign * b[key];
  return result;
}

/** `after` minus `before`, field by field. */
export const metricsSince = (before: GatewayMetricsSample, after: GatewayMetricsSample): GatewayMetricsSample => combine(after, before, -1);

/** `a` plus `b`, field by field. */
export const addMetrics = (a: GatewayMetricsSample, b: GatewayMetricsSample): GatewayMetricsSample => combine(a, b, 1);
