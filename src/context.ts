import type { Viewer } from './auth/viewer';
import type { MeteredChat } from './chat/chat-admission';
import type { Logger } from './logger';
import type { UsageLoader } from './quota/usage-loader';
import type { Services } from './services';
import type { TeamLoader } from './teams/team-loader';

/** What every resolver receives, per HTTP request or per WebSocket operation. */
export interface GraphQLContext {
  readonly requestId: string;
  readonly log: Logger;
  readonly services: Services;
  /** The raw `Authorization` value (header on HTTP, connectionParams on the socket). */
  readonly authorization: string | null;
  readonly clientAddress: string;
  readonly transport: 'http' | 'ws';
  /** performance.now() when the request (or the socket's operation) arrived. */
  readonly receivedAt: number;
  /** Over HTTP: aborted when the client disconnects before its answer was sent. */
  readonly clientGone?: AbortSignal;
  /** Set by `@auth` once the credentials are verified (or by the socket, at connection_init). */
  viewer?: Viewer;
  /** Set by `@quota`: the reservation of the field's upstream call. */
  metered?: MeteredChat;
  /** Created on first use: batches the `usage` lookups (of users, teams, API keys) of this request. */
  usageLoader?: UsageLoader;
  /** Created on first use: batches the `User.team` lookups of this request. */
  teamLoader?: TeamLoader;
}
