import { createHash, createSecretKey, randomBytes, type KeyObject } from 'node:crypto';
import jwt from 'jsonwebtoken';
import type { Config } from '../config';
import { isUuid } from '../rules';

export const API_KEY_PREFIX = 'sk-';
const API_KEY_SHOWN_CHARACTERS = 10;

export interface AccessClaims {
  readonly userId: string;
  readonly tokenVersion: number;
  readonly expiresAt: Date;
}

/** SHA-256, hex: for 256-bit random secrets a slow hash adds nothing. */
export function sha256(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

export function newRefreshToken(): string {
  return `rt_${randomBytes(32).toString('base64url')}`;
}

export function newApiKey(): { secret: string; prefix: string } {
  const secret = `${API_KEY_PREFIX}${randomBytes(32).toString('base64url')}`;
  return { secret, prefix: secret.slice(0, API_KEY_SHOWN_CHARACTERS) };
}

/** How many verified access tokens are remembered; beyond it the oldest is verified again when it comes back. */
const VERIFIED_TOKENS_KEPT = 10_000;

/** Signs and verifies access tokens: HS256 only, `exp` required, `iss`/`aud`/`typ` checked. */
export class AccessTokens {
  /**
   * Made once: given a string, jsonwebtoken first tries to parse it as a public key (which
   * throws) on every sign and verify, a large share of a request's CPU.
   */
  private readonly key: KeyObject;
  /**
   * Claims already verified, by token: a token's signature and claims never change, only its
   * expiry comes, which is checked on every use. Revocation does not live here (it is the
   * user's tokenVersion, checked against the database's state on every request).
   */
  private readonly verified = new Map<string, AccessClaims>();

  constructor(private readonly config: Config['jwt']) {
    this.key = createSecretKey(Buffer.from(config.secret, 'utf8'));
  }

  sign(userId: string, tokenVersion: number, now: Date = new Date()): { token: string; expiresAt: Date } {
    const issuedAt = Math.floor(now.getTime() / 1000);
    const expiresAtSeconds = issuedAt + this.config.accessTtlSeconds;
    const token = jwt.sign({ typ: 'access', tv: tokenVersion, iat: issuedAt, exp: expiresAtSeconds }, this.key, {
      algorithm: 'HS256',
      issuer: this.config.issuer,
      audience: this.config.audience,
      subject: userId,
    });
    return { token, expiresAt: new Date(expiresAtSeconds * 1000) };
  }

  /** The claims of a valid access token, or null for anything else (forged, expired, wrong type). */
  verify(token: string): AccessClaims | null {
    const known = this.verified.get(token);
    if (known !== undefined) {
      if (known.expiresAt.getTime() > Date.now()) return known;
      this.verified.delete(token);
    }
    const claims = this.verifySignature(token);
    if (claims !== null) {
      // The oldest entry makes room: a Map iterates in insertion order.
      if (this.verified.size >= VERIFIED_TOKENS_KEPT) this.verified.delete(this.verified.keys().next().value as string);
      this.verified.set(token, claims);
    }
    return claims;
  }

  private verifySignature(token: string): AccessClaims | null {
    let payload: string | jwt.JwtPayload;
    try {
      payload = jwt.verify(token, this.key, {
        algorithms: ['HS256'],
        issuer: this.config.issuer,
        audience: this.config.audience,
      });
    } catch {
      return null;
    }
    if (typeof payload === 'string') return null;
    const { typ, tv, sub, exp } = payload as jwt.JwtPayload & { typ?: unknown; tv?: unknown };
    // `sub` must be a user id: anything else would reach the database as a malformed uuid.
    if (typ !== 'access' || typeof sub !== 'string' || !isUuid(sub) || typeof exp !== 'number' || !Number.isSafeInteger(tv)) return null;
    return { userId: sub, tokenVersion: tv as number, expiresAt: new Date(exp * 1000) };
  }
}
