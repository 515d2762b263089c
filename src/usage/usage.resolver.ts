import { Arg, Ctx, Directive, ID, Int, Query, Resolver, Root, Subscription, type SubscribeResolverData } from 'type-graphql';
import { DateTimeResolver } from 'graphql-scalars';
import { CurrentViewer, viewerOf, type Viewer } from '../auth/viewer';
import type { GraphQLContext } from '../context';
import { UsageBucket, UsageEvent, UsageGrouping, UsageRecordConnection } from './usage.types';

@Resolver()
export class UsageResolver {
  @Directive('@auth')
  @Query(() => UsageRecordConnection, {
    description: "Usage records, newest first: your own (or one key's of yours); an admin's choice of user, team or key.",
  })
  usage(
    @CurrentViewer() viewer: Viewer,
    @Ctx() ctx: GraphQLContext,
    @Arg('userId', () => ID, { nullable: true }) userId?: string | null,
    @Arg('teamId', () => ID, { nullable: true, description: 'The records charged to this team (ADMIN).' }) teamId?: string | null,
    @Arg('apiKeyId', () => ID, { nullable: true, description: "The records made with this key: yours, or anyone's for an admin." })
    apiKeyId?: string | null,
    @Arg('from', () => DateTimeResolver, { nullable: true, description: 'Inclusive.' }) from?: Date | null,
    @Arg('to', () => DateTimeResolver, { nullable: true, description: 'Exclusive.' }) to?: Date | null,
    @Arg('first', () => Int, { nullable: true, description: '1 to 500; 50 when omitted.' }) first?: number | null,
    @Arg('after', () => String, { nullable: true }) after?: string | null,
  ): Promise<UsageRecordConnection> {
    return ctx.services.usage.history(viewer, { userId, teamId, apiKeyId, from, to, first, after });
  }

  @Directive('@auth')
  @Query(() => [UsageBucket], { description: 'Totals per UTC day, model, user, team or API key, for charts; filtered like usage.' })
  usageSummary(
    @CurrentViewer() viewer: Viewer,
    @Ctx() ctx: GraphQLContext,
    @Arg('groupBy', () => UsageGrouping) groupBy: UsageGrouping,
    @Arg('userId', () => ID, { nullable: true }) userId?: string | null,
    @Arg('teamId', () => ID, { nullable: true, description: 'The records charged to this team (ADMIN).' }) teamId?: string | null,
    @Arg('apiKeyId', () => ID, { nullable: true, description: "The records made with this key: yours, or anyone's for an admin." })
    apiKeyId?: string | null,
    @Arg('from', () => DateTimeResolver, { nullable: true }) from?: Date | null,
    @Arg('to', () => DateTimeResolver, { nullable: true }) to?: Date | null,
  ): Promise<UsageBucket[]> {
    return ctx.services.usage.summary(viewer, { userId, teamId, apiKeyId, from, to }, groupBy);
  }

  @Directive('@auth')
  @Subscription(() => UsageEvent, {
    description:
      "Your own usage events as requests settle; an admin gets one user's (userId), one team's (teamId: its members' requests) or everyone's (both omitted).",
    subscribe: ({ args, context }: SubscribeResolverData<unknown, { userId?: string | null; teamId?: string | null }, GraphQLContext>) =>
      context.services.usage.live(viewerOf(context), args.userId, args.teamId),
  })
  usageUpdated(
    @Root() event: UsageEvent,
    @Arg('userId', () => ID, { nullable: true }) _userId?: string | null,
    @Arg('teamId', () => ID, { nullable: true, description: 'ADMIN only.' }) _teamId?: string | null,
  ): UsageEvent {
    return event;
  }
}
