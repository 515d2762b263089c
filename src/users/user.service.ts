import { randomBytes } from 'node:crypto';
import type { EntityManager } from '@mikro-orm/postgresql';
import { DatabaseError } from 'pg';
import { changedFields, GATEWAY_ACTOR, SECRET_CHANGED, type AuditActor, type AuditService } from '../audit/audit.service';
import { AuditAction } from '../audit/audit.types';
import type { AuthService } from '../auth/auth.service';
import { assertPasswordPolicy } from '../auth/passwords';
import type { Viewer } from '../auth/viewer';
import type { Config } from '../config';
import type { Database, Sql } from '../db/database';
import { BadUserInputError, ForbiddenError, UnauthenticatedError } from '../errors';
import { decodeKeysetCursor, encodeKeysetCursor } from '../graphql/pagination';
import type { Logger } from '../logger';
import { validTokenLimit } from '../quota/quota-input';
import type { QuotaService } from '../quota/quota.service';
import { isEmail, isUuid, normalizeEmail } from '../rules';
import type { TeamService } from '../teams/team.service';
import { QuotaPeriod, Role, User } from './user.entity';
import type { CreateUserInput, UpdateUserInput, UserConnection } from './user.types';

const DEFAULT_PAGE_SIZE = 20;
const MAX_PAGE_SIZE = 100;
/** decodeKeysetCursor checks the id with a pattern; the ids it sees are ones this server wrote. */
const CURSOR_USER_ID = /^[0-9a-f-]{36}$/;
/** What a `User` is mapped from. */
const USER_COLUMNS = 'id, email, role, disabled, token_limit, quota_period, team_id, created_at';

export interface UserPageRequest {
  first?: number | null;
  after?: string | null;
  search?: string | null;
}

interface UserRow {
  id: string;
  email: string;
  role: Role;
  disabled: boolean;
  token_limit: number | null;
  quota_period: QuotaPeriod;
  team_id: string | null;
  /** As text: the pool returns timestamps the way MikroORM does, and `em.map` converts them. */
  created_at: string;
}

interface UserPageRow extends UserRow {
  cursor_time: string;
}

function validEmail(email: string, field: string): string {
  const normalized = normalizeEmail(email);
  if (!isEmail(normalized)) throw new BadUserInputError('This is not a valid email address.', field);
  return normalized;
}

function isDuplicateEmail(error: unknown): boolean {
  return error instanceof DatabaseError && error.code === '23505' && error.constraint === 'users_email_unique';
}

function rowToUser(em: EntityManager, row: UserRow): User {
  return em.map(User, {
    id: row.id,
    email: row.email,
    role: row.role,
    disabled: row.disabled,
    token_limit: row.token_limit,
    quota_period: row.quota_period,
    team_id: row.team_id,
    created_at: row.created_at,
  });
}

export class UserService {
  constructor(
    private readonly config: Config,
    private readonly auth: AuthService,
    private readonly audit: AuditService,
    private readonly quota: QuotaService,
    private readonly teams: TeamService,
    private readonly log: Logger,
    private readonly db: Database,
  ) {}

  async get(id: string): Promise<User | null> {
    if (!isUuid(id)) return null;
    return this.db.em().findOne(User, { id });
  }

  /** The signed-in user; a user deleted since their credentials were checked (the check may be cached) is not signed in. */
  async me(viewer: Viewer): Promise<User> {
    const user = await this.get(viewer.userId);
    if (user === null) throw new UnauthenticatedError('Your user no longer exists.');
    return user;
  }

  /** A user's usage is theirs and the admins' to see. */
  assertMaySeeUsage(viewer: Viewer, userId: string): void {
    if (viewer.userId !== userId && viewer.role !== Role.ADMIN) throw new ForbiddenError();
  }

  async create(actor: Viewer, input: CreateUserInput, clientAddress: string): Promise<User> {
    return this.insert(input, { userId: actor.userId, ip: clientAddress });
  }

