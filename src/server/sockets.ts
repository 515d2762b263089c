import type { WebSocket } from 'ws';
import type { AuthService } from '../auth/auth.service';
import type { Viewer } from '../auth/viewer';
import { CREDENTIALS_TOPIC } from '../auth/auth.service';
import type { PgNotifications } from '../db/notifications';
import type { Logger } from '../logger';

/** Close codes, beside graphql-ws's own (4400, 4401, 4403, 4408, 4409, 4429, 4499). */
export const CLOSE_CREDENTIALS_EXPIRED = 4401;
export const CLOSE_CREDENTIALS_REVOKED = 4403;
export const CLOSE_TOO_MANY_CONNECTIONS = 4029;
/** WebSocket's own "Try Again Later": connection_init could not be checked (the database, or with several workers the primary, did not answer). */
export const CLOSE_SERVICE_UNAVAILABLE = 1013;

/**
 * The count behind WS_MAX_CONNECTIONS_PER_USER: kept in this process, or, with several workers,
 * by the primary for all of them (so the limit is the gateway's, not each worker's).
 */
export interface ConnectionSlots {
  /** One more socket for the user; false when they hold the most allowed already. */
  take(userId: string): Promise<boolean>;
  /** Gives back a slot `take` granted. */
  give(userId: string): void;
}

/** The slots of a gateway that is one process. */
export class LocalConnectionSlots implements ConnectionSlots {
  private readonly held = new Map<string, number>();

  constructor(private readonly maxPerUser: number) {}

  take(userId: string): Promise<boolean> {
    const held = this.held.get(userId) ?? 0;
    if (held >= this.maxPerUser) return Promise.resolve(false);
    this.held.set(userId, held + 1);
    return Promise.resolve(true);
  }

  give(userId: string): void {
    const held = (this.held.get(userId) ?? 0) - 1;
    if (held > 0) this.held.set(userId, held);
    else this.held.delete(userId);
  }
}

interface TrackedSocket {
  readonly socket: WebSocket;
  readonly viewer: Viewer;
  readonly expiry: NodeJS.Timeout | null;
}

/**
 * The authenticated WebSockets of this instance, by user: closed when their access token
 * expires, and re-checked (closed if no longer valid) whenever the user's credentials change.
 */
export class SocketRegistry {
  private readonly byUser = new Map<string, Set<TrackedSocket>>();
  private readonly bySocket = new Map<WebSocket, TrackedSocket>();

  /** Open sockets, every user's. */
  get size(): number {
    return this.bySocket.size;
  }

  constructor(
    private readonly auth: AuthService,
    private readonly slots: ConnectionSlots,
    private readonly log: Logger,
  ) {}

  /**
   * False when the user already holds the most sockets allowed, or when the socket closed
   * while its credentials (or its slot) were being checked: its 'close' has already fired, so a
   * socket registered now would hold one of the user's slots until the process ends.
   */
  async register(socket: WebSocket, viewer: Viewer): Promise<boolean> {
    if (socket.readyState !== socket.OPEN) return false;
    if (!(await this.slots.take(viewer.userId))) return false;
    if (socket.readyState !== socket.OPEN) {
      this.slots.give(viewer.userId);
      return false;
    }
    const sockets = this.byUser.get(viewer.userId) ?? new Set<TrackedSocket>();
    let expiry: NodeJS.Timeout | null = null;
    if (viewer.expiresAt !== null) {
      const remaining = Math.max(0, viewer.expiresAt.getTime() - Date.now());
      expiry = setTimeout(() => socket.close(CLOSE_CREDENTIALS_EXPIRED, 'Access token expired'), Math.min(remaining, 2_147_000_000));
      expiry.unref();
    }
    const tracked = { socket, viewer, expiry };
    sockets.add(tracked);
    this.byUser.set(viewer.userId, sockets);
    this.bySocket.set(socket, tracked);
    socket.once('close', () => this.unregister(socket));
    return true;
  }

  /** Re-checks a user's sockets when any instance announces a change of their credentials, and every socket after a gap. */
  followCredentialChanges(notifications: PgNotifications): void {
    const failed = (error: unknown): void => this.log.error({ err: error }, 'socket recheck failed');
    notifications.on(CREDENTIALS_TOPIC, (change) => {
      this.auth.applyCredentialChange(change);
      this.recheck(change.userId).catch(failed);
    });
    notifications.onReconnect(() => {
      this.auth.forgetCachedCredentials();
      this.recheckAll().catch(failed);
    });
  }

  viewerOf(socket: WebSocket): Viewer | undefined {
    return this.bySocket.get(socket)?.viewer;
  }

  /** After a credentials change of `userId`: closes that user's sockets that are no longer valid. */
  async recheck(userId: string): Promise<void> {
    const sockets = this.byUser.get(userId);
    if (sockets === undefined) return;
    for (const tracked of [...sockets]) {
      const state = await this.auth.currentState(tracked.viewer);
      if (state === null) {
        this.log.info({ userId, via: tracked.viewer.via }, 'closing a WebSocket whose credentials were revoked');
        tracked.socket.close(CLOSE_CREDENTIALS_REVOKED, 'Credentials revoked');
      }
    }
  }

  /** Every tracked socket: after a notification gap, any of them may be stale. */
  async recheckAll(): Promise<void> {
    for (const userId of [...this.byUser.keys()]) await this.recheck(userId);
  }

  private unregister(socket: WebSocket): void {
    const tracked = this.bySocket.get(socket);
    if (tracked === undefined) return;
    this.bySocket.delete(socket);
    if (tracked.expiry !== null) clearTimeout(tracked.expiry);
    this.slots.give(tracked.viewer.userId);
    const sockets = this.byUser.get(tracked.viewer.userId);
    sockets?.delete(tracked);
    if (sockets?.size === 0) this.byUser.delete(tracked.viewer.userId);
  }
}
