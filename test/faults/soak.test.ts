// Load across instances: two gateway processes on one database, 50 users in and out of four
// teams, some with API keys of their own budget, every budget small and DAILY, and hundreds of
// chats at once spread over both processes: GraphQL `chat` and `chatStream` (graphql-ws),
// /v1/chat/completions through the openai SDK (JSON and SSE), with access tokens and keys, with
// and without maxTokens. Many requests are refused at every level; those granted are charged
// exactly once. Read straight from PostgreSQL after each of three rounds (the limits are raised
// between rounds so that each one works at the limit again): no level ever holds more than its
// limit, nothing stays reserved, every level's `used` is the sum of its records in the period,
// each granted request has one record matching what its client was told, and each refusal is
// QUOTA_EXCEEDED (GraphQL) or 429 insufficient_quota (/v1), nothing else. Each process's memory,
// read from its /metrics after every round, stays flat from round 1 to round 3.
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import OpenAI from 'openai';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { startSimulator, type Simulator } from '../../src/simulator';
import { seededRandom } from '../../src/simulator/generation';
import { ChatDocument, ChatStreamDocument, UpdateApiKeyDocument, UpdateTeamDocument, UpdateUserDocument } from '../generated/graphql';
import {
  codeOf,
  createApiKey,
  createUser,
  dataOf,
  extensionsOf,
  gql,
  openaiClient,
  signIn,
  sleep,
  WsClient,
  type GraphQLEndpoint,
  type SignedIn,
} from '../helpers/client';
import { createTestDatabase, sql } from '../helpers/database';
import { createTeam } from '../budgets/support';
import { ensureServerBuild } from '../foundation/build';
import {
  PROCESS_ADMIN,
  baseEnv,
  killGateway,
  makeDataDir,
  removeDir,
  startGatewayProcess,
  within,
  type GatewayProcess,
} from '../foundation/gateway-process';

const MODEL = 'sim-llama-3-8b';
const METRICS_TOKEN = 'soak-metrics-token-5d1e0c7a';
const ROUNDS = 3;
const CHATS_PER_ROUND = 200;
const IN_FLIGHT = 200;
const TEAMS = 4;
const USERS = 50;
/** Users 0..39 are members (user u of team u % TEAMS); 40..49 are in no team. */
const MEMBERS = 40;
const MAX_TOKENS = [8, 16, 24, 40, null] as const;

// Budgets of one round: round r runs under r times these (raised through the API between
// rounds), so that each round starts with room and ends at the limit. A request costs its
// prompt (~15 tokens) plus 16..48 generated ones (fewer with a small maxTokens).
const TEAM_LIMIT = 700;
/** Members alternate in pairs: tight ones that their own limit stops, loose ones that only the team does. */
const MEMBER_LIMIT_TIGHT = 110;
const MEMBER_LIMIT_LOOSE = 400;
const SOLO_LIMIT = 100;
const KEY_LIMIT = 60;

type Scope = 'TEAM' | 'USER' | 'API_KEY';
type Kind = 'graphql' | 'graphql-stream' | 'openai' | 'openai-stream';
const KINDS: readonly Kind[] = ['graphql', 'graphql-stream', 'openai', 'openai-stream'];

interface Usage {
  readonly prompt: number;
  readonly completion: number;
  readonly total: number;
}

interface Member {
  readonly index: number;
  readonly user: SignedIn;
  readonly teamId: string | null;
  /** The user's limit in one round. */
  readonly limit: number;
  readonly key: { readonly id: string; readonly secret: string; readonly limit: number | null } | null;
}

interface Plan {
  readonly round: number;
  readonly index: number;
  readonly member: Member;
  readonly viaKey: boolean;
  readonly instance: number;
  readonly kind: Kind;
  readonly maxTokens: number | null;
  readonly content: string;
}

type Result =
  | { readonly outcome: 'ok'; readonly requestId: string; readonly usage: Usage }
  | { readonly outcome: 'refused'; readonly scope: Scope | 'unknown' }
  | { readonly outcome: 'failed'; readonly detail: string };

