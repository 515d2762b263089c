import { randomUUID } from 'node:crypto';
import type { AuditService } from '../audit/audit.service';
import { AuditAction } from '../audit/audit.types';
import type { Config } from '../config';
import type { Database, Sql } from '../db/database';
import { notify, type SentTopic } from '../db/notifications';
import { BadUserInputError, ForbiddenError, UnauthenticatedError } from '../errors';
import type { Logger } from '../logger';
import { isEmail, normalizeEmail, passwordLength } from '../rules';
import { Role, User } from '../users/user.entity';
import { AuthStateCache, type ApiKeyAuthState, type UserAuthState } from './auth-state-cache';
import { LoginThrottle } from './login-throttle';
import { PasswordHasher, assertPasswordPolicy } from './passwords';
import { API_KEY_PREFIX, AccessTokens, newRefreshToken, sha256 } from './tokens';
import type { Viewer } from './viewer';

export interface IssuedTokens {
  readonly accessToken: string;
  readonly refreshToken: string;
  readonly expiresAt: Date;
  readonly user: User;
  readonly viewer: Viewer;
}

interface UserAuthRow {
  id: string;
  email: string;
  role: Role;
  disabled: boolean;
  token_version: number;
}

interface SessionRow extends UserAuthRow {
  session_id: string;
  family_id: string;
  session_token_version: number;
  expires_at: Date;
  replaced_at: Date | null;
  revoked_at: Date | null;
}

/** A user's credentials changed (role, status, tokenVersion), or one of their API keys was revoked. */
export interface CredentialChange {
  readonly userId: string;
  readonly apiKeyId: string | null;
}

export const CREDENTIALS_TOPIC: SentTopic<CredentialChange> = {
  channel: 'gateway_auth',
  encode: (change) => JSON.stringify(change),
  decode: (payload) => {
    let change: { userId?: unknown; apiKeyId?: unknown };
    try {
      change = JSON.parse(payload) as typeof change;
    } catch {
      return null;
    }
    if (typeof change.userId !== 'string') return null;
    return { userId: change.userId, apiKeyId: typeof change.apiKeyId === 'string' ? change.apiKeyId : null };
  },
};

const ROLE_RANK: Record<Role, number> = { [Role.USER]: 0, [Role.ADMIN]: 1 };

/** Sign-in, sessions and the verification behind `@auth`. */
export class AuthService {
  readonly accessTokens: AccessTokens;
  private readonly throttle: LoginThrottle;
  private readonly cache = new AuthStateCache(60_000);

  constructor(
    private readonly config: Config,
    readonly passwords: PasswordHasher,
    private readonly audit: AuditService,
    private readonly log: Logger,
    private readonly db: Database,
  ) {
    this.accessTokens = new AccessTokens(config.jwt);
    this.throttle = new LoginThrottle(config.login, db);
  }

  /**
   * Announces that a user's credentials changed (role, status, password) or that one of
   * their keys was revoked: this instance forgets its cached state now, every instance on
   * NOTIFY (delivered when the transaction `sql` belongs to commits).
   */
  async credentialsChanged(sql: Sql, userId: string, apiKeyId: string | null = null): Promise<void> {
    this.cache.invalidateUser(userId);
    if (apiKeyId !== null) this.cache.invalidateApiKey(apiKeyId);
    await notify(sql, CREDENTIALS_TOPIC, { userId, apiKeyId });
  }

  /** A credentials change announced by any instance: the cached state it affects is forgotten. */
  applyCredentialChange(change: CredentialChange): void {
    this.cache.invalidateUser(change.userId);
    if (change.apiKeyId !== null) this.cache.invalidateApiKey(change.apiKeyId);
  }

  /** After a gap in notifications, any cached state may be stale. */
  forgetCachedCredentials(): void {
    this.cache.clear();
  }

