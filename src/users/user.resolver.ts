import { Arg, Ctx, Directive, FieldResolver, ID, Int, Mutation, Query, Resolver, Root } from 'type-graphql';
import { CurrentViewer, type Viewer } from '../auth/viewer';
import type { GraphQLContext } from '../context';
import { loadUsage } from '../quota/usage-loader';
import { QuotaUsage } from '../quota/quota.types';
import type { Team } from '../teams/team.entity';
import { loadTeam } from '../teams/team-loader';
import { TeamType } from '../teams/team.types';
import type { User } from './user.entity';
import { CreateUserInput, UpdateUserInput, UserConnection, UserType } from './user.types';

@Resolver(() => UserType)
export class UserResolver {
  @Directive('@auth')
  @Query(() => UserType, { description: 'The signed-in user.' })
  me(@CurrentViewer() viewer: Viewer, @Ctx() ctx: GraphQLContext): Promise<User> {
    return ctx.services.users.me(viewer);
  }

  @Directive('@auth(role: ADMIN)')
  @Query(() => UserType, { nullable: true, description: 'null when no user has this id.' })
  user(@Arg('id', () => ID) id: string, @Ctx() ctx: GraphQLContext): Promise<User | null> {
    return ctx.services.users.get(id);
  }

  @Directive('@auth(role: ADMIN)')
  @Query(() => UserConnection, { description: 'Users in creation order; search matches part of the email.' })
  users(
    @Ctx() ctx: GraphQLContext,
    @Arg('first', () => Int, { nullable: true, description: '1 to 100; 20 when omitted.' }) first?: number | null,
    @Arg('after', () => String, { nullable: true }) after?: string | null,
    @Arg('search', () => String, { nullable: true }) search?: string | null,
  ): Promise<UserConnection> {
    return ctx.services.users.list({ first, after, search });
  }

  @Directive('@auth(role: ADMIN)')
  @Mutation(() => UserType)
  createUser(@Arg('input', () => CreateUserInput) input: CreateUserInput, @CurrentViewer() viewer: Viewer, @Ctx() ctx: GraphQLContext): Promise<User> {
    return ctx.services.users.create(viewer, input, ctx.clientAddress);
  }

  @Directive('@auth(role: ADMIN)')
  @Mutation(() => UserType)
  updateUser(
    @Arg('id', () => ID) id: string,
    @Arg('input', () => UpdateUserInput) input: UpdateUserInput,
    @CurrentViewer() viewer: Viewer,
    @Ctx() ctx: GraphQLContext,
  ): Promise<User> {
    return ctx.services.users.update(viewer, id, input, ctx.clientAddress);
  }

  @FieldResolver(() => QuotaUsage, { description: "Spend in the current period; an admin's or your own." })
  usage(@Root() user: User, @CurrentViewer() viewer: Viewer, @Ctx() ctx: GraphQLContext): Promise<QuotaUsage> {
    ctx.services.users.assertMaySeeUsage(viewer, user.id);
    return loadUsage(ctx, { scope: 'USER', id: user.id, tokenLimit: user.tokenLimit, quotaPeriod: user.quotaPeriod });
  }

  @FieldResolver(() => TeamType, { nullable: true, description: "The team the user belongs to; an admin's or your own." })
  async team(@Root() user: User, @CurrentViewer() viewer: Viewer, @Ctx() ctx: GraphQLContext): Promise<Team | null> {
    ctx.services.users.assertMaySeeUsage(viewer, user.id);
    return user.teamId === null ? null : loadTeam(ctx, user.teamId);
  }
}
