import path from 'node:path';
import { z } from 'zod';
import { isEmail, normalizeEmail, passwordProblem } from './rules';

/**
 * Every environment variable, declared once: its name, how its text is parsed and checked, its
 * default and its README description. `src/config.ts` reads them into the `Config` whose shape is
 * this tree's, and `src/config-docs.ts` prints the README tables from them.
 */

const NODE_ENVS = ['development', 'production', 'test'] as const;
export type NodeEnv = (typeof NODE_ENVS)[number];

/** Which README table lists the variable: the "Configuration" one, or the limits of "Security". */
export type Group = 'core' | 'security';

interface Declaration<T> {
  readonly name: string;
  readonly group: Group;
  /** Markdown, one table cell. */
  readonly meaning: string;
  /** Parses the variable's text; its error messages follow the variable's name in a ConfigError. */
  readonly schema: z.ZodType<T>;
  /** Taken as written, not trimmed: the spaces of a password are part of it. */
  readonly verbatim?: boolean;
}

/** Unset, the variable reads as if it held `text`, or the `NODE_ENV`-specific text if there is one. */
interface DefaultText {
  readonly text: string;
  readonly byNodeEnv: Partial<Record<NodeEnv, string>>;
}

/** Unset, the variable is `value`, which no text could express; `means` says what that does. */
interface UnsetValue<T> {
  readonly value: T;
  readonly means: string;
}

export class Variable<T> implements Declaration<T> {
  readonly name: string;
  readonly group: Group;
  readonly meaning: string;
  readonly schema: z.ZodType<T>;
  readonly verbatim: boolean;

  constructor(
    declaration: Declaration<T>,
    readonly unset: DefaultText | UnsetValue<T>,
  ) {
    this.name = declaration.name;
    this.group = declaration.group;
    this.meaning = declaration.meaning;
    this.schema = declaration.schema;
    this.verbatim = declaration.verbatim ?? false;
  }
}

function variable<T>(
  declaration: Declaration<T> & { readonly default: string; readonly byNodeEnv?: Partial<Record<NodeEnv, string>> },
): Variable<T> {
  return new Variable(declaration, { text: declaration.default, byNodeEnv: declaration.byNodeEnv ?? {} });
}

function optional<T, U>(declaration: Declaration<T> & { readonly unset: U; readonly unsetMeans: string }): Variable<T | U> {
  return new Variable<T | U>(declaration, { value: declaration.unset, means: declaration.unsetMeans });
}

/** "a, b or c" */
function alternatives(values: readonly string[]): string {
  return values.length < 2 ? values.join('') : `${values.slice(0, -1).join(', ')} or ${values[values.length - 1]}`;
}

function integer(min: number, max: number): z.ZodType<number> {
  const range = { error: (issue: { input?: unknown }) => `must be between ${min} and ${max}, got ${String(issue.input)}` };
  return z
    .string()
    .regex(/^-?\d+$/, { error: (issue) => `must be an integer, got "${String(issue.input)}"` })
    .transform(Number)
    .pipe(z.number().min(min, range).max(max, range));
}

function decimal(min: number, max: number): z.ZodType<number> {
  const problem = { error: (issue: { input?: unknown }) => `must be a number between ${min} and ${max}, got "${String(issue.input)}"` };
  return z
    .string()
    .refine((text) => Number.isFinite(Number(text)), problem)
    .transform(Number)
    .pipe(z.number().min(min, problem).max(max, problem));
}

const boolean = z.stringbool({
  truthy: ['true', '1', 'yes'],
  falsy: ['false', '0', 'no'],
  error: (issue) => `must be true or false, got "${String(issue.input)}"`,
});

function oneOf<const V extends readonly [string, ...string[]]>(values: V): z.ZodType<V[number]> {
  return z.enum(values, { error: (issue) => `must be ${alternatives(values)}, got "${String(issue.input)}"` });
}

/** Kept as written (not normalized): only checked to parse with one of `protocols`, e.g. `https:`. */
function url(protocols: readonly string[]): z.ZodType<string> {
  return z
    .string()
    .refine((text) => URL.canParse(text), { error: 'is not a valid URL', abort: true })
    .refine((text) => protocols.includes(new URL(text).protocol), {
      error: (issue) => `must use ${alternatives(protocols)}, got ${new URL(String(issue.input)).protocol}`,
    });
}

function isWebOrigin(text: string): boolean {
  if (!URL.canParse(text)) return false;
  const parsed = new URL(text);
  return parsed.origin === text && (parsed.protocol === 'http:' || parsed.protocol === 'https:');
}

