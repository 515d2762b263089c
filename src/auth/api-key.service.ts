import type { AuditService } from '../audit/audit.service';
import { AuditAction } from '../audit/audit.types';
import type { Database } from '../db/database';
import { BadUserInputError, ForbiddenError } from '../errors';
import type { Logger } from '../logger';
import { isUuid } from '../rules';
import { User } from '../users/user.entity';
import { ApiKey } from './api-key.entity';
import type { AuthService } from './auth.service';
import { newApiKey, sha256 } from './tokens';
import type { Viewer } from './viewer';

const MAX_NAME_LENGTH = 100;
const MAX_ACTIVE_KEYS = 100;

export class ApiKeyService {
  constructor(
    private readonly auth: AuthService,
    private readonly audit: AuditService,
    private readonly log: Logger,
    private readonly db: Database,
  ) {}

  /** Creates a key for the viewer; the secret is returned here and never again. */
  async create(viewer: Viewer, name: string, clientAddress: string): Promise<{ apiKey: ApiKey; secret: string }> {
    const trimmed = name.trim();
    if (trimmed === '' || trimmed.length > MAX_NAME_LENGTH) {
      throw new BadUserInputError(`The key needs a name of 1 to ${MAX_NAME_LENGTH} characters.`, 'name');
    }
    const em = this.db.em();
    const active = await em.count(ApiKey, { user: viewer.userId, revokedAt: null });
    if (active >= MAX_ACTIVE_KEYS) throw new BadUserInputError(`At most ${MAX_ACTIVE_KEYS} active keys per user; revoke one first.`, 'name');
    const { secret, prefix } = newApiKey();
    const apiKey = new ApiKey();
    apiKey.user = em.getReference(User, viewer.userId);
    apiKey.name = trimmed;
    apiKey.prefix = prefix;
    apiKey.keyHash = sha256(secret);
    // In SQL, not through the entity manager: its pool is not this transaction's, and the key
    // and its audit entry must commit together.
    await this.db.transaction(async (tx) => {
      await tx.query('insert into api_keys (id, user_id, name, prefix, key_hash, created_at) values ($1, $2, $3, $4, $5, $6)', [
        apiKey.id,
        viewer.userId,
        apiKey.name,
        apiKey.prefix,
        apiKey.keyHash,
        apiKey.createdAt,
      ]);
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
