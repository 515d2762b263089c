import { Arg, Ctx, Directive, FieldResolver, ID, Int, Mutation, Query, Resolver, Root } from 'type-graphql';
import { CurrentViewer, type Viewer } from '../auth/viewer';
import type { GraphQLContext } from '../context';
import { createUsageLoader } from '../quota/usage-loader';
import { QuotaUsage } from '../quota/quota.types';
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
  usage(@Root() user: UserType, @CurrentViewer() viewer: Viewer, @Ctx() ctx: GraphQLContext): Promise<QuotaUsage> {
    ctx.services.users.assertMaySeeUsage(viewer, user.id);
    ctx.usageLoader ??= createUsageLoader(ctx.services.quota);
    return ctx.usageLoader.load(user);
  }
}
