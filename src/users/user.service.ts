import { randomBytes } from 'node:crypto';
import { UniqueConstraintViolationException } from '@mikro-orm/core';
import type { EntityManager } from '@mikro-orm/postgresql';
import { normalizeEmail, type AuthService } from '../auth/auth.service';
import { assertPasswordPolicy } from '../auth/passwords';
import type { Viewer } from '../auth/viewer';
import type { Config } from '../config';
import { query, queryOne } from '../db/sql';
import { BadUserInputError, ForbiddenError } from '../errors';
import { decodeKeysetCursor, encodeKeysetCursor } from '../graphql/pagination';
import type { Logger } from '../logger';
import type { QuotaService } from '../quota/quota.service';
import { QuotaPeriod, Role, User } from './user.entity';
import type { CreateUserInput, UpdateUserInput, UserConnection } from './user.types';

const EMAIL_PATTERN = /^[^\s@]+@[^\s@]+$/;
const MAX_EMAIL_LENGTH = 254;
const DEFAULT_PAGE_SIZE = 20;
const MAX_PAGE_SIZE = 100;
const USER_ID = /^[0-9a-f-]{36}$/;

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
  created_at: Date;
  cursor_time: string;
}

function validEmail(email: string, field: string): string {
  const normalized = normalizeEmail(email);
  if (normalized.length > MAX_EMAIL_LENGTH || !EMAIL_PATTERN.test(normalized)) {
    throw new BadUserInputError('This is not a valid email address.', field);
  }
  return normalized;
}

function validTokenLimit(limit: number | null | undefined, field: string): number | null {
  if (limit === null || limit === undefined) return null;
  if (!Number.isSafeInteger(limit) || limit < 0 || limit > 2_147_483_647) {
    throw new BadUserInputError('tokenLimit must be a whole number from 0 to 2147483647, or null for unlimited.', field);
  }
  return limit;
}

function rowToUser(em: EntityManager, row: UserRow): User {
  return em.map(User, {
    id: row.id,
    email: row.email,
    role: row.role,
    disabled: row.disabled,
    token_limit: row.token_limit,
    quota_period: row.quota_period,
    created_at: row.created_at,
  });
}

export class UserService {
  constructor(
    private readonly config: Config,
    private readonly auth: AuthService,
    private readonly quota: QuotaService,
    private readonly log: Logger,
  ) {}

  async get(em: EntityManager, id: string): Promise<User | null> {
    if (!/^[0-9a-f-]{36}$/i.test(id)) return null;
    return em.findOne(User, { id });
  }

  async create(em: EntityManager, input: CreateUserInput): Promise<User> {
    const email = validEmail(input.email, 'email');
    assertPasswordPolicy(input.password, 'password');
    const user = new User();
    user.email = email;
    user.role = input.role ?? Role.USER;
    user.tokenLimit = validTokenLimit(input.tokenLimit, 'tokenLimit');
    user.quotaPeriod = input.quotaPeriod ?? QuotaPeriod.NONE;
    user.passwordHash = await this.auth.passwords.hash(input.password);
    try {
      await em.transactional(async (tx) => {
        tx.persist(user);
        await tx.flush();
        await this.quota.openAccount(tx, user.id);
      });
    } catch (error) {
      if (error instanceof UniqueConstraintViolationException) {
        throw new BadUserInputError('A user with this email already exists.', 'email');
      }
      throw error;
    }
    this.log.info({ event: 'user_created', userId: user.id, role: user.role }, 'user created');
    return user;
  }