interface Outcome {
  readonly plan: Plan;
  readonly result: Result;
}

interface Instance {
  readonly proc: GatewayProcess;
  readonly origin: string;
  readonly wsUrl: string;
  readonly endpoint: GraphQLEndpoint & { readonly server: { readonly origin: string } };
}

/** What the helpers need of a gateway, for a gateway process. */
function instanceOf(proc: GatewayProcess): Instance {
  const { origin } = new URL(proc.url);
  return {
    proc,
    origin,
    wsUrl: proc.url.replace(/^http/, 'ws'),
    endpoint: {
      server: { origin },
      gql: <TData, TVariables>(document: TypedDocumentNode<TData, TVariables>, variables?: TVariables, token?: string) =>
        gql(proc.url, document, variables, token),
    },
  };
}

/** Runs `work` on every item, at most `limit` at once; reports the most that were in flight. */
async function pooled<T, R>(items: readonly T[], limit: number, work: (item: T) => Promise<R>): Promise<{ results: R[]; peak: number }> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  let inFlight = 0;
  let peak = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const at = next++;
      inFlight += 1;
      peak = Math.max(peak, inFlight);
      try {
        results[at] = await work(items[at]);
      } finally {
        inFlight -= 1;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return { results, peak };
}

const SCOPE_OF_MESSAGE: readonly [RegExp, Scope][] = [
  [/remain in this API key's quota/, 'API_KEY'],
  [/remain in your team's quota/, 'TEAM'],
  [/remain in your quota/, 'USER'],
];

function scopeOf(value: unknown): Scope | 'unknown' {
  return value === 'TEAM' || value === 'USER' || value === 'API_KEY' ? value : 'unknown';
}

/** A GraphQL error (HTTP or graphql-ws) as an outcome: a quota refusal, or a failure. */
function refusalOf(errors: unknown, where: string): Result {
  if (codeOf(errors) === 'QUOTA_EXCEEDED') return { outcome: 'refused', scope: scopeOf(extensionsOf(errors)?.scope) };
  return { outcome: 'failed', detail: `${where}: ${errors instanceof Error ? errors.message : JSON.stringify(errors)}` };
}

/** An error of the openai SDK as an outcome: 429 insufficient_quota is a refusal, anything else a failure. */
function sdkRefusalOf(error: unknown): Result {
  if (error instanceof OpenAI.APIError && error.status === 429 && error.code === 'insufficient_quota') {
    return { outcome: 'refused', scope: SCOPE_OF_MESSAGE.find(([pattern]) => pattern.test(error.message))?.[1] ?? 'unknown' };
  }
  const status = error instanceof OpenAI.APIError ? `HTTP ${String(error.status)} ` : '';
  return { outcome: 'failed', detail: `/v1: ${status}${error instanceof Error ? error.message : String(error)}` };
}

function usageOfSdk(usage: OpenAI.CompletionUsage | null | undefined): Usage | null {
  return usage == null ? null : { prompt: usage.prompt_tokens, completion: usage.completion_tokens, total: usage.total_tokens };
}

interface MemoryFigures {
  readonly heapUsed: number;
  readonly rss: number;
}

const MiB = 1024 * 1024;
const mib = (bytes: number): number => Math.round((bytes / MiB) * 10) / 10;

describe('soak: two gateway processes, 50 users, hundreds of concurrent chats at the limit', () => {
  let simulator: Simulator;
  let databaseUrl: string;
  const instances: Instance[] = [];
  const dataDirs: string[] = [];
  const sockets = new Map<string, WsClient>();
  const sdks = new Map<string, OpenAI>();

  beforeAll(async () => {
    await ensureServerBuild();
    // A little latency, so that the granted requests overlap in the simulator and in the ledger.
    simulator = await startSimulator({ timeToFirstTokenMs: 20, interTokenLatencyMs: 4, jitterMs: 2 });
    databaseUrl = await createTestDatabase();
    // One after the other: the first applies the migrations and creates the admin.
    for (const label of ['soak-a', 'soak-b']) {
      const dataDir = makeDataDir(label);
      dataDirs.push(dataDir);
      const proc = await startGatewayProcess(
        baseEnv({ DATABASE_URL: databaseUrl, VLLM_BASE_URL: simulator.url, DATA_DIR: dataDir, METRICS_TOKEN }),
      );
      instances.push(instanceOf(proc));
    }
  }, 90_000);

  afterAll(async () => {
    await Promise.all([...sockets.values()].map((client) => client.dispose()));
    for (const instance of instances) await killGateway(instance.proc);
    await simulator?.stop();
    for (const dir of dataDirs) removeDir(dir);
  }, 60_000);

  function socketFor(instance: number, credential: string): WsClient {
    const id = `${instance}:${credential}`;
    let client = sockets.get(id);
    if (client === undefined) {
      client = new WsClient(instances[instance].wsUrl, `Bearer ${credential}`);
      sockets.set(id, client);
    }
    return client;
  }

  function sdkFor(instance: number, credential: string): OpenAI {
    const id = `${instance}:${credential}`;
    let client = sdks.get(id);
    if (client === undefined) {
      client = openaiClient(instances[instance].endpoint, credential);
      sdks.set(id, client);
    }
    return client;
  }

  async function send(plan: Plan): Promise<Result> {
    const credential = plan.viaKey && plan.member.key !== null ? plan.member.key.secret : plan.member.user.token;
    const input = {
      model: MODEL,
      messages: [{ role: 'USER' as const, content: plan.content }],
      ...(plan.maxTokens === null ? {} : { maxTokens: plan.maxTokens }),
    };
    const request = { model: MODEL, messages: [{ role: 'user' as const, content: plan.content }], ...(plan.maxTokens === null ? {} : { max_tokens: plan.maxTokens }) };
    switch (plan.kind) {
      case 'graphql': {
        const result = await instances[plan.instance].endpoint.gql(ChatDocument, { input }, credential);
        if (result.status >= 500) return { outcome: 'failed', detail: `GraphQL HTTP ${result.status}: ${JSON.stringify(result.errors)}` };
        if (result.errors !== undefined || result.data == null) return refusalOf(result.errors, `GraphQL HTTP ${result.status}`);
        const { id, usage } = result.data.chat;
        return { outcome: 'ok', requestId: id, usage: { prompt: usage.promptTokens, completion: usage.completionTokens, total: usage.totalTokens } };
      }
      case 'graphql-stream': {
        const { events, error } = await within(socketFor(plan.instance, credential).collect(ChatStreamDocument, { input }), 30_000, () => 'a chatStream that never ended');
        if (error !== null) return refusalOf(error, 'chatStream');
        const last = events.at(-1)?.chatStream;
        if (last?.usage == null) return { outcome: 'failed', detail: `chatStream ended without usage after ${events.length} chunks` };
        return { outcome: 'ok', requestId: last.id, usage: { prompt: last.usage.promptTokens, completion: last.usage.completionTokens, total: last.usage.totalTokens } };
      }
      case 'openai': {
        try {
          const { data, response } = await sdkFor(plan.instance, credential).chat.completions.create(request).withResponse();
          const usage = usageOfSdk(data.usage);
          const requestId = response.headers.get('x-usage-request-id');
          if (usage === null || requestId === null) return { outcome: 'failed', detail: `/v1 JSON without usage or x-usage-request-id` };
          return { outcome: 'ok', requestId, usage };
        } catch (error) {
          return sdkRefusalOf(error);
        }
      }
      case 'openai-stream': {
        try {
          const { data: stream, response } = await sdkFor(plan.instance, credential)
            .chat.completions.create({ ...request, stream: true, stream_options: { include_usage: true } })
            .withResponse();
          let usage: Usage | null = null;
          for await (const chunk of stream) usage = usageOfSdk(chunk.usage) ?? usage;
          const requestId = response.headers.get('x-usage-request-id');
          if (usage === null || requestId === null) return { outcome: 'failed', detail: `/v1 stream without usage or x-usage-request-id` };
          return { outcome: 'ok', requestId, usage };
        } catch (error) {
          return sdkRefusalOf(error);
        }
      }
    }
  }

  async function scrape(instance: Instance): Promise<ReturnType<typeof parsePrometheusTextFormat>> {
    const response = await fetch(`${instance.origin}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
    if (response.status !== 200) throw new Error(`/metrics of ${instance.origin} answered ${response.status}`);
    return parsePrometheusTextFormat(await response.text());
  }

  function sampleSum(families: ReturnType<typeof parsePrometheusTextFormat>, name: string, labels: Record<string, string> = {}): number {
    const family = families.find((candidate) => candidate.name === name);
    if (family === undefined) throw new Error(`/metrics has no ${name}`);
    return family.metrics
      .filter((metric) => Object.entries(labels).every(([key, value]) => metric.labels?.[key] === value))
      .reduce((sum, metric) => sum + Number(metric.value ?? 0), 0);
  }

  async function memoryOf(instance: Instance): Promise<MemoryFigures> {
    const families = await scrape(instance);
    return { heapUsed: sampleSum(families, 'nodejs_heap_size_used_bytes'), rss: sampleSum(families, 'process_resident_memory_bytes') };
  }

  interface LedgerRow extends Record<string, unknown> {
    id: string;
    used: string;
    reserved: string;
    recorded: string;
    records: string;
  }

  /** Every account of a level with the sum and count of its records in its current period, straight from PostgreSQL. */
  async function ledgers(table: string, key: string, column: string): Promise<Map<string, { used: number; reserved: number; recorded: number; records: number }>> {
    const rows = await sql<LedgerRow>(
      databaseUrl,
      `select a.${key} as id, a.used, a.reserved,
              coalesce(sum(r.charged_tokens), 0) as recorded, count(r.id) as records
         from ${table} a left join usage_records r on r.${column} = a.${key} and r.created_at >= a.period_start
        group by a.${key}, a.used, a.reserved`,
    );
    return new Map(rows.map((row) => [row.id, { used: Number(row.used), reserved: Number(row.reserved), recorded: Number(row.recorded), records: Number(row.records) }]));
  }

  it(
    'no level overspends, every sum is equal, every refusal is a quota refusal, and memory stays flat',
    async () => {
      const started = Date.now();
      const [a, b] = instances;
      const admin = await signIn(a.endpoint, PROCESS_ADMIN.email, PROCESS_ADMIN.password);

      // Teams, users and keys, through the API, half on each instance.
      const teams = await Promise.all(
        Array.from({ length: TEAMS }, (_, t) => createTeam(instances[t % 2].endpoint, admin.token, { tokenLimit: TEAM_LIMIT, quotaPeriod: 'DAILY' })),
      );
      const { results: members } = await pooled(
        Array.from({ length: USERS }, (_, u) => u),
        8,
        async (u): Promise<Member> => {
          const endpoint = instances[u % 2].endpoint;
          const teamId = u < MEMBERS ? teams[u % TEAMS].id : null;
          const limit = u >= MEMBERS ? SOLO_LIMIT : Math.floor(u / TEAMS) % 2 === 0 ? MEMBER_LIMIT_TIGHT : MEMBER_LIMIT_LOOSE;
          const user = await createUser(endpoint, admin.token, { tokenLimit: limit, quotaPeriod: 'DAILY', teamId });
          // Two users in five have a key: one with a small budget of its own, one bound only by its user (and team).
          const keyLimit = u % 5 === 0 ? KEY_LIMIT : u % 5 === 1 ? null : undefined;
          const key =
            keyLimit === undefined
              ? null
              : { ...(await createApiKey(endpoint, user.token, `soak-${u}`, { tokenLimit: keyLimit, quotaPeriod: 'DAILY' })), limit: keyLimit };
          return { index: u, user, teamId, limit, key };
        },
      );

      // Deterministic (mulberry32) from a printed seed: SOAK_SEED=<seed> replays a failing mix.
      const seed = Number(process.env.SOAK_SEED ?? Date.now() % 1_000_000);
      const rand = seededRandom(seed);
      const words = ['alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta', 'eta', 'theta'];
      const outcomes: Outcome[] = [];
      const memory: MemoryFigures[][] = [];
      const peaks: number[] = [];
      const simulatorBefore = simulator.stats.chatRequests;

      for (let round = 1; round <= ROUNDS; round += 1) {
        if (round > 1) {
          // Room again at every level: round r runs under r times the budgets of one round.
          await Promise.all(teams.map((team, t) => instances[t % 2].endpoint.gql(UpdateTeamDocument, { id: team.id, input: { tokenLimit: TEAM_LIMIT * round } }, admin.token).then((result) => dataOf(result, 'updateTeam'))));
          await pooled(members, 8, async (member) => {
            const endpoint = instances[member.index % 2].endpoint;
            dataOf(await endpoint.gql(UpdateUserDocument, { id: member.user.id, input: { tokenLimit: member.limit * round } }, admin.token), 'updateUser');
            if (member.key?.limit != null) {
              dataOf(await endpoint.gql(UpdateApiKeyDocument, { id: member.key.id, input: { tokenLimit: member.key.limit * round } }, admin.token), 'updateApiKey');
            }
          });
        }
        const plans: Plan[] = Array.from({ length: CHATS_PER_ROUND }, (_, index) => {
          const member = members[Math.floor(rand() * USERS)];
          const length = 1 + Math.floor(rand() * 12);
          return {
            round,
            index,
            member,
            viaKey: member.key !== null && rand() < 0.6,
            instance: index % 2,
            kind: KINDS[Math.floor(rand() * KINDS.length)],
            maxTokens: MAX_TOKENS[Math.floor(rand() * MAX_TOKENS.length)],
            content: `Soak ${round}.${index}: ${Array.from({ length }, () => words[Math.floor(rand() * words.length)]).join(' ')}`,
          };
        });
        const { results, peak } = await pooled(plans, IN_FLIGHT, send);
        peaks.push(peak);
        outcomes.push(...results.map((result, i) => ({ plan: plans[i], result })));

        // After each round, at every level: within the round's limit, nothing reserved, used = its records.
        const levels = [
          { label: 'team', limitOf: () => TEAM_LIMIT * round, rows: await ledgers('team_quota_accounts', 'team_id', 'team_id') },
          { label: 'user', limitOf: (id: string) => (members.find((m) => m.user.id === id)?.limit ?? 0) * round, rows: await ledgers('quota_accounts', 'user_id', 'user_id') },
          {
            label: 'key',
            limitOf: (id: string) => {
              const limit = members.find((m) => m.key?.id === id)?.key?.limit;
              return limit == null ? Number.POSITIVE_INFINITY : limit * round;
            },
            rows: await ledgers('api_key_quota_accounts', 'api_key_id', 'api_key_id'),
          },
        ];
        // Every holder has its account (the admin's too): the checks below look at all of them.
        expect(levels.map((level) => level.rows.size)).toEqual([TEAMS, USERS + 1, members.filter((m) => m.key !== null).length]);
        for (const level of levels) {
          const broken = [...level.rows]
            .filter(([id]) => id !== admin.id)
            .filter(([id, row]) => row.used > level.limitOf(id) || row.reserved !== 0 || row.used !== row.recorded)
            .map(([id, row]) => ({ id, limit: level.limitOf(id), ...row }));
          expect({ round, level: level.label, broken }).toEqual({ round, level: level.label, broken: [] });
        }
        const [open] = await sql<{ n: string }>(databaseUrl, 'select count(*) as n from quota_reservations');
        expect({ round, openReservations: Number(open.n) }).toEqual({ round, openReservations: 0 });

        // Let the last responses' garbage become collectable before reading memory.
        await sleep(500);
        memory.push(await Promise.all(instances.map(memoryOf)));
      }
      const seconds = (Date.now() - started) / 1000;

      // --- What the clients saw.
      const ok = outcomes.filter((o): o is Outcome & { result: Extract<Result, { outcome: 'ok' }> } => o.result.outcome === 'ok');
      const refused = outcomes.filter((o): o is Outcome & { result: Extract<Result, { outcome: 'refused' }> } => o.result.outcome === 'refused');
      const failed = outcomes.filter((o) => o.result.outcome === 'failed').map((o) => ({ kind: o.plan.kind, instance: o.plan.instance, ...o.result }));
      const refusedBy = (scope: Scope | 'unknown'): number => refused.filter((o) => o.result.scope === scope).length;
      const byKind = Object.fromEntries(
        KINDS.map((kind) => [kind, { ok: ok.filter((o) => o.plan.kind === kind).length, refused: refused.filter((o) => o.plan.kind === kind).length }]),
      );
      const figures = {
        seed,
        seconds,
        chats: outcomes.length,
        peakInFlightPerRound: peaks,
        ok: ok.length,
        refused: refused.length,
        refusedBy: { TEAM: refusedBy('TEAM'), USER: refusedBy('USER'), API_KEY: refusedBy('API_KEY'), unknown: refusedBy('unknown') },
        okByLevel: {
          team: ok.filter((o) => o.plan.member.teamId !== null).length,
          noTeam: ok.filter((o) => o.plan.member.teamId === null).length,
          keyWithBudget: ok.filter((o) => o.plan.viaKey && o.plan.member.key?.limit != null).length,
          keyWithout: ok.filter((o) => o.plan.viaKey && o.plan.member.key?.limit == null).length,
          accessToken: ok.filter((o) => !o.plan.viaKey).length,
        },
        byKind,
        byInstance: instances.map((_, i) => ({ ok: ok.filter((o) => o.plan.instance === i).length, refused: refused.filter((o) => o.plan.instance === i).length })),
        failed: failed.length,
      };
      console.log(`soak figures: ${JSON.stringify(figures, null, 2)}`);

      // Nothing but quota refusals: no 500, no upstream error, no broken stream.
      expect(failed).toEqual([]);
      expect(outcomes).toHaveLength(ROUNDS * CHATS_PER_ROUND);
      // The quotas bit at every level, and every level let requests through.
      expect(figures.refusedBy.unknown).toBe(0);
      expect(figures.refusedBy.TEAM).toBeGreaterThan(0);
      expect(figures.refusedBy.USER).toBeGreaterThan(0);
      expect(figures.refusedBy.API_KEY).toBeGreaterThan(0);
      expect(figures.okByLevel.team).toBeGreaterThan(0);
      expect(figures.okByLevel.noTeam).toBeGreaterThan(0);
      expect(figures.okByLevel.keyWithBudget).toBeGreaterThan(0);
      for (const kind of KINDS) {
        expect({ kind, ok: byKind[kind].ok > 0, refused: byKind[kind].refused > 0 }).toEqual({ kind, ok: true, refused: true });
      }

      // --- What PostgreSQL holds: one record per granted request, as its client was told, charged where it belongs.
      interface RecordRow extends Record<string, unknown> {
        request_id: string;
        user_id: string;
        api_key_id: string | null;
        team_id: string | null;
        interface: string;
        prompt_tokens: number;
        completion_tokens: number;
        total_tokens: number;
        charged_tokens: number;
        status: string;
        usage_source: string;
      }
      const records = await sql<RecordRow>(
        databaseUrl,
        `select request_id, user_id, api_key_id, team_id, interface, prompt_tokens, completion_tokens, total_tokens, charged_tokens, status, usage_source
           from usage_records`,
      );
      const recordOf = new Map(records.map((record) => [record.request_id, record]));
      expect(records).toHaveLength(ok.length);
      expect(new Set(ok.map((o) => o.result.requestId)).size).toBe(ok.length);
      const mismatches = ok.flatMap((o) => {
        const record = recordOf.get(o.result.requestId);
        const expected = {
          user_id: o.plan.member.user.id,
          api_key_id: o.plan.viaKey ? o.plan.member.key?.id : null,
          team_id: o.plan.member.teamId,
          interface: o.plan.kind.startsWith('graphql') ? 'graphql' : 'openai',
          prompt_tokens: o.result.usage.prompt,
          completion_tokens: o.result.usage.completion,
          total_tokens: o.result.usage.total,
          charged_tokens: o.result.usage.total,
          status: 'completed',
          usage_source: 'reported',
        };
        const actual = record === undefined ? null : Object.fromEntries(Object.keys(expected).map((field) => [field, record[field]]));
        return JSON.stringify(actual) === JSON.stringify(expected) ? [] : [{ requestId: o.result.requestId, kind: o.plan.kind, expected, actual }];
      });
      expect(mismatches).toEqual([]);
      // vLLM saw exactly the granted requests: no refused one reached it.
      expect(simulator.stats.chatRequests - simulatorBefore).toBe(ok.length);

      // Each team's used is what its members' records charged it, and the clients were told as much.
      const teamRows = await ledgers('team_quota_accounts', 'team_id', 'team_id');
      for (const team of teams) {
        const told = ok.filter((o) => o.plan.member.teamId === team.id).reduce((sum, o) => sum + o.result.usage.total, 0);
        expect({ team: team.name, used: teamRows.get(team.id)?.used }).toEqual({ team: team.name, used: told });
      }

      // --- Each instance counted what its clients saw.
      const counted = await Promise.all(
        instances.map(async (instance) => {
          const families = await scrape(instance);
          return { ok: sampleSum(families, 'gateway_requests_total', { outcome: 'ok' }), refused: sampleSum(families, 'gateway_requests_total', { outcome: 'quota_exceeded' }) };
        }),
      );
      expect(counted).toEqual(figures.byInstance);

      // --- Memory flat: from round 1 to round 3, each process's heap grows less than half or 40 MiB,
      // whichever is larger, and its resident set less than half or 64 MiB.
      const report = instances.map((_, i) => ({
        instance: i === 0 ? 'a' : 'b',
        heapUsedMiB: memory.map((round) => mib(round[i].heapUsed)),
        rssMiB: memory.map((round) => mib(round[i].rss)),
      }));
      console.log(`soak memory after each round: ${JSON.stringify(report)}`);
      for (const [i, figuresOf] of report.entries()) {
        const growth = (field: keyof MemoryFigures, floor: number): { growthMiB: number; boundMiB: number; flat: boolean } => {
          const first = memory[0][i][field];
          const bound = Math.max(first * 0.5, floor);
          const grown = memory[ROUNDS - 1][i][field] - first;
          return { growthMiB: mib(grown), boundMiB: mib(bound), flat: grown < bound };
        };
        const heap = growth('heapUsed', 40 * MiB);
        const rss = growth('rss', 64 * MiB);
        expect({ ...figuresOf, heap, rss }).toEqual({ ...figuresOf, heap: { ...heap, flat: true }, rss: { ...rss, flat: true } });
      }

      // --- Neither process complained.
      for (const [i, instance] of [a, b].entries()) {
        const errors = instance.proc
          .stdout()
          .split('\n')
          .filter((line) => /"level":(50|60)/.test(line));
        expect({ instance: i, stderr: instance.proc.stderr(), errorLines: errors }).toEqual({ instance: i, stderr: '', errorLines: [] });
        expect(instance.proc.running()).toBe(true);
      }
    },
    170_000,
  );
});
