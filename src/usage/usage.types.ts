import { Field, ID, Int, ObjectType, registerEnumType } from 'type-graphql';
import { DateTimeResolver } from 'graphql-scalars';
import { PageInfo } from '../graphql/pagination';

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

export enum UsageGrouping {
  DAY = 'DAY',
  MODEL = 'MODEL',
}
registerEnumType(UsageGrouping, { name: 'UsageGrouping', description: 'DAY buckets are UTC calendar days.' });

@ObjectType({ description: 'One settled request, as charged.' })
export class UsageRecord {
  @Field(() => ID)
  id!: string;

  @Field(() => ID)
  requestId!: string;

  @Field(() => ID)
  userId!: string;

  @Field(() => String)
  model!: string;

  @Field(() => String, { description: 'graphql or openai: which API the request came through.' })
  interface!: string;

  @Field(() => Int)
  promptTokens!: number;

  @Field(() => Int)
  completionTokens!: number;

  @Field(() => Int)
  totalTokens!: number;

  @Field(() => Int, { description: 'What counted against the quota (equals totalTokens unless the upstream overran its reservation).' })
  chargedTokens!: number;

  @Field(() => Boolean, { description: 'True when the upstream never reported usage and the gateway counted what it received.' })
  estimated!: boolean;

  @Field(() => String, { description: 'completed, aborted (client left), cut, upstream_error or timeout.' })
  status!: string;

  @Field(() => Int)
  latencyMs!: number;

  @Field(() => String, { nullable: true, description: 'The upstream (its configured name) that served the request; null for records from before fleets.' })
  upstream!: string | null;

  @Field(() => DateTimeResolver)
  createdAt!: Date;
}

@ObjectType()
export class UsageRecordEdge {
  @Field(() => String)
  cursor!: string;

  @Field(() => UsageRecord)
  node!: UsageRecord;
}

@ObjectType({ description: 'Newest first.' })
export class UsageRecordConnection {
  @Field(() => [UsageRecordEdge])
  edges!: UsageRecordEdge[];

  @Field(() => [UsageRecord])
  nodes!: UsageRecord[];

  @Field(() => PageInfo)
  pageInfo!: PageInfo;
}

@ObjectType({ description: 'Totals of one bucket: a UTC day or a model.' })
export class UsageBucket {
  @Field(() => String, { description: 'The day (YYYY-MM-DD) or the model name.' })
  key!: string;

  @Field(() => DateTimeResolver, { nullable: true, description: 'Start of the day, for DAY buckets.' })
  day!: Date | null;

  @Field(() => String, { nullable: true, description: 'For MODEL buckets.' })
  model!: string | null;

  @Field(() => Int)
  requests!: number;

  @Field(() => Int)
  promptTokens!: number;

  @Field(() => Int)
  completionTokens!: number;

  @Field(() => Int)
  totalTokens!: number;

  @Field(() => Int)
  chargedTokens!: number;
}
