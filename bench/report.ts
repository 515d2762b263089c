// The bench's outputs: terminal tables, BENCHMARKS.md and an SVG chart, from one summary.
import { BUDGET_LOAD_DESCRIPTION } from './budgets';
import { renderWorkers } from './workers';
import { GATEWAY_KEYS, TARGET_LABEL, type BenchSummary, type GatewayKey, type Goal, type NonStreamScenario, type ProfileResult, type Probes } from './types';

function num(value: number | null | undefined, digits = 2): string {
  return value === null || value === undefined || !Number.isFinite(value) ? '–' : value.toFixed(digits);
}

function signed(value: number | null | undefined, digits = 2): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return '–';
  return `${value >= 0 ? '+' : ''}${value.toFixed(digits)}`;
}

function mib(bytes: number | null): string {
  return bytes === null ? '–' : `${(bytes / 2 ** 20).toFixed(0)} MiB`;
}

function table(header: string[], rows: string[][], align: ('l' | 'r')[]): string {
  const widths = header.map((cell, i) => Math.max(cell.length, ...rows.map((row) => (row[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells.map((cell, i) => (align[i] === 'r' ? cell.padStart(widths[i] as number) : cell.padEnd(widths[i] as number))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

function markdownTable(header: string[], rows: string[][], align: ('l' | 'r')[]): string {
  return [
    `| ${header.join(' | ')} |`,
    `| ${align.map((a) => (a === 'r' ? '---:' : ':---')).join(' | ')} |`,
    ...rows.map((row) => `| ${row.join(' | ')} |`),
  ].join('\n');
}

function nonStreamRows(scenarios: readonly NonStreamScenario[]): { header: string[]; rows: string[][]; align: ('l' | 'r')[] } {
  const header = ['upstream', 'conc.', 'target', 'req/s', 'x direct', 'p50 ms', 'p99 ms', 'added p50', 'added p99', 'gateway CPU ms/req', 'PostgreSQL CPU ms/req', 'simulator CPU ms/req', 'server CPU ms/req', 'client cores', 'requests', 'errors'];
  const rows: string[][] = [];
  for (const scenario of scenarios) {
    for (const r of scenario.results) {
      rows.push([
        `${scenario.upstreamMs} ms`,
        String(scenario.concurrency),
        TARGET_LABEL[r.target],
        num(r.rps, 0),
        r.target === 'direct' ? '1.00' : num(r.throughputRatio),
        num(r.latency.p50),
        num(r.latency.p99),
        signed(r.addedP50),
        signed(r.addedP99),
        num(r.gatewayCpuMsPerRequest, 2),
        // Runs from before PostgreSQL was measured apart have no figure.
        num(r.postgresCpuMsPerRequest as number | undefined, 2),
        num(r.simulatorCpuMsPerRequest, 2),
        num(r.serverCpuMsPerRequest, 2),
        num(r.clientCores, 2),
        String(r.requests),
        String(r.errors),
      ]);
    }
  }
  return { header, rows, align: ['r', 'r', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'] };
}

function streamRows(summary: BenchSummary): { header: string[]; rows: string[][]; align: ('l' | 'r')[] } {
  const header = ['conc.', 'target', 'TTFT p50', 'TTFT p99', 'added TTFT p50', 'added TTFT p99', 'gap p50', 'gap p99', 'added gap p50', 'added gap p99', 'streams', 'errors'];
  const rows: string[][] = [];
  for (const scenario of summary.stream) {
    for (const r of scenario.results) {
      rows.push([
        String(scenario.concurrency),
        r.target === 'graphql' ? 'ours: chatStream (graphql-ws)' : TARGET_LABEL[r.target],
        num(r.ttft.p50),
        num(r.ttft.p99),
        signed(r.addedTtftP50),
        signed(r.addedTtftP99),
        num(r.gap.p50),
        num(r.gap.p99),
        signed(r.addedGapP50),
        signed(r.addedGapP99),
        String(r.streams),
        String(r.errors),
      ]);
    }
  }
  return { header, rows, align: ['r', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'] };
}

/** One row per scenario: each gateway's added p50 / p99 and throughput ratio, side by side. */
function headlineRows(summary: BenchSummary): { header: string[]; rows: string[][]; align: ('l' | 'r')[] } {
  const gateways = GATEWAY_KEYS;
  const header = ['upstream', 'conc.', ...gateways.map((g) => `${NAMES[g]}: added p50 / p99, x direct`)];
  const rows = summary.nonStream.map((scenario) => [
    `${scenario.upstreamMs} ms`,
    String(scenario.concurrency),
    ...gateways.map((g) => {
      const r = scenario.results.find((x) => x.target === g);
      return r === undefined ? '–' : `${signed(r.addedP50, 1)} / ${signed(r.addedP99, 1)} ms, ${num(r.throughputRatio)}x`;
    }),
  ]);
  return { header, rows, align: ['r', 'r', 'r', 'r', 'r'] };
}

function goalRows(summary: BenchSummary): { header: string[]; rows: string[][]; align: ('l' | 'r')[] } {
  const header = ['load', 'target (issue 17)', 'interface', 'upstream', 'ours', 'Portkey (same run)', 'result', 'beside it'];
  const value = (unit: Goal['unit'], v: number | null): string =>
    v === null ? '–' : unit === 'ratio' ? `${num(v)}x` : unit === 'cpu' ? `${num(v)} ms` : `${signed(v)} ms`;
  const rows = summary.goals.map((goal) => [
    goal.scenario,
    goal.name,
    goal.target === 'graphql' ? 'GraphQL chat' : 'OpenAI /v1',
    `${goal.upstreamMs} ms`,
    value(goal.unit, goal.value),
    value(goal.unit, goal.portkey),
    goal.pass === null ? 'not measured' : goal.pass ? 'PASS' : `FAIL (${goal.missBy})`,
    goal.beside ?? '',
  ]);
  return { header, rows, align: ['l', 'l', 'l', 'r', 'r', 'r', 'l', 'l'] };
}

function memoryRows(summary: BenchSummary): { header: string[]; rows: string[][]; align: ('l' | 'r')[] } {
  return {
    header: ['process', 'peak RSS after chat + streaming', 'peak RSS at end (after fan-out)', 'note'],
    rows: summary.memory.map((m) => [m.label, mib(m.peakBeforeFanOut), mib(m.peakEnd), m.note]),
    align: ['l', 'r', 'r', 'l'],
  };
}

function profileRows(profile: ProfileResult, kind: 'areas' | 'owners' | 'functions', limit: number): { header: string[]; rows: string[][]; align: ('l' | 'r')[] } {
  const entries = kind === 'areas' ? profile.summary.topAreas : kind === 'owners' ? profile.summary.topOwners : profile.summary.topFunctions;
  const first =
    kind === 'areas'
      ? 'area, self time (package / Node module / our file)'
      : kind === 'owners'
        ? 'package or our file, with the Node internals and natives it called'
        : 'function, self time (← nearest caller in a package or our code)';
  return {
    header: [first, 'ms', '% of busy', 'µs / request'],
    rows: entries
      .slice(0, limit)
      .map((e) => [e.via === undefined ? e.name : `${e.name} ← ${e.via}`, num(e.selfMs, 1), num(e.pct, 1), num((e.selfMs * 1000) / Math.max(1, profile.requests), 0)]),
    align: ['l', 'r', 'r', 'r'],
  };
}

/** One sentence on how much other processes used the machine during the run. */
export function quietness(summary: BenchSummary): { text: string; noisy: boolean } {
  const f = summary.foreignCpu;
  if (f === null) return { text: 'Load from other processes was not measured.', noisy: false };
  const noisy = f.meanCores > 0.3 || (summary.foreignCoresBefore ?? 0) > 0.3;
  const some = !noisy && f.meanCores > 0.1;
  return {
    noisy,
    text:
      `Other processes on the machine used ${num(f.meanCores)} cores on average during the run (highest second ${num(f.maxCores)}; ` +
      `${num(f.busyShare * 100, 0)}% of seconds above 0.25 cores; ${num(summary.foreignCoresBefore)} cores just before it; load average ` +
      `${f.loadAverageStart.join(' / ')} at the start, ${f.loadAverageEnd.join(' / ')} at the end).` +
      (noisy
        ? ' The machine was NOT quiet: every figure is skewed by that load; run it again on a quiet machine.'
        : some
          ? ' Mostly quiet, with bursts: the p99 figures are the most affected.'
          : ' Quiet.'),
  };
}

export function renderTables(summary: BenchSummary): string {
  const out: string[] = [];
  out.push(quietness(summary).text);
  if (summary.code !== null && summary.code !== undefined) {
    out.push(`Code measured: commit ${summary.code.commit}${summary.code.uncommitted.length === 0 ? '' : ` plus uncommitted ${summary.code.uncommitted.join(', ')}`}`);
  }
  out.push('');
  const ns = nonStreamRows(summary.nonStream);
  out.push(
    'Non-streaming chat (closed loop; added = target minus direct at the same percentile, ms; gateway CPU = the gateway process alone; server CPU = simulator + PostgreSQL + gateway; client cores = load generator)',
    table(ns.header, ns.rows, ns.align),
    '',
  );
  const st = streamRows(summary);
  out.push(
    `Streaming (upstream TTFT ${summary.stream[0]?.upstreamMs ?? '–'} ms, ${summary.stream[0]?.interTokenMs ?? '–'} ms per token, ${summary.stream[0]?.tokens ?? '–'} tokens; ms)`,
    table(st.header, st.rows, st.align),
    '',
  );
  if (summary.fanOut !== null) {
    const f = summary.fanOut;
    out.push(
      `Live usage fan-out: ${f.subscribers} usageUpdated subscribers on ${f.sockets} sockets (${f.adminUsers} admins), ${f.events} events every ${f.intervalMs} ms, ${f.deliveries}/${f.expectedDeliveries} delivered`,
      `  settle (event.at) -> delivery: p50 ${num(f.fromSettle.p50)} ms, p99 ${num(f.fromSettle.p99)} ms, max ${num(f.fromSettle.max)} ms`,
      `  chat answer -> delivery:       p50 ${num(f.fromResponse.p50)} ms, p99 ${num(f.fromResponse.p99)} ms`,
      `  first -> last subscriber per event: p50 ${num(f.spread.p50)} ms, p99 ${num(f.spread.p99)} ms`,
      `  our gateway's CPU per event (settle + ${f.subscribers} deliveries): ${num(f.gatewayCpuMsPerEvent)} ms; load generator CPU per delivery received: ${num(f.clientCpuUsPerDelivery, 1)} µs`,
      '',
    );
  } else out.push(`Live usage fan-out: FAILED (${summary.fanOutError ?? 'unknown'})`, '');
  out.push('Budget loads', ...budgetSection(summary, table), '');
  out.push('Workers', ...renderWorkers(summary.workers, summary.workersError, table), '');
  out.push('Fleet', ...fleetSection(summary, table), '');
  const mem = memoryRows(summary);
  out.push('Peak memory (VmHWM)', table(mem.header, mem.rows, mem.align), '');
  const g = goalRows(summary);
  out.push('Targets from issue 17', table(g.header, g.rows, g.align), '');
  if (summary.profile !== null) {
    const p = summary.profile;
    out.push(
      `CPU profile of our gateway: GraphQL chat at concurrency 1, 0 ms upstream, ${p.requests} requests in ${num(p.summary.windowMs / 1000, 1)} s`,
      `  gateway CPU ${num(p.busyMsPerRequest, 3)} ms/request (GC ${num(p.summary.gcMs / Math.max(1, p.requests), 3)}), idle ${num((100 * p.summary.idleMs) / Math.max(1, p.summary.idleMs + p.summary.busyMs), 0)}% of the window; ${num(p.transactionsPerRequest, 1)} PostgreSQL transactions and ${num(p.rowsWrittenPerRequest, 1)} rows written per request`,
    );
    const owners = profileRows(p, 'owners', 12);
    out.push(table(owners.header, owners.rows, owners.align), '');
    const areas = profileRows(p, 'areas', 12);
    out.push(table(areas.header, areas.rows, areas.align), '');
    const fns = profileRows(p, 'functions', 15);
    out.push(table(fns.header, fns.rows, fns.align), '');
  } else out.push(`CPU profile: FAILED (${summary.profileError ?? 'unknown'})`, '');
  if (summary.notes.length > 0) out.push('Notes:', ...summary.notes.map((n) => `  - ${n}`), '');
  out.push(`Total run time: ${summary.durationSeconds.toFixed(0)} s`);
  return out.join('\n');
}

/** The budget loads (bench/budgets.ts): the same side-by-side runs with 64 accounts of finite budgets. */
function budgetSection(summary: BenchSummary, render: (header: string[], rows: string[][], align: ('l' | 'r')[]) => string): string[] {
  if (summary.budgetLoads === undefined) return ['Not measured in this run.'];
  if (summary.budgetLoadError != null) return [`The budget loads failed: ${summary.budgetLoadError}.`];
  const out: string[] = [];
  for (const load of summary.budgetLoads) {
    const rows = nonStreamRows(load.runs);
    out.push(`${load.label}: ${BUDGET_LOAD_DESCRIPTION[load.kind]}. Load worker *i* sends as account *i* of ${load.users}; direct and Portkey take the same load unauthenticated.`, '', render(rows.header, rows.rows, rows.align), '');
  }
  return out;
}

/** The fleet scenarios (bench/fleet.ts): throughput with one and two upstreams, and routing's CPU with 1 and 20. */
function fleetSection(summary: BenchSummary, render: (header: string[], rows: string[][], align: ('l' | 'r')[]) => string): string[] {
  if (summary.fleet === undefined) return ['Not measured in this run.'];
  if (summary.fleet === null) return [`The fleet step failed: ${summary.fleetError ?? 'unknown'}.`];
  const header = ['target', 'rps', 'p50 ms', 'p99 ms', 'added p50 ms', 'throughput ratio', 'gateway CPU ms/request', 'errors'];
  const align: ('l' | 'r')[] = ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r'];
  const rows = (results: NonNullable<BenchSummary['fleet']>['throughput']['results']): string[][] =>
    results.map((r) => [r.label, num(r.rps, 0), num(r.latency.p50), num(r.latency.p99), num(r.addedP50), num(r.throughputRatio), num(r.gatewayCpuMsPerRequest, 3), String(r.errors)]);
  const { throughput, routingCost } = summary.fleet;
  return [
    `One simulator against two behind the gateway, at concurrency ${throughput.concurrency} with a ${throughput.upstreamMs} ms upstream (ratios to the direct call):`,
    '',
    render(header, rows(throughput.results), align),
    '',
    `The cost of routing: GraphQL \`chat\` at concurrency ${routingCost.concurrency}, ${routingCost.upstreamMs} ms upstream, through a gateway with one upstream and one with twenty configured (ratios to the first):`,
    '',
    render(header, rows(routingCost.results), align),
  ];
}

// ---------------------------------------------------------------- SVG

const COLORS: Record<GatewayKey, string> = { portkey: '#d9480f', graphql: '#1971c2', openai: '#2f9e44' };
const NAMES: Record<GatewayKey, string> = { portkey: 'Portkey', graphql: 'ours: GraphQL chat', openai: 'ours: OpenAI /v1' };

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** Added p50 (solid) and p99 (dashed) latency per concurrency, one panel per upstream latency. */
export function renderSvg(summary: BenchSummary): string {
  const panels = [...new Set(summary.nonStream.map((s) => s.upstreamMs))];
  const concurrencies = [...new Set(summary.nonStream.map((s) => s.concurrency))].sort((a, b) => a - b);
  const panelW = 430;
  const panelH = 300;
  const margin = { left: 60, right: 20, top: 50, bottom: 50 };
  const width = panels.length * panelW + 20;
  const height = panelH + 70;
  // Log scale: the concurrency-1 figures (a few ms) and the saturated ones (hundreds) both show.
  const FLOOR = 0.1;
  const values: number[] = [1];
  for (const s of summary.nonStream) for (const r of s.results) for (const v of [r.addedP50, r.addedP99]) if (v !== null && Number.isFinite(v)) values.push(v);
  const logMin = Math.log10(FLOOR);
  const logMax = Math.ceil(Math.log10(Math.max(...values, 10)));
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">Added latency over a direct call, non-streaming chat (ms, log scale; solid p50, dashed p99)</text>`,
  );
  panels.forEach((upstreamMs, index) => {
    const x0 = index * panelW + margin.left;
    const plotW = panelW - margin.left - margin.right;
    const plotH = panelH - margin.top - margin.bottom + 20;
    const y0 = margin.top;
    const xAt = (i: number): number => x0 + (concurrencies.length === 1 ? plotW / 2 : (i * plotW) / (concurrencies.length - 1));
    const yAt = (v: number): number => y0 + plotH - ((Math.log10(Math.max(v, FLOOR)) - logMin) / (logMax - logMin)) * plotH;
    parts.push(`<text x="${x0 + plotW / 2}" y="${y0 - 10}" text-anchor="middle" font-size="13">upstream ${upstreamMs} ms</text>`);
    for (let decade = logMin; decade <= logMax; decade++) {
      for (const m of [1, 2, 5]) {
        const v = m * 10 ** decade;
        if (Math.log10(v) > logMax + 1e-9) continue;
        const y = yAt(v);
        parts.push(`<line x1="${x0}" y1="${y.toFixed(1)}" x2="${x0 + plotW}" y2="${y.toFixed(1)}" stroke="${m === 1 ? '#ced4da' : '#f1f3f5'}" stroke-width="1"/>`);
        if (m === 1 || logMax - logMin <= 4) parts.push(`<text x="${x0 - 6}" y="${(y + 4).toFixed(1)}" text-anchor="end" fill="#495057">${formatTick(v)}</text>`);
      }
    }
    for (const [limit, label] of [
      [1.5, 'target p50 @1: 1.5'],
      [5, 'target p99 @32: 5'],
    ] as const) {
      const y = yAt(limit);
      parts.push(
        `<line x1="${x0}" y1="${y.toFixed(1)}" x2="${x0 + plotW}" y2="${y.toFixed(1)}" stroke="#7048e8" stroke-width="1" stroke-dasharray="2 3"/>`,
        `<text x="${x0 + plotW - 2}" y="${(y - 3).toFixed(1)}" text-anchor="end" fill="#7048e8" font-size="10">${label}</text>`,
      );
    }
    concurrencies.forEach((c, i) => {
      parts.push(`<text x="${xAt(i).toFixed(1)}" y="${y0 + plotH + 18}" text-anchor="middle" fill="#495057">${c}</text>`);
    });
    parts.push(`<text x="${x0 + plotW / 2}" y="${y0 + plotH + 36}" text-anchor="middle" fill="#495057">concurrency</text>`);
    for (const key of ['portkey', 'graphql', 'openai'] as GatewayKey[]) {
      for (const which of ['p50', 'p99'] as const) {
        const points: string[] = [];
        concurrencies.forEach((c, i) => {
          const scenario: NonStreamScenario | undefined = summary.nonStream.find((s) => s.upstreamMs === upstreamMs && s.concurrency === c);
          const result = scenario?.results.find((r) => r.target === key);
          const v = which === 'p50' ? result?.addedP50 : result?.addedP99;
          if (v !== null && v !== undefined && Number.isFinite(v)) points.push(`${xAt(i).toFixed(1)},${yAt(v).toFixed(1)}`);
        });
        if (points.length === 0) continue;
        parts.push(
          `<polyline points="${points.join(' ')}" fill="none" stroke="${COLORS[key]}" stroke-width="${which === 'p50' ? 2.5 : 1.5}"${which === 'p99' ? ' stroke-dasharray="6 4"' : ''}/>`,
        );
        if (which === 'p50') for (const point of points) {
          const [px, py] = point.split(',');
          parts.push(`<circle cx="${px}" cy="${py}" r="3.5" fill="${COLORS[key]}"/>`);
        }
      }
    }
  });
  const legendY = height - 12;
  parts.push(
    `<line x1="${60 + 3 * 200}" y1="${legendY - 4}" x2="${60 + 3 * 200 + 24}" y2="${legendY - 4}" stroke="#495057" stroke-width="1.5" stroke-dasharray="6 4"/>`,
    `<text x="${60 + 3 * 200 + 30}" y="${legendY}">p99 (solid: p50)</text>`,
  );
  (['portkey', 'graphql', 'openai'] as GatewayKey[]).forEach((key, i) => {
    const x = 60 + i * 200;
    parts.push(
      `<line x1="${x}" y1="${legendY - 4}" x2="${x + 24}" y2="${legendY - 4}" stroke="${COLORS[key]}" stroke-width="2.5"/>`,
      `<text x="${x + 30}" y="${legendY}">${escapeXml(NAMES[key])}</text>`,
    );
  });
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}

function formatTick(v: number): string {
  return v >= 1 ? v.toFixed(0) : v.toFixed(1);
}

// ---------------------------------------------------------------- Markdown

/** What the profiled requests spent on `/tokenize`: measured per request (older results lack the count). */
function tokenizeSentence(profile: ProfileResult, probes: Probes): string {
  const calls = profile.tokenizeCallsPerRequest;
  if (calls === undefined) return `The prompt count may add an upstream round trip, \`POST /tokenize\` (${num(probes.tokenizeP50, 3)} ms on the simulator); this result did not count the calls.`;
  if (calls < 0.05) {
    return `The simulator answered ${num(calls, 3)} \`/tokenize\` calls per request (the prompt bound reserves without the exact count), so no tokenize round trip is on the path.`;
  }
  return `The prompt count added ${num(calls, 2)} upstream round trips per request, \`POST /tokenize\` (${num(probes.tokenizeP50, 3)} ms each on the simulator), before the chat call itself.`;
}

function analysis(summary: BenchSummary): string[] {
  const lines: string[] = [];
  const p = summary.profile;
  const c1 = summary.nonStream.find((s) => s.upstreamMs === 0 && s.concurrency === 1);
  const added = (key: string): number | null => c1?.results.find((r) => r.target === key)?.addedP50 ?? null;
  const graphqlAdded = added('graphql');
  lines.push(
    `At concurrency 1 with a 0 ms upstream our GraphQL \`chat\` adds **${signed(graphqlAdded)} ms** at p50, our OpenAI endpoint ` +
      `**${signed(added('openai'))} ms**, Portkey **${signed(added('portkey'))} ms** (same run). Where our time goes:`,
    '',
  );
  if (p !== null) {
    const cpuOf = (key: string): number | null => c1?.results.find((r) => r.target === key)?.gatewayCpuMsPerRequest ?? null;
    const ourCpu = cpuOf('graphql') ?? p.busyMsPerRequest;
    const wait = graphqlAdded === null ? null : graphqlAdded - ourCpu;
    lines.push(
      `- **CPU in our gateway process: ${num(cpuOf('graphql'), 2)} ms per GraphQL request, ${num(cpuOf('openai'), 2)} ms per /v1 request**, ` +
        `against ${num(cpuOf('portkey'), 2)} ms in Portkey's (scheduler run time of the process over the concurrency-1, 0 ms runs, no profiler). ` +
        `At concurrency 1 nearly all of it is on the request's path. Under the profiler the same requests took ${num(p.busyMsPerRequest, 2)} ms of CPU ` +
        `(sampling overhead included; garbage collection ${num(p.summary.gcMs / Math.max(1, p.requests), 3)} ms); the process was idle ` +
        `${num((100 * p.summary.idleMs) / Math.max(1, p.summary.idleMs + p.summary.busyMs), 0)}% of the profiled window, waiting on I/O.`,
    );
    if (summary.probes !== null) {
      lines.push(
        `- **The rest, about ${num(wait, 2)} ms per request** (added p50 minus gateway CPU), is waiting. Each request ran ` +
          `**${num(p.transactionsPerRequest, 1)} PostgreSQL transactions** (pg_stat_database; ${num(p.rowsWrittenPerRequest, 1)} rows written); ` +
          `on this machine a \`select 1\` round trip takes ${num(summary.probes.selectP50, 3)} ms and a one-row autocommit insert ` +
          `${num(summary.probes.commitP50, 3)} ms (p50, WAL flushed on commit, the defaults). ${tokenizeSentence(p, summary.probes)} ` +
          `PostgreSQL and the simulator run on the same 2 cores, so their CPU time for this request is in this share too.`,
      );
    }
    const share = (...prefixes: string[]): number =>
      p.summary.topOwners.filter((a) => prefixes.some((prefix) => a.name === prefix || a.name.startsWith(prefix))).reduce((sum, a) => sum + a.pct, 0);
    const us = (pct: number): number => (pct / 100) * p.busyMsPerRequest * 1000;
    const top = p.summary.topOwners.slice(0, 7).map((a) => `${a.name} ${num(a.pct, 0)}%`);
    lines.push(
      `- **Largest CPU owners** (share of the gateway's busy time, Node internals and natives charged to the package that called them): ${top.join(', ')}.`,
    );
    lines.push(
      '',
      'Where the rest could go, ranked by the time this run measured (CPU from the profile; round trips from the probes above). The bench',
      'only measures: it changes nothing in `src/`; compare runs by the commit named under Machine.',
      '',
    );
    const candidates: { weight: number; text: string }[] = [];
    const jwt = share('jsonwebtoken', 'jws', 'jwa');
    const publicKeyTry = p.summary.topFunctions.find((f) => f.name.startsWith('createPublicKey') && (f.via ?? '').includes('jsonwebtoken'));
    candidates.push({
      weight: us(jwt),
      text:
        `JWT verification: ≈ ${num(us(jwt), 0)} µs per request (${num(jwt, 0)}% of CPU).` +
        (publicKeyTry !== undefined
          ? ` Most of it is \`createPublicKey\` called from jsonwebtoken's verify (${num((publicKeyTry.selfMs * 1000) / Math.max(1, p.requests), 0)} µs/request): given the secret as a string, jsonwebtoken 9 first tries to parse it as a public key, which throws, and only then makes a secret key — on every call. Pass a KeyObject made once with \`crypto.createSecretKey\` (to sign too), or cache verified tokens until their expiry.`
          : jwt < 0.5
            ? ' Verified claims are already cached per token until they expire.'
            : ' Cache the verified claims per token until expiry.'),
    });
    const upstream = share('undici', 'openai', 'node:deps/undici');
    const tokenizeCalls = p.tokenizeCallsPerRequest ?? 1;
    candidates.push({
      weight: us(upstream) + tokenizeCalls * (summary.probes?.tokenizeP50 ?? 0) * 1000,
      text:
        `Upstream client: ≈ ${num(us(upstream), 0)} µs of CPU per request (${num(upstream, 0)}%: undici, and the openai SDK ${num(share('openai'), 0)}% ` +
        `on undici’s \`request()\` through a lean fetch, not Node’s fetch and its web streams)` +
        (tokenizeCalls >= 0.05
          ? ` plus ${num(tokenizeCalls, 2)} \`/tokenize\` round trips (${num((summary.probes?.tokenizeP50 ?? 0) * 1000, 0)} µs each, measured directly). `
          : '; the prompt is bounded locally, without the `/tokenize` hop. ') +
        (share('openai') > 1 ? 'What the SDK still costs is building the request and parsing SSE and JSON: reading vLLM’s answer straight from `request()` would skip it, along with the SDK’s error classes.' : ''),
    });
    const database = share('pg', 'pg-protocol', 'pg-pool', '@mikro-orm/', 'knex');
    const tx = p.transactionsPerRequest ?? 0;
    const commit = summary.probes?.commitP50 ?? 0;
    const touched = p.tables
      .map((t) => {
        const parts = [
          t.inserts > 0 ? `${num(t.inserts, 1)} insert` : '',
          t.updates > 0 ? `${num(t.updates, 1)} update` : '',
          t.deletes > 0 ? `${num(t.deletes, 1)} delete` : '',
          t.scans > 0 ? `${num(t.scans, 1)} scan` : '',
        ].filter((x) => x !== '');
        return `${t.table} (${parts.join(', ')})`;
      })
      .join('; ');
    const orm = share('@mikro-orm/', 'knex');
    const dbOwners = p.summary.topOwners
      .filter((o) => ['pg', 'pg-protocol', 'pg-pool', 'knex'].includes(o.name) || o.name.startsWith('@mikro-orm/'))
      .map((o) => o.name);
    candidates.push({
      weight: us(database) + tx * commit * 1000,
      text:
        `Database: ≈ ${num(us(database), 0)} µs of CPU per request in ${dbOwners.join(', ') || 'the database client'} (${num(database, 0)}%), plus ${num(tx, 1)} transactions per request ` +
        `(≈ ${num(tx * commit * 1000, 0)} µs of round trips and commits at the probe's ${num(commit * 1000, 0)} µs each). Per request, by table: ${touched || '–'}. ` +
        (orm > 1
          ? `MikroORM and knex alone take ${num(orm, 0)}%: run the hot statements on the pg pool directly as prepared statements. `
          : `MikroORM and knex take ${num(orm, 1)}%: the hot statements already bypass the ORM. `) +
        'Every statement that can be folded into a neighbour saves a round trip and, for writes, a commit.',
    });
    const graphqlLayer = share('graphql', '@apollo/', '@graphql-tools/', 'type-graphql', '@escape.tech/', 'graphql-scalars');
    const graphqlFunctions = p.summary.topFunctions.filter((f) => /(^|\s|\/)(graphql|@apollo|type-graphql|@graphql-tools|@escape\.tech)\//.test(f.name));
    const cacheControl = p.summary.topFunctions.find((f) => f.name.includes('plugin/cacheControl'));
    candidates.push({
      weight: us(graphqlLayer),
      text:
        `GraphQL layer (graphql-js, Apollo, type-graphql, graphql-armor, directive wrappers): ≈ ${num(us(graphqlLayer), 0)} µs per request (${num(graphqlLayer, 0)}%)` +
        (graphqlFunctions.length > 0
          ? `, led by ${graphqlFunctions
              .slice(0, 4)
              .map((f) => `\`${f.name.split(' ')[0]}\` (${f.name.split(' ')[1]?.split('/').slice(0, 2).join('/') ?? ''}, ${num((f.selfMs * 1000) / Math.max(1, p.requests), 0)} µs)`)
              .join(', ')}.`
          : '.') +
        (cacheControl !== undefined
          ? ' Apollo’s cache-control plugin, installed by default, hooks every field (`willResolveField`, and the schema instrumentation that wraps each resolver for it): `ApolloServerPluginCacheControlDisabled()` turns it off.'
          : '') +
        (p.summary.topFunctions.some((f) => /graphql\/(language|validation)\//.test(f.name))
          ? ' Parsing or validation shows among the top functions: cache the parsed and validated document.'
          : ' Parsing and validation are not among the top functions (Apollo’s document store caches them).'),
    });
    const ours = share('gateway src/');
    candidates.push({
      weight: us(ours),
      text: `Our own code (src/): ≈ ${num(us(ours), 0)} µs per request (${num(ours, 0)}%), mostly ${p.summary.topOwners.filter((o) => o.name.startsWith('gateway src/')).slice(0, 3).map((o) => o.name.replace('gateway ', '')).join(', ') || '–'}.`,
    });
    const pinoShare = share('pino');
    if (pinoShare > 0.5) candidates.push({ weight: us(pinoShare), text: `pino: ≈ ${num(us(pinoShare), 0)} µs per request at LOG_LEVEL=warn; avoid building child loggers per request.` });
    const tiktokenShare = share('tiktoken');
    if (tiktokenShare > 0.5) candidates.push({ weight: us(tiktokenShare), text: `tiktoken: ≈ ${num(us(tiktokenShare), 0)} µs per request; build the encoder once.` });
    const gc = (100 * p.summary.gcMs) / Math.max(1, p.summary.busyMs);
    candidates.push({ weight: us(gc), text: `Garbage collection: ≈ ${num(us(gc), 0)} µs per request (${num(gc, 0)}%): follows from the allocations above.` });
    candidates.sort((a, b) => b.weight - a.weight);
    candidates.forEach((candidate, i) => lines.push(`${i + 1}. ${candidate.text}`));
  } else {
    lines.push(`The profile step failed: ${summary.profileError ?? 'unknown'}.`);
  }
  return lines;
}

function observations(summary: BenchSummary): string[] {
  const out: string[] = [];
  const pick = (upstreamMs: number, concurrency: number, target: string) =>
    summary.nonStream.find((s) => s.upstreamMs === upstreamMs && s.concurrency === concurrency)?.results.find((r) => r.target === target);
  const d0 = pick(0, 1, 'direct');
  const d20 = pick(20, 1, 'direct');
  if (d0 !== undefined && d20 !== undefined) {
    const pair = (target: string): string =>
      `${num(pick(0, 1, target)?.gatewayCpuMsPerRequest)} → ${num(pick(20, 1, target)?.gatewayCpuMsPerRequest)} ms`;
    const rises = ['portkey', 'graphql', 'openai'].every(
      (target) => (pick(20, 1, target)?.gatewayCpuMsPerRequest ?? 0) > (pick(0, 1, target)?.gatewayCpuMsPerRequest ?? Infinity),
    );
    out.push(
      `CPU per request at concurrency 1, 0 ms → 20 ms upstream: simulator ${num(d0.simulatorCpuMsPerRequest)} → ${num(d20.simulatorCpuMsPerRequest)} ms, ` +
        `Portkey ${pair('portkey')}, our GraphQL ${pair('graphql')}, our /v1 ${pair('openai')}.` +
        (rises
          ? ' Every process needs more with the slower upstream: between requests they sleep and wake up cold on this VM, and that lands in the' +
            ' added latency; the 0 ms rows isolate the gateways’ own cost better.'
          : ''),
      '',
    );
  }
  const busiestClient = Math.max(...summary.nonStream.flatMap((s) => s.results.filter((r) => r.target === 'direct').map((r) => r.clientCores)));
  if (busiestClient > 0.7) {
    out.push(
      `The load generator is one Node.js process: against the direct simulator at 0 ms it used up to ${num(busiestClient)} cores, so those direct ` +
        'throughputs are bounded by the generator and the simulator sharing 2 cores. Against the gateways it used at most ' +
        `${num(Math.max(...summary.nonStream.flatMap((s) => s.results.filter((r) => r.target !== 'direct').map((r) => r.clientCores))))} cores: it does not limit their figures.`,
      '',
    );
  }
  const g64 = pick(20, 64, 'graphql');
  const dir64 = pick(20, 64, 'direct');
  const portkey64 = pick(20, 64, 'portkey');
  if (g64 !== undefined && dir64 !== undefined && g64.gatewayCpuMsPerRequest !== null && g64.gatewayCpuMsPerRequest > 0) {
    const needed = portkey64?.throughputRatio == null ? null : 1.5 * portkey64.throughputRatio * dir64.rps;
    out.push(
      `Throughput is CPU-bound: our gateway is one Node.js process, and at ${num(g64.gatewayCpuMsPerRequest)} ms of CPU per GraphQL request (concurrency 64, 20 ms upstream) ` +
        `one core caps it near ${num(1000 / g64.gatewayCpuMsPerRequest, 0)} requests/s; it served ${num(g64.rps, 0)}.` +
        (needed === null
          ? ''
          : ` 1.5× Portkey's ratio to direct is ${num(needed, 0)} requests/s, which one process reaches at ${num(1000 / needed, 2)} ms of CPU per request or less (PostgreSQL, the simulator and the load generator share the same 2 cores).`),
      '',
    );
  }
  const inside = g64?.inside;
  const insideV1 = pick(20, 64, 'openai')?.inside;
  if (inside !== undefined && inside.reserveStatementsPerSecond > 0) {
    const cycleMs = 1000 / inside.reserveStatementsPerSecond;
    out.push(
      `Inside our gateway, by its own \`/metrics\` over the same rounds (concurrency 64, 20 ms upstream): a GraphQL request spent ${num(inside.overheadMs, 1)} ms on average ` +
        `not waiting on vLLM (\`gateway_overhead_seconds\`)${insideV1 === undefined ? '' : `, a /v1 request ${num(insideV1.overheadMs, 1)} ms`}. ` +
        `Group commit put ${num(inside.reserveItemsPerStatement, 1)} reservations in each reserve statement and ${num(inside.settleItemsPerStatement, 1)} settlements in each settle statement, ` +
        `${num(inside.reserveStatementsPerSecond, 0)} reserve statements a second. A process keeps one statement of each kind in flight, so one lasts at most ${num(cycleMs, 1)} ms; ` +
        `waiting for the one in flight (half of one, on average) and then for its own, a request spends up to ≈ ${num(3 * cycleMs, 1)} ms in its two ledger phases ` +
        '(an upper bound: it assumes a statement is always in flight).',
      '',
    );
  }
  return out;
}

export function renderMarkdown(summary: BenchSummary, chartRef = 'bench/chart.svg'): string {
  const m = summary.machine;
  const s = summary.settings as Record<string, number | number[] | string>;
  const out: string[] = [];
  const portkeyRan = summary.checks.some((c) => c.target === 'portkey' && c.ok);
  out.push(
    '# Benchmarks',
    '',
    '<!-- Generated by `npm run bench` (bench/run.ts). Do not edit by hand: run it again. -->',
    '',
    `Generated ${summary.generatedAt} by \`npm run bench\`${summary.quick ? ' **--quick (smoke run, rough numbers)**' : ''}; the run took ${Math.round(summary.durationSeconds)} s ` +
      `(build excluded). Machine-readable: [bench/summary.json](bench/summary.json) (the same data; per-round figures in \`bench/results/latest.json\`, not committed).`,
    '',
    '## Machine',
    '',
    `- ${m.cpus} CPUs (${m.cpuModel}), ${m.memoryGiB} GiB memory, ${m.os}`,
    `- Node.js ${m.node}, PostgreSQL ${m.postgres} (embedded, the gateway's own \`startEmbeddedPostgres\`, default settings: fsync and synchronous commit on)`,
    `- Portkey \`@portkey-ai/gateway\` ${m.portkeyVersion}${portkeyRan ? '' : ' — **did not run, see notes**'}`,
    `- Code measured: ${
      summary.code === null || summary.code === undefined
        ? 'commit not recorded'
        : `commit \`${summary.code.commit}\`${summary.code.uncommitted.length === 0 ? ' (src/ and migrations/ as committed)' : ` plus uncommitted changes in ${summary.code.uncommitted.join(', ')}`}`
    }`,
    '',
    `- ${quietness(summary).noisy ? '**' : ''}${quietness(summary).text}${quietness(summary).noisy ? '**' : ''}`,
    '',
    'Everything shares the 2 cores: the load generator, the simulator, PostgreSQL, our gateway and Portkey. Absolute',
    'throughput figures are this machine’s; the ratios to the direct call are the comparable part.',
    '',
    '## What runs',
    '',
    '- **Upstream**: the project’s vLLM simulator in its own process, fixed latency, no jitter. Non-streaming: time to first token 0 ms or 20 ms,',
    `  ${String(s.nonStreamTokens)} completion tokens, no inter-token delay. Streaming: ${String(s.streamTtftMs)} ms to the first token, ${String(s.streamInterTokenMs)} ms per further token, ${String(s.streamTokens)} tokens.`,
    '- **direct**: the simulator’s OpenAI REST endpoint, called by the same load generator.',
    '- **Portkey**: `@portkey-ai/gateway` run headless on a free port (`node …/build/start-server.js --headless --port=N`, which is what',
    '  `npx @portkey-ai/gateway` runs), headers `x-portkey-provider: openai` and `x-portkey-custom-host: <simulator>/v1`.',
    '- **ours**: `node dist/src/main.js` (compiled JavaScript), `NODE_ENV=production`, `LOG_LEVEL=warn`, on the embedded PostgreSQL. Every request is',
    '  authenticated (a JWT for GraphQL, an API key for `/v1`), has its prompt counted, reserves quota, is settled with one usage',
    '  record and publishes one `usageUpdated` event. One user with an unlimited quota sends the main chat load; the budget loads',
    '  (under “Many users, finite budgets”) send it as 64 users with finite quotas, then with key, user and team budgets.',
    '  GraphQL `chat` is an HTTP POST to `/graphql`; `chatStream` runs over graphql-ws, one socket per concurrent stream (two users, as the',
    '  gateway allows 20 sockets per user); `/v1/chat/completions` is our OpenAI-compatible endpoint (JSON and SSE).',
    '- **Load generator**: this bench’s own process (no target runs in it), closed loop: *c* workers each send the next request as',
    '  soon as the previous answer is complete; keep-alive undici pools. Latency is request start to the complete body.',
    `- **Method**: a warm-up for every target (${String(s.globalWarmMs)} ms at concurrency 8, then ${String(s.warmMs)} ms per scenario), then ${String(s.rounds)} rounds per`,
    `  scenario, interleaved (direct, Portkey, GraphQL, OpenAI, then rotated by one each round) so that drift hits all alike; each round runs`,
    `  a target for ${String(s.roundMs)} ms (streaming: ${String(s.streamRoundMs)} ms). Percentiles are over all rounds’ requests; **added** = target minus direct at the same`,
    '  percentile; throughput = completed requests / time, shown as a ratio to direct. *gateway CPU ms/req*: CPU time of the',
    '  gateway process under test alone (ours or Portkey) per request; *simulator CPU ms/req*: the simulator’s (ours also calls',
    '  its `/tokenize`); *PostgreSQL CPU ms/req*: the postmaster and its backends. *server CPU ms/req*: CPU time of every',
    '  process the bench started except itself (simulator, PostgreSQL, the gateway under test; scheduler run time from /proc/<pid>/task/*/schedstat) per request;',
    '  *client cores*: CPU of the load generator while that target ran (near 1.0 would mean the generator limits the figure).',
    '',
    '## Targets from issue 17',
    '',
  );
  const g = goalRows(summary);
  out.push(markdownTable(g.header, g.rows, g.align), '');
  out.push('## Side by side', '', 'Non-streaming chat, each gateway against the same direct calls (added latency in ms; throughput as a ratio to direct):', '');
  const h = headlineRows(summary);
  out.push(markdownTable(h.header, h.rows, h.align), '');
  out.push('## Non-streaming chat', '', `![Added latency per concurrency](${chartRef})`, '');
  const ns = nonStreamRows(summary.nonStream);
  out.push(markdownTable(ns.header, ns.rows, ns.align), '');
  out.push(...observations(summary));
  out.push('## Streaming', '');
  const st0 = summary.stream[0];
  out.push(
    `Upstream: ${st0?.upstreamMs ?? '–'} ms to the first token, ${st0?.interTokenMs ?? '–'} ms per token, ${st0?.tokens ?? '–'} tokens. TTFT = request start to the first chunk`,
    'carrying content; gap = time between consecutive content chunks as they arrive. SSE for direct, Portkey and our `/v1`;',
    'our `chatStream` subscription over graphql-ws (socket already open). All figures in ms.',
    '',
  );
  const st = streamRows(summary);
  out.push(markdownTable(st.header, st.rows, st.align), '');
  out.push('## Live usage fan-out', '');
  if (summary.fanOut !== null) {
    const f = summary.fanOut;
    out.push(
      `${f.subscribers} \`usageUpdated\` subscriptions (everyone’s events), one per WebSocket, held by ${f.adminUsers} admin users (20 sockets each, the`,
      `gateway’s default per-user limit); ${f.events} GraphQL chat requests, one every ${f.intervalMs} ms; ${f.deliveries} of ${f.expectedDeliveries} deliveries arrived.`,
      '',
      markdownTable(
        ['measure', 'p50 ms', 'p99 ms', 'max ms'],
        [
          ['settle → delivery (receive time − event `at`)', num(f.fromSettle.p50), num(f.fromSettle.p99), num(f.fromSettle.max)],
          ['chat answer received → delivery', num(f.fromResponse.p50), num(f.fromResponse.p99), num(f.fromResponse.max)],
          ['first → last subscriber, per event', num(f.spread.p50), num(f.spread.p99), num(f.spread.max)],
        ],
        ['l', 'r', 'r', 'r'],
      ),
      '',
      `Our gateway spent ${num(f.gatewayCpuMsPerEvent)} ms of CPU per event (the chat request, its settle and ${f.subscribers} deliveries); the load generator spent`,
      `${num(f.clientCpuUsPerDelivery, 1)} µs per delivery it received, so up to ≈ ${num((f.clientCpuUsPerDelivery * f.subscribers) / 1000, 0)} ms of the first → last spread is the receiving side working through the burst.`,
      '',
      'Method: the gateway stamps `at` (the event’s field) just before the settle statement, so *settle → delivery* spans the settle',
      'transaction, the NOTIFY round trip through PostgreSQL, the per-subscriber authorisation and the WebSocket write; the',
      'receiving side stamps each message on arrival, before parsing. Both clocks are this machine’s wall clock; `at` has',
      'millisecond resolution, so single figures carry ±1 ms. *chat answer → delivery* uses the client’s own clock only (it can be',
      'negative: the event may arrive before the answer).',
      '',
    );
  } else out.push(`The fan-out step failed: ${summary.fanOutError ?? 'unknown'}.`, '');
  out.push('## Many users, finite budgets', '');
  out.push(...budgetSection(summary, markdownTable), '');
  out.push('## Workers on one host', '');
  out.push(...renderWorkers(summary.workers, summary.workersError, markdownTable), '');
  out.push('## Fleet', '');
  out.push(...fleetSection(summary, markdownTable), '');
  out.push('## Peak memory', '');
  const mem = memoryRows(summary);
  out.push(markdownTable(mem.header, mem.rows, mem.align), '');
  out.push('VmHWM from `/proc/<pid>/status` of each gateway’s Node.js process.', '');
  out.push('## What dominates our added latency', '');
  out.push(...analysis(summary), '');
  if (summary.profile !== null) {
    const p = summary.profile;
    out.push(
      `Profile: \`node --cpu-prof --cpu-prof-interval 250\` on a second gateway process (same database and upstream), ${p.requests} GraphQL`,
      `\`chat\` requests at concurrency 1 with a 0 ms upstream after a warm-up; only samples inside the load window count. Self time`,
      'summed per area and per function:',
      '',
    );
    const owners = profileRows(p, 'owners', 12);
    out.push(markdownTable(owners.header, owners.rows, owners.align), '');
    const areas = profileRows(p, 'areas', 12);
    out.push(markdownTable(areas.header, areas.rows, areas.align), '');
    const fns = profileRows(p, 'functions', 20);
    out.push(markdownTable(fns.header, fns.rows, fns.align), '');
  }
  out.push('## Checks and notes', '');
  for (const check of summary.checks) out.push(`- ${TARGET_LABEL[check.target]}: ${check.ok ? 'ok' : '**failed**'} — ${check.detail}`);
  out.push(
    '- Portkey 1.15.2 resolves `@hono/node-server` to a version whose Response reuses the upstream fetch response’s immutable',
    '  headers, so every OpenAI streaming request through it fails with `TypeError: immutable` (Portkey-AI/gateway issues 1389',
    '  and 1550). The bench preloads `bench/portkey-shim.ts` into Portkey’s process, which hands Portkey a copy of the headers',
    '  for `text/event-stream` responses only (the fix proposed upstream). Non-streaming requests go through Portkey unmodified.',
    '- Portkey’s SSE reader waits 25 ms before it passes on the first event of every stream (`setTimeout(…, 25)` in the',
    '  stream-splitting loop of `build/start-server.js`), so about 25 ms of its added time to first token is by design, not load.',
  );
  for (const note of summary.notes) out.push(`- ${note}`);
  out.push('');
  return out.join('\n');
}
