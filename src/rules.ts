/**
 * Rules that more than one module checks (configuration, user management, ids in arguments):
 * written once, so that ADMIN_PASSWORD and createUser can never disagree about a password.
 */

export const PASSWORD_MIN_LENGTH = 12;
export const PASSWORD_MAX_LENGTH = 256;
export const MAX_EMAIL_LENGTH = 254;

const EMAIL = /^[^\s@]+@[^\s@]+$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Counted as the user sees them (code points), not in UTF-16 units: an emoji is one character. */
export function passwordLength(password: string): number {
  return [...password].length;
}

/** Why a password is refused, or null when it is acceptable: 12 to 256 characters, any characters. */
export function passwordProblem(password: string): string | null {
  const length = passwordLength(password);
  if (length < PASSWORD_MIN_LENGTH) return `must be at least ${PASSWORD_MIN_LENGTH} characters`;
  if (length > PASSWORD_MAX_LENGTH) return `must be at most ${PASSWORD_MAX_LENGTH} characters`;
  return null;
}

/** An address with one @ and no spaces, at most 254 characters: what a mail server accepts, no more is checked. */
export function isEmail(value: string): boolean {
  return value.length <= MAX_EMAIL_LENGTH && EMAIL.test(value);
}

export function normalizeEmail(email: string): string {
  return email.trim().toLowerCase();
}

export function isUuid(value: string): boolean {
  return UUID.test(value);
}
