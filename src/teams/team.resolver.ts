import { Arg, Ctx, Directive, FieldResolver, ID, Mutation, Query, Resolver, Root } from 'type-graphql';
import { CurrentViewer, type Viewer } from '../auth/viewer';
import type { GraphQLContext } from '../context';
import { QuotaUsage } from '../quota/quota.types';
import { loadUsage } from '../quota/usage-loader';
import type { User } from '../users/user.entity';
import { UserType } from '../users/user.types';
import type { Team } from './team.entity';
import { CreateTeamInput, TeamType, UpdateTeamInput } from './team.types';

@Resolver(() => TeamType)
export class TeamResolver {
  @Directive('@auth(role: ADMIN)')
  @Query(() => [TeamType], { description: 'Every team, by name.' })
  teams(@Ctx() ctx: GraphQLContext): Promise<Team[]> {
    return ctx.services.teams.list();
  }

  @Directive('@auth(role: ADMIN)')
  @Query(() => TeamType, { nullable: true, description: 'null when no team has this id.' })
  team(@Arg('id', () => ID) id: string, @Ctx() ctx: GraphQLContext): Promise<Team | null> {
    return ctx.services.teams.get(id);
  }

  @Directive('@auth(role: ADMIN)')
  @Mutation(() => TeamType, { description: 'Members join with createUser or updateUser (teamId).' })
  createTeam(@Arg('input', () => CreateTeamInput) input: CreateTeamInput, @CurrentViewer() viewer: Viewer, @Ctx() ctx: GraphQLContext): Promise<Team> {
    return ctx.services.teams.create(viewer, input, ctx.clientAddress);
  }

  @Directive('@auth(role: ADMIN)')
  @Mutation(() => TeamType)
  updateTeam(
    @Arg('id', () => ID) id: string,
    @Arg('input', () => UpdateTeamInput) input: UpdateTeamInput,
    @CurrentViewer() viewer: Viewer,
    @Ctx() ctx: GraphQLContext,
  ): Promise<Team> {
    return ctx.services.teams.update(viewer, id, input, ctx.clientAddress);
  }

  // A team is reached only by an admin or, through `me { team }`, by its own member.
  @FieldResolver(() => QuotaUsage, { description: "The team's spend in the current period: what all members spent together." })
  usage(@Root() team: Team, @Ctx() ctx: GraphQLContext): Promise<QuotaUsage> {
    return loadUsage(ctx, { scope: 'TEAM', id: team.id, tokenLimit: team.tokenLimit, quotaPeriod: team.quotaPeriod });
  }

  @Directive('@auth(role: ADMIN)')
  @FieldResolver(() => [UserType], { description: 'By email.' })
  members(@Root() team: Team, @Ctx() ctx: GraphQLContext): Promise<User[]> {
    return ctx.services.teams.members(team.id);
  }
}
