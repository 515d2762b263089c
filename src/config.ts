import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** The whole configuration, read and validated once at start. Nothing else reads `process.env`. */
export interface Config {
  readonly env: 'development' | 'production' | 'test';
  readonly host: string;
  readonly port: number;
  /** null: start an embedded PostgreSQL under `dataDir`. */
  readonly databaseUrl: string | null;
  readonly dataDir: string;
  readonly migrateOnStart: boolean;
  readonly logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  readonly vllm: {
    /** null: run the built-in simulator in-process. */
    readonly baseUrl: string | null;
    readonly apiKey: string | null;
    readonly timeoutMs: number;
    /** Safety margin added to tiktoken's prompt count when the upstream has no /tokenize. */
    readonly tiktokenMargin: number;
  };
  readonly jwt: {
    readonly secret: string;
    /** Where the secret came from: the environment, or generated and kept under DATA_DIR. */
    readonly secretSource: 'env' | 'generated' | 'stored';
    readonly issuer: string;
    readonly audience: string;
    readonly accessTtlSeconds: number;
    readonly refreshTtlSeconds: number;
  };
  readonly admin: { readonly email: string; readonly password: string | null };
  readonly http: {
    /** Request bodies above this are refused with 413 before parsing. */
    readonly maxBodyBytes: number;
    /** Origins allowed by CORS; empty: CORS off (same-origin only). */
    readonly corsOrigins: readonly string[];
  };
  /** Limits on every GraphQL document, over HTTP and WebSocket alike. */
  readonly graphql: {
    readonly maxDepth: number;
    /** Introspection is bounded separately: GraphiQL's own query is about 13 deep. */
    readonly maxIntrospectionDepth: number;
    readonly maxAliases: number;
    readonly maxTokens: number;
    readonly maxDirectives: number;
    readonly maxCost: number;
    readonly introspection: boolean;
    readonly graphiql: boolean;
  };
  /** Per-user limits on chat requests; 0 = off. Counted in PostgreSQL, so across instances. */
  readonly rateLimit: {
    readonly requestsPerMinute: number;
    readonly tokensPerMinute: number;
  };
  readonly ws: {
    readonly maxMessageBytes: number;
    readonly maxConnectionsPerUser: number;
    /**
     * Operations (subscriptions, queries, mutations) in flight at once on one socket. Without a
     * cap one signed-in user can hold thousands of live subscriptions per socket, each with its
     * listener and buffers, and exhaust the process's memory.
     */
    readonly maxSubscriptionsPerSocket: number;
    /** A socket that sends no connection_init within this is closed (4408). */
    readonly connectionInitWaitMs: number;
  };
  readonly chat: {
    readonly maxMessages: number;
    /** Characters of all message contents together, refused before any tokenizing. */
    readonly maxContentChars: number;
    readonly maxStopSequences: number;
  };
  /** argon2id cost; never below OWASP's minimum (19 MiB, 2 passes, 1 lane). */
  readonly passwordHash: { readonly memoryKiB: number; readonly timeCost: number; readonly parallelism: number };
  readonly login: {
    /** Failures of one account within the window before it is locked. */
    readonly maxFailuresPerAccount: number;
    /** Failures from one client address within the window before it is locked. */
    readonly maxFailuresPerAddress: number;
    readonly failureWindowSeconds: number;
    /** First lock length; each further failure doubles it, up to `lockoutMaxSeconds`. */
    readonly lockoutBaseSeconds: number;
    readonly lockoutMaxSeconds: number;
  };
}

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    problem: string,
  ) {
    super(`${variable} ${problem}`);
    this.name = 'ConfigError';
  }
}

type Env = Readonly<Record<string, string | undefined>>;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
const MIN_SECRET_LENGTH = 32;

function text(env: Env, name: string): string | undefined {
  const value = env[name];
  return value === undefined || value.trim() === '' ? undefined : value.trim();
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = text(env, name);
  if (raw === undefined) return fallback;
  if (!/^-?\d+$/.test(raw)) throw new ConfigError(name, `must be an integer, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${value}`);
  return value;
}

function number(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = text(env, name);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min || value > max) {
    throw new ConfigError(name, `must be a number between ${min} and ${max}, got "${raw}"`);
  }
  return value;
}

function boolean(env: Env, name: string, fallback: boolean): boolean {
  const raw = text(env, name)?.toLowerCase();
  if (raw === undefined) return fallback;
  if (['true', '1', 'yes'].includes(raw)) return true;
  if (['false', '0', 'no'].includes(raw)) return false;
  throw new ConfigError(name, `must be true or false, got "${raw}"`);
}

function url(env: Env, name: string, protocols: readonly string[]): string | undefined {
  const raw = text(env, name);
  if (raw === undefined) return undefined;
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigError(name, 'is not a valid URL');
  }
  if (!protocols.includes(parsed.protocol)) {
    throw new ConfigError(name, `must use ${protocols.join(' or ')}, got ${parsed.protocol}`);
  }
  return raw;
}

