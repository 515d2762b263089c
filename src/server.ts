import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { ApolloServer, HeaderMap, type ApolloServerPlugin } from '@apollo/server';
import { ApolloServerPluginDrainHttpServer } from '@apollo/server/plugin/drainHttpServer';
import { ApolloServerPluginLandingPageDisabled } from '@apollo/server/plugin/disabled';
import { MikroORM } from '@mikro-orm/postgresql';
import { execute, subscribe, type GraphQLError, type GraphQLFormattedError } from 'graphql';
import { useServer } from 'graphql-ws/use/ws';
import { Client as PgClient } from 'pg';
import { WebSocketServer } from 'ws';
import { redactUrl, type Config } from './config';
import type { GraphQLContext } from './context';
import { startEmbeddedPostgres, type EmbeddedDatabase } from './db/embedded';
import { GRAPHIQL_ASSET_PREFIX, GRAPHIQL_CSP, graphiqlHtml, serveGraphiqlAsset, wantsGraphiql } from './graphiql';
import { createLogger, requestScope, type Logger } from './logger';
import { createStatementPool, useStatementPool } from './db/sql';
import { Database } from './db/database';
import { ormOptions } from './mikro-orm.config';
import { OpenAICompatibleEndpoint } from './openai/openai.handler';
import { buildExecutableSchema } from './schema';
import { BodyTooLargeError, clientAddressOf, readBody, sendGraphQLError, sendJson } from './server/http';
import { createServices, type Services } from './services';
import { systemClock, type Clock } from './clock';
import { startSimulator, type Simulator } from './simulator';
import type { Viewer } from './auth/viewer';
import { CHANNELS, PgNotifications } from './db/notifications';
import { RateLimitedError, UnauthenticatedError } from './errors';
import { DocumentCache, extraValidationRules, parseOptions } from './graphql/validation';
import { CLOSE_CREDENTIALS_REVOKED, CLOSE_TOO_MANY_CONNECTIONS, SocketRegistry } from './server/sockets';
import { PgUsageBus } from './usage/usage-bus';
import { VERSION } from './version';
import { hookIterator } from './async-iterator';
import { serveUsagePage, USAGE_PAGE_ASSET_DIR } from './usage-page';

export interface GatewayServer {
  /** http://host:port/graphql */
  readonly url: string;
  /** ws://host:port/graphql */
  readonly wsUrl: string;
  readonly origin: string;
  readonly orm: MikroORM;
  readonly services: Services;
  /** Set when this start created the first admin; `generatedPassword` only when none was configured. */
  readonly adminBootstrap: { email: string; generatedPassword: string | null } | null;
  /** Drains in-flight requests, closes sockets, then releases the database and upstream. */
  stop(): Promise<void>;
}

export interface ServerOptions {
  log?: Logger;
  /** Tests inject a clock to cross quota period boundaries. */
  clock?: Clock;
}

const GRAPHQL_PATH = '/graphql';

/** Codes from Apollo and graphql-js that the contract folds into its own. */
const CONTRACT_CODE_OF: Record<string, string> = {
  GRAPHQL_PARSE_FAILED: 'BAD_USER_INPUT',
  GRAPHQL_VALIDATION_FAILED: 'BAD_USER_INPUT',
  BAD_REQUEST: 'BAD_USER_INPUT',
  OPERATION_RESOLUTION_FAILURE: 'BAD_USER_INPUT',
  PERSISTED_QUERY_NOT_FOUND: 'BAD_USER_INPUT',
  PERSISTED_QUERY_NOT_SUPPORTED: 'BAD_USER_INPUT',
};
const CONTRACT_CODES = new Set([
  'UNAUTHENTICATED',
  'FORBIDDEN',
  'BAD_USER_INPUT',
  'QUOTA_EXCEEDED',
  'RATE_LIMITED',
  'UPSTREAM_ERROR',
  'INTERNAL_SERVER_ERROR',
]);

/**
 * Every error leaves with one of the contract's codes. Anything the gateway did not raise on
 * purpose (a driver error, a bug) loses its message, which could hold SQL or internals.
 */
