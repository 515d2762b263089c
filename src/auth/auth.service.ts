import { randomUUID } from 'node:crypto';
import type { EntityManager, MikroORM } from '@mikro-orm/postgresql';
import type { Config } from '../config';
import { CHANNELS, notify } from '../db/notifications';
import { query, queryOne } from '../db/sql';
import { BadUserInputError, ForbiddenError, UnauthenticatedError } from '../errors';
import type { Logger } from '../logger';
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

const ROLE_RANK: Record<Role, number> = { [Role.USER]: 0, [Role.ADMIN]: 1 };

export function normalizeEmail(email: string): string {
  return email.trim().toLowerCase();
}

/** Sign-in, sessions and the verification behind `@auth`. */
export class AuthService {
  readonly accessTokens: AccessTokens;
  private readonly throttle: LoginThrottle;
  private readonly cache = new AuthStateCache(60_000);

  constructor(
    private readonly config: Config,
    readonly passwords: PasswordHasher,
    private readonly log: Logger,
    /** For checks outside a request (live events, socket rechecks), which have no entity manager. */
    private readonly orm: MikroORM,
  ) {
    this.accessTokens = new AccessTokens(config.jwt);
    this.throttle = new LoginThrottle(config.login);
  }

  /**
   * Announces that a user's credentials changed (role, status, password) or that one of
   * their keys was revoked: this instance forgets its cached state now, every instance on
   * NOTIFY (delivered when `em`'s transaction commits).
   */
  async credentialsChanged(em: EntityManager, userId: string, apiKeyId: string | null = null): Promise<void> {
    this.cache.invalidateUser(userId);
    if (apiKeyId !== null) this.cache.invalidateApiKey(apiKeyId);
    await notify(em, CHANNELS.auth, { userId, apiKeyId });
  }

  /** A credentials-change notification from any instance; returns whose credentials changed. */
  applyCredentialChange(payload: string): { userId: string } | null {
    let change: { userId?: unknown; apiKeyId?: unknown };
    try {
      change = JSON.parse(payload) as typeof change;
    } catch {
      return null;
    }
    if (typeof change.userId !== 'string') return null;
    this.cache.invalidateUser(change.userId);
    if (typeof change.apiKeyId === 'string') this.cache.invalidateApiKey(change.apiKeyId);
    return { userId: change.userId };
  }

  /** After a gap in notifications, any cached state may be stale. */
  forgetCachedCredentials(): void {
    this.cache.clear();
  }

  /**
   * The viewer's user as it is now, or null when the credential no longer holds (expired,
   * user disabled, tokenVersion bumped, API key revoked). Cached, so it can run per event.
   */
  async currentState(viewer: Viewer, em?: EntityManager): Promise<UserAuthState | null> {
    if (viewer.expiresAt !== null && viewer.expiresAt.getTime() <= Date.now()) return null;
    const fork = em ?? this.orm.em.fork();
    const user = await this.loadUserState(fork, viewer.userId);
    if (user === null || user.disabled) return null;
    if (viewer.via === 'access-token' && user.tokenVersion !== viewer.tokenVersion) return null;
    if (viewer.via === 'api-key' && viewer.apiKeyId !== null && this.cache.apiKeyById(viewer.apiKeyId) === undefined) {
      const key = await queryOne<{ id: string }>(fork, 'select id from api_keys where id = ? and revoked_at is null', [viewer.apiKeyId]);
      if (key === undefined) return null;
    }
    return user;
  }

  private loadUserState(em: EntityManager, userId: string): Promise<UserAuthState | null> {
    return this.cache.user(userId, async () => {
      const row = await queryOne<UserAuthRow>(em, 'select id, email, role, disabled, token_version from users where id = ?', [userId]);
      return row === undefined
        ? null
        : { id: row.id, email: row.email, role: row.role, disabled: row.disabled, tokenVersion: row.token_version };
    });
  }

