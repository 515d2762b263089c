import type { AuditService } from '../audit/audit.service';
import { AuditAction } from '../audit/audit.types';
import type { Database } from '../db/database';
import { BadUserInputError, ForbiddenError } from '../errors';
import type { Logger } from '../logger';
import { validTokenLimit } from '../quota/quota-input';
import type { QuotaService } from '../quota/quota.service';
import { isUuid } from '../rules';
import { QuotaPeriod, Role, User } from '../users/user.entity';
import { ApiKey } from './api-key.entity';
import type { AuthService } from './auth.service';
import type { UpdateApiKeyInput } from './auth.types';
import { newApiKey, sha256 } from './tokens';
import type { Viewer } from './viewer';

const MAX_NAME_LENGTH = 100;
const MAX_ACTIVE_KEYS = 100;

export interface NewApiKey {
  readonly name: string;
  readonly tokenLimit?: number | null;
  readonly quotaPeriod?: QuotaPeriod | null;
}

function validName(name: string): string {
  const trimmed = name.trim();
  if (trimmed === '' || trimmed.length > MAX_NAME_LENGTH) {
    throw new BadUserInputError(`The key needs a name of 1 to ${MAX_NAME_LENGTH} characters.`, 'name');
  }
  return trimmed;
}

export class ApiKeyService {
  constructor(
    private readonly auth: AuthService,
    private readonly audit: AuditService,
    private readonly quota: QuotaService,
    private readonly log: Logger,
    private readonly db: Database,
  ) {}

  /** Creates a key for the viewer, with its own budget when given; the secret is returned here and never again. */
  async create(viewer: Viewer, input: NewApiKey, clientAddress: string): Promise<{ apiKey: ApiKey; secret: string }> {
    const name = validName(input.name);
    const tokenLimit = validTokenLimit(input.tokenLimit, 'tokenLimit');
    const em = this.db.em();
    const active = await em.count(ApiKey, { user: viewer.userId, revokedAt: null });
    if (active >= MAX_ACTIVE_KEYS) throw new BadUserInputError(`At most ${MAX_ACTIVE_KEYS} active keys per user; revoke one first.`, 'name');
    const { secret, prefix } = newApiKey();
    const apiKey = new ApiKey();
    apiKey.user = em.getReference(User, viewer.userId);
    apiKey.name = name;
    apiKey.prefix = prefix;
    apiKey.keyHash = sha256(secret);
    apiKey.tokenLimit = tokenLimit;
    apiKey.quotaPeriod = input.quotaPeriod ?? QuotaPeriod.NONE;
    await this.db.transaction(async (tx) => {
      await tx.query(
        `insert into api_keys (id, user_id, name, prefix, key_hash, token_limit, quota_period, created_at) values ($1, $2, $3, $4, $5, $6, $7, $8)`,
        [apiKey.id, viewer.userId, apiKey.name, apiKey.prefix, apiKey.keyHash, apiKey.tokenLimit, apiKey.quotaPeriod, apiKey.createdAt],
      );
      await this.quota.openAccount(tx, 'API_KEY', apiKey.id);
      await this.audit.record(tx, {
        action: AuditAction.API_KEY_CREATED,
        actor: { userId: viewer.userId, ip: clientAddress },
        targetUserId: viewer.userId,
        details: { apiKeyId: apiKey.id, name: apiKey.name, prefix: apiKey.prefix },
      });
    });
    this.log.info({ event: 'api_key_created', userId: viewer.userId, apiKeyId: apiKey.id }, 'API key created');
    return { apiKey, secret };
  }

  list(viewer: Viewer): Promise<ApiKey[]> {
    return this.db.em().find(ApiKey, { user: viewer.userId }, { orderBy: { createdAt: 'desc', id: 'desc' } });
  }

  /** A key's usage is its owner's and the admins' to see. */
  assertMaySeeUsage(viewer: Viewer, apiKey: ApiKey): void {
    if (apiKey.user.id !== viewer.userId && viewer.role !== Role.ADMIN) throw new ForbiddenError('This API key is not yours.');
  }

  /** Renames one of the viewer's keys or changes its budget (an admin may change anyone's). */
  async update(viewer: Viewer, id: string, input: UpdateApiKeyInput): Promise<ApiKey> {
    const name = input.name == null ? undefined : validName(input.name);
    const tokenLimit = input.tokenLimit === undefined ? undefined : validTokenLimit(input.tokenLimit, 'tokenLimit');
    await this.db.transaction(async (tx) => {
      const key = isUuid(id)
        ? await tx.one<{ user_id: string; name: string; token_limit: number | null; quota_period: QuotaPeriod; revoked_at: string | null }>(
            'select user_id, name, token_limit, quota_period, revoked_at from api_keys where id = $1 for no key update',
            [id],
          )
        : undefined;
      if (key === undefined) throw new BadUserInputError('No API key has this id.', 'id');
      if (key.user_id !== viewer.userId && viewer.role !== Role.ADMIN) throw new ForbiddenError('This API key is not yours.');
      if (key.revoked_at !== null) throw new BadUserInputError('This API key is revoked.', 'id');
      const quotaPeriod = input.quotaPeriod ?? key.quota_period;
      await tx.query('update api_keys set name = $2, token_limit = $3, quota_period = $4 where id = $1', [
        id,
        name ?? key.name,
        tokenLimit === undefined ? key.token_limit : tokenLimit,
        quotaPeriod,
      ]);
      if (quotaPeriod !== key.quota_period) await this.quota.recountPeriod(tx, 'API_KEY', id, quotaPeriod);
    });
    this.log.info({ event: 'api_key_updated', apiKeyId: id, by: viewer.userId }, 'API key updated');
    return this.db.em().findOneOrFail(ApiKey, { id });
  }

  /** Revokes one of the viewer's keys (an admin may revoke anyone's). False when already revoked. */
  async revoke(viewer: Viewer, id: string, clientAddress: string): Promise<boolean> {
    const apiKey = isUuid(id)
      ? await this.db.one<{ user_id: string; name: string; prefix: string }>('select user_id, name, prefix from api_keys where id = $1', [id])
      : undefined;
    if (apiKey === undefined) throw new BadUserInputError('No API key has this id.', 'id');
    if (apiKey.user_id !== viewer.userId && viewer.role !== 'ADMIN') throw new ForbiddenError('This API key is not yours.');
    const revoked = await this.db.transaction(async (tx) => {
      const rows = await tx.query('update api_keys set revoked_at = now() where id = $1 and revoked_at is null returning id', [id]);
      if (rows.length === 0) return false;
      await this.auth.credentialsChanged(tx, apiKey.user_id, id);
      await this.audit.record(tx, {
        action: AuditAction.API_KEY_REVOKED,
        actor: { userId: viewer.userId, ip: clientAddress },
        targetUserId: apiKey.user_id,
        details: { apiKeyId: id, name: apiKey.name, prefix: apiKey.prefix },
      });
      return true;
    });
    if (revoked) this.log.info({ event: 'api_key_revoked', apiKeyId: id, by: viewer.userId }, 'API key revoked');
    return revoked;
  }
}
