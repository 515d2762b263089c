import { hookIterator } from '../async-iterator';
import type { AuthService } from '../auth/auth.service';
import type { Viewer } from '../auth/viewer';
import type { Database } from '../db/database';
import { BadUserInputError, ForbiddenError } from '../errors';
import { decodeKeysetCursor, encodeKeysetCursor } from '../graphql/pagination';
import { isUuid } from '../rules';
import { Role } from '../users/user.entity';
import type { UsageBus, UsageTarget } from './usage-bus';
import { NO_BUCKET_ID, UsageGrouping, type UsageBucket, type UsageEvent, type UsageRecord, type UsageRecordConnection } from './usage.types';

const DEFAULT_PAGE_SIZE = 50;
const MAX_PAGE_SIZE = 500;
const MAX_SUMMARY_BUCKETS = 1000;
const RECORD_ID = /^\d{1,19}$/;

/** Which records: of a user, a team (its members', as charged to it), an API key, or their intersection; in a time range. */
export interface UsageRange {
  userId?: string | null;
  teamId?: string | null;
  apiKeyId?: string | null;
  from?: Date | null;
  to?: Date | null;
}

/** What a bucket is keyed by, in SQL. */
const BUCKET_KEY: Record<UsageGrouping, string> = {
  [UsageGrouping.DAY]: "to_char(created_at at time zone 'UTC', 'YYYY-MM-DD')",
  [UsageGrouping.MODEL]: 'model',
  [UsageGrouping.USER]: 'user_id::text',
  [UsageGrouping.TEAM]: `coalesce(team_id::text, '${NO_BUCKET_ID}')`,
  [UsageGrouping.API_KEY]: `coalesce(api_key_id::text, '${NO_BUCKET_ID}')`,
};

interface RecordRow {
  id: string;
  request_id: string;
  user_id: string;
  api_key_id: string | null;
  team_id: string | null;
  model: string;
  interface: string;
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  cached_tokens: number;
  charged_tokens: number;
  usage_source: string;
  status: string;
  latency_ms: number;
  upstream: string | null;
  /** created_at at UTC with microseconds: the cursor's time, and createdAt once parsed. */
  cursor_time: string;
}

/** Usage history, summaries and the live feed, each limited to what the viewer may see. */
export class UsageService {
  constructor(
    private readonly bus: UsageBus,
    private readonly auth: AuthService,
    private readonly db: Database,
  ) {}

  /** The user whose usage is asked for: yourself, or anyone for an admin. */
  targetUserId(viewer: Viewer, userId: string | null | undefined): string {
    if (userId == null || userId === viewer.userId) return viewer.userId;
    if (viewer.role !== Role.ADMIN) throw new ForbiddenError("Only admins can see other users' usage.");
    if (!isUuid(userId)) throw new BadUserInputError('userId is not a user id.', 'userId');
    return userId;
  }

  /**
   * The conditions of a range the viewer may read, numbered from $1 in `params`, which it fills:
   * your own records, or a key of yours; an admin's choice of user, team or key. Without a user,
   * a team or a key, the viewer's own.
   */
  private async rangeFilter(viewer: Viewer, range: UsageRange, params: unknown[]): Promise<string> {
    const filters: string[] = [];
    const add = (condition: (placeholder: string) => string, value: unknown): void => {
      params.push(value);
      filters.push(condition(`$${params.length}`));
    };
    if (range.teamId != null) add((p) => `team_id = ${p}::uuid`, this.targetTeamId(viewer, range.teamId));
    if (range.apiKeyId != null) add((p) => `api_key_id = ${p}::uuid`, await this.targetApiKeyId(viewer, range.apiKeyId));
    if (range.userId != null || (range.teamId == null && range.apiKeyId == null)) {
      add((p) => `user_id = ${p}::uuid`, this.targetUserId(viewer, range.userId));
    }
    if (range.from != null) add((p) => `created_at >= ${p}::timestamptz`, range.from);
    if (range.to != null) add((p) => `created_at < ${p}::timestamptz`, range.to);
    if (range.from != null && range.to != null && range.from > range.to) {
      throw new BadUserInputError('from must not be after to.', 'from');
    }
    return filters.join(' and ');
  }

  /** A team's usage is the admins' to see. */
  private targetTeamId(viewer: Viewer, teamId: string): string {
    if (viewer.role !== Role.ADMIN) throw new ForbiddenError("Only admins can see a team's usage.");
    if (!isUuid(teamId)) throw new BadUserInputError('teamId is not a team id.', 'teamId');
    return teamId;
  }

  /** An API key's usage is its owner's and the admins' to see. */
  private async targetApiKeyId(viewer: Viewer, apiKeyId: string): Promise<string> {
    const key = isUuid(apiKeyId) ? await this.db.one<{ user_id: string }>('select user_id from api_keys where id = $1', [apiKeyId]) : undefined;
    if (key === undefined) throw new BadUserInputError('No API key has this id.', 'apiKeyId');
    if (key.user_id !== viewer.userId && viewer.role !== Role.ADMIN) throw new ForbiddenError("Only admins can see other users' usage.");
    return apiKeyId;
  }