  /**
   * The viewer's user as it is now, or null when the credential no longer holds (expired,
   * user disabled, tokenVersion bumped, API key revoked). Cached, so it can run per event.
   */
  async currentState(viewer: Viewer): Promise<UserAuthState | null> {
    if (viewer.expiresAt !== null && viewer.expiresAt.getTime() <= Date.now()) return null;
    const user = await this.loadUserState(viewer.userId);
    if (user === null || user.disabled) return null;
    if (viewer.via === 'access-token' && user.tokenVersion !== viewer.tokenVersion) return null;
    if (viewer.via === 'api-key' && viewer.apiKeyId !== null && this.cache.apiKeyById(viewer.apiKeyId) === undefined) {
      const key = await this.db.one<{ id: string }>('select id from api_keys where id = $1 and revoked_at is null', [viewer.apiKeyId]);
      if (key === undefined) return null;
    }
    return user;
  }

  private loadUserState(userId: string): Promise<UserAuthState | null> {
    return this.cache.user(userId, async () => {
      const row = await this.db.one<UserAuthRow>('select id, email, role, disabled, token_version from users where id = $1', [userId]);
      return row === undefined
        ? null
        : { id: row.id, email: row.email, role: row.role, disabled: row.disabled, tokenVersion: row.token_version };
    });
  }

  async login(email: string, password: string, clientAddress: string): Promise<IssuedTokens> {
    const normalized = normalizeEmail(email);
    const subjects = {
      account: LoginThrottle.accountSubject(normalized),
      address: LoginThrottle.addressSubject(clientAddress),
    };
    await this.throttle.attempt(subjects);

    const user = await this.db.em().findOne(User, { email: normalized }, { populate: ['passwordHash'] });
    const passwordMatches =
      user === null || passwordLength(password) > 1024
        ? await this.passwords.verifyDummy(password)
        : await this.passwords.verify(user.passwordHash, password);
    if (user === null || !passwordMatches || user.disabled) {
      // A refusal changes nothing of its own (the throttle counted the attempt already): its entry is written alone.
      await this.audit.record(this.db, {
        action: AuditAction.LOGIN_FAILED,
        actor: { userId: null, ip: clientAddress },
        targetUserId: user?.id ?? null,
        details: {
          email: isEmail(normalized) ? normalized : null,
          reason: user === null ? 'UNKNOWN_EMAIL' : passwordMatches ? 'USER_DISABLED' : 'WRONG_PASSWORD',
        },
      });
      this.log.info({ event: 'login_failed', clientAddress }, 'sign-in refused');
      throw new UnauthenticatedError('Wrong email or password.');
    }
    const rehashed = this.passwords.needsRehash(user.passwordHash) ? await this.passwords.hash(password) : null;
    const issued = await this.db.transaction(async (tx) => {
      await this.throttle.succeeded(tx, subjects);
      if (rehashed !== null) await tx.query('update users set password_hash = $2, updated_at = now() where id = $1', [user.id, rehashed]);
      await this.audit.record(tx, { action: AuditAction.LOGIN, actor: { userId: user.id, ip: clientAddress }, targetUserId: user.id, details: null });
      return this.startSession(tx, user, randomUUID());
    });
    this.log.info({ event: 'login', userId: user.id }, 'signed in');
    return issued;
  }

  /** Rotates a refresh token. Presenting one that was already rotated ends its whole family. */
  async refresh(refreshToken: string, clientAddress: string): Promise<IssuedTokens> {
    const session = await this.findSession(refreshToken);
    if (session === undefined || session.revoked_at !== null) throw new UnauthenticatedError('The refresh token is not valid.');
    if (session.replaced_at !== null) {
      await this.db.transaction((tx) => this.endReusedFamily(tx, session, clientAddress));
      this.log.warn({ event: 'refresh_reuse', userId: session.id, familyId: session.family_id }, 'refresh token reused: session family revoked');
      throw new UnauthenticatedError('The refresh token is not valid.');
    }
    if (new Date(session.expires_at) <= new Date() || session.disabled || session.session_token_version !== session.token_version) {
      throw new UnauthenticatedError('The refresh token is not valid.');
    }
    const user = await this.db.em().findOneOrFail(User, { id: session.id });
    // Only one of two concurrent refreshes with the same token wins (the row lock orders
    // them); the loser is treated as reuse, and its revocation of the family is kept.
    const issued = await this.db.transaction(async (tx) => {
      const rotated = await tx.query(
        'update refresh_sessions set replaced_at = now() where id = $1 and replaced_at is null and revoked_at is null returning id',
        [session.session_id],
      );
      if (rotated.length === 0) {
        await this.endReusedFamily(tx, session, clientAddress);
        return null;
      }
      return this.startSession(tx, user, session.family_id);
    });
    if (issued === null) throw new UnauthenticatedError('The refresh token is not valid.');
    return issued;
  }

