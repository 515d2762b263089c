import { randomUUID } from 'node:crypto';
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { execute, subscribe, type ExecutionArgs, type GraphQLError } from 'graphql';
import { useServer } from 'graphql-ws/use/ws';
import { WebSocketServer } from 'ws';
import { hookIterator } from '../async-iterator';
import type { UserAuthState } from '../auth/auth-state-cache';
import type { Viewer } from '../auth/viewer';
import type { Config } from '../config';
import type { GraphQLContext } from '../context';
import { isDatabaseUnreachable } from '../db/unreachable';
import { RateLimitedError, ServiceUnavailableError, UnauthenticatedError } from '../errors';
import { toGraphQLError } from '../graphql/errors';
import type { GraphQLPipeline } from '../graphql/pipeline';
import { requestScope, type Logger } from '../logger';
import type { Services } from '../services';
import { GRAPHQL_PATH } from './graphql-http';
import { clientAddressOf } from './http';
import { CLOSE_CREDENTIALS_REVOKED, CLOSE_SERVICE_UNAVAILABLE, CLOSE_TOO_MANY_CONNECTIONS, SocketRegistry, type ConnectionSlots } from './sockets';

export interface GraphQLWebSocket {
  readonly sockets: SocketRegistry;
  /** Takes over an HTTP upgrade; false when it is not for `/graphql`. */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): boolean;
  /** Closes every socket, letting operations end. */
  dispose(): Promise<void>;
}

/** Log lines written while an operation runs (and while its events are produced) carry its request id. */
function inRequestScope<T>(args: ExecutionArgs, run: () => T): T {
  return requestScope.run({ requestId: (args.contextValue as GraphQLContext).requestId }, run);
}

/** graphql-ws over `ws`, configured from the same pipeline as Apollo. */
export function startGraphQLWebSocket(pipeline: GraphQLPipeline, services: Services, config: Config, slots: ConnectionSlots, log: Logger): GraphQLWebSocket {
  const sockets = new SocketRegistry(services.auth, slots, log);
  const wsServer = new WebSocketServer({ noServer: true, maxPayload: config.ws.maxMessageBytes });
  const formatErrors = (errors: readonly GraphQLError[]) => errors.map((error) => pipeline.formatError(error.toJSON(), error));
  const authorizationOf = (params: Record<string, unknown> | undefined): string | null =>
    typeof params?.authorization === 'string' ? params.authorization : null;

  const handle = useServer<Record<string, unknown>>(
    {
      schema: pipeline.schema,
      connectionInitWaitTimeout: config.ws.connectionInitWaitMs,
      onConnect: async (ctx) => {
        let viewer: Viewer;
        try {
          viewer = await services.auth.authenticate(authorizationOf(ctx.connectionParams));
        } catch (error) {
          // Not the credentials' fault: a client may connect again once the database is back.
          if (isDatabaseUnreachable(error)) ctx.extra.socket.close(CLOSE_SERVICE_UNAVAILABLE, 'Service unavailable');
          return false;
        }
        let registered: boolean;
        try {
          registered = await sockets.register(ctx.extra.socket, viewer);
        } catch (error) {
          // With several workers the count is the primary's: a client may try again once it answers.
          log.error({ err: error }, 'the WebSocket count could not be checked');
          ctx.extra.socket.close(CLOSE_SERVICE_UNAVAILABLE, 'Service unavailable');
          return false;
        }
        if (!registered) {
          // Closed while it was being checked: nothing to refuse.
          if (ctx.extra.socket.readyState !== ctx.extra.socket.OPEN) return false;
          log.info({ userId: viewer.userId, via: viewer.via }, 'WebSocket refused: too many connections for this user');
          ctx.extra.socket.close(CLOSE_TOO_MANY_CONNECTIONS, 'Too many connections for this user');
          return false;
        }
        log.info({ userId: viewer.userId, via: viewer.via }, 'WebSocket connection accepted');
        return true;
      },
      onSubscribe: async (ctx, _id, payload) => {
        // graphql-ws registers the id before this runs, hence `>`.
        if (Object.keys(ctx.subscriptions).length > config.ws.maxSubscriptionsPerSocket) {
          return [toGraphQLError(new RateLimitedError(`At most ${config.ws.maxSubscriptionsPerSocket} operations at once on one connection.`, 1))];
        }
        const viewer = sockets.viewerOf(ctx.extra.socket);
        let state: UserAuthState | null;
        try {
          state = viewer === undefined ? null : await services.auth.currentState(viewer);
        } catch (error) {
          // The socket stays open: its other operations, and this one tried again later, may still be served.
          if (isDatabaseUnreachable(error)) return [toGraphQLError(new ServiceUnavailableError())];
          throw error;
        }
        if (viewer === undefined || state === null) {
          ctx.extra.socket.close(CLOSE_CREDENTIALS_REVOKED, 'Credentials revoked');
          return [toGraphQLError(new UnauthenticatedError('The credentials of this connection are no longer valid.'))];
        }
        const parsed = pipeline.documents.prepare(payload.query, payload.operationName, payload.variables);
        if (parsed.errors !== null) return parsed.errors;
        const contextValue = pipeline.context({
          requestId: randomUUID(),
          authorization: authorizationOf(ctx.connectionParams),
          clientAddress: clientAddressOf(ctx.extra.request),
          transport: 'ws',
          viewer: { ...viewer, role: state.role },
        });
        return { schema: pipeline.schema, document: parsed.document, operationName: payload.operationName, variableValues: payload.variables, contextValue };
      },
      execute: (args) => inRequestScope(args, () => execute(args)),
      subscribe: (args) => inRequestScope(args, () => subscribe(args)),
      // A subscription's events are produced when graphql-ws pulls them, outside that scope.
      onOperation: (_ctx, _id, _payload, args, result) => {
        if (!(Symbol.asyncIterator in result)) return result;
        return hookIterator(result[Symbol.asyncIterator](), { around: (call) => inRequestScope(args, call) });
      },
      onNext: (_ctx, _id, _payload, _args, result) => (result.errors === undefined ? result : { ...result, errors: formatErrors(result.errors) }),
      onError: (_ctx, _id, _payload, errors) => formatErrors(errors),
    },
    wsServer,
  );
  // graphql-ws prints a stack to stderr for every protocol error (an oversized frame, say),
  // which any client can trigger: note it in the log instead.
  wsServer.on('connection', (socket) => {
    socket.removeAllListeners('error');
    socket.on('error', (error: NodeJS.ErrnoException) => log.info({ code: error.code }, 'WebSocket protocol error'));
  });

  return {
    sockets,
    upgrade(req, socket, head) {
      if (new URL(req.url ?? '/', 'http://gateway').pathname !== GRAPHQL_PATH) return false;
      wsServer.handleUpgrade(req, socket, head, (ws) => wsServer.emit('connection', ws, req));
      return true;
    },
    dispose: async () => {
      await handle.dispose();
    },
  };
}

/** Attaches the socket server to the HTTP server's upgrades; anything else is refused. */
export function acceptUpgrades(httpServer: Server, ws: GraphQLWebSocket): void {
  httpServer.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (!ws.upgrade(req, socket, head)) socket.destroy();
  });
}
