import { Field, ID, InputType, Int, ObjectType } from 'type-graphql';
import { DateTimeResolver } from 'graphql-scalars';
import { QuotaPeriod } from '../users/user.entity';

@ObjectType('Team', { description: "A group of users with a budget of its own: a member's request must fit in the team's quota and in theirs." })
export class TeamType {
  @Field(() => ID)
  id!: string;

  @Field(() => String)
  name!: string;

  @Field(() => Int, { nullable: true, description: 'Tokens per period for all members together; null is unlimited.' })
  tokenLimit!: number | null;

  @Field(() => QuotaPeriod)
  quotaPeriod!: QuotaPeriod;

  @Field(() => DateTimeResolver)
  createdAt!: Date;
}

@InputType()
export class CreateTeamInput {
  @Field(() => String, { description: '1 to 100 characters, unique (case-insensitively).' })
  name!: string;

  @Field(() => Int, { nullable: true, description: 'null or omitted: unlimited.' })
  tokenLimit?: number | null;

  @Field(() => QuotaPeriod, { nullable: true, description: 'NONE when omitted.' })
  quotaPeriod?: QuotaPeriod | null;
}

@InputType({ description: 'Only the fields given change. tokenLimit: null makes the team unlimited.' })
export class UpdateTeamInput {
  @Field(() => String, { nullable: true })
  name?: string | null;

  @Field(() => Int, { nullable: true })
  tokenLimit?: number | null;

  @Field(() => QuotaPeriod, { nullable: true, description: "A new period recounts the team's usage from the records of the new current period." })
  quotaPeriod?: QuotaPeriod | null;
}
