import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { ApolloServer, HeaderMap } from '@apollo/server';
import { ApolloServerPluginCacheControlDisabled, ApolloServerPluginLandingPageDisabled } from '@apollo/server/plugin/disabled';
import { ApolloServerPluginDrainHttpServer } from '@apollo/server/plugin/drainHttpServer';
import type { Config } from '../config';
import type { GraphQLContext } from '../context';
import { GRAPHIQL_ASSET_PREFIX, GRAPHIQL_CSP, graphiqlHtml, wantsGraphiql } from '../graphiql';
import type { GraphQLPipeline } from '../graphql/pipeline';
import { BodyTooLargeError, clientAddressOf, readJsonBody, sendJson } from './http';
import type { Route } from './router';

export const GRAPHQL_PATH = '/graphql';

/**
 * Apollo Server over `node:http`, configured from the shared pipeline. Its stop drains the
 * requests in flight, then `beforeStop` (the WebSocket server's own drain).
 */
export async function startApollo(
  pipeline: GraphQLPipeline,
  config: Config,
  httpServer: Server,
  beforeStop: () => Promise<void>,
): Promise<ApolloServer<GraphQLContext>> {
  const apollo = new ApolloServer<GraphQLContext>({
    schema: pipeline.schema,
    documentStore: pipeline.documents.apolloStore,
    validationRules: [...pipeline.validationRules],
    parseOptions: pipeline.parseOptions,
    formatError: pipeline.formatError,
    introspection: config.graphql.introspection,
    includeStacktraceInErrorResponses: config.env === 'development',
    hideSchemaDetailsFromClientErrors: config.env === 'production',
    persistedQueries: false,
    allowBatchedHttpRequests: false,
    // main.ts owns shutdown order; Apollo's own signal handlers would race it.
    stopOnTerminationSignals: false,
    plugins: [
      ApolloServerPluginDrainHttpServer({ httpServer }),
      ApolloServerPluginLandingPageDisabled(),
      // Installed by default, it hooks every resolved field to compute cache hints that no
      // field of this API sets (nothing here is cacheable: every operation is per caller).
      ApolloServerPluginCacheControlDisabled(),
      { serverWillStart: async () => ({ drainServer: beforeStop }) },
    ],
  });
  await apollo.start();
  return apollo;
}

function sendGraphQLError(res: ServerResponse, status: number, message: string): void {
  sendJson(res, status, { errors: [{ message, extensions: { code: 'BAD_USER_INPUT' } }] });
}

function sendGraphiql(res: ServerResponse): void {
  const html = graphiqlHtml({ title: 'vLLM gateway · GraphiQL', assetBase: GRAPHIQL_ASSET_PREFIX });
  res.writeHead(200, {
    'content-type': 'text/html; charset=utf-8',
    'content-security-policy': GRAPHIQL_CSP,
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
    'cache-control': 'no-store',
  });
  res.end(html);
}

/** `/graphql`: GraphiQL for a browser's GET, GraphQL over HTTP for everything else. */
export function graphqlRoute(apollo: ApolloServer<GraphQLContext>, pipeline: GraphQLPipeline, config: Config): Route {
  const readBody = async (req: IncomingMessage, res: ServerResponse): Promise<{ body: unknown } | null> => {
    if (req.method !== 'POST') return { body: undefined };
    try {
      return { body: await readJsonBody(req, config.http.maxBodyBytes, {}) };
    } catch (error) {
      if (error instanceof BodyTooLargeError) {
        res.setHeader('connection', 'close');
        sendGraphQLError(res, 413, `Request body is over ${config.http.maxBodyBytes} bytes.`);
      } else sendGraphQLError(res, 400, 'The request body is not valid JSON.');
      return null;
    }
  };

  return {
    path: GRAPHQL_PATH,
    handle: async (req, res, scope) => {
      if (config.graphql.graphiql && wantsGraphiql(req) && !scope.search.includes('query=')) return sendGraphiql(res);
      const read = await readBody(req, res);
      if (read === null) return;
      const headers = new HeaderMap();
      for (const [name, value] of Object.entries(req.headers)) {
        if (value !== undefined) headers.set(name, Array.isArray(value) ? value.join(', ') : value);
      }
      // A client that hangs up mid-operation stops what it started upstream (a chat) at once.
      const clientGone = new AbortController();
      const onClose = (): void => {
        if (!res.writableEnded) clientGone.abort();
      };
      res.on('close', onClose);
      let response;
      try {
        response = await apollo.executeHTTPGraphQLRequest({
          httpGraphQLRequest: { method: req.method ?? 'GET', headers, search: scope.search, body: read.body },
          context: async () =>
            pipeline.context({
              requestId: scope.requestId,
              authorization: req.headers.authorization ?? null,
              clientAddress: clientAddressOf(req),
              transport: 'http',
              clientGone: clientGone.signal,
            }),
        });
      } finally {
        res.off('close', onClose);
      }
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
    },
  };
}
