import type { Clock } from '../clock';
import type { Config } from '../config';
import { ADVISORY_LOCK_KEYS } from '../db/advisory-locks';
import type { Database, Sql } from '../db/database';
import { BadUserInputError } from '../errors';
import { decodeKeysetCursor, encodeKeysetCursor } from '../graphql/pagination';
import type { Logger } from '../logger';
import { isUuid } from '../rules';
import type { QuotaPeriod, Role } from '../users/user.entity';
import { AuditAction, type AuditEntry, type AuditEntryConnection } from './audit.types';

const DEFAULT_PAGE_SIZE = 50;
const MAX_PAGE_SIZE = 500;
const ENTRY_ID = /^\d{1,19}$/;
const DAY_MS = 86_400_000;

/** Who made a change and from where. */
export interface AuditActor {
  /** The signed-in user; null for the gateway itself, or when whoever acted cannot be told apart from a thief. */
  readonly userId: string | null;
  /** The client address as `GraphQLContext.clientAddress` has it; null for the gateway itself. */
  readonly ip: string | null;
}

/** The gateway acting on its own, at start (the first admin from ADMIN_EMAIL). */
export const GATEWAY_ACTOR: AuditActor = { userId: null, ip: null };

export type AuditValue = string | number | boolean | null;

export interface FieldChange {
  readonly old: AuditValue;
  readonly new: AuditValue;
}

export type FieldChanges = Readonly<Record<string, FieldChange>>;

/** How a changed secret (a password) is recorded: that it changed, never what it was or became. */
export const SECRET_CHANGED: FieldChange = { old: '[redacted]', new: '[redacted]' };

/** The fields whose values differ between `before` and `after` (the same keys), each with both values. */
export function changedFields<T extends Record<string, AuditValue>>(before: T, after: T): Record<string, FieldChange> {
  const changes: Record<string, FieldChange> = {};
  for (const field of Object.keys(after)) {
    if (before[field] !== after[field]) changes[field] = { old: before[field], new: after[field] };
  }
  return changes;
}

interface ApiKeyDetails {
  readonly apiKeyId: string;
  readonly name: string;
  readonly prefix: string;
}

/**
 * What each action's `details` holds. Every value is named here, so nothing reaches an entry
 * by accident: no password, hash, token or key secret has a place in any of them.
 */
export interface AuditDetails {
  [AuditAction.LOGIN]: null;
  /** `email` as typed, when it is shaped like one: a password typed into the email box is not kept. */
  [AuditAction.LOGIN_FAILED]: { readonly email: string | null; readonly reason: 'UNKNOWN_EMAIL' | 'WRONG_PASSWORD' | 'USER_DISABLED' };
  [AuditAction.LOGOUT]: null;
  [AuditAction.PASSWORD_CHANGED]: null;
  [AuditAction.USER_CREATED]: { readonly email: string; readonly role: Role; readonly tokenLimit: number | null; readonly quotaPeriod: QuotaPeriod; readonly teamId: string | null };
  [AuditAction.USER_UPDATED]: { readonly changes: FieldChanges };
  [AuditAction.API_KEY_CREATED]: ApiKeyDetails;
  [AuditAction.API_KEY_REVOKED]: ApiKeyDetails;
  [AuditAction.REFRESH_REUSE_DETECTED]: null;
  [AuditAction.TEAM_CREATED]: { readonly teamId: string; readonly name: string; readonly tokenLimit: number | null; readonly quotaPeriod: QuotaPeriod };
  [AuditAction.TEAM_UPDATED]: { readonly teamId: string; readonly changes: FieldChanges };
}

/** One entry to write: the action, who did it from where, to which user, and the action's details. */
export type AuditRecord = {
  [A in AuditAction]: { readonly action: A; readonly actor: AuditActor; readonly targetUserId: string | null; readonly details: AuditDetails[A] };
}[AuditAction];

export interface AuditPageRequest {
  first?: number | null;
  after?: string | null;
  action?: AuditAction | null;
  actorId?: string | null;
  targetUserId?: string | null;
}

interface EntryRow {
  id: string;
  action: AuditAction;
  actor_id: string | null;
  target_user_id: string | null;
  ip: string | null;
  details: Record<string, unknown> | null;
  /** `at` at UTC with microseconds: the cursor's time, and `at` once parsed. */
  cursor_time: string;
}

