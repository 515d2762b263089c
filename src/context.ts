import type { EntityManager } from '@mikro-orm/postgresql';
import type { Logger } from './logger';
import type { Services } from './services';
import type { Viewer } from './auth/viewer';
import type { MeteredChat } from './chat/chat.service';
import type { QuotaUsageLoader } from './quota/quota.service';

/** What every resolver receives, per HTTP request or per WebSocket operation. */
export interface GraphQLContext {
  readonly requestId: string;
  readonly log: Logger;
  /** Forked per request or operation: no identity map is shared between users. */
  readonly em: EntityManager;
  readonly services: Services;
  /** The raw `Authorization` value (header on HTTP, connectionParams on the socket). */
  readonly authorization: string | null;
  readonly clientAddress: string;
  readonly transport: 'http' | 'ws';
  /** Set by `@auth` once the credentials are verified. */
  viewer?: Viewer;
  /** Set by `@quota`: the reservation of the field's upstream call. */
  metered?: MeteredChat;
  /** Created on first use: batches `User.usage` lookups of this request. */
  usageLoader?: QuotaUsageLoader;
}
