import { Arg, Ctx, Directive, ID, Int, Query, Resolver, Root, Subscription, type SubscribeResolverData } from 'type-graphql';
import { DateTimeResolver } from 'graphql-scalars';
import { CurrentViewer, viewerOf, type Viewer } from '../auth/viewer';
import type { GraphQLContext } from '../context';
import { UsageBucket, UsageEvent, UsageGrouping, UsageRecordConnection } from './usage.types';

@Resolver()
export class UsageResolver {
  @Directive('@auth')
  @Query(() => UsageRecordConnection, { description: "Usage records, newest first: your own, or any user's for an admin." })
  usage(
    @CurrentViewer() viewer: Viewer,
    @Ctx() ctx: GraphQLContext,
    @Arg('userId', () => ID, { nullable: true }) userId?: string | null,
    @Arg('from', () => DateTimeResolver, { nullable: true, description: 'Inclusive.' }) from?: Date | null,
    @Arg('to', () => DateTimeResolver, { nullable: true, description: 'Exclusive.' }) to?: Date | null,
    @Arg('first', () => Int, { nullable: true, description: '1 to 500; 50 when omitted.' }) first?: number | null,
    @Arg('after', () => String, { nullable: true }) after?: string | null,
  ): Promise<UsageRecordConnection> {
    return ctx.services.usage.history(viewer, { userId, from, to, first, after });
  }

  @Directive('@auth')
  @Query(() => [UsageBucket], { description: 'Totals per UTC day or per model, for charts.' })
  usageSummary(
    @CurrentViewer() viewer: Viewer,
    @Ctx() ctx: GraphQLContext,
    @Arg('groupBy', () => UsageGrouping) groupBy: UsageGrouping,
    @Arg('userId', () => ID, { nullable: true }) userId?: string | null,
    @Arg('from', () => DateTimeResolver, { nullable: true }) from?: Date | null,
    @Arg('to', () => DateTimeResolver, { nullable: true }) to?: Date | null,
  ): Promise<UsageBucket[]> {
    return ctx.services.usage.summary(viewer, { userId, from, to }, groupBy);
  }

  @Directive('@auth')
  @Subscription(() => UsageEvent, {
    description: "Your own usage events as requests settle; an admin gets one user's (userId) or everyone's (userId omitted).",
    subscribe: ({ args, context }: SubscribeResolverData<unknown, { userId?: string | null }, GraphQLContext>) =>
      context.services.usage.live(viewerOf(context), args.userId),
  })
  usageUpdated(@Root() event: UsageEvent, @Arg('userId', () => ID, { nullable: true }) _userId?: string | null): UsageEvent {
    return event;
  }
}
