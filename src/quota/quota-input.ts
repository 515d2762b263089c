import { BadUserInputError } from '../errors';
import { MAX_TOKEN_COUNT } from './reservation';

/** A tokenLimit argument of any level (user, team, API key): null or omitted is unlimited. */
export function validTokenLimit(limit: number | null | undefined, field: string): number | null {
  if (limit === null || limit === undefined) return null;
  if (!Number.isSafeInteger(limit) || limit < 0 || limit > MAX_TOKEN_COUNT) {
    throw new BadUserInputError(`tokenLimit must be a whole number from 0 to ${MAX_TOKEN_COUNT}, or null for unlimited.`, field);
  }
  return limit;
}