/** The append-only audit log: entries written inside the changes they record, read newest first, pruned after the retention. */
export class AuditService {
  constructor(
    private readonly config: Config['audit'],
    private readonly db: Database,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {}

  /**
   * Writes one entry where `sql` stands: in the transaction of the change it records, so both
   * commit or neither does; on the pool only for what changes nothing (a refused sign-in).
   */
  async record(sql: Sql, entry: AuditRecord): Promise<void> {
    await sql.query(
      'insert into audit_log (at, action, actor_id, target_user_id, ip, details) values ($1, $2, $3, $4, $5, $6::jsonb)',
      [this.clock.now(), entry.action, entry.actor.userId, entry.targetUserId, entry.actor.ip, entry.details === null ? null : JSON.stringify(entry.details)],
    );
  }

  /** Newest first, by keyset on (at, id), optionally of one action, actor or target user. */
  async list(page: AuditPageRequest): Promise<AuditEntryConnection> {
    const first = page.first ?? DEFAULT_PAGE_SIZE;
    if (!Number.isInteger(first) || first < 0 || first > MAX_PAGE_SIZE) {
      throw new BadUserInputError(`first must be from 0 to ${MAX_PAGE_SIZE}.`, 'first');
    }
    const filters: string[] = [];
    const params: unknown[] = [];
    const filter = (condition: string, value: unknown): void => {
      params.push(value);
      filters.push(condition.replace('?', `$${params.length}`));
    };
    if (page.action != null) filter('action = ?', page.action);
    if (page.actorId != null) filter('actor_id = ?::uuid', userIdArgument(page.actorId, 'actorId'));
    if (page.targetUserId != null) filter('target_user_id = ?::uuid', userIdArgument(page.targetUserId, 'targetUserId'));
    if (page.after != null) {
      const [time, id] = decodeKeysetCursor(page.after, ENTRY_ID);
      params.push(time, id);
      filters.push(`(at, id) < ($${params.length - 1}::timestamptz, $${params.length}::bigint)`);
    }
    params.push(first + 1);
    const rows = await this.db.query<EntryRow>(
      `select id::text as id, action, actor_id, target_user_id, ip, details,
              to_char(at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as cursor_time
         from audit_log${filters.length > 0 ? ` where ${filters.join(' and ')}` : ''}
        order by at desc, id desc
        limit $${params.length}`,
      params,
    );
    const edges = rows.slice(0, first).map((row) => ({ cursor: encodeKeysetCursor(row.cursor_time, row.id), node: toEntry(row) }));
    return {
      edges,
      nodes: edges.map((edge) => edge.node),
      pageInfo: { hasNextPage: rows.length > first, endCursor: edges.at(-1)?.cursor ?? null },
    };
  }

  /**
   * Deletes the entries older than AUDIT_RETENTION_DAYS. Instances take turns: one that finds
   * another at it skips this round (null). One statement, not batches: run hourly, a round
   * deletes about an hour's entries.
   */
  async prune(): Promise<number | null> {
    const cutoff = new Date(this.clock.now().getTime() - this.config.retentionDays * DAY_MS);
    const deleted = await this.db.transaction(async (tx) => {
      const turn = await tx.one<{ taken: boolean }>('select pg_try_advisory_xact_lock($1) as taken', [ADVISORY_LOCK_KEYS.auditPrune]);
      if (turn?.taken !== true) return null;
      // The append-only trigger lets this transaction, and only it, delete.
      await tx.query("select set_config('gateway.audit_prune', 'on', true)");
      const [row] = await tx.query<{ count: string }>(
        'with gone as (delete from audit_log where at < $1 returning 1) select count(*) as count from gone',
        [cutoff],
      );
      return Number(row.count);
    });
    if (deleted !== null && deleted > 0) this.log.info({ event: 'audit_pruned', entries: deleted, before: cutoff }, 'old audit log entries deleted');
    return deleted;
  }
}

function userIdArgument(value: string, field: string): string {
  if (!isUuid(value)) throw new BadUserInputError(`${field} is not a user id.`, field);
  return value;
}

function toEntry(row: EntryRow): AuditEntry {
  return {
    id: row.id,
    // Not `at` itself: the pool returns timestamptz as text in the session's format, which the DateTime scalar refuses.
    at: new Date(row.cursor_time),
    action: row.action,
    actorId: row.actor_id,
    targetUserId: row.target_user_id,
    ip: row.ip,
    details: row.details,
  };
}
