import { AsyncLocalStorage } from 'node:async_hooks';
import pino, { type Logger } from 'pino';
import type { Config } from './config';

export type { Logger };

/** Fields that may hold secrets are removed wherever they appear in a log line. */
const REDACTED_PATHS = [
  'password',
  'newPassword',
  'currentPassword',
  'token',
  'accessToken',
  'refreshToken',
  'apiKey',
  'secret',
  'authorization',
  '*.password',
  '*.newPassword',
  '*.currentPassword',
  '*.token',
  '*.accessToken',
  '*.refreshToken',
  '*.apiKey',
  '*.secret',
  '*.authorization',
  'req.headers.authorization',
  'variables.*',
];

/** A statement in an error message: MikroORM puts the failed SQL there, its parameters inlined. */
const SQL_STATEMENT = /\b(select|insert|update|delete|with)\b[\s\S]*\b(from|into|set|values|where)\b/i;
/** A quoted SQL literal ('' escapes a quote inside it). */
const SQL_LITERAL = /'(?:[^']|'')*'/g;

/**
 * Error messages and stacks that quote SQL lose the statement's literal values: they are the
 * query's parameters (token and password hashes, emails, anything a client sent), and the
 * statement is as useful without them.
 */
function withoutSqlValues(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return SQL_STATEMENT.test(value) ? value.replace(SQL_LITERAL, "'[redacted]'") : value;
  if (value === null || typeof value !== 'object' || depth > 4) return value;
  if (Array.isArray(value)) return value.map((item: unknown) => withoutSqlValues(item, depth + 1));
  return Object.fromEntries(Object.entries(value).map(([key, inner]) => [key, withoutSqlValues(inner, depth + 1)]));
}

/** The HTTP request being served: every log line written while serving it carries its id. */
export const requestScope = new AsyncLocalStorage<{ requestId: string }>();

export function createLogger(config: Pick<Config, 'logLevel'>, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level: config.logLevel,
      base: { service: 'vllm-gateway' },
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      serializers: { err: (error: unknown) => withoutSqlValues(pino.stdSerializers.err(error as Error)) },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      mixin: () => {
        const scope = requestScope.getStore();
        return scope === undefined ? {} : { requestId: scope.requestId };
      },
    },
    destination,
  );
}
