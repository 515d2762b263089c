import { ServiceUnavailableError } from '../errors';

/**
 * The one place that tells "the database cannot be reached" from every other failure of a
 * statement, for pg (the statement pool, the listening connection) and the ORM (knex under
 * MikroORM, whose DriverException keeps the driver's `code` and message). Such a failure says
 * nothing about the request: it is answered `SERVICE_UNAVAILABLE`, and a settlement that met it
 * is tried again.
 */

/** Socket-level failures of a connection: refused, reset, cut, or a host that cannot be found or reached. */
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);

/**
 * SQLSTATEs of a server that is going away or not there yet: class 08 (connection exception) is
 * matched by its prefix. 57P01-57P03: shut down by an administrator, a crash of another backend,
 * not accepting connections yet (starting, stopping). 57014: a statement cancelled, which the
 * gateway itself never asks for, so it is the statement timeout. 53300: no connection slot left.
 */
const SQLSTATES = new Set(['57P01', '57P02', '57P03', '57014', '53300']);

/** What pg, pg-pool and knex say when a connection fails or an answer does not come in time; none of them sets a code. */
const MESSAGES = [
  'timeout exceeded when trying to connect',
  'Connection terminated',
  'Query read timeout',
  'timeout expired',
  'Client has encountered a connection error and is not queryable',
  'Knex: Timeout acquiring a connection',
];

/** The fields read of an error; not `instanceof Error`, which fails for Node's own errors seen from another realm (a test sandbox). */
interface ErrorLike {
  readonly code?: unknown;
  readonly message?: unknown;
  readonly cause?: unknown;
  /** An AggregateError's: one per address a connect tried. */
  readonly errors?: unknown;
}

export function isDatabaseUnreachable(error: unknown): boolean {
  const seen = new Set<unknown>();
  const pending: unknown[] = [error];
  while (pending.length > 0) {
    const current = pending.pop();
    if (current === null || typeof current !== 'object' || seen.has(current)) continue;
    if (current instanceof ServiceUnavailableError) return true;
    seen.add(current);
    const { code, message, cause, errors } = current as ErrorLike;
    if (typeof code === 'string' && (NETWORK_CODES.has(code) || SQLSTATES.has(code) || /^08[0-9A-Z]{3}$/.test(code))) return true;
    if (typeof message === 'string' && MESSAGES.some((known) => message.startsWith(known))) return true;
    pending.push(cause);
    if (Array.isArray(errors)) pending.push(...(errors as unknown[]));
  }
  return false;
}

/** `error` as the client is told it: SERVICE_UNAVAILABLE when the database cannot be reached, else as it is. */
export function unreachableAsServiceUnavailable(error: unknown): unknown {
  return isDatabaseUnreachable(error) && !(error instanceof ServiceUnavailableError) ? new ServiceUnavailableError(undefined, { cause: error }) : error;
}
