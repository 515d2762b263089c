import { Field, ObjectType } from 'type-graphql';
import { BadUserInputError } from '../errors';

@ObjectType({ description: 'Where a page ends; pass endCursor as `after` for the next one.' })
export class PageInfo {
  @Field(() => Boolean)
  hasNextPage!: boolean;

  @Field(() => String, { nullable: true })
  endCursor!: string | null;
}

const CURSOR_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/;

/**
 * Keyset cursors over (timestamp, id): the timestamp at PostgreSQL's microsecond precision,
 * as text, so no row is skipped or repeated between pages.
 */
export function encodeKeysetCursor(time: string, id: string): string {
  return Buffer.from(JSON.stringify([time, id])).toString('base64url');
}

/** The (time, id) of a cursor this server gave out, or BAD_USER_INPUT naming `after`. */
export function decodeKeysetCursor(cursor: string, idPattern: RegExp): [string, string] {
  try {
    const decoded: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (
      Array.isArray(decoded) &&
      decoded.length === 2 &&
      typeof decoded[0] === 'string' &&
      CURSOR_TIME.test(decoded[0]) &&
      typeof decoded[1] === 'string' &&
      idPattern.test(decoded[1])
    ) {
      return [decoded[0], decoded[1]];
    }
  } catch {
    // Falls through to the error below: any undecodable cursor is the client's mistake.
  }
  throw new BadUserInputError('The cursor is not one this server gave out.', 'after');
}
