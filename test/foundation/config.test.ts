import { existsSync, readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, loadConfig, type Config } from '../../src/config';
import { ensureServerBuild, distMain } from './build';
import { baseEnv, makeDataDir, removeDir, runNode, within } from './gateway-process';

const LONG_SECRET = 'a-jwt-secret-that-is-long-enough-0123456789';

let dataDir: string;
beforeEach(() => {
  dataDir = makeDataDir('config');
});
afterEach(() => removeDir(dataDir));

/** A valid configuration, with `overrides` applied (`undefined` removes a variable). */
function envWith(overrides: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  return { NODE_ENV: 'test', DATA_DIR: dataDir, JWT_SECRET: LONG_SECRET, ...overrides };
}

/** The ConfigError that loadConfig throws for `overrides`; fails the test when it throws none. */
function refusal(overrides: Record<string, string | undefined>): ConfigError {
  try {
    loadConfig(envWith(overrides));
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(overrides)}`);
}

describe('loadConfig', () => {
  it('accepts a valid environment and reads it, not process.env', () => {
    // Values in process.env that would be refused must not matter when an env object is given.
    const saved = { PORT: process.env.PORT, JWT_SECRET: process.env.JWT_SECRET };
    process.env.PORT = 'not-a-port';
    process.env.JWT_SECRET = 'short';
    let config: Config;
    try {
      config = loadConfig(
        envWith({
          PORT: '0',
          HOST: '0.0.0.0',
          DATABASE_URL: 'postgres://u:p@db.example:5432/gateway',
          VLLM_BASE_URL: 'http://gpu-host:8000/v1/',
          MIGRATE_ON_START: 'false',
        }),
      );
    } finally {
      for (const [name, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
    expect(config).toMatchObject({
      env: 'test',
      host: '0.0.0.0',
      port: 0,
      databaseUrl: 'postgres://u:p@db.example:5432/gateway',
      dataDir,
      migrateOnStart: false,
      upstreams: [{ name: 'upstream-1', baseUrl: 'http://gpu-host:8000/v1', apiKey: null }],
      jwt: { secret: LONG_SECRET, secretSource: 'env' },
    });
  });

  it('applies the contract defaults when variables are unset', () => {
    const config = loadConfig(envWith());
    expect(config).toMatchObject({
      host: '127.0.0.1',
      port: 4000,
      databaseUrl: null,
      migrateOnStart: true,
      upstreams: [],
      admin: { email: 'admin@localhost', password: null },
      audit: { retentionDays: 365 },
    });
  });

  it.each([
    ['JWT_SECRET', 'too-short-secret'],
    ['JWT_SECRET', 'x'.repeat(31)],
    ['DATABASE_URL', 'not a url'],
    ['DATABASE_URL', 'mysql://user@db.example/gateway'],
    ['VLLM_BASE_URL', 'gpu-host:8000/v1'],
    ['VLLM_BASE_URL', 'ftp://gpu-host/v1'],
    ['VLLM_BASE_URL', '://missing-scheme'],
    ['PORT', '65536'],
    ['PORT', '-1'],
    ['PORT', 'eighty'],
    ['PORT', '80.5'],
    ['PORT', '4000abc'],
    ['MIGRATE_ON_START', 'maybe'],
    ['MIGRATE_ON_START', 'ture'],
    ['NODE_ENV', 'staging'],
    ['LOG_LEVEL', 'loud'],
    ['PROMPT_COUNT', 'estimate'],
    ['DATABASE_POOL_SIZE', '1'],
    ['DATABASE_POOL_SIZE', '1001'],
    ['DATABASE_ORM_POOL_SIZE', '0'],
    ['ADMIN_EMAIL', 'no-at-sign'],
    ['ADMIN_EMAIL', `${'a'.repeat(250)}@example.com`],
    // Twelve UTF-16 units but six characters.
    ['ADMIN_PASSWORD', '🔑'.repeat(6)],
    ['CORS_ALLOWED_ORIGINS', 'https://app.example.com/path'],
    ['CORS_ALLOWED_ORIGINS', 'https://app.example.com,'],
    ['AUDIT_RETENTION_DAYS', '0'],
    ['AUDIT_RETENTION_DAYS', 'a year'],
  ])('refuses %s=%j, naming the variable', (variable, value) => {
    const error = refusal({ [variable]: value });
    expect(error.variable).toBe(variable);
    expect(error.message.startsWith(`${variable} `)).toBe(true);
    // One line, so that main.ts prints one line.
    expect(error.message).not.toContain('\n');
  });

  it('counts blank values as unset and trims the others, but takes ADMIN_PASSWORD as written', () => {
    const config = loadConfig(envWith({ PORT: '  ', HOST: ' 0.0.0.0 ', ADMIN_PASSWORD: ' a passphrase ' }));
    expect(config).toMatchObject({ port: 4000, host: '0.0.0.0', admin: { password: ' a passphrase ' } });
  });

  it('reads the pool sizes and timeouts, with their defaults', () => {
    expect(loadConfig(envWith()).database).toEqual({ poolSize: 20, ormPoolSize: 5, connectTimeoutMs: 2000, statementTimeoutMs: 10000 });
    expect(
      loadConfig(
        envWith({ DATABASE_POOL_SIZE: '2', DATABASE_ORM_POOL_SIZE: '1000', DATABASE_CONNECT_TIMEOUT_MS: '500', DATABASE_STATEMENT_TIMEOUT_MS: '60000' }),
      ).database,
    ).toEqual({ poolSize: 2, ormPoolSize: 1000, connectTimeoutMs: 500, statementTimeoutMs: 60000 });
    expect(() => loadConfig(envWith({ DATABASE_CONNECT_TIMEOUT_MS: '0' }))).toThrow(/^DATABASE_CONNECT_TIMEOUT_MS must be between 100 and 60000/);
  });

  it('reads WORKERS: 1 unless set, `auto` for one per core, and refuses what is not a count', () => {
    expect(loadConfig(envWith()).workers).toBe(1);
    expect(loadConfig(envWith({ WORKERS: '3' })).workers).toBe(3);
    expect(loadConfig(envWith({ WORKERS: 'auto' })).workers).toBe(os.availableParallelism());
    for (const text of ['0', '257', 'two', '1.5']) {
      expect(refusal({ WORKERS: text }).message).toBe(`WORKERS must be auto or an integer between 1 and 256, got "${text}"`);
    }
  });

  it('lower-cases ADMIN_EMAIL and counts ADMIN_PASSWORD in characters, not UTF-16 units', () => {
    const config = loadConfig(envWith({ ADMIN_EMAIL: 'Ana@Example.COM', ADMIN_PASSWORD: '🔑'.repeat(12) }));
    expect(config.admin).toEqual({ email: 'ana@example.com', password: '🔑'.repeat(12) });
  });

  it('takes the defaults that depend on NODE_ENV from the NODE_ENV given', () => {
    expect(loadConfig(envWith())).toMatchObject({ logLevel: 'silent', graphql: { introspection: true, graphiql: true } });
    expect(loadConfig(envWith({ NODE_ENV: 'development' })).logLevel).toBe('info');
    expect(loadConfig(envWith({ NODE_ENV: 'production' }))).toMatchObject({
      logLevel: 'info',
      graphql: { introspection: false, graphiql: false },
    });
    expect(loadConfig(envWith({ NODE_ENV: 'production', GRAPHIQL_ENABLED: 'yes' })).graphql.graphiql).toBe(true);
  });

  it('reads CORS_ALLOWED_ORIGINS as a list of origins', () => {
    expect(loadConfig(envWith()).http.corsOrigins).toEqual([]);
    const config = loadConfig(envWith({ CORS_ALLOWED_ORIGINS: 'https://app.example.com, http://localhost:5173' }));
    expect(config.http.corsOrigins).toEqual(['https://app.example.com', 'http://localhost:5173']);
  });

  it('accepts a JWT secret of exactly 32 characters', () => {
    expect(loadConfig(envWith({ JWT_SECRET: 'y'.repeat(32) })).jwt.secret).toBe('y'.repeat(32));
  });

  it('refuses NODE_ENV=production without JWT_SECRET, and stores no generated secret', () => {
    const error = refusal({ NODE_ENV: 'production', JWT_SECRET: undefined });
    expect(error.variable).toBe('JWT_SECRET');
    expect(error.message).toMatch(/production/);
    expect(existsSync(path.join(dataDir, 'jwt-secret'))).toBe(false);
  });

  it('generates a secret under DATA_DIR when JWT_SECRET is unset, readable by the owner only, and keeps it', () => {
    const nested = path.join(dataDir, 'not-yet-created');
    const first = loadConfig(envWith({ NODE_ENV: 'development', JWT_SECRET: undefined, DATA_DIR: nested }));
    expect(first.jwt.secretSource).toBe('generated');
    expect(first.jwt.secret.length).toBeGreaterThanOrEqual(32);

    const file = path.join(nested, 'jwt-secret');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readFileSync(file, 'utf8').trim()).toBe(first.jwt.secret);

    const second = loadConfig(envWith({ NODE_ENV: 'development', JWT_SECRET: undefined, DATA_DIR: nested }));
    expect(second.jwt.secret).toBe(first.jwt.secret);
    expect(second.jwt.secretSource).toBe('stored');

    // Another DATA_DIR is another installation: another secret.
    const other = loadConfig(envWith({ NODE_ENV: 'development', JWT_SECRET: undefined, DATA_DIR: path.join(dataDir, 'other') }));
    expect(other.jwt.secret).not.toBe(first.jwt.secret);
  });

  it('returns an object frozen all the way down', () => {
    const config = loadConfig(envWith({ VLLM_BASE_URL: 'http://gpu-host:8000/v1' }));
    const unfrozen: string[] = [];
    const visit = (value: object, at: string): void => {
      if (!Object.isFrozen(value)) unfrozen.push(at);
      for (const [key, inner] of Object.entries(value)) {
        if (inner !== null && typeof inner === 'object') visit(inner as object, `${at}.${key}`);
      }
    };
    visit(config, 'config');
    expect(unfrozen).toEqual([]);
    expect(() => {
      (config as { port: number }).port = 1;
    }).toThrow(TypeError);
    expect(() => {
      (config.jwt as { secret: string }).secret = 'stolen';
    }).toThrow(TypeError);
    expect(config.jwt.secret).toBe(LONG_SECRET);
  });
});

describe('node dist/src/main.js with a bad value', () => {
  beforeAll(() => ensureServerBuild(), 120_000);

  it.each([
    ['PORT', '70000'],
    ['JWT_SECRET', 'short'],
  ])('exits non-zero with one line on stderr naming %s', async (variable, value) => {
    const proc = runNode(distMain, baseEnv({ DATA_DIR: dataDir, [variable]: value }));
    const exit = await within(proc.exited, 20_000, () => `main.js kept running with ${variable}=${value}`);
    expect(exit.code).not.toBe(0);
    expect(exit.code).not.toBeNull();
    const lines = exit.stderr.split('\n').filter((line) => line.trim() !== '');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(variable);
    // It never got as far as listening.
    expect(exit.stdout).not.toMatch(/GraphiQL/);
  });
});
