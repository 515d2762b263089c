import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { isEmail, normalizeEmail } from '../rules';
import { LIMIT_SETTINGS } from './limits';
import { NODE_ENVS, Variable, alternatives, boolean, decimal, integer, oneOf, optional, password, url, urlList, variable, variablesOf } from './variables';

/**
 * Every environment variable, declared once: its name, how its text is parsed and checked, its
 * default and its README description. `src/config/index.ts` reads them into the `Config` whose shape is
 * this tree's, and `src/config/docs.ts` prints the README tables from them.
 */

export const MIN_SECRET_LENGTH = 32;
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
const MAX_WORKERS = 256;

/** `auto` (one per core the process may use) or a count from 1 to MAX_WORKERS. */
const workerCount: z.ZodType<number, string> = z.string().transform((text, context) => {
  if (text === 'auto') return os.availableParallelism();
  const count = integer(1, MAX_WORKERS).safeParse(text);
  if (count.success) return count.data;
  context.issues.push({ code: 'custom', input: text, message: `must be auto or an integer between 1 and ${MAX_WORKERS}, got "${text}"` });
  return z.NEVER;
});

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
  /** Above 1, a primary process forks the workers (node:cluster), which share the port. */
  workers: variable({
    name: 'WORKERS',
    group: 'core',
    meaning:
      'processes serving the port (node:cluster), `auto` for one per core (`os.availableParallelism()`); above 1, a primary starts them, restarts one that dies, and sums their `/metrics` (see "Several workers on one host")',
    schema: workerCount,
    default: '1',
  }),
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
      meaning: "connections of the ORM's pool (entity reads and writes; migrations take one of their own)",
      schema: integer(1, 1000),
      default: '5',
    }),
    /** Bounds every wait for a connection, so that while the database is away a request fails at once instead of queueing. */
    connectTimeoutMs: variable({
      name: 'DATABASE_CONNECT_TIMEOUT_MS',
      group: 'core',
      meaning: 'longest wait for a database connection (a new one, or a free one of a pool) before the request fails with `SERVICE_UNAVAILABLE`',
      schema: integer(100, 60_000),
      default: '2000',
    }),
    statementTimeoutMs: variable({
      name: 'DATABASE_STATEMENT_TIMEOUT_MS',
      group: 'core',
      meaning:
        "longest a statement may run (PostgreSQL's `statement_timeout`; the gateway stops waiting for a silent server one connect timeout later) before the request fails with `SERVICE_UNAVAILABLE`; migrations are not bound by it",
      schema: integer(100, 3_600_000),
      default: '10000',
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
    /** With `apiKey` and `upstreamsFile`, read into `Config.upstreams` by `loadConfig`, not kept as they are. */
    baseUrls: optional({
      name: 'VLLM_BASE_URL',
      group: 'core',
      meaning:
        "vLLM's OpenAI-compatible API, e.g. `http://gpu-host:8000/v1`; several, comma-separated, are a fleet named `upstream-1`, `upstream-2`, … in order",
      schema: urlList(['http:', 'https:']),
      unset: [] as readonly string[],
      unsetMeans: 'the built-in simulator',
    }),
    apiKey: optional({
      name: 'VLLM_API_KEY',
      group: 'core',
      meaning: 'key sent to vLLM (`--api-key` on its side), to every upstream of `VLLM_BASE_URL`',
      schema: z.string(),
      unset: null,
      unsetMeans: 'none',
    }),
    upstreamsFile: optional({
      name: 'UPSTREAMS_FILE',
      group: 'core',
      meaning:
        'YAML or JSON file of the fleet: `upstreams: [{ name, baseUrl, apiKey? }]`; replaces VLLM_BASE_URL/VLLM_API_KEY (set it or them, not both)',
      schema: z.string().transform((file) => path.resolve(file)),
      unset: null,
      unsetMeans: 'the fleet is `VLLM_BASE_URL`',
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
    /** `exact` for operators who want every reservation to hold a counted prompt, at the cost of a /tokenize call each. */
    promptCount: variable({
      name: 'PROMPT_COUNT',
      group: 'core',
      meaning:
        "`bound`: a plain-text chat with `max_tokens` reserves an upper bound of its prompt (UTF-8 bytes + the template's overhead, probed per model with `/tokenize`) and is counted with `/tokenize` only when the bound would not fit the quota or the context; `exact`: every prompt is counted with `/tokenize` first. Either way the charge is what vLLM reports",
      schema: oneOf(['bound', 'exact'] as const),
      default: 'bound',
    }),
  },
  fleet: {
    healthIntervalMs: variable({
      name: 'UPSTREAM_HEALTH_INTERVAL_MS',
      group: 'core',
      meaning: 'how often each upstream is checked (`GET /health`); one that failed is probed with backoff to 10 s',
      schema: integer(100, 600_000),
      default: '5000',
    }),
    catalogueRefreshMs: variable({
      name: 'UPSTREAM_MODELS_REFRESH_MS',
      group: 'core',
      meaning: 'how often every upstream is asked for its models (`GET /v1/models`); also on its return',
      schema: integer(1_000, 3_600_000),
      default: '30000',
    }),
    /** Only before the first token: after it, the answer is already partly the one upstream's. */
    maxAttempts: variable({
      name: 'UPSTREAM_MAX_ATTEMPTS',
      group: 'core',
      meaning: 'tries of one request across upstreams before its first token',
      schema: integer(1, 10),
      default: '2',
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
  metrics: {
    token: optional({
      name: 'METRICS_TOKEN',
      group: 'core',
      meaning: '`GET /metrics` answers only `Authorization: Bearer <METRICS_TOKEN>`',
      schema: z.string().min(16, { error: 'must be at least 16 characters' }),
      unset: null,
      unsetMeans: 'open in development; not served in production',
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
  ...LIMIT_SETTINGS,
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
  orphans: {
    settleAfterMs: variable({
      name: 'ORPHAN_SETTLE_AFTER_MS',
      group: 'core',
      meaning:
        "how long a gateway instance must be gone (its database session closed, no heartbeat) before another settles its requests as `interrupted`; also how long an instance waits after (re)connecting before it judges others",
      schema: integer(0, 60_000),
      default: '10000',
    }),
  },
  audit: {
    retentionDays: variable({
      name: 'AUDIT_RETENTION_DAYS',
      group: 'core',
      meaning: 'days an audit log entry is kept; older ones are deleted by an hourly job',
      schema: integer(1, 36_500),
      default: '365',
    }),
  },
};


/** Every declared variable, in declaration order. */
export function allVariables(): Variable<unknown>[] {
  return variablesOf(SETTINGS);
}
