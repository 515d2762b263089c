import { boolean, integer, optional, origins, variable } from './variables';

/** The limits the README's "Security" section lists: HTTP, GraphQL documents, rate limits, sockets, chat requests. */
export const LIMIT_SETTINGS = {
  http: {
    /** Request bodies above this are refused with 413 before parsing. */
    maxBodyBytes: variable({
      name: 'HTTP_MAX_BODY_BYTES',
      group: 'security',
      meaning: 'HTTP request body (413 before parsing)',
      schema: integer(1024, 1_073_741_824),
      default: '1048576',
    }),
    /** Empty: CORS off (same-origin only). */
    corsOrigins: optional({
      name: 'CORS_ALLOWED_ORIGINS',
      group: 'security',
      meaning: 'allowed CORS origins (comma-separated)',
      schema: origins,
      unset: [] as readonly string[],
      unsetMeans: 'none: CORS off',
    }),
  },
  /** Limits on every GraphQL document, over HTTP and WebSocket alike. */
  graphql: {
    maxDepth: variable({
      name: 'GRAPHQL_MAX_DEPTH',
      group: 'security',
      meaning: 'GraphQL depth (HTTP and WebSocket alike)',
      schema: integer(1, 100),
      default: '8',
    }),
    /** Introspection is bounded separately: GraphiQL's own query is about 13 deep. */
    maxIntrospectionDepth: variable({
      name: 'GRAPHQL_MAX_INTROSPECTION_DEPTH',
      group: 'security',
      meaning: "depth of introspection queries (GraphiQL's own is about 13)",
      schema: integer(1, 100),
      default: '15',
    }),
    maxAliases: variable({
      name: 'GRAPHQL_MAX_ALIASES',
      group: 'security',
      meaning: 'aliases per document',
      schema: integer(0, 1000),
      default: '15',
    }),
    maxTokens: variable({
      name: 'GRAPHQL_MAX_TOKENS',
      group: 'security',
      meaning: 'tokens per document (enforced by the parser)',
      schema: integer(10, 1_000_000),
      default: '2000',
    }),
    maxDirectives: variable({
      name: 'GRAPHQL_MAX_DIRECTIVES',
      group: 'security',
      meaning: 'directives per document',
      schema: integer(0, 1000),
      default: '50',
    }),
    maxCost: variable({
      name: 'GRAPHQL_MAX_COST',
      group: 'security',
      meaning: 'cost per document',
      schema: integer(1, 10_000_000),
      default: '5000',
    }),
    introspection: variable({
      name: 'GRAPHQL_INTROSPECTION',
      group: 'security',
      meaning: 'introspection',
      schema: boolean,
      default: 'true',
      byNodeEnv: { production: 'false' },
    }),
    graphiql: variable({
      name: 'GRAPHIQL_ENABLED',
      group: 'security',
      meaning: 'GraphiQL',
      schema: boolean,
      default: 'true',
      byNodeEnv: { production: 'false' },
    }),
  },
  /** Counted in PostgreSQL, so across instances. */
  rateLimit: {
    requestsPerMinute: variable({
      name: 'RATE_LIMIT_REQUESTS_PER_MINUTE',
      group: 'security',
      meaning: 'chat requests per user per minute (`0`: off)',
      schema: integer(0, 1_000_000),
      default: '0',
    }),
    tokensPerMinute: variable({
      name: 'RATE_LIMIT_TOKENS_PER_MINUTE',
      group: 'security',
      meaning: 'tokens per user per minute (`0`: off)',
      schema: integer(0, 2_000_000_000),
      default: '0',
    }),
  },
  ws: {
    maxMessageBytes: variable({
      name: 'WS_MAX_MESSAGE_BYTES',
      group: 'security',
      meaning: 'WebSocket message size',
      schema: integer(1024, 1_073_741_824),
      default: '262144',
    }),
    maxConnectionsPerUser: variable({
      name: 'WS_MAX_CONNECTIONS_PER_USER',
      group: 'security',
      meaning: 'WebSockets per user on one gateway (all its workers together; each gateway sharing the database counts its own)',
      schema: integer(1, 100_000),
      default: '20',
    }),
    /**
     * Without a cap one signed-in user can hold thousands of live subscriptions per socket, each
     * with its listener and buffers, and exhaust the process's memory.
     */
    maxSubscriptionsPerSocket: variable({
      name: 'WS_MAX_SUBSCRIPTIONS_PER_SOCKET',
      group: 'security',
      meaning: 'operations (subscriptions, queries, mutations) at once on one WebSocket',
      schema: integer(1, 100_000),
      default: '100',
    }),
    /** A socket that sends no connection_init within this is closed (4408). */
    connectionInitWaitMs: variable({
      name: 'WS_CONNECTION_INIT_WAIT_MS',
      group: 'security',
      meaning: 'time to send `connection_init`',
      schema: integer(100, 60_000),
      default: '3000',
    }),
  },
  chat: {
    maxMessages: variable({
      name: 'CHAT_MAX_MESSAGES',
      group: 'security',
      meaning: 'messages per chat request (prompts per completion, inputs per embedding request)',
      schema: integer(1, 10_000),
      default: '256',
    }),
    maxContentChars: variable({
      name: 'CHAT_MAX_CONTENT_CHARS',
      group: 'security',
      meaning: 'characters of all messages (prompts, inputs) of a request (refused before tokenizing)',
      schema: integer(1, 100_000_000),
      default: '400000',
    }),
    maxStopSequences: variable({
      name: 'CHAT_MAX_STOP_SEQUENCES',
      group: 'security',
      meaning: 'stop sequences per chat request',
      schema: integer(0, 64),
      default: '8',
    }),
    /** Each choice may use the whole completion budget, and the engine runs them all at once. */
    maxChoices: variable({
      name: 'CHAT_MAX_CHOICES',
      group: 'security',
      meaning: 'choices (`n`) per chat or completion request; each is reserved `max_tokens`',
      schema: integer(1, 128),
      default: '16',
    }),
  },
  /** The minimums are OWASP's for argon2id: 19 MiB, 2 passes, 1 lane. */
};
