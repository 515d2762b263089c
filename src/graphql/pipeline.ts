import type { GraphQLSchema, ValidationRule } from 'graphql';
import type { Viewer } from '../auth/viewer';
import type { Config } from '../config';
import type { GraphQLContext } from '../context';
import type { Logger } from '../logger';
import { buildExecutableSchema } from './schema';
import type { Services } from '../services';
import { createGraphQLErrorFormatter, type GraphQLErrorFormatter } from './errors';
import { DocumentCache, extraValidationRules, parseOptions } from './validation';

/** Where an operation came from: what the transport knows before GraphQL runs. */
export interface OperationOrigin {
  readonly requestId: string;
  /** The raw `Authorization` value (header on HTTP, connectionParams on the socket). */
  readonly authorization: string | null;
  readonly clientAddress: string;
  readonly transport: 'http' | 'ws';
  /** Over HTTP: aborted when the client disconnects before its answer was sent. */
  readonly clientGone?: AbortSignal;
  /** Already verified (the socket authenticates once, at connection_init). */
  readonly viewer?: Viewer;
}

/**
 * What both transports share, defined once: the schema, the validation rules (graphql-js's
 * own plus the armor limits), the document cache, the error mapper and the context. Apollo
 * (HTTP) and graphql-ws (WebSocket) are each configured from this and nothing else.
 */
export interface GraphQLPipeline {
  readonly schema: GraphQLSchema;
  readonly validationRules: readonly ValidationRule[];
  readonly parseOptions: { maxTokens: number };
  readonly documents: DocumentCache;
  readonly formatError: GraphQLErrorFormatter;
  context(origin: OperationOrigin): GraphQLContext;
}

export function createGraphQLPipeline(config: Config, services: Services, log: Logger): GraphQLPipeline {
  const schema = buildExecutableSchema();
  const validationRules = extraValidationRules(config);
  return {
    schema,
    validationRules,
    parseOptions: parseOptions(config),
    documents: new DocumentCache(schema, validationRules, config.graphql.maxTokens),
    formatError: createGraphQLErrorFormatter(config, log),
    context: (origin) => ({ ...origin, receivedAt: performance.now(), log, services }),
  };
}