  async login(em: EntityManager, email: string, password: string, clientAddress: string): Promise<IssuedTokens> {
    const normalized = normalizeEmail(email);
    const subjects = {
      account: LoginThrottle.accountSubject(normalized),
      address: LoginThrottle.addressSubject(clientAddress),
    };
    await this.throttle.attempt(em, subjects);

    const user = await em.findOne(User, { email: normalized }, { populate: ['passwordHash'] });
    const passwordMatches =
      user === null || [...password].length > 1024
        ? await this.passwords.verifyDummy(password)
        : await this.passwords.verify(user.passwordHash, password);
    if (user === null || !passwordMatches || user.disabled) {
      this.log.info({ event: 'login_failed', clientAddress }, 'sign-in refused');
      throw new UnauthenticatedError('Wrong email or password.');
    }
    await this.throttle.succeeded(em, subjects);
    if (this.passwords.needsRehash(user.passwordHash)) {
      user.passwordHash = await this.passwords.hash(password);
      await em.flush();
    }
    this.log.info({ event: 'login', userId: user.id }, 'signed in');
    return this.startSession(em, user, randomUUID());
  }

  /** Rotates a refresh token. Presenting one that was already rotated ends its whole family. */
  async refresh(em: EntityManager, refreshToken: string): Promise<IssuedTokens> {
    const session = await this.findSession(em, refreshToken);
    if (session === undefined || session.revoked_at !== null) throw new UnauthenticatedError('The refresh token is not valid.');
    if (session.replaced_at !== null) {
      await this.revokeFamily(em, session.family_id);
      this.log.warn({ event: 'refresh_reuse', userId: session.id, familyId: session.family_id }, 'refresh token reused: session family revoked');
      throw new UnauthenticatedError('The refresh token is not valid.');
    }
    if (new Date(session.expires_at) <= new Date() || session.disabled || session.session_token_version !== session.token_version) {
      throw new UnauthenticatedError('The refresh token is not valid.');
    }
    // Only one of two concurrent refreshes with the same token wins; the loser is treated as reuse.
    const rotated = await query(em, 'update refresh_sessions set replaced_at = now() where id = ? and replaced_at is null and revoked_at is null returning id', [
      session.session_id,
    ]);
    if (rotated.length === 0) {
      await this.revokeFamily(em, session.family_id);
      throw new UnauthenticatedError('The refresh token is not valid.');
    }
    const user = await em.findOneOrFail(User, { id: session.id });
    return this.startSession(em, user, session.family_id);
  }

  /** Ends the session the refresh token belongs to; false when the token is unknown or already ended. */
  async logout(em: EntityManager, refreshToken: string): Promise<boolean> {
    const session = await this.findSession(em, refreshToken);
    if (session === undefined || session.revoked_at !== null) return false;
    await this.revokeFamily(em, session.family_id);
    return true;
  }

  async changePassword(em: EntityManager, viewer: Viewer, currentPassword: string, newPassword: string, clientAddress: string): Promise<void> {
    assertPasswordPolicy(newPassword, 'newPassword');
    const subjects = {
      account: LoginThrottle.accountSubject(viewer.email),
      address: LoginThrottle.addressSubject(clientAddress),
    };
    await this.throttle.attempt(em, subjects);
    const user = await em.findOneOrFail(User, { id: viewer.userId }, { populate: ['passwordHash'] });
    if (!(await this.passwords.verify(user.passwordHash, currentPassword))) {
      throw new BadUserInputError('The current password is wrong.', 'currentPassword');
    }
    await this.throttle.succeeded(em, subjects);
    user.passwordHash = await this.passwords.hash(newPassword);
    user.tokenVersion += 1;
    await em.flush();
    await this.revokeAllSessions(em, user.id);
    await this.credentialsChanged(em, user.id);
    this.log.info({ event: 'password_changed', userId: user.id }, 'password changed; every session ended');
  }

  async revokeAllSessions(em: EntityManager, userId: string): Promise<void> {
    await query(em, 'update refresh_sessions set revoked_at = now() where user_id = ? and revoked_at is null', [userId]);
  }