  /** Ends the session the refresh token belongs to; false when the token is unknown or already ended. */
  async logout(refreshToken: string, clientAddress: string): Promise<boolean> {
    const session = await this.findSession(refreshToken);
    if (session === undefined || session.revoked_at !== null) return false;
    await this.db.transaction(async (tx) => {
      await this.revokeFamily(tx, session.family_id);
      // Holding the refresh token is what signs a logout: its user is the actor.
      await this.audit.record(tx, { action: AuditAction.LOGOUT, actor: { userId: session.id, ip: clientAddress }, targetUserId: session.id, details: null });
    });
    return true;
  }

  async changePassword(viewer: Viewer, currentPassword: string, newPassword: string, clientAddress: string): Promise<void> {
    assertPasswordPolicy(newPassword, 'newPassword');
    const subjects = {
      account: LoginThrottle.accountSubject(viewer.email),
      address: LoginThrottle.addressSubject(clientAddress),
    };
    await this.throttle.attempt(subjects);
    const user = await this.db.em().findOneOrFail(User, { id: viewer.userId }, { populate: ['passwordHash'] });
    if (!(await this.passwords.verify(user.passwordHash, currentPassword))) {
      throw new BadUserInputError('The current password is wrong.', 'currentPassword');
    }
    const passwordHash = await this.passwords.hash(newPassword);
    await this.db.transaction(async (tx) => {
      await this.throttle.succeeded(tx, subjects);
      await tx.query('update users set password_hash = $2, token_version = token_version + 1, updated_at = now() where id = $1', [
        user.id,
        passwordHash,
      ]);
      await this.revokeAllSessions(tx, user.id);
      await this.credentialsChanged(tx, user.id);
      await this.audit.record(tx, {
        action: AuditAction.PASSWORD_CHANGED,
        actor: { userId: viewer.userId, ip: clientAddress },
        targetUserId: user.id,
        details: null,
      });
    });
    this.log.info({ event: 'password_changed', userId: user.id }, 'password changed; every session ended');
  }

  async revokeAllSessions(sql: Sql, userId: string): Promise<void> {
    await sql.query('update refresh_sessions set revoked_at = now() where user_id = $1 and revoked_at is null', [userId]);
  }

  /**
   * Verifies `Authorization: Bearer <access token | API key>` against the database's current
   * state: a bumped tokenVersion, a disabled user or a revoked key fail at once, not at expiry.
   */
  async authenticate(authorization: string | null): Promise<Viewer> {
    const credential = bearerCredential(authorization);
    if (credential === null) throw new UnauthenticatedError('Sign in first: send Authorization: Bearer <access token or API key>.');
    if (credential.startsWith(API_KEY_PREFIX)) return this.authenticateApiKey(credential);

    const claims = this.accessTokens.verify(credential);
    if (claims === null) throw new UnauthenticatedError('The access token is invalid or expired.');
    const user = await this.loadUserState(claims.userId);
    if (user?.disabled === true) throw new UnauthenticatedError('This account is disabled.', 'USER_DISABLED');
    if (user === null || user.tokenVersion !== claims.tokenVersion) {
      throw new UnauthenticatedError('The access token is no longer valid.');
    }
    return viewerFrom(user, { via: 'access-token', apiKeyId: null, expiresAt: claims.expiresAt });
  }

