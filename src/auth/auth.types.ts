import { Field, ID, ObjectType } from 'type-graphql';
import { DateTimeResolver } from 'graphql-scalars';
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