  /**
   * Verifies `Authorization: Bearer <access token | API key>` against the database's current
   * state: a bumped tokenVersion, a disabled user or a revoked key fail at once, not at expiry.
   */
  async authenticate(em: EntityManager, authorization: string | null): Promise<Viewer> {
    const credential = bearerCredential(authorization);
    if (credential === null) throw new UnauthenticatedError('Sign in first: send Authorization: Bearer <access token or API key>.');
    if (credential.startsWith(API_KEY_PREFIX)) return this.authenticateApiKey(em, credential);

    const claims = this.accessTokens.verify(credential);
    if (claims === null) throw new UnauthenticatedError('The access token is invalid or expired.');
    const user = await this.loadUserState(em, claims.userId);
    if (user?.disabled === true) throw new UnauthenticatedError('This account is disabled.', 'USER_DISABLED');
    if (user === null || user.tokenVersion !== claims.tokenVersion) {
      throw new UnauthenticatedError('The access token is no longer valid.');
    }
    return viewerFrom(user, { via: 'access-token', apiKeyId: null, expiresAt: claims.expiresAt });
  }

  assertRole(viewer: Viewer, required: Role): void {
    if (ROLE_RANK[viewer.role] < ROLE_RANK[required]) throw new ForbiddenError(`This needs the ${required} role.`);
  }

  private async authenticateApiKey(em: EntityManager, secret: string): Promise<Viewer> {
    const key = await this.cache.apiKey(sha256(secret), async (): Promise<ApiKeyAuthState | null> => {
      const row = await queryOne<{ id: string; user_id: string; last_used_at: Date | null }>(
        em,
        'select id, user_id, last_used_at from api_keys where key_hash = ? and revoked_at is null',
        [sha256(secret)],
      );
      return row === undefined ? null : { keyId: row.id, userId: row.user_id, lastUsedAt: row.last_used_at };
    });
    const user = key === null ? null : await this.loadUserState(em, key.userId);
    if (user?.disabled === true) throw new UnauthenticatedError('This account is disabled.', 'USER_DISABLED');
    if (key === null || user === null) throw new UnauthenticatedError('The API key is invalid or revoked.');
    // Written at most about once a minute per key (as the cache expires), off the request's path.
    if (key.lastUsedAt === null || Date.now() - new Date(key.lastUsedAt).getTime() > 60_000) {
      query(em.fork(), 'update api_keys set last_used_at = now() where id = ? and (last_used_at is null or last_used_at < now() - interval \'1 minute\')', [key.keyId]).catch(
        (error: unknown) => this.log.warn({ err: error }, 'could not record API key use'),
      );
    }
    return viewerFrom(user, { via: 'api-key', apiKeyId: key.keyId, expiresAt: null });
  }

  private async startSession(em: EntityManager, user: User, familyId: string): Promise<IssuedTokens> {
    const refreshToken = newRefreshToken();
    await query(
      em,
      `insert into refresh_sessions (id, user_id, family_id, token_hash, token_version, expires_at)
       values (?, ?, ?, ?, ?, now() + make_interval(secs => ?))`,
      [randomUUID(), user.id, familyId, sha256(refreshToken), user.tokenVersion, this.config.jwt.refreshTtlSeconds],
    );
    const access = this.accessTokens.sign(user.id, user.tokenVersion);
    const viewer = viewerFrom(
      { id: user.id, email: user.email, role: user.role, tokenVersion: user.tokenVersion },
      { via: 'access-token', apiKeyId: null, expiresAt: access.expiresAt },
    );
    return { accessToken: access.token, refreshToken, expiresAt: access.expiresAt, user, viewer };
  }

  private findSession(em: EntityManager, refreshToken: string): Promise<SessionRow | undefined> {
    return queryOne<SessionRow>(
      em,
      `select s.id as session_id, s.family_id, s.token_version as session_token_version, s.expires_at, s.replaced_at, s.revoked_at,
              u.id, u.email, u.role, u.disabled, u.token_version
         from refresh_sessions s join users u on u.id = s.user_id
        where s.token_hash = ?`,
      [sha256(refreshToken)],
    );
  }

  private async revokeFamily(em: EntityManager, familyId: string): Promise<void> {
    await query(em, 'update refresh_sessions set revoked_at = now() where family_id = ? and revoked_at is null', [familyId]);
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
