import { Field, ID, Int, ObjectType, registerEnumType } from 'type-graphql';
import { DateTimeResolver } from 'graphql-scalars';
import { PageInfo } from '../graphql/pagination';

/** The key of the TEAM or API_KEY bucket of records that have none. */
export const NO_BUCKET_ID = 'none';

@ObjectType({ description: 'One settled request: what it cost and where the quota stands after it.' })
export class UsageEvent {
  @Field(() => ID)
  requestId!: string;

  @Field(() => ID)
  userId!: string;

  @Field(() => ID, { nullable: true, description: 'The API key the request came with; null for an access token.' })
  apiKeyId!: string | null;

  @Field(() => ID, { nullable: true, description: 'The team it was charged to; null when the user has none.' })
  teamId!: string | null;

  @Field(() => String)
  model!: string;

  @Field(() => Int)
  promptTokens!: number;

  @Field(() => Int)
  completionTokens!: number;

  @Field(() => Int)
  totalTokens!: number;

  @Field(() => Int, { description: "Of the prompt tokens, those vLLM's prefix cache held (0 when it did not report them)." })
  cachedTokens!: number;

  @Field(() => Int, { description: "The user's usage.used after this request." })
  used!: number;

  @Field(() => Int, { nullable: true, description: 'null when unlimited.' })
  remaining!: number | null;

  @Field(() => Int, { nullable: true, description: "The team's usage.used after this request; null without a team." })
  teamUsed!: number | null;

  @Field(() => Int, { nullable: true, description: "What remains of the team's quota; null without a team or when it is unlimited." })
  teamRemaining!: number | null;

  @Field(() => Int, { nullable: true, description: "The API key's usage.used after this request; null without a key." })
  apiKeyUsed!: number | null;

  @Field(() => Int, { nullable: true, description: "What remains of the API key's quota; null without a key or when it is unlimited." })
  apiKeyRemaining!: number | null;

  @Field(() => DateTimeResolver)
  at!: Date;
}

export enum UsageGrouping {
  DAY = 'DAY',
  MODEL = 'MODEL',
  USER = 'USER',
  TEAM = 'TEAM',
  API_KEY = 'API_KEY',
}
registerEnumType(UsageGrouping, {
  name: 'UsageGrouping',
  description: 'DAY buckets are UTC calendar days; USER, TEAM and API_KEY buckets are keyed by the id.',
});

@ObjectType({ description: 'One settled request, as charged.' })
export class UsageRecord {
  @Field(() => ID)
  id!: string;

  @Field(() => ID)
  requestId!: string;

  @Field(() => ID)
  userId!: string;

  @Field(() => ID, { nullable: true, description: 'The API key the request came with; null for an access token.' })
  apiKeyId!: string | null;

  @Field(() => ID, { nullable: true, description: 'The team it was charged to; null when the user had none.' })
  teamId!: string | null;

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

  @Field(() => Int, { description: "Of the prompt tokens, those vLLM's prefix cache held (0 when it did not report them)." })
  cachedTokens!: number;

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

@ObjectType({ description: 'Totals of one bucket: a UTC day, a model, a user, a team or an API key.' })
export class UsageBucket {
  @Field(() => String, {
    description: `The day (YYYY-MM-DD), the model name, or the user's, team's or key's id (${NO_BUCKET_ID}: records with no team, or made without a key).`,
  })
  key!: string;

  @Field(() => DateTimeResolver, { nullable: true, description: 'Start of the day, for DAY buckets.' })
  day!: Date | null;

  @Field(() => String, { nullable: true, description: 'For MODEL buckets.' })
  model!: string | null;

  @Field(() => ID, { nullable: true, description: 'For USER buckets.' })
  userId!: string | null;

  @Field(() => ID, { nullable: true, description: 'For TEAM buckets; null for records with no team.' })
  teamId!: string | null;

  @Field(() => ID, { nullable: true, description: 'For API_KEY buckets; null for records made with an access token.' })
  apiKeyId!: string | null;

  @Field(() => Int)
  requests!: number;

  @Field(() => Int)
  promptTokens!: number;

  @Field(() => Int)
  completionTokens!: number;

  @Field(() => Int)
  totalTokens!: number;

  @Field(() => Int, { description: 'Cached prompt tokens of the bucket.' })
  cachedTokens!: number;

  @Field(() => Int)
  chargedTokens!: number;
}