export function formatGatewayError(formatted: GraphQLFormattedError, config: Config, log: Logger): GraphQLFormattedError {
  const original = typeof formatted.extensions?.code === 'string' ? formatted.extensions.code : 'INTERNAL_SERVER_ERROR';
  const code = CONTRACT_CODE_OF[original] ?? original;
  if (CONTRACT_CODES.has(code) && code !== 'INTERNAL_SERVER_ERROR') {
    const extensions: Record<string, unknown> = { ...formatted.extensions, code };
    // Field suggestions map the schema for an attacker; production keeps them to itself.
    const message = config.env === 'production' ? formatted.message.replace(/ ?Did you mean .+\?$/, '') : formatted.message;
    if (code !== original) extensions.reason = original;
    if (config.env !== 'development') delete extensions.stacktrace;
    return { ...formatted, message, extensions };
  }
  log.error({ err: formatted }, 'unexpected error in a GraphQL operation');
  return {
    message: 'Internal server error.',
    locations: formatted.locations,
    path: formatted.path,
    extensions: {
      code: 'INTERNAL_SERVER_ERROR',
      ...(config.env === 'development' && formatted.extensions?.stacktrace !== undefined
        ? { stacktrace: formatted.extensions.stacktrace }
        : {}),
    },
  };
}