  private async insert(input: CreateUserInput, actor: AuditActor): Promise<User> {
    const email = validEmail(input.email, 'email');
    assertPasswordPolicy(input.password, 'password');
    const user = new User();
    user.email = email;
    user.role = input.role ?? Role.USER;
    user.tokenLimit = validTokenLimit(input.tokenLimit, 'tokenLimit');
    user.quotaPeriod = input.quotaPeriod ?? QuotaPeriod.NONE;
    user.passwordHash = await this.auth.passwords.hash(input.password);
    try {
      await this.db.transaction(async (tx) => {
        if (input.teamId != null) user.teamId = await this.teams.assertExists(tx, input.teamId, 'teamId');
        await this.audit.record(tx, {
          action: AuditAction.USER_CREATED,
          actor,
          targetUserId: user.id,
          details: { email: user.email, role: user.role, tokenLimit: user.tokenLimit, quotaPeriod: user.quotaPeriod, teamId: user.teamId ?? null },
        });
        await insertUser(tx, user);
        await this.quota.openAccount(tx, 'USER', user.id);
      });
    } catch (error) {
      if (isDuplicateEmail(error)) throw new BadUserInputError('A user with this email already exists.', 'email');
      throw error;
    }
    this.log.info({ event: 'user_created', userId: user.id, role: user.role }, 'user created');
    return user;
  }

  async update(actor: Viewer, id: string, input: UpdateUserInput, clientAddress: string): Promise<User> {
    const selfChange = actor.userId === id;
    if (selfChange && (input.role != null || input.tokenLimit !== undefined || input.quotaPeriod != null || input.teamId !== undefined)) {
      throw new ForbiddenError('Nobody can change their own role, quota or team.');
    }
    if (selfChange && input.disabled === true) throw new ForbiddenError('Nobody can disable themselves.');
    const email = input.email == null ? undefined : validEmail(input.email, 'email');
    if (input.password != null) assertPasswordPolicy(input.password, 'password');
    const tokenLimit = input.tokenLimit === undefined ? undefined : validTokenLimit(input.tokenLimit, 'tokenLimit');
    const passwordHash = input.password == null ? null : await this.auth.passwords.hash(input.password);

    try {
      const updated = await this.db.transaction(async (tx) => {
        // Locks every enabled admin row, so two admins demoting each other cannot both succeed.
        const admins = await tx.query<{ id: string }>("select id from users where role = 'ADMIN' and disabled = false order by id for update");
        const user = isUuid(id) ? await tx.one<UserRow>(`select ${USER_COLUMNS} from users where id = $1 for update`, [id]) : undefined;
        if (user === undefined) throw new BadUserInputError('No user has this id.', 'id');

        const losesAdmin =
          user.role === Role.ADMIN && !user.disabled && ((input.role != null && input.role !== Role.ADMIN) || input.disabled === true);
        if (losesAdmin && admins.length <= 1) {
          throw new ForbiddenError('The last enabled admin cannot be demoted or disabled.');
        }

        const role = input.role ?? user.role;
        const disabled = input.disabled ?? user.disabled;
        const quotaPeriod = input.quotaPeriod ?? user.quota_period;
        const newTokenLimit = tokenLimit === undefined ? user.token_limit : tokenLimit;
        const teamId = input.teamId === undefined ? user.team_id : input.teamId === null ? null : await this.teams.assertExists(tx, input.teamId, 'teamId');
        const endSessions = passwordHash !== null || role !== user.role || disabled !== user.disabled;
        const changes = changedFields(
          { email: user.email, role: user.role, disabled: user.disabled, tokenLimit: user.token_limit, quotaPeriod: user.quota_period, teamId: user.team_id },
          { email: email ?? user.email, role, disabled, tokenLimit: newTokenLimit, quotaPeriod, teamId },
        );
        if (passwordHash !== null) changes.password = SECRET_CHANGED;
        await this.audit.record(tx, {
          action: AuditAction.USER_UPDATED,
          actor: { userId: actor.userId, ip: clientAddress },
          targetUserId: user.id,
          details: { changes },
        });
        const [row] = await tx.query<UserRow>(
          `update users
              set email = $2, password_hash = coalesce($3, password_hash), role = $4, disabled = $5, token_limit = $6,
                  quota_period = $7, token_version = token_version + $8, team_id = $9, updated_at = now()
            where id = $1
          returning ${USER_COLUMNS}`,
          [
            user.id,
            email ?? user.email,
            passwordHash,
            role,
            disabled,
            newTokenLimit,
            quotaPeriod,
            endSessions ? 1 : 0,
            teamId,
          ],
        );
        if (endSessions) await this.auth.revokeAllSessions(tx, user.id);
        await this.auth.credentialsChanged(tx, user.id);
        if (quotaPeriod !== user.quota_period) await this.quota.recountPeriod(tx, 'USER', user.id, quotaPeriod);
        this.log.info({ event: 'user_updated', userId: user.id, by: actor.userId, endSessions }, 'user updated');
        return row;
      });
      return rowToUser(this.db.em(), updated);
    } catch (error) {
      if (isDuplicateEmail(error)) throw new BadUserInputError('A user with this email already exists.', 'email');
      throw error;
    }
  }

