import { Field, ID, InputType, Int, ObjectType } from 'type-graphql';
import { DateTimeResolver } from 'graphql-scalars';
import { QuotaPeriod } from '../users/user.entity';
import { UserType } from '../users/user.types';

@ObjectType()
export class AuthPayload {
  @Field(() => String, { description: 'Short-lived JWT for Authorization: Bearer.' })
  accessToken!: string;

  @Field(() => String, { description: 'Opaque; trade it for a new pair with refresh. Each one works once.' })
  refreshToken!: string;

  @Field(() => DateTimeResolver, { description: 'When the access token expires.' })
  expiresAt!: Date;

  @Field(() => UserType)
  user!: UserType;
}

@ObjectType('ApiKey')
export class ApiKeyType {
  @Field(() => ID)
  id!: string;

  @Field(() => String)
  name!: string;

  @Field(() => String, { description: 'The first characters of the secret, to tell keys apart.' })
  prefix!: string;

  @Field(() => Int, { nullable: true, description: "Tokens per period spent with this key; null: unlimited, only the user's and team's quotas apply." })
  tokenLimit!: number | null;

  @Field(() => QuotaPeriod)
  quotaPeriod!: QuotaPeriod;

  @Field(() => DateTimeResolver)
  createdAt!: Date;

  @Field(() => DateTimeResolver, { nullable: true })
  lastUsedAt!: Date | null;

  @Field(() => DateTimeResolver, { nullable: true })
  revokedAt!: Date | null;
}

@ObjectType()
export class CreatedApiKey {
  @Field(() => ApiKeyType)
  apiKey!: ApiKeyType;

  @Field(() => String, { description: 'The key itself, shown this once: store it now.' })
  secret!: string;
}

@InputType({ description: 'Only the fields given change. tokenLimit: null removes the key\'s own budget.' })
export class UpdateApiKeyInput {
  @Field(() => String, { nullable: true })
  name?: string | null;

  @Field(() => Int, { nullable: true })
  tokenLimit?: number | null;

  @Field(() => QuotaPeriod, { nullable: true, description: "A new period recounts the key's usage from the records of the new current period." })
  quotaPeriod?: QuotaPeriod | null;
}
