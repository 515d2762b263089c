import argon2 from 'argon2';
import { BadUserInputError } from '../errors';
import type { Config } from '../config';
import { passwordProblem } from '../rules';

/** The shared password rule, as the error a GraphQL argument gets; never truncated. */
export function assertPasswordPolicy(password: string, field = 'password'): void {
  const problem = passwordProblem(password);
  if (problem !== null) throw new BadUserInputError(`The password ${problem}.`, field);
}

export class PasswordHasher {
  private readonly options: { type: typeof argon2.argon2id; memoryCost: number; timeCost: number; parallelism: number };
  /** Verified against when the email is unknown, so both failures cost the same time. */
  private dummyHash: Promise<string> | null = null;

  constructor(config: Config['passwordHash']) {
    this.options = {
      type: argon2.argon2id,
      memoryCost: config.memoryKiB,
      timeCost: config.timeCost,
      parallelism: config.parallelism,
    };
  }

  hash(password: string): Promise<string> {
    return argon2.hash(password, this.options);
  }

  async verify(hash: string, password: string): Promise<boolean> {
    try {
      return await argon2.verify(hash, password);
    } catch {
      return false;
    }
  }

  async verifyDummy(password: string): Promise<false> {
    this.dummyHash ??= this.hash('dummy password that matches nothing');
    await this.verify(await this.dummyHash, password);
    return false;
  }

  needsRehash(hash: string): boolean {
    const { memoryCost, timeCost, parallelism } = this.options;
    return argon2.needsRehash(hash, { memoryCost, timeCost, parallelism });
  }
}
