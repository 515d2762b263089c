import type { Role } from '../users/user.entity';

export interface UserAuthState {
  readonly id: string;
  readonly email: string;
  readonly role: Role;
  readonly disabled: boolean;
  readonly tokenVersion: number;
}

export interface ApiKeyAuthState {
  readonly keyId: string;
  readonly userId: string;
  readonly lastUsedAt: Date | null;
}

interface Entry<T> {
  readonly value: T | null;
  readonly at: number;
}

/**
 * Credentials' state as last read from the database, so that authenticating a request (and
 * re-authorising every live event) costs no query. Entries are dropped when any instance
 * announces a change (NOTIFY), when the notification connection had a gap, and after a TTL
 * as a backstop. A read that raced an invalidation is not stored.
 */
export class AuthStateCache {
  private readonly users = new Map<string, Entry<UserAuthState>>();
  private readonly keys = new Map<string, Entry<ApiKeyAuthState>>();
  /** Key id → key hash, so checks by id (every live event of an API-key socket) need no scan. */
  private readonly keyHashById = new Map<string, string>();
  private epoch = 0;

  constructor(private readonly ttlMs: number) {}

  user(id: string, load: () => Promise<UserAuthState | null>): Promise<UserAuthState | null> {
    return this.read(this.users, id, load);
  }

  /** By key hash. */
  async apiKey(hash: string, load: () => Promise<ApiKeyAuthState | null>): Promise<ApiKeyAuthState | null> {
    const key = await this.read(this.keys, hash, load);
    if (key !== null) {
      if (this.keyHashById.size > 50_000) this.keyHashById.clear();
      this.keyHashById.set(key.keyId, hash);
    }
    return key;
  }

  /** Whether a key known by id is still cached as valid; undefined when not cached. */
  apiKeyById(keyId: string): ApiKeyAuthState | undefined {
    const hash = this.keyHashById.get(keyId);
    const entry = hash === undefined ? undefined : this.keys.get(hash);
    return entry?.value != null && Date.now() - entry.at < this.ttlMs ? entry.value : undefined;
  }

  /**
   * Records that the key's use was written at `at`, so that its cached state stops asking for
   * the write again until a minute has passed (the state read from the database is older).
   */
  noteApiKeyUsed(keyId: string, at: Date): void {
    const hash = this.keyHashById.get(keyId);
    const entry = hash === undefined ? undefined : this.keys.get(hash);
    if (hash === undefined || entry?.value == null || entry.value.keyId !== keyId) return;
    this.keys.set(hash, { value: { ...entry.value, lastUsedAt: at }, at: entry.at });
  }

  invalidateUser(userId: string): void {
    this.epoch += 1;
    this.users.delete(userId);
    for (const [hash, entry] of this.keys) if (entry.value?.userId === userId) this.keys.delete(hash);
  }

  invalidateApiKey(keyId: string): void {
    this.epoch += 1;
    for (const [hash, entry] of this.keys) if (entry.value === null || entry.value.keyId === keyId) this.keys.delete(hash);
  }

  clear(): void {
    this.epoch += 1;
    this.users.clear();
    this.keys.clear();
    this.keyHashById.clear();
  }

  private async read<T>(map: Map<string, Entry<T>>, key: string, load: () => Promise<T | null>): Promise<T | null> {
    const cached = map.get(key);
    if (cached !== undefined && Date.now() - cached.at < this.ttlMs) return cached.value;
    const epoch = this.epoch;
    const value = await load();
    // Unknown credentials are not cached: guessing random keys must not fill memory.
    if (epoch === this.epoch && value !== null) {
      if (map.size > 50_000) map.clear();
      map.set(key, { value, at: Date.now() });
    }
    return value;
  }
}
