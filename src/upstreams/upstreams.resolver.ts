import { Ctx, Directive, Field, Int, ObjectType, Query, Resolver } from 'type-graphql';
import { DateTimeResolver } from 'graphql-scalars';
import type { GraphQLContext } from '../context';
import type { UpstreamStatus } from './fleet';

@ObjectType({ description: 'One configured vLLM server, as this gateway instance sees it.' })
export class Upstream implements UpstreamStatus {
  @Field(() => String)
  name!: string;

  @Field(() => String, { description: 'Without credentials.' })
  baseUrl!: string;

  @Field(() => Boolean, { description: 'Whether the last contact (model list or request) reached it.' })
  healthy!: boolean;

  @Field(() => [String], { description: 'The model ids it listed the last time it was asked.' })
  models!: string[];

  @Field(() => Int, { description: 'Requests of this instance waiting on it now.' })
  inFlight!: number;

  @Field(() => String, { nullable: true })
  lastError!: string | null;

  @Field(() => DateTimeResolver, { nullable: true })
  lastCheckedAt!: Date | null;
}

@Resolver()
export class UpstreamsResolver {
  @Directive('@auth(role: ADMIN)')
  @Query(() => [Upstream], { description: 'The fleet of vLLM servers behind this gateway.' })
  upstreams(@Ctx() ctx: GraphQLContext): UpstreamStatus[] {
    return ctx.services.fleet.status();
  }
}