/** Reads the secret kept under DATA_DIR, or creates it once with a CSPRNG. */
function storedJwtSecret(dataDir: string): { secret: string; source: 'generated' | 'stored' } {
  const file = path.join(dataDir, 'jwt-secret');
  try {
    const secret = readFileSync(file, 'utf8').trim();
    if (secret.length >= MIN_SECRET_LENGTH) return { secret, source: 'stored' };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new ConfigError('JWT_SECRET', `is unset and the stored secret ${file} cannot be read`);
    }
  }
  const secret = randomBytes(48).toString('base64url');
  try {
    mkdirSync(dataDir, { recursive: true, mode: 0o755 });
    writeFileSync(file, `${secret}\n`, { mode: 0o600, flag: 'w' });
  } catch {
    throw new ConfigError('JWT_SECRET', `is unset and a generated secret cannot be stored in ${file}`);
  }
  return { secret, source: 'generated' };
}

export function loadConfig(env: Env = process.env): Config {
  const nodeEnv = text(env, 'NODE_ENV') ?? 'development';
  if (nodeEnv !== 'development' && nodeEnv !== 'production' && nodeEnv !== 'test') {
    throw new ConfigError('NODE_ENV', `must be development, production or test, got "${nodeEnv}"`);
  }
  const dataDir = path.resolve(text(env, 'DATA_DIR') ?? '.data');
  const port = integer(env, 'PORT', 4000, 0, 65535);
  const host = text(env, 'HOST') ?? '127.0.0.1';
  if (!/^[A-Za-z0-9.:[\]-]+$/.test(host)) throw new ConfigError('HOST', `is not a host name or address: "${host}"`);

  const databaseUrl = url(env, 'DATABASE_URL', ['postgres:', 'postgresql:']) ?? null;
  const vllmBaseUrl = url(env, 'VLLM_BASE_URL', ['http:', 'https:']) ?? null;

  const logLevel = text(env, 'LOG_LEVEL') ?? (nodeEnv === 'test' ? 'silent' : 'info');
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new ConfigError('LOG_LEVEL', `must be one of ${LOG_LEVELS.join(', ')}, got "${logLevel}"`);
  }

  const envSecret = text(env, 'JWT_SECRET');
  let jwtSecret: { secret: string; source: Config['jwt']['secretSource'] };
  if (envSecret !== undefined) {
    if (envSecret.length < MIN_SECRET_LENGTH) {
      throw new ConfigError('JWT_SECRET', `must be at least ${MIN_SECRET_LENGTH} characters, got ${envSecret.length}`);
    }
    jwtSecret = { secret: envSecret, source: 'env' };
  } else if (nodeEnv === 'production') {
    throw new ConfigError('JWT_SECRET', 'is required when NODE_ENV=production');
  } else {
    jwtSecret = storedJwtSecret(dataDir);
  }

  const adminEmail = text(env, 'ADMIN_EMAIL') ?? 'admin@localhost';
  if (!/^[^\s@]+@[^\s@]+$/.test(adminEmail)) throw new ConfigError('ADMIN_EMAIL', 'is not an email address');
  const adminPassword = env.ADMIN_PASSWORD === undefined || env.ADMIN_PASSWORD === '' ? null : env.ADMIN_PASSWORD;
  if (adminPassword !== null && (adminPassword.length < 12 || adminPassword.length > 256)) {
    throw new ConfigError('ADMIN_PASSWORD', 'must be 12 to 256 characters');
  }

  const config: Config = {
    env: nodeEnv,
    host,
    port,
    databaseUrl,
    dataDir,
    migrateOnStart: boolean(env, 'MIGRATE_ON_START', true),
    logLevel: logLevel as Config['logLevel'],
    vllm: {
      baseUrl: vllmBaseUrl === null ? null : vllmBaseUrl.replace(/\/+$/, ''),
      apiKey: text(env, 'VLLM_API_KEY') ?? null,
      timeoutMs: integer(env, 'VLLM_TIMEOUT_MS', 120_000, 100, 3_600_000),
      tiktokenMargin: number(env, 'TIKTOKEN_MARGIN', 0.1, 0, 10),
    },
    jwt: {
      secret: jwtSecret.secret,
      secretSource: jwtSecret.source,
      issuer: text(env, 'JWT_ISSUER') ?? 'vllm-gateway',
      audience: text(env, 'JWT_AUDIENCE') ?? 'vllm-gateway',
      accessTtlSeconds: integer(env, 'ACCESS_TOKEN_TTL_SECONDS', 900, 10, 86_400),
      refreshTtlSeconds: integer(env, 'REFRESH_TOKEN_TTL_SECONDS', 30 * 86_400, 60, 365 * 86_400),
    },
    admin: { email: adminEmail.toLowerCase(), password: adminPassword },
    http: {
      maxBodyBytes: integer(env, 'HTTP_MAX_BODY_BYTES', 1_048_576, 1024, 1_073_741_824),
      corsOrigins: origins(env, 'CORS_ALLOWED_ORIGINS'),
    },
    graphql: {
      maxDepth: integer(env, 'GRAPHQL_MAX_DEPTH', 8, 1, 100),
      maxIntrospectionDepth: integer(env, 'GRAPHQL_MAX_INTROSPECTION_DEPTH', 15, 1, 100),
      maxAliases: integer(env, 'GRAPHQL_MAX_ALIASES', 15, 0, 1000),
      maxTokens: integer(env, 'GRAPHQL_MAX_TOKENS', 2000, 10, 1_000_000),
      maxDirectives: integer(env, 'GRAPHQL_MAX_DIRECTIVES', 50, 0, 1000),
      maxCost: integer(env, 'GRAPHQL_MAX_COST', 5000, 1, 10_000_000),
      introspection: boolean(env, 'GRAPHQL_INTROSPECTION', nodeEnv !== 'production'),
      graphiql: boolean(env, 'GRAPHIQL_ENABLED', nodeEnv !== 'production'),
    },
    rateLimit: {
      requestsPerMinute: integer(env, 'RATE_LIMIT_REQUESTS_PER_MINUTE', 0, 0, 1_000_000),
      tokensPerMinute: integer(env, 'RATE_LIMIT_TOKENS_PER_MINUTE', 0, 0, 2_000_000_000),
    },
    ws: {
      maxMessageBytes: integer(env, 'WS_MAX_MESSAGE_BYTES', 262_144, 1024, 1_073_741_824),
      maxConnectionsPerUser: integer(env, 'WS_MAX_CONNECTIONS_PER_USER', 20, 1, 100_000),
      maxSubscriptionsPerSocket: integer(env, 'WS_MAX_SUBSCRIPTIONS_PER_SOCKET', 100, 1, 100_000),
      connectionInitWaitMs: integer(env, 'WS_CONNECTION_INIT_WAIT_MS', 3000, 100, 60_000),
    },
    chat: {
      maxMessages: integer(env, 'CHAT_MAX_MESSAGES', 256, 1, 10_000),
      maxContentChars: integer(env, 'CHAT_MAX_CONTENT_CHARS', 400_000, 1, 100_000_000),
      maxStopSequences: integer(env, 'CHAT_MAX_STOP_SEQUENCES', 8, 0, 64),
    },
    passwordHash: {
      memoryKiB: integer(env, 'PASSWORD_HASH_MEMORY_KIB', 65_536, 19_456, 4_194_304),
      timeCost: integer(env, 'PASSWORD_HASH_TIME_COST', 3, 2, 100),
      parallelism: integer(env, 'PASSWORD_HASH_PARALLELISM', 4, 1, 64),
    },
    login: {
      maxFailuresPerAccount: integer(env, 'LOGIN_MAX_FAILURES_PER_ACCOUNT', 5, 1, 1000),
      maxFailuresPerAddress: integer(env, 'LOGIN_MAX_FAILURES_PER_ADDRESS', 50, 1, 100_000),
      failureWindowSeconds: integer(env, 'LOGIN_FAILURE_WINDOW_SECONDS', 900, 1, 86_400),
      lockoutBaseSeconds: integer(env, 'LOGIN_LOCKOUT_BASE_SECONDS', 30, 1, 86_400),
      lockoutMaxSeconds: integer(env, 'LOGIN_LOCKOUT_MAX_SECONDS', 900, 1, 86_400),
    },
  };
  return deepFreeze(config);
}

function origins(env: Env, name: string): string[] {
  const raw = text(env, name);
  if (raw === undefined) return [];
  return raw.split(',').map((entry) => {
    const origin = entry.trim();
    let parsed: URL;
    try {
      parsed = new URL(origin);
    } catch {
      throw new ConfigError(name, `holds "${origin}", which is not an origin like https://app.example.com`);
    }
    if (parsed.origin !== origin || (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')) {
      throw new ConfigError(name, `holds "${origin}", which is not an origin like https://app.example.com`);
    }
    return origin;
  });
}

function deepFreeze<T extends object>(value: T): T {
  for (const inner of Object.values(value)) {
    if (inner !== null && typeof inner === 'object') deepFreeze(inner as object);
  }
  return Object.freeze(value);
}

/** A URL fit for logs and `serverInfo`: credentials and query removed. */
export function redactUrl(raw: string): string {
  const parsed = new URL(raw);
  parsed.username = '';
  parsed.password = '';
  parsed.search = '';
  return parsed.toString().replace(/\/+$/, '');
}