  /** Newest first, by keyset on (created_at, id): served by the (user_id | team_id | api_key_id, created_at, id) indexes. */
  async history(viewer: Viewer, range: UsageRange & { first?: number | null; after?: string | null }): Promise<UsageRecordConnection> {
    const first = range.first ?? DEFAULT_PAGE_SIZE;
    if (!Number.isInteger(first) || first < 0 || first > MAX_PAGE_SIZE) {
      throw new BadUserInputError(`first must be from 0 to ${MAX_PAGE_SIZE}.`, 'first');
    }
    const params: unknown[] = [];
    let where = await this.rangeFilter(viewer, range, params);
    if (range.after != null) {
      const [time, id] = decodeKeysetCursor(range.after, RECORD_ID);
      params.push(time, id);
      where += ` and (created_at, id) < ($${params.length - 1}::timestamptz, $${params.length}::bigint)`;
    }
    params.push(first + 1);
    const rows = await this.db.query<RecordRow>(
      `select id::text as id, request_id, user_id, api_key_id, team_id, model, interface, prompt_tokens, completion_tokens, total_tokens, cached_tokens,
              charged_tokens, usage_source, status, latency_ms, upstream,
              to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as cursor_time
         from usage_records where ${where}
        order by created_at desc, id desc
        limit $${params.length}`,
      params,
    );
    const edges = rows.slice(0, first).map((row) => ({ cursor: encodeKeysetCursor(row.cursor_time, row.id), node: toRecord(row) }));
    return {
      edges,
      nodes: edges.map((edge) => edge.node),
      pageInfo: { hasNextPage: rows.length > first, endCursor: edges.at(-1)?.cursor ?? null },
    };
  }

  async summary(viewer: Viewer, range: UsageRange, groupBy: UsageGrouping): Promise<UsageBucket[]> {
    const params: unknown[] = [];
    const where = await this.rangeFilter(viewer, range, params);
    const key = BUCKET_KEY[groupBy];
    const rows = await this.db.query<{
      bucket: string;
      requests: string;
      prompt: string;
      completion: string;
      total: string;
      cached: string;
      charged: string;
    }>(
      `select ${key} as bucket, count(*) as requests, sum(prompt_tokens) as prompt, sum(completion_tokens) as completion,
              sum(total_tokens) as total, sum(cached_tokens) as cached, sum(charged_tokens) as charged
         from usage_records where ${where}
        group by 1 order by 1 limit ${MAX_SUMMARY_BUCKETS}`,
      params,
    );
    const idOf = (grouping: UsageGrouping, bucket: string): string | null => (groupBy === grouping && bucket !== NO_BUCKET_ID ? bucket : null);
    return rows.map((row) => {
      return {
        key: row.bucket,
        day: groupBy === UsageGrouping.DAY ? new Date(`${row.bucket}T00:00:00.000Z`) : null,
        model: groupBy === UsageGrouping.MODEL ? row.bucket : null,
        userId: groupBy === UsageGrouping.USER ? row.bucket : null,
        teamId: idOf(UsageGrouping.TEAM, row.bucket),
        apiKeyId: idOf(UsageGrouping.API_KEY, row.bucket),
        requests: Number(row.requests),
        promptTokens: Number(row.prompt),
        completionTokens: Number(row.completion),
        totalTokens: Number(row.total),
        cachedTokens: Number(row.cached),
        chargedTokens: Number(row.charged),
      };
    });
  }

  /**
   * The live feed: the viewer's own events; for an admin, one user's, one team's (its members'
   * requests charged to it) or (both omitted) everyone's. Each event is authorised again as it
   * is delivered, so a demoted admin or a disabled user stops receiving at once.
   */
  async live(viewer: Viewer, userId: string | null | undefined, teamId: string | null | undefined): Promise<AsyncIterable<UsageEvent>> {
    const target = await this.liveTarget(viewer, userId, teamId);
    const source = this.bus.subscribe(target);
    const delivered = this.deliver(viewer, target, source);
    // Closing must reach the bus subscription even if delivery never started.
    return hookIterator(delivered, { beforeClose: () => source.return?.() });
  }

  private async liveTarget(viewer: Viewer, userId: string | null | undefined, teamId: string | null | undefined): Promise<UsageTarget> {
    if (teamId != null) {
      if (userId != null) throw new BadUserInputError('Ask for one user or one team, not both.', 'teamId');
      const team = await this.db.one<{ id: string }>('select id from teams where id = $1', [this.targetTeamId(viewer, teamId)]);
      if (team === undefined) throw new BadUserInputError('No team has this id.', 'teamId');
      return { teamId: team.id };
    }
    if (userId == null && viewer.role === Role.ADMIN) return null;
    return { userId: this.targetUserId(viewer, userId) };
  }

  /** The bus already delivers only the target's events (null: everyone's, for admins). */
  private async *deliver(viewer: Viewer, target: UsageTarget, events: AsyncIterable<UsageEvent>): AsyncGenerator<UsageEvent> {
    const ownOnly = target !== null && 'userId' in target && target.userId === viewer.userId;
    for await (const event of events) {
      const current = await this.auth.currentState(viewer);
      if (current === null) throw new ForbiddenError('Your credentials are no longer valid.');
      if (!ownOnly && current.role !== Role.ADMIN) {
        throw new ForbiddenError("Only admins can see other users' usage.");
      }
      yield event;
    }
  }
}

function toRecord(row: RecordRow): UsageRecord {
  return {
    id: row.id,
    requestId: row.request_id,
    userId: row.user_id,
    apiKeyId: row.api_key_id,
    teamId: row.team_id,
    model: row.model,
    interface: row.interface,
    promptTokens: row.prompt_tokens,
    completionTokens: row.completion_tokens,
    totalTokens: row.total_tokens,
    cachedTokens: row.cached_tokens,
    chargedTokens: row.charged_tokens,
    estimated: row.usage_source === 'estimated',
    status: row.status,
    latencyMs: row.latency_ms,
    upstream: row.upstream,
    // Not created_at itself: MikroORM has pg return timestamptz as text in the session's
    // format ("2026-03-01 22:50:00.123+00"), which the DateTime scalar refuses.
    createdAt: new Date(row.cursor_time),
  };
}
