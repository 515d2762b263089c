import { Ctx, Field, ObjectType, Query, Resolver } from 'type-graphql';
import type { GraphQLContext } from '../context';

@ObjectType({ description: 'Public facts about this gateway, for a first request and for status pages.' })
export class ServerInfo {
  @Field(() => String)
  version!: string;

  @Field(() => String, { description: 'Base URL of the vLLM API in use, without credentials.' })
  upstreamBaseUrl!: string;

  @Field(() => Boolean, { description: 'True when the built-in vLLM simulator answers instead of a real vLLM.' })
  simulator!: boolean;

  @Field(() => String, { description: 'development, production or test.' })
  environment!: string;
}

@Resolver(() => ServerInfo)
export class ServerInfoResolver {
  @Query(() => ServerInfo)
  serverInfo(@Ctx() ctx: GraphQLContext): ServerInfo {
    return ctx.services.serverInfo;
  }
}