  assertRole(viewer: Viewer, required: Role): void {
    if (ROLE_RANK[viewer.role] < ROLE_RANK[required]) throw new ForbiddenError(`This needs the ${required} role.`);
  }

  private async authenticateApiKey(secret: string): Promise<Viewer> {
    const hash = sha256(secret);
    const key = await this.cache.apiKey(hash, async (): Promise<ApiKeyAuthState | null> => {
      const row = await this.db.one<{ id: string; user_id: string; last_used_at: Date | null }>(
        'select id, user_id, last_used_at from api_keys where key_hash = $1 and revoked_at is null',
        [hash],
      );
      return row === undefined ? null : { keyId: row.id, userId: row.user_id, lastUsedAt: row.last_used_at };
    });
    const user = key === null ? null : await this.loadUserState(key.userId);
    if (user?.disabled === true) throw new UnauthenticatedError('This account is disabled.', 'USER_DISABLED');
    if (key === null || user === null) throw new UnauthenticatedError('The API key is invalid or revoked.');
    // Written at most about once a minute per key and instance, off the request's path.
    if (key.lastUsedAt === null || Date.now() - new Date(key.lastUsedAt).getTime() > 60_000) {
      this.cache.noteApiKeyUsed(key.keyId, new Date());
      this.db
        .query("update api_keys set last_used_at = now() where id = $1 and (last_used_at is null or last_used_at < now() - interval '1 minute')", [key.keyId])
        .catch((error: unknown) => this.log.warn({ err: error }, 'could not record API key use'));
    }
    return viewerFrom(user, { via: 'api-key', apiKeyId: key.keyId, expiresAt: null });
  }

  private async startSession(sql: Sql, user: User, familyId: string): Promise<IssuedTokens> {
    const refreshToken = newRefreshToken();
    await sql.query(
      `insert into refresh_sessions (id, user_id, family_id, token_hash, token_version, expires_at)
       values ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))`,
      [randomUUID(), user.id, familyId, sha256(refreshToken), user.tokenVersion, this.config.jwt.refreshTtlSeconds],
    );
    const access = this.accessTokens.sign(user.id, user.tokenVersion);
    const viewer = viewerFrom(
      { id: user.id, email: user.email, role: user.role, tokenVersion: user.tokenVersion },
      { via: 'access-token', apiKeyId: null, expiresAt: access.expiresAt },
    );
    return { accessToken: access.token, refreshToken, expiresAt: access.expiresAt, user, viewer };
  }

  private findSession(refreshToken: string): Promise<SessionRow | undefined> {
    return this.db.one<SessionRow>(
      `select s.id as session_id, s.family_id, s.token_version as session_token_version, s.expires_at, s.replaced_at, s.revoked_at,
              u.id, u.email, u.role, u.disabled, u.token_version
         from refresh_sessions s join users u on u.id = s.user_id
        where s.token_hash = $1`,
      [sha256(refreshToken)],
    );
  }

  private async revokeFamily(sql: Sql, familyId: string): Promise<void> {
    await sql.query('update refresh_sessions set revoked_at = now() where family_id = $1 and revoked_at is null', [familyId]);
  }

  /** A rotated token came back: the family ends. Whoever presented it may be a thief, so no actor is named. */
  private async endReusedFamily(sql: Sql, session: SessionRow, clientAddress: string): Promise<void> {
    await this.revokeFamily(sql, session.family_id);
    await this.audit.record(sql, {
      action: AuditAction.REFRESH_REUSE_DETECTED,
      actor: { userId: null, ip: clientAddress },
      targetUserId: session.id,
      details: null,
    });
  }
}

function viewerFrom(
  user: Pick<UserAuthState, 'id' | 'email' | 'role' | 'tokenVersion'>,
  credential: Pick<Viewer, 'via' | 'apiKeyId' | 'expiresAt'>,
): Viewer {
  return { userId: user.id, email: user.email, role: user.role, tokenVersion: user.tokenVersion, ...credential };
}

function bearerCredential(authorization: string | null): string | null {
  if (authorization === null) return null;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
  return match === null ? null : match[1];
}
