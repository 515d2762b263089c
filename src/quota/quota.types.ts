import { Field, Int, ObjectType } from 'type-graphql';
import { DateTimeResolver } from 'graphql-scalars';

@ObjectType({ description: "The spend of a user, a team or an API key in the current quota period. limit and remaining are null when unlimited." })
export class QuotaUsage {
  @Field(() => Int, { description: 'Tokens charged (prompt + completion) in the current period.' })
  used!: number;

  @Field(() => Int, { nullable: true })
  limit!: number | null;

  @Field(() => Int, { nullable: true, description: 'What can still be spent: limit - used - reserved.' })
  remaining!: number | null;

  @Field(() => Int, { description: 'Tokens held by requests in flight; settled or released when they end.' })
  reserved!: number;

  @Field(() => DateTimeResolver, { nullable: true, description: 'Start of the current period; null for a lifetime quota.' })
  periodStart!: Date | null;

  @Field(() => DateTimeResolver, { nullable: true, description: 'When the current period ends (exclusive); null for a lifetime quota.' })
  periodEnd!: Date | null;
}
