import { randomUUID } from 'node:crypto';
import { Entity, Index, ManyToOne, PrimaryKey, Property } from '@mikro-orm/core';
import { User } from '../users/user.entity';

/**
 * One refresh token. Rotation creates a new row in the same family and marks this one
 * replaced; presenting a replaced token again revokes the whole family.
 */
@Entity({ tableName: 'refresh_sessions' })
@Index({ properties: ['familyId'] })
export class RefreshSession {
  @PrimaryKey({ type: 'uuid' })
  id: string = randomUUID();

  @ManyToOne(() => User, { deleteRule: 'cascade' })
  user!: User;

  @Property({ type: 'uuid' })
  familyId!: string;

  /** SHA-256 of the token; the token itself is never stored. */
  @Property({ type: 'text', unique: true })
  tokenHash!: string;

  /** The user's tokenVersion when issued; a bump makes the session invalid. */
  @Property({ type: 'integer' })
  tokenVersion!: number;

  @Property({ type: 'timestamptz' })
  expiresAt!: Date;

  @Property({ type: 'timestamptz', nullable: true })
  replacedAt: Date | null = null;

  @Property({ type: 'timestamptz', nullable: true })
  revokedAt: Date | null = null;

  @Property({ type: 'timestamptz' })
  createdAt: Date = new Date();
}
