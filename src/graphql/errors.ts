import { GraphQLError, type GraphQLFormattedError } from 'graphql';
import type { Config } from '../config';
import { isDatabaseUnreachable } from '../db/unreachable';
import { ClientGoneError, DomainError, ServiceUnavailableError, type ErrorCode } from '../errors';
import type { Logger } from '../logger';

/** Codes from Apollo and graphql-js that the contract folds into its own. */
const CONTRACT_CODE_OF: Readonly<Record<string, ErrorCode>> = {
  GRAPHQL_PARSE_FAILED: 'BAD_USER_INPUT',
  GRAPHQL_VALIDATION_FAILED: 'BAD_USER_INPUT',
  BAD_REQUEST: 'BAD_USER_INPUT',
  OPERATION_RESOLUTION_FAILURE: 'BAD_USER_INPUT',
  PERSISTED_QUERY_NOT_FOUND: 'BAD_USER_INPUT',
  PERSISTED_QUERY_NOT_SUPPORTED: 'BAD_USER_INPUT',
  BAD_USER_INPUT: 'BAD_USER_INPUT',
};

/** A domain error as a GraphQL error, for the places that hand graphql-ws a list of errors. */
export function toGraphQLError(error: DomainError): GraphQLError {
  return new GraphQLError(error.message, { originalError: error, extensions: error.extensions });
}

/** The error a resolver threw, under graphql-js's wrapping. */
function originalOf(error: unknown): unknown {
  let current: unknown = error;
  for (let depth = 0; depth < 4 && current instanceof Error; depth += 1) {
    const inner = (current as { originalError?: unknown }).originalError;
    if (inner === undefined || inner === null) return current;
    current = inner;
  }
  return current;
}

/** The domain error a resolver threw; the ORM's failure to reach the database (the Database's is one already) too. */
function domainErrorOf(error: unknown): DomainError | null {
  const original = originalOf(error);
  if (original instanceof DomainError) return original;
  return isDatabaseUnreachable(original) ? new ServiceUnavailableError() : null;
}

/**
 * The one error mapper of the GraphQL API, for HTTP (Apollo's `formatError`) and the
 * WebSocket alike. Every error leaves with one of the contract's codes; anything the gateway
 * did not raise on purpose (a driver error, a bug) loses its message, which could hold SQL or
 * internals.
 */
export function createGraphQLErrorFormatter(config: Pick<Config, 'env'>, log: Logger) {
  const development = config.env === 'development';
  const production = config.env === 'production';
  const stacktraceOf = (formatted: GraphQLFormattedError): Record<string, unknown> =>
    development && formatted.extensions?.stacktrace !== undefined ? { stacktrace: formatted.extensions.stacktrace } : {};

  return (formatted: GraphQLFormattedError, error: unknown): GraphQLFormattedError => {
    const domain = domainErrorOf(error);
    if (domain instanceof ServiceUnavailableError) log.warn({ path: formatted.path }, 'database unreachable: answered SERVICE_UNAVAILABLE');
    if (domain !== null && domain.code !== 'INTERNAL_SERVER_ERROR') {
      return {
        message: domain.message,
        locations: formatted.locations,
        path: formatted.path,
        extensions: { ...domain.details, code: domain.code, ...stacktraceOf(formatted) },
      };
    }
    const original = typeof formatted.extensions?.code === 'string' ? formatted.extensions.code : undefined;
    const code = original === undefined ? undefined : CONTRACT_CODE_OF[original];
    if (domain === null && code !== undefined) {
      const { stacktrace: _stacktrace, ...extensions } = formatted.extensions ?? {};
      // Field suggestions map the schema for an attacker; production keeps them to itself.
      const message = production ? formatted.message.replace(/ ?Did you mean .+\?$/, '') : formatted.message;
      return {
        ...formatted,
        message,
        extensions: { ...extensions, code, ...(code === original ? {} : { reason: original }), ...stacktraceOf(formatted) },
      };
    }
    // Nobody is there to read this answer: not a failure of the gateway's.
    if (!(originalOf(error) instanceof ClientGoneError)) log.error({ err: formatted }, 'unexpected error in a GraphQL operation');
    return {
      message: 'Internal server error.',
      locations: formatted.locations,
      path: formatted.path,
      extensions: { code: 'INTERNAL_SERVER_ERROR', ...stacktraceOf(formatted) },
    };
  };
}

export type GraphQLErrorFormatter = ReturnType<typeof createGraphQLErrorFormatter>;
