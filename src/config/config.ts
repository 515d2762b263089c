import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ConfigError } from './errors';
import { MIN_SECRET_LENGTH, SETTINGS } from './schema';
import { configuredUpstreams, type UpstreamSpec } from './upstreams';
import { Variable, type NodeEnv, type Tree, type Values } from './variables';

type Settings = Values<typeof SETTINGS>;

/** Where the JWT secret came from: the environment, or generated and kept under DATA_DIR. */
export type JwtSecretSource = 'env' | 'generated' | 'stored';

/**
 * The whole configuration, read and validated once at start; its shape and each variable are
 * declared in `src/schema.ts`. Nothing else reads `process.env`.
 */
export type Config = Readonly<
  Omit<Settings, 'jwt' | 'vllm'> & {
    jwt: Readonly<Omit<Settings['jwt'], 'secret'> & { secret: string; secretSource: JwtSecretSource }>;
    /** What applies to every upstream; the servers themselves are `upstreams`. */
    vllm: Readonly<Omit<Settings['vllm'], 'baseUrls' | 'upstreamsFile' | 'apiKey'>>;
    /** Empty: none configured, the built-in simulator answers. */
    upstreams: readonly UpstreamSpec[];
  }
>;

export { ConfigError };

type Env = Readonly<Record<string, string | undefined>>;

/** The variable's text, or undefined when it is unset; empty or blank counts as unset. */
function textOf(variable: Variable<unknown>, env: Env): string | undefined {
  const raw = env[variable.name];
  if (raw === undefined) return undefined;
  const text = variable.verbatim ? raw : raw.trim();
  return text.trim() === '' ? undefined : text;
}

/** `nodeEnv` is left out only to read NODE_ENV itself, whose default depends on nothing. */
function read<T>(variable: Variable<T>, env: Env, nodeEnv?: NodeEnv): T {
  let text = textOf(variable, env);
  if (text === undefined) {
    const unset = variable.unset;
    if ('value' in unset) return unset.value;
    text = (nodeEnv === undefined ? undefined : unset.byNodeEnv[nodeEnv]) ?? unset.text;
  }
  const result = variable.schema.safeParse(text);
  if (!result.success) throw new ConfigError(variable.name, result.error.issues[0]?.message ?? 'is not valid');
  return result.data;
}

function readTree(tree: Tree, env: Env, nodeEnv: NodeEnv): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(tree).map(([key, node]) => [key, node instanceof Variable ? read(node, env, nodeEnv) : readTree(node, env, nodeEnv)]),
  );
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

function jwtSecret(settings: Settings): { secret: string; source: JwtSecretSource } {
  if (settings.jwt.secret !== null) return { secret: settings.jwt.secret, source: 'env' };
  if (settings.env === 'production') throw new ConfigError('JWT_SECRET', 'is required when NODE_ENV=production');
  return storedJwtSecret(settings.dataDir);
}

export function loadConfig(env: Env = process.env): Config {
  const nodeEnv = read(SETTINGS.env, env);
  // readTree builds the object key by key from SETTINGS, whose shape `Values` describes.
  const settings = readTree(SETTINGS, env, nodeEnv) as Settings;
  const upstreams = configuredUpstreams(settings.vllm);
  const { secret, source } = jwtSecret(settings);
  const { baseUrls: _baseUrls, upstreamsFile: _upstreamsFile, apiKey: _apiKey, ...vllm } = settings.vllm;
  return deepFreeze({
    ...settings,
    vllm,
    upstreams,
    jwt: { ...settings.jwt, secret, secretSource: source },
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