  /** Keyset pagination in creation order (then id), so pages never skip or repeat a user. */
  async list(page: UserPageRequest): Promise<UserConnection> {
    const first = page.first ?? DEFAULT_PAGE_SIZE;
    if (!Number.isInteger(first) || first < 0 || first > MAX_PAGE_SIZE) {
      throw new BadUserInputError(`first must be from 0 to ${MAX_PAGE_SIZE}.`, 'first');
    }
    const filters: string[] = [];
    const params: unknown[] = [];
    if (page.search != null && page.search.trim() !== '') {
      if (page.search.length > 254) throw new BadUserInputError('search is too long.', 'search');
      params.push(`%${page.search.trim().toLowerCase().replace(/[\\%_]/g, (c) => `\\${c}`)}%`);
      filters.push(`email like $${params.length} escape '\\'`);
    }
    const where = (): string => (filters.length ? ` where ${filters.join(' and ')}` : '');
    const countRow = await this.db.one<{ count: string }>(`select count(*) as count from users${where()}`, params);
    if (page.after != null) {
      const [time, id] = decodeKeysetCursor(page.after, CURSOR_USER_ID);
      params.push(time, id);
      filters.push(`(created_at, id) > ($${params.length - 1}::timestamptz, $${params.length}::uuid)`);
    }
    params.push(first + 1);
    const rows = await this.db.query<UserPageRow>(
      `select ${USER_COLUMNS},
              to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as cursor_time
         from users${where()}
        order by created_at, id
        limit $${params.length}`,
      params,
    );
    const em = this.db.em();
    const hasNextPage = rows.length > first;
    const edges = rows.slice(0, first).map((row) => ({ cursor: encodeKeysetCursor(row.cursor_time, row.id), node: rowToUser(em, row) }));
    return {
      edges,
      nodes: edges.map((edge) => edge.node),
      pageInfo: { hasNextPage, endCursor: edges.at(-1)?.cursor ?? null },
      totalCount: Number(countRow?.count ?? 0),
    };
  }

  /**
   * Makes sure an enabled admin exists. Returns the generated password when it had to invent
   * one, for the caller to show once on the terminal (never in the logs).
   */
  async bootstrapAdmin(): Promise<{ email: string; generatedPassword: string | null } | null> {
    const existing = await this.db.one<{ id: string }>("select id from users where role = 'ADMIN' and disabled = false limit 1");
    if (existing !== undefined) return null;
    const email = this.config.admin.email;
    const generatedPassword = this.config.admin.password === null ? randomBytes(18).toString('base64url') : null;
    const password = this.config.admin.password ?? generatedPassword ?? '';
    const taken = await this.db.one<{ id: string; role: Role; disabled: boolean }>('select id, role, disabled from users where email = $1', [email]);
    if (taken !== undefined) {
      const passwordHash = await this.auth.passwords.hash(password);
      await this.db.transaction(async (tx) => {
        await tx.query(
          'update users set role = $2, disabled = false, password_hash = $3, token_version = token_version + 1, updated_at = now() where id = $1',
          [taken.id, Role.ADMIN, passwordHash],
        );
        await this.auth.credentialsChanged(tx, taken.id);
        const changes = changedFields({ role: taken.role, disabled: taken.disabled }, { role: Role.ADMIN, disabled: false });
        await this.audit.record(tx, {
          action: AuditAction.USER_UPDATED,
          actor: GATEWAY_ACTOR,
          targetUserId: taken.id,
          details: { changes: { ...changes, password: SECRET_CHANGED } },
        });
      });
      this.log.warn({ event: 'admin_bootstrap', userId: taken.id }, 'no enabled admin existed: ADMIN_EMAIL user promoted to admin');
    } else {
      const admin = await this.insert({ email, password, role: Role.ADMIN, tokenLimit: null, quotaPeriod: QuotaPeriod.NONE }, GATEWAY_ACTOR);
      this.log.info({ event: 'admin_bootstrap', userId: admin.id }, 'first admin created');
    }
    return { email, generatedPassword };
  }
}

async function insertUser(sql: Sql, user: User): Promise<void> {
  await sql.query(
    `insert into users (id, email, password_hash, role, disabled, token_limit, quota_period, team_id, token_version, created_at, updated_at)
     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)`,
    [user.id, user.email, user.passwordHash, user.role, user.disabled, user.tokenLimit, user.quotaPeriod, user.teamId, user.tokenVersion, user.createdAt],
  );
}