const origins: z.ZodType<readonly string[]> = z
  .string()
  .transform((text) => text.split(',').map((entry) => entry.trim()))
  .pipe(
    z.array(
      z.string().refine(isWebOrigin, {
        error: (issue) => `holds "${String(issue.input)}", which is not an origin like https://app.example.com`,
      }),
    ),
  );

const password = z.string().check((context) => {
  const problem = passwordProblem(context.value);
  if (problem !== null) context.issues.push({ code: 'custom', message: problem, input: context.value });
});

export const MIN_SECRET_LENGTH = 32;
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** The shape of `Config` (but for `jwt.secretSource`), with one variable at each leaf. */
export const SETTINGS = {
  env: variable({
    name: 'NODE_ENV',
    group: 'core',
    meaning: alternatives(NODE_ENVS.map((name) => `\`${name}\``)),
    schema: oneOf(NODE_ENVS),
    default: 'development',
  }),
  host: variable({
    name: 'HOST',
    group: 'core',
    meaning: 'listen address',
    schema: z.string().regex(/^[A-Za-z0-9.:[\]-]+$/, { error: (issue) => `is not a host name or address: "${String(issue.input)}"` }),
    default: '127.0.0.1',
  }),
  port: variable({ name: 'PORT', group: 'core', meaning: 'listen port', schema: integer(0, 65535), default: '4000' }),
  databaseUrl: optional({
    name: 'DATABASE_URL',
    group: 'core',
    meaning: '`postgres://…` of the database',
    schema: url(['postgres:', 'postgresql:']),
    unset: null,
    unsetMeans: 'an embedded PostgreSQL under `DATA_DIR`',
  }),
  database: {
    poolSize: variable({
      name: 'DATABASE_POOL_SIZE',
      group: 'core',
      meaning: 'connections of the statement pool',
      schema: integer(2, 1000),
      default: '20',
    }),
    ormPoolSize: variable({
      name: 'DATABASE_ORM_POOL_SIZE',
      group: 'core',
      meaning: "connections of the ORM's pool (migrations, entity reads)",
      schema: integer(1, 1000),
      default: '5',
    }),
  },
  dataDir: variable({
    name: 'DATA_DIR',
    group: 'core',
    meaning: 'embedded PostgreSQL, the generated JWT secret, the start lock',
    schema: z.string().transform((dir) => path.resolve(dir)),
    default: './.data',
  }),
  migrateOnStart: variable({ name: 'MIGRATE_ON_START', group: 'core', meaning: 'apply migrations at start', schema: boolean, default: 'true' }),
  logLevel: variable({
    name: 'LOG_LEVEL',
    group: 'core',
    meaning: 'pino level',
    schema: oneOf(LOG_LEVELS),
    default: 'info',
    byNodeEnv: { test: 'silent' },
  }),
  vllm: {
    baseUrl: optional({
      name: 'VLLM_BASE_URL',
      group: 'core',
      meaning: "vLLM's OpenAI-compatible API, e.g. `http://gpu-host:8000/v1`",
      // Trailing slashes go so that paths can be appended with one.
      schema: url(['http:', 'https:']).transform((text) => text.replace(/\/+$/, '')),
      unset: null,
      unsetMeans: 'the built-in simulator',
    }),
    apiKey: optional({
      name: 'VLLM_API_KEY',
      group: 'core',
      meaning: 'key sent to vLLM (`--api-key` on its side)',
      schema: z.string(),
      unset: null,
      unsetMeans: 'none',
    }),
    timeoutMs: variable({
      name: 'VLLM_TIMEOUT_MS',
      group: 'core',
      meaning: 'upstream timeout (whole request; idle time between stream chunks)',
      schema: integer(100, 3_600_000),
      default: '120000',
    }),
    /** Added to tiktoken's prompt count because it only approximates the model's own tokenizer. */
    tiktokenMargin: variable({
      name: 'TIKTOKEN_MARGIN',
      group: 'core',
      meaning: 'safety margin on tiktoken prompt estimates when vLLM has no `/tokenize`',
      schema: decimal(0, 10),
      default: '0.1',
    }),
  },
  jwt: {
    /** null: none given; `loadConfig` then refuses to start in production, or generates one. */
    secret: optional({
      name: 'JWT_SECRET',
      group: 'core',
      meaning: `HS256 secret, ${MIN_SECRET_LENGTH}+ characters`,
      schema: z.string().min(MIN_SECRET_LENGTH, {
        error: (issue) => `must be at least ${MIN_SECRET_LENGTH} characters, got ${String(issue.input).length}`,
      }),
      unset: null,
      unsetMeans: 'generated once into `DATA_DIR` (required in production)',
    }),
    issuer: variable({ name: 'JWT_ISSUER', group: 'core', meaning: '`iss` of access tokens', schema: z.string(), default: 'vllm-gateway' }),
    audience: variable({ name: 'JWT_AUDIENCE', group: 'core', meaning: '`aud` of access tokens', schema: z.string(), default: 'vllm-gateway' }),
    accessTtlSeconds: variable({
      name: 'ACCESS_TOKEN_TTL_SECONDS',
      group: 'core',
      meaning: 'access token lifetime',
      schema: integer(10, 86_400),
      default: '900',
    }),
    refreshTtlSeconds: variable({
      name: 'REFRESH_TOKEN_TTL_SECONDS',
      group: 'core',
      meaning: 'refresh token lifetime',
      schema: integer(60, 365 * 86_400),
      default: String(30 * 86_400),
    }),
  },
  admin: {
    email: variable({
      name: 'ADMIN_EMAIL',
      group: 'core',
      meaning: 'email of the first admin, created at start if no admin exists',
      schema: z.string().refine(isEmail, { error: 'is not an email address' }).transform(normalizeEmail),
      default: 'admin@localhost',
    }),
    password: optional({
      name: 'ADMIN_PASSWORD',
      group: 'core',
      meaning: 'password of the first admin',
      schema: password,
      verbatim: true,
      unset: null,
      unsetMeans: 'random and printed once',
    }),
  },
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
      meaning: 'WebSockets per user (per instance)',
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
      meaning: 'messages per chat request',
      schema: integer(1, 10_000),
      default: '256',
    }),
    maxContentChars: variable({
      name: 'CHAT_MAX_CONTENT_CHARS',
      group: 'security',
      meaning: 'characters of all messages of a request (refused before tokenizing)',
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
  },
  /** The minimums are OWASP's for argon2id: 19 MiB, 2 passes, 1 lane. */
  passwordHash: {
    memoryKiB: variable({
      name: 'PASSWORD_HASH_MEMORY_KIB',
      group: 'core',
      meaning: "argon2id memory in KiB (never below OWASP's 19 MiB)",
      schema: integer(19_456, 4_194_304),
      default: '65536',
    }),
    timeCost: variable({
      name: 'PASSWORD_HASH_TIME_COST',
      group: 'core',
      meaning: "argon2id passes (never below OWASP's 2)",
      schema: integer(2, 100),
      default: '3',
    }),
    parallelism: variable({
      name: 'PASSWORD_HASH_PARALLELISM',
      group: 'core',
      meaning: 'argon2id lanes',
      schema: integer(1, 64),
      default: '4',
    }),
  },
  login: {
    maxFailuresPerAccount: variable({
      name: 'LOGIN_MAX_FAILURES_PER_ACCOUNT',
      group: 'core',
      meaning: 'failed sign-ins of one account within the window before a lockout',
      schema: integer(1, 1000),
      default: '5',
    }),
    maxFailuresPerAddress: variable({
      name: 'LOGIN_MAX_FAILURES_PER_ADDRESS',
      group: 'core',
      meaning: 'failed sign-ins from one client address within the window before a lockout',
      schema: integer(1, 100_000),
      default: '50',
    }),
    failureWindowSeconds: variable({
      name: 'LOGIN_FAILURE_WINDOW_SECONDS',
      group: 'core',
      meaning: 'window in which failed sign-ins are counted',
      schema: integer(1, 86_400),
      default: '900',
    }),
    lockoutBaseSeconds: variable({
      name: 'LOGIN_LOCKOUT_BASE_SECONDS',
      group: 'core',
      meaning: 'first lockout; each further failure doubles it',
      schema: integer(1, 86_400),
      default: '30',
    }),
    lockoutMaxSeconds: variable({
      name: 'LOGIN_LOCKOUT_MAX_SECONDS',
      group: 'core',
      meaning: 'longest lockout',
      schema: integer(1, 86_400),
      default: '900',
    }),
  },
};

export interface Tree {
  readonly [key: string]: Variable<unknown> | Tree;
}

/** What the tree reads as: each variable replaced by its value. */
export type Values<T> = { readonly [K in keyof T]: T[K] extends Variable<infer V> ? V : Values<T[K]> };

/** The variables of `tree` in declaration order. */
export function variablesOf(tree: Tree = SETTINGS): Variable<unknown>[] {
  return Object.values(tree).flatMap((node) => (node instanceof Variable ? [node] : variablesOf(node)));
}
