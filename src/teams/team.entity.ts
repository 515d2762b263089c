import { randomUUID } from 'node:crypto';
import { Entity, Enum, PrimaryKey, Property } from '@mikro-orm/core';
import { QuotaPeriod } from '../users/user.entity';

/** A group of users sharing one budget, on top of each member's own. */
@Entity({ tableName: 'teams' })
export class Team {
  @PrimaryKey({ type: 'uuid' })
  id: string = randomUUID();

  /** Unique case-insensitively (a unique index on lower(name)). */
  @Property({ type: 'text' })
  name!: string;

  /** null: unlimited. */
  @Property({ type: 'integer', nullable: true })
  tokenLimit: number | null = null;

  @Enum({ items: () => QuotaPeriod, type: 'text' })
  quotaPeriod: QuotaPeriod = QuotaPeriod.NONE;

  @Property({ type: 'timestamptz' })
  createdAt: Date = new Date();

  @Property({ type: 'timestamptz', onUpdate: () => new Date() })
  updatedAt: Date = new Date();
}