export async function createServer(config: Config, options: ServerOptions = {}): Promise<GatewayServer> {
  const log = options.log ?? createLogger(config);
  /** What to undo on stop, in reverse order of starting, each named for the log. */
  const cleanups: [string, () => Promise<void>][] = [];
  const runCleanups = async (): Promise<void> => {
    for (const [name, cleanup] of cleanups.splice(0).reverse()) {
      log.debug({ step: name }, 'stopping');
      try {
        await cleanup();
      } catch (error) {
        log.error({ err: error, step: name }, 'error while stopping');
      }
    }
  };

  try {
    let databaseUrl = config.databaseUrl;
    if (databaseUrl === null) {
      const embedded: EmbeddedDatabase = await startEmbeddedPostgres(config.dataDir, log);
      cleanups.push(['embedded PostgreSQL', () => embedded.stop()]);
      databaseUrl = embedded.url;
    }

    const orm = await MikroORM.init(ormOptions(databaseUrl));
    cleanups.push(['database pool', () => orm.close(true)]);
    const statementPool = createStatementPool(databaseUrl, 20, log);
    useStatementPool(orm.em, statementPool);
    cleanups.push(['statement pool', () => statementPool.end()]);
    // Instances starting together on one database take turns to migrate and bootstrap.
    const startLock = await takeStartLock(databaseUrl);
    cleanups.push(['start lock', () => startLock.release()]);
    try {
      if (config.migrateOnStart) {
        const applied = await orm.getMigrator().up();
        if (applied.length > 0) log.info({ migrations: applied.map((m) => m.name) }, 'migrations applied');
      }
    } catch (error) {
      await startLock.release();
      throw error;
    }

    const upstream = await resolveUpstream(config, log);
    if (upstream.simulator !== null) {
      const running = upstream.simulator;
      cleanups.push(['simulator', () => running.stop()]);
    }

    const notifications = new PgNotifications(databaseUrl, log);
    await notifications.start();
    cleanups.push(['notification connection', () => notifications.stop()]);
    const usageBus = new PgUsageBus(notifications);
    const services = createServices({
      config,
      log,
      orm,
      db: new Database(statementPool, orm),
      clock: options.clock ?? systemClock,
      upstreamBaseUrl: upstream.baseUrl,
      usageBus,
      serverInfo: {
        version: VERSION,
        upstreamBaseUrl: redactUrl(upstream.baseUrl),
        simulator: upstream.simulator !== null,
        environment: config.env,
      },
    });
    cleanups.push(['upstream connections', () => services.upstream.close()]);
    let bootstrap;
    try {
      bootstrap = await services.users.bootstrapAdmin();
    } finally {
      await startLock.release();
    }
    // The dummy hash, made now, so the first unknown-email sign-in costs what the others do.
    await services.auth.passwords.verifyDummy('warm-up');
    await services.quota.reapExpired(orm.em.fork());
    const reaper = setInterval(() => {
      services.quota.reapExpired(orm.em.fork()).catch((error: unknown) => log.error({ err: error }, 'reservation reaper failed'));
      services.rateLimiter.forgetOldWindows().catch((error: unknown) => log.error({ err: error }, 'rate window cleanup failed'));
    }, 60_000);
    reaper.unref();
    cleanups.push(['reaper', async () => clearInterval(reaper)]);

    const schema = buildExecutableSchema();
    const httpServer = createHttpServer();
    httpServer.keepAliveTimeout = 65_000;
    // Registered before apollo.stop() so that it runs after it (cleanups run in reverse): Apollo's
    // drain lets in-flight requests finish, and only then is whatever is left cut off.
    cleanups.push(['HTTP server', () => closeServer(httpServer)]);

    const sockets = new SocketRegistry(services.auth, config.ws.maxConnectionsPerUser, log);
    notifications.on(CHANNELS.auth, (payload) => {
      const change = services.auth.applyCredentialChange(payload);
      if (change !== null) void sockets.recheck(change.userId).catch((error: unknown) => log.error({ err: error }, 'socket recheck failed'));
    });
    notifications.onReconnect(() => {
      services.auth.forgetCachedCredentials();
      void sockets.recheckAll().catch((error: unknown) => log.error({ err: error }, 'socket recheck failed'));
    });

    const extraRules = extraValidationRules(config);
    const documents = new DocumentCache(schema, extraRules, config.graphql.maxTokens);
    const wsServer = new WebSocketServer({ noServer: true, maxPayload: config.ws.maxMessageBytes });
    const formatErrors = (errors: readonly GraphQLError[]): GraphQLFormattedError[] =>
      errors.map((error) => formatGatewayError(error.toJSON(), config, log));
    const wsHandle = useServer<Record<string, unknown>>(
      {
        schema,
        connectionInitWaitTimeout: config.ws.connectionInitWaitMs,
        onConnect: async (ctx) => {
          const authorization = ctx.connectionParams?.authorization;
          let viewer: Viewer;
          try {
            viewer = await services.auth.authenticate(typeof authorization === 'string' ? authorization : null);
          } catch {
            return false;
          }
          if (!sockets.register(ctx.extra.socket, viewer)) {
            ctx.extra.socket.close(CLOSE_TOO_MANY_CONNECTIONS, 'Too many connections for this user');
            return false;
          }
          return true;
        },
        onSubscribe: async (ctx, _id, payload) => {
          // graphql-ws registers the id before this runs, hence `>`.
          if (Object.keys(ctx.subscriptions).length > config.ws.maxSubscriptionsPerSocket) {
            return [new RateLimitedError(`At most ${config.ws.maxSubscriptionsPerSocket} operations at once on one connection.`, 1)];
          }
          const viewer = sockets.viewerOf(ctx.extra.socket);
          const state = viewer === undefined ? null : await services.auth.currentState(viewer);
          if (viewer === undefined || state === null) {
            ctx.extra.socket.close(CLOSE_CREDENTIALS_REVOKED, 'Credentials revoked');
            return [new UnauthenticatedError('The credentials of this connection are no longer valid.')];
          }
          const parsed = documents.prepare(payload.query, payload.operationName, payload.variables);
          if (parsed.errors !== null) return parsed.errors;
          const requestId = randomUUID();
          const contextValue: GraphQLContext = {
            requestId,
            log,
            em: orm.em.fork(),
            services,
            authorization: typeof ctx.connectionParams?.authorization === 'string' ? ctx.connectionParams.authorization : null,
            clientAddress: clientAddressOf(ctx.extra.request),
            transport: 'ws',
            viewer: { ...viewer, role: state.role },
          };
          return {
            schema,
            document: parsed.document,
            operationName: payload.operationName,
            variableValues: payload.variables,
            contextValue,
          };
        },
        // Log lines written while an operation runs carry its request id, as on HTTP.
        execute: (args) => requestScope.run({ requestId: (args.contextValue as GraphQLContext).requestId }, () => execute(args)),
        subscribe: (args) => requestScope.run({ requestId: (args.contextValue as GraphQLContext).requestId }, () => subscribe(args)),
        // A subscription's events are produced when graphql-ws pulls them, outside that scope.
        onOperation: (_ctx, _id, _payload, args, result) => {
          if (!(Symbol.asyncIterator in result)) return result;
          const scope = { requestId: (args.contextValue as GraphQLContext).requestId };
          return hookIterator(result[Symbol.asyncIterator](), { around: (call) => requestScope.run(scope, call) });
        },
        onNext: (_ctx, _id, _payload, _args, result) =>
          result.errors === undefined ? result : { ...result, errors: formatErrors(result.errors) },
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

    const apollo = new ApolloServer<GraphQLContext>({
      schema,
      introspection: config.graphql.introspection,
      includeStacktraceInErrorResponses: config.env === 'development',
      hideSchemaDetailsFromClientErrors: config.env === 'production',
      parseOptions: parseOptions(config),
      persistedQueries: false,
      allowBatchedHttpRequests: false,
      // main.ts owns shutdown order; Apollo's own signal handlers would race it.
      stopOnTerminationSignals: false,
      formatError: (formatted) => formatGatewayError(formatted, config, log),
      validationRules: extraRules,
      plugins: [
        ApolloServerPluginDrainHttpServer({ httpServer }),
        ApolloServerPluginLandingPageDisabled(),
        drainWebSockets(async () => {
          await wsHandle.dispose();
        }),
      ],
    });
    await apollo.start();
    cleanups.push(['GraphQL (draining requests and sockets)', () => apollo.stop()]);

    const openai = new OpenAICompatibleEndpoint(services, orm, log);
    // Beside the usage page's assets in dist/public, whether this runs from src (tests) or dist.
    const assetDir = path.join(path.dirname(USAGE_PAGE_ASSET_DIR), 'graphiql');
    const cors = new Set(config.http.corsOrigins);
    const handle = async (req: IncomingMessage, res: ServerResponse, requestId: string): Promise<void> => {
      const { pathname, search } = new URL(req.url ?? '/', 'http://gateway');
      const origin = req.headers.origin;
      if (origin !== undefined && cors.has(origin)) {
        res.setHeader('access-control-allow-origin', origin);
        res.setHeader('vary', 'Origin');
        if (req.method === 'OPTIONS') {
          res.writeHead(204, {
            'access-control-allow-methods': 'GET, POST, OPTIONS',
            'access-control-allow-headers': 'authorization, content-type, apollo-require-preflight, x-request-id',
            'access-control-max-age': '600',
          });
          res.end();
          return;
        }
      }
      if (pathname === '/healthz') return sendJson(res, 200, { status: 'ok', version: VERSION });
      if (pathname === '/readyz') {
        try {
          await orm.em.getConnection().execute('select 1');
          return sendJson(res, 200, { status: 'ready' });
        } catch {
          return sendJson(res, 503, { status: 'unavailable', reason: 'database unreachable' });
        }
      }
      if (serveUsagePage(req, res, USAGE_PAGE_ASSET_DIR, pathname)) return;
      if (pathname.startsWith(GRAPHIQL_ASSET_PREFIX)) {
        if (serveGraphiqlAsset(req, res, assetDir, pathname)) return;
        return sendJson(res, 404, { error: 'not found' });
      }
      if (pathname.startsWith('/v1/') && (await openai.handle(req, res, pathname, requestId))) return;
      if (pathname !== GRAPHQL_PATH) return sendJson(res, 404, { error: 'not found' });

      if (config.graphql.graphiql && wantsGraphiql(req) && !search.includes('query=')) {
        const html = graphiqlHtml({ title: 'vLLM gateway · GraphiQL', assetBase: GRAPHIQL_ASSET_PREFIX });
        res.writeHead(200, {
          'content-type': 'text/html; charset=utf-8',
          'content-security-policy': GRAPHIQL_CSP,
          'x-content-type-options': 'nosniff',
          'referrer-policy': 'no-referrer',
          'cache-control': 'no-store',
        });
        res.end(html);
        return;
      }

      let body: unknown = undefined;
      if (req.method === 'POST') {
        let raw: string;
        try {
          raw = await readBody(req, config.http.maxBodyBytes);
        } catch (error) {
          if (error instanceof BodyTooLargeError) {
            res.setHeader('connection', 'close');
            return sendGraphQLError(res, 413, `Request body is over ${config.http.maxBodyBytes} bytes.`, 'BAD_USER_INPUT');
          }
          throw error;
        }
        try {
          body = raw === '' ? {} : JSON.parse(raw);
        } catch {
          return sendGraphQLError(res, 400, 'The request body is not valid JSON.', 'BAD_USER_INPUT');
        }
      }

      const headers = new HeaderMap();
      for (const [name, value] of Object.entries(req.headers)) {
        if (value !== undefined) headers.set(name, Array.isArray(value) ? value.join(', ') : value);
      }
      const response = await apollo.executeHTTPGraphQLRequest({
        httpGraphQLRequest: { method: req.method ?? 'GET', headers, search, body },
        context: async () => ({
          requestId,
          log,
          em: orm.em.fork(),
          services,
          authorization: req.headers.authorization ?? null,
          clientAddress: clientAddressOf(req),
          transport: 'http',
        }),
      });
      const responseHeaders: Record<string, string> = {};
      for (const [name, value] of response.headers) responseHeaders[name] = value;
      if (response.body.kind === 'complete') {
        responseHeaders['content-length'] = String(Buffer.byteLength(response.body.string));
        res.writeHead(response.status ?? 200, responseHeaders);
        res.end(response.body.string);
        return;
      }
      res.writeHead(response.status ?? 200, responseHeaders);
      for await (const chunk of response.body.asyncIterator) res.write(chunk);
      res.end();
    };

    httpServer.on('request', (req: IncomingMessage, res: ServerResponse) => {
      const incoming = req.headers['x-request-id'];
      const requestId = typeof incoming === 'string' && /^[\w.-]{8,64}$/.test(incoming) ? incoming : randomUUID();
      res.setHeader('x-request-id', requestId);
      res.setHeader('x-content-type-options', 'nosniff');
      const started = performance.now();
      res.once('finish', () => {
        log.info(
          { requestId, method: req.method, path: (req.url ?? '/').split('?')[0], status: res.statusCode, ms: Math.round(performance.now() - started) },
          'http request',
        );
      });
      requestScope.run({ requestId }, () => {
        handle(req, res, requestId).catch((error: unknown) => {
          log.error({ err: error }, 'unhandled error in an HTTP request');
          if (!res.headersSent) sendGraphQLError(res, 500, 'Internal server error.', 'INTERNAL_SERVER_ERROR');
          else res.destroy();
        });
      });
    });
    httpServer.on('upgrade', (req, socket, head) => {
      const { pathname } = new URL(req.url ?? '/', 'http://gateway');
      if (pathname !== GRAPHQL_PATH) {
        socket.destroy();
        return;
      }
      wsServer.handleUpgrade(req, socket, head, (ws) => {
        wsServer.emit('connection', ws, req);
      });
    });

    await listen(httpServer, config.port, config.host);
    const address = httpServer.address() as AddressInfo;
    const hostForUrl = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    const origin = `http://${hostForUrl}:${address.port}`;

    let stopping: Promise<void> | null = null;
    return {
      url: `${origin}${GRAPHQL_PATH}`,
      wsUrl: `ws://${hostForUrl}:${address.port}${GRAPHQL_PATH}`,
      origin,
      orm,
      services,
      adminBootstrap: bootstrap,
      stop: () => {
        stopping ??= runCleanups();
        return stopping;
      },
    };
  } catch (error) {
    await runCleanups();
    throw error;
  }
}

/** The configured vLLM, or the built-in simulator when none is configured. */
async function resolveUpstream(config: Config, log: Logger): Promise<{ baseUrl: string; simulator: Simulator | null }> {
  if (config.vllm.baseUrl !== null) return { baseUrl: config.vllm.baseUrl, simulator: null };
  const simulator = await startSimulator({ timeToFirstTokenMs: 30, interTokenLatencyMs: 15 });
  log.warn(
    { upstream: simulator.url },
    'VLLM_BASE_URL is not set: chat is answered by the BUILT-IN vLLM SIMULATOR, not a real model. Set VLLM_BASE_URL to use vLLM.',
  );
  return { baseUrl: simulator.url, simulator };
}

/** An arbitrary, fixed key for pg_advisory_lock: "gateway start". */
const START_LOCK_KEY = 7_301_946_201;

async function takeStartLock(databaseUrl: string): Promise<{ release(): Promise<void> }> {
  const client = new PgClient({ connectionString: databaseUrl });
  await client.connect();
  await client.query('select pg_advisory_lock($1)', [START_LOCK_KEY]);
  let released = false;
  return {
    async release() {
      if (released) return;
      released = true;
      await client.query('select pg_advisory_unlock($1)', [START_LOCK_KEY]).catch(() => undefined);
      await client.end().catch(() => undefined);
    },
  };
}

function drainWebSockets(dispose: () => Promise<void>): ApolloServerPlugin<GraphQLContext> {
  return {
    async serverWillStart() {
      return {
        async drainServer() {
          await dispose();
        },
      };
    },
  };
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
