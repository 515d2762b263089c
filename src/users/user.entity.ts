import { randomUUID } from 'node:crypto';
import { Entity, Enum, PrimaryKey, Property } from '@mikro-orm/core';

export enum Role {
  USER = 'USER',
  ADMIN = 'ADMIN',
}

/** NONE is a lifetime quota; DAILY and MONTHLY reset at UTC calendar boundaries. */
export enum QuotaPeriod {
  NONE = 'NONE',
  DAILY = 'DAILY',
  MONTHLY = 'MONTHLY',
}

@Entity({ tableName: 'users' })
export class User {
  @PrimaryKey({ type: 'uuid' })
  id: string = randomUUID();

  /** Stored lower-cased, so the unique index makes addresses unique case-insensitively. */
  @Property({ type: 'text', unique: true })
  email!: string;

  @Property({ type: 'text', hidden: true, lazy: true })
  passwordHash!: string;

  @Enum({ items: () => Role, type: 'text' })
  role: Role = Role.USER;

  @Property({ type: 'boolean' })
  disabled = false;

  /** null: unlimited. */
  @Property({ type: 'integer', nullable: true })
  tokenLimit: number | null = null;

  @Enum({ items: () => QuotaPeriod, type: 'text' })
  quotaPeriod: QuotaPeriod = QuotaPeriod.NONE;

  /** The one team the user belongs to, whose budget binds their requests too; null: none. */
  @Property({ type: 'uuid', nullable: true })
  teamId: string | null = null;

  /** Bumped on password, role or status change: every token and session issued before dies. */
  @Property({ type: 'integer' })
  tokenVersion = 0;

  @Property({ type: 'timestamptz' })
  createdAt: Date = new Date();

  @Property({ type: 'timestamptz', onUpdate: () => new Date() })
  updatedAt: Date = new Date();
}
