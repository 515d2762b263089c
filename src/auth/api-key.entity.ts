import { randomUUID } from 'node:crypto';
import { Entity, Enum, Index, ManyToOne, PrimaryKey, Property } from '@mikro-orm/core';
import { QuotaPeriod, User } from '../users/user.entity';

@Entity({ tableName: 'api_keys' })
@Index({ properties: ['user'] })
export class ApiKey {
  @PrimaryKey({ type: 'uuid' })
  id: string = randomUUID();

  @ManyToOne(() => User, { deleteRule: 'cascade' })
  user!: User;

  @Property({ type: 'text' })
  name!: string;

  /** The first characters of the secret, shown so a user can tell keys apart. */
  @Property({ type: 'text' })
  prefix!: string;

  /** SHA-256 of the secret: keys are 256-bit random, so a fast hash is safe here. */
  @Property({ type: 'text', unique: true, hidden: true })
  keyHash!: string;

  /** The key's own budget, on top of its user's; null: unlimited (only the user's and team's apply). */
  @Property({ type: 'integer', nullable: true })
  tokenLimit: number | null = null;

  @Enum({ items: () => QuotaPeriod, type: 'text' })
  quotaPeriod: QuotaPeriod = QuotaPeriod.NONE;

  @Property({ type: 'timestamptz' })
  createdAt: Date = new Date();

  @Property({ type: 'timestamptz', nullable: true })
  lastUsedAt: Date | null = null;

  @Property({ type: 'timestamptz', nullable: true })
  revokedAt: Date | null = null;
}
