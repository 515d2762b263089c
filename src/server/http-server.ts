import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { Config } from '../config';
import type { PgNotifications } from '../db/notifications';
import { createGraphQLPipeline } from '../graphql/pipeline';
import type { Logger } from '../logger';
import { openAIRoutes } from '../openai/openai.handler';
import type { Services } from '../services';
import { USAGE_PAGE_ASSET_DIR, usagePageSite } from '../usage-page';
import { GRAPHQL_PATH, graphqlRoute, startApollo } from './graphql-http';
import { acceptUpgrades, startGraphQLWebSocket } from './graphql-ws';
import { healthRoutes } from './health';
import type { MetricsExposition } from '../metrics/metrics';
import { metricsRoutes } from '../metrics/metrics.route';
import { createRouter } from './router';
import type { ConnectionSlots } from './sockets';
import { staticRoute } from './static-files';

/**
 * What limits and figures span: this process, or with several workers every worker of the
 * host, kept by the primary.
 */
export interface HostScope {
  /** The count behind WS_MAX_CONNECTIONS_PER_USER. */
  readonly connectionSlots: ConnectionSlots;
  /** What `GET /metrics` answers. */
  readonly metrics: MetricsExposition;
}

export interface HttpEndpoint {
  /** http://host:port */
  readonly origin: string;
  /** http://host:port/graphql */
  readonly url: string;
  /** ws://host:port/graphql */
  readonly wsUrl: string;
  /** Lets in-flight requests and operations finish, closes the sockets, then the server. */
  stop(): Promise<void>;
}

/** GraphiQL's bundles sit beside the usage page's assets in dist/public, from src (tests) or dist. */
const GRAPHIQL_ASSET_DIR = path.join(path.dirname(USAGE_PAGE_ASSET_DIR), 'graphiql');

/** HTTP and WebSocket on one port: the router for every path, graphql-ws for upgrades on `/graphql`. */
export async function startHttp(config: Config, services: Services, notifications: PgNotifications, scope: HostScope, log: Logger): Promise<HttpEndpoint> {
  const httpServer = createServer();
  httpServer.keepAliveTimeout = 65_000;
  const pipeline = createGraphQLPipeline(config, services, log);
  const ws = startGraphQLWebSocket(pipeline, services, config, scope.connectionSlots, log);
  ws.sockets.followCredentialChanges(notifications);
  services.metrics.countWebSocketsWith(() => ws.sockets.size);
  const apollo = await startApollo(pipeline, config, httpServer, () => ws.dispose());
  httpServer.on(
    'request',
    createRouter(
      [
        ...healthRoutes(services.db, services.fleet, config.database.connectTimeoutMs),
        ...metricsRoutes(config, scope.metrics),
        staticRoute(usagePageSite),
        staticRoute({ prefix: '/graphiql', dir: GRAPHIQL_ASSET_DIR }),
        ...openAIRoutes(services),
        graphqlRoute(apollo, pipeline, config),
      ],
      config,
      log,
    ),
  );
  acceptUpgrades(httpServer, ws);
  try {
    await listen(httpServer, config.port, config.host);
  } catch (error) {
    await apollo.stop();
    throw error;
  }
  const address = httpServer.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    origin: `http://${host}:${address.port}`,
    url: `http://${host}:${address.port}${GRAPHQL_PATH}`,
    wsUrl: `ws://${host}:${address.port}${GRAPHQL_PATH}`,
    async stop() {
      // Apollo's drain lets in-flight requests finish (and disposes the sockets); only then is whatever is left cut off.
      await apollo.stop();
      await closeServer(httpServer);
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
