import DataLoader from 'dataloader';
import type { Team } from './team.entity';
import type { TeamService } from './team.service';

export type TeamLoader = DataLoader<string, Team | null>;

/** The `team` of a user, through the request's loader (created on first use): a page of users costs one query. */
export function loadTeam(ctx: { readonly services: { readonly teams: TeamService }; teamLoader?: TeamLoader }, teamId: string): Promise<Team | null> {
  ctx.teamLoader ??= new DataLoader((ids) => ctx.services.teams.getMany(ids));
  return ctx.teamLoader.load(teamId);
}