  async update(em: EntityManager, actor: Viewer, id: string, input: UpdateUserInput): Promise<User> {
    const selfChange = actor.userId === id;
    if (selfChange && (input.role != null || input.tokenLimit !== undefined || input.quotaPeriod != null)) {
      throw new ForbiddenError('Nobody can change their own role or quota.');
    }
    if (selfChange && input.disabled === true) throw new ForbiddenError('Nobody can disable themselves.');
    const email = input.email == null ? undefined : validEmail(input.email, 'email');
    if (input.password != null) assertPasswordPolicy(input.password, 'password');
    const tokenLimit = input.tokenLimit === undefined ? undefined : validTokenLimit(input.tokenLimit, 'tokenLimit');
    const passwordHash = input.password == null ? undefined : await this.auth.passwords.hash(input.password);

    try {
      return await em.transactional(async (tx) => {
        // Locks every enabled admin row, so two admins demoting each other cannot both succeed.
        const admins = await query<{ id: string }>(tx, "select id from users where role = 'ADMIN' and disabled = false order by id for update");
        const user = await tx.findOne(User, { id: /^[0-9a-f-]{36}$/i.test(id) ? id : '00000000-0000-0000-0000-000000000000' });
        if (user === null) throw new BadUserInputError('No user has this id.', 'id');

        const losesAdmin =
          user.role === Role.ADMIN && !user.disabled && ((input.role != null && input.role !== Role.ADMIN) || input.disabled === true);
        if (losesAdmin && admins.length <= 1) {
          throw new ForbiddenError('The last enabled admin cannot be demoted or disabled.');
        }

        let endSessions = false;
        if (email !== undefined) user.email = email;
        if (passwordHash !== undefined) {
          user.passwordHash = passwordHash;
          endSessions = true;
        }
        if (input.role != null && input.role !== user.role) {
          user.role = input.role;
          endSessions = true;
        }
        if (input.disabled != null && input.disabled !== user.disabled) {
          user.disabled = input.disabled;
          endSessions = true;
        }
        if (tokenLimit !== undefined) user.tokenLimit = tokenLimit;
        const periodChanged = input.quotaPeriod != null && input.quotaPeriod !== user.quotaPeriod;
        if (input.quotaPeriod != null) user.quotaPeriod = input.quotaPeriod;
        if (endSessions) user.tokenVersion += 1;
        await tx.flush();
        if (endSessions) await this.auth.revokeAllSessions(tx, user.id);
        await this.auth.credentialsChanged(tx, user.id);
        if (periodChanged) await this.quota.recountPeriod(tx, user.id, user.quotaPeriod);
        this.log.info({ event: 'user_updated', userId: user.id, by: actor.userId, endSessions }, 'user updated');
        return user;
      });
    } catch (error) {
      if (error instanceof UniqueConstraintViolationException) {
        throw new BadUserInputError('A user with this email already exists.', 'email');
      }
      throw error;
    }
  }

  /** Keyset pagination in creation order (then id), so pages never skip or repeat a user. */
  async list(em: EntityManager, page: UserPageRequest): Promise<UserConnection> {
    const first = page.first ?? DEFAULT_PAGE_SIZE;
    if (!Number.isInteger(first) || first < 0 || first > MAX_PAGE_SIZE) {
      throw new BadUserInputError(`first must be from 0 to ${MAX_PAGE_SIZE}.`, 'first');
    }
    const filters: string[] = [];
    const params: unknown[] = [];
    if (page.search != null && page.search.trim() !== '') {
      if (page.search.length > 254) throw new BadUserInputError('search is too long.', 'search');
      filters.push("email like ? escape '\\'");
      params.push(`%${page.search.trim().toLowerCase().replace(/[\\%_]/g, (c) => `\\${c}`)}%`);
    }
    const countRow = await queryOne<{ count: string }>(
      em,
      `select count(*) as count from users${filters.length ? ` where ${filters.join(' and ')}` : ''}`,
      params,
    );
    if (page.after != null) {
      const [time, id] = decodeKeysetCursor(page.after, USER_ID);
      filters.push('(created_at, id) > (?::timestamptz, ?::uuid)');
      params.push(time, id);
    }
    const rows = await query<UserRow>(
      em,
      `select id, email, role, disabled, token_limit, quota_period, created_at,
              to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as cursor_time
         from users${filters.length ? ` where ${filters.join(' and ')}` : ''}
        order by created_at, id
        limit ?`,
      [...params, first + 1],
    );
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
  async bootstrapAdmin(em: EntityManager): Promise<{ email: string; generatedPassword: string | null } | null> {
    const existing = await queryOne<{ id: string }>(em, "select id from users where role = 'ADMIN' and disabled = false limit 1");
    if (existing !== undefined) return null;
    const email = this.config.admin.email;
    const generatedPassword = this.config.admin.password === null ? randomBytes(18).toString('base64url') : null;
    const password = this.config.admin.password ?? generatedPassword ?? '';
    const taken = await em.findOne(User, { email });
    if (taken !== null) {
      taken.role = Role.ADMIN;
      taken.disabled = false;
      taken.passwordHash = await this.auth.passwords.hash(password);
      taken.tokenVersion += 1;
      await em.flush();
      await this.auth.credentialsChanged(em, taken.id);
      this.log.warn({ event: 'admin_bootstrap', userId: taken.id }, 'no enabled admin existed: ADMIN_EMAIL user promoted to admin');
    } else {
      const admin = await this.create(em, { email, password, role: Role.ADMIN, tokenLimit: null, quotaPeriod: QuotaPeriod.NONE });
      this.log.info({ event: 'admin_bootstrap', userId: admin.id }, 'first admin created');
    }
    return { email, generatedPassword };
  }
}
