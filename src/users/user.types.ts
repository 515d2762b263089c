import { Field, ID, InputType, Int, ObjectType, registerEnumType } from 'type-graphql';
import { DateTimeResolver } from 'graphql-scalars';
import { PageInfo } from '../graphql/pagination';
import { QuotaPeriod, Role } from './user.entity';

registerEnumType(Role, { name: 'Role', description: 'ADMIN can do everything USER can, and manage users.' });
registerEnumType(QuotaPeriod, {
  name: 'QuotaPeriod',
  description: 'NONE is a lifetime quota; DAILY and MONTHLY reset at UTC calendar boundaries.',
});

@ObjectType('User')
export class UserType {
  @Field(() => ID)
  id!: string;

  @Field(() => String)
  email!: string;

  @Field(() => Role)
  role!: Role;

  @Field(() => Boolean)
  disabled!: boolean;

  @Field(() => Int, { nullable: true, description: 'Tokens per period; null is unlimited.' })
  tokenLimit!: number | null;

  @Field(() => QuotaPeriod)
  quotaPeriod!: QuotaPeriod;

  @Field(() => DateTimeResolver)
  createdAt!: Date;
}

@ObjectType()
export class UserEdge {
  @Field(() => String)
  cursor!: string;

  @Field(() => UserType)
  node!: UserType;
}

@ObjectType()
export class UserConnection {
  @Field(() => [UserEdge])
  edges!: UserEdge[];

  @Field(() => [UserType], { description: 'The edges’ nodes, for clients that need no cursors.' })
  nodes!: UserType[];

  @Field(() => PageInfo)
  pageInfo!: PageInfo;

  @Field(() => Int, { description: 'Users matching `search`, across all pages.' })
  totalCount!: number;
}

@InputType()
export class CreateUserInput {
  @Field(() => String)
  email!: string;

  @Field(() => String, { description: '12 to 256 characters.' })
  password!: string;

  @Field(() => Role, { nullable: true, description: 'USER when omitted.' })
  role?: Role | null;

  @Field(() => Int, { nullable: true, description: 'null or omitted: unlimited.' })
  tokenLimit?: number | null;

  @Field(() => QuotaPeriod, { nullable: true, description: 'NONE when omitted.' })
  quotaPeriod?: QuotaPeriod | null;

  @Field(() => ID, { nullable: true, description: 'The team to join; none when omitted.' })
  teamId?: string | null;
}

@InputType({ description: 'Only the fields given change. tokenLimit: null makes the user unlimited.' })
export class UpdateUserInput {
  @Field(() => String, { nullable: true })
  email?: string | null;

  @Field(() => String, { nullable: true, description: 'Ends every session of the user.' })
  password?: string | null;

  @Field(() => Role, { nullable: true, description: 'Ends every session of the user.' })
  role?: Role | null;

  @Field(() => Int, { nullable: true })
  tokenLimit?: number | null;

  @Field(() => QuotaPeriod, { nullable: true })
  quotaPeriod?: QuotaPeriod | null;

  @Field(() => Boolean, { nullable: true, description: 'Disabling ends every session and API key use at once.' })
  disabled?: boolean | null;

  @Field(() => ID, { nullable: true, description: 'Moves the user to this team; null takes them out of theirs. Requests already running stay charged where they started.' })
  teamId?: string | null;
}
