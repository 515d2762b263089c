import { Field, ID, Int, ObjectType } from 'type-graphql';
import { DateTimeResolver } from 'graphql-scalars';

@ObjectType({ description: 'One settled request: what it cost and where the quota stands after it.' })
export class UsageEvent {
  @Field(() => ID)
  requestId!: string;

  @Field(() => ID)
  userId!: string;

  @Field(() => String)
  model!: string;

  @Field(() => Int)
  promptTokens!: number;

  @Field(() => Int)
  completionTokens!: number;

  @Field(() => Int)
  totalTokens!: number;

  @Field(() => Int, { description: "The user's usage.used after this request." })
  used!: number;

  @Field(() => Int, { nullable: true, description: 'null when unlimited.' })
  remaining!: number | null;

  @Field(() => DateTimeResolver)
  at!: Date;
}
