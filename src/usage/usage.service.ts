import { hookIterator } from '../async-iterator';
import type { AuthService } from '../auth/auth.service';
import type { Viewer } from '../auth/viewer';
import type { Database } from '../db/database';
import { BadUserInputError, ForbiddenError } from '../errors';
import { decodeKeysetCursor, encodeKeysetCursor } from '../graphql/pagination';
import { isUuid } from '../rules';
import { Role } from '../users/user.entity';
import type { UsageBus } from './usage-bus';
import { UsageGrouping, type UsageBucket, type UsageEvent, type UsageRecord, type UsageRecordConnection } from './usage.types';

const DEFAULT_PAGE_SIZE = 50;
const MAX_PAGE_SIZE = 500;
const MAX_SUMMARY_BUCKETS = 1000;
const RECORD_ID = /^\d{1,19}$/;

export interface UsageRange {
  userId?: string | null;
  from?: Date | null;
  to?: Date | null;
}

interface RecordRow {
  id: string;
  request_id: string;
  user_id: string;
  model: string;
  interface: string;
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
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

  /** The range's conditions, numbered after the parameters already in `params`, which it extends. */
  private rangeFilter(range: UsageRange, params: unknown[]): string {
    const filters: string[] = [];
    if (range.from != null) {
      params.push(range.from);
      filters.push(`created_at >= $${params.length}::timestamptz`);
    }
    if (range.to != null) {
      params.push(range.to);
      filters.push(`created_at < $${params.length}::timestamptz`);
    }
    if (range.from != null && range.to != null && range.from > range.to) {
      throw new BadUserInputError('from must not be after to.', 'from');
    }
    return filters.map((filter) => ` and ${filter}`).join('');
  }

  /** Newest first, by keyset on (created_at, id): served by the (user_id, created_at, id) index. */
  async history(viewer: Viewer, range: UsageRange & { first?: number | null; after?: string | null }): Promise<UsageRecordConnection> {
    const userId = this.targetUserId(viewer, range.userId);
    const first = range.first ?? DEFAULT_PAGE_SIZE;
    if (!Number.isInteger(first) || first < 0 || first > MAX_PAGE_SIZE) {
      throw new BadUserInputError(`first must be from 0 to ${MAX_PAGE_SIZE}.`, 'first');
    }
    const params: unknown[] = [userId];
    let where = `user_id = $1${this.rangeFilter(range, params)}`;
    if (range.after != null) {
      const [time, id] = decodeKeysetCursor(range.after, RECORD_ID);
      params.push(time, id);
      where += ` and (created_at, id) < ($${params.length - 1}::timestamptz, $${params.length}::bigint)`;
    }
    params.push(first + 1);
    const rows = await this.db.query<RecordRow>(
      `select id::text as id, request_id, user_id, model, interface, prompt_tokens, completion_tokens, total_tokens, charged_tokens,
              usage_source, status, latency_ms, upstream,
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
    const userId = this.targetUserId(viewer, range.userId);
    const params: unknown[] = [userId];
    const where = `user_id = $1${this.rangeFilter(range, params)}`;
    const key = groupBy === UsageGrouping.DAY ? "to_char(created_at at time zone 'UTC', 'YYYY-MM-DD')" : 'model';
    const rows = await this.db.query<{
      bucket: string;
      requests: string;
      prompt: string;
      completion: string;
      total: string;
      charged: string;
    }>(
      `select ${key} as bucket, count(*) as requests, sum(prompt_tokens) as prompt, sum(completion_tokens) as completion,
              sum(total_tokens) as total, sum(charged_tokens) as charged
         from usage_records where ${where}
        group by 1 order by 1 limit ${MAX_SUMMARY_BUCKETS}`,
      params,
    );
    return rows.map((row) => {
      const byDay = groupBy === UsageGrouping.DAY;
      return {
        key: row.bucket,
        day: byDay ? new Date(`${row.bucket}T00:00:00.000Z`) : null,
        model: byDay ? null : row.bucket,
        requests: Number(row.requests),
        promptTokens: Number(row.prompt),
        completionTokens: Number(row.completion),
        totalTokens: Number(row.total),
        chargedTokens: Number(row.charged),
      };
    });
  }

  /**
   * The live feed: the viewer's own events; for an admin, one user's or (userId omitted)
   * everyone's. Each event is authorised again as it is delivered, so a demoted admin or a
   * disabled user stops receiving at once.
   */
  live(viewer: Viewer, userId: string | null | undefined): AsyncIterable<UsageEvent> {
    const everyone = userId == null && viewer.role === Role.ADMIN;
    const target = everyone ? null : this.targetUserId(viewer, userId);
    const source = this.bus.subscribe(target);
    const delivered = this.deliver(viewer, target, source);
    // Closing must reach the bus subscription even if delivery never started.
    return hookIterator(delivered, { beforeClose: () => source.return?.() });
  }

  /** The bus already delivers only the target's events (null: everyone's, for admins). */
  private async *deliver(viewer: Viewer, target: string | null, events: AsyncIterable<UsageEvent>): AsyncGenerator<UsageEvent> {
    for await (const event of events) {
      const current = await this.auth.currentState(viewer);
      if (current === null) throw new ForbiddenError('Your credentials are no longer valid.');
      if (target !== viewer.userId && current.role !== Role.ADMIN) {
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
    model: row.model,
    interface: row.interface,
    promptTokens: row.prompt_tokens,
    completionTokens: row.completion_tokens,
    totalTokens: row.total_tokens,
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
