import type { EntityManager } from '@mikro-orm/postgresql';
import { DatabaseError } from 'pg';
import { changedFields, type AuditService } from '../audit/audit.service';
import { AuditAction } from '../audit/audit.types';
import type { Viewer } from '../auth/viewer';
import type { Database, Sql } from '../db/database';
import { BadUserInputError } from '../errors';
import type { Logger } from '../logger';
import { validTokenLimit } from '../quota/quota-input';
import type { QuotaService } from '../quota/quota.service';
import { isUuid } from '../rules';
import { QuotaPeriod, User } from '../users/user.entity';
import { Team } from './team.entity';
import type { CreateTeamInput, UpdateTeamInput } from './team.types';

const MAX_NAME_LENGTH = 100;
const TEAM_COLUMNS = 'id, name, token_limit, quota_period, created_at, updated_at';

interface TeamRow {
  id: string;
  name: string;
  token_limit: number | null;
  quota_period: QuotaPeriod;
  /** As text, the way MikroORM reads timestamps; `em.map` converts them. */
  created_at: string;
  updated_at: string;
}

function validName(name: string): string {
  const trimmed = name.trim();
  if (trimmed === '' || trimmed.length > MAX_NAME_LENGTH) {
    throw new BadUserInputError(`The team needs a name of 1 to ${MAX_NAME_LENGTH} characters.`, 'name');
  }
  return trimmed;
}

function isDuplicateName(error: unknown): boolean {
  return error instanceof DatabaseError && error.code === '23505' && error.constraint === 'teams_name_unique';
}

function rowToTeam(em: EntityManager, row: TeamRow): Team {
  return em.map(Team, row);
}

/** Teams, their membership and their budgets (the ledger itself is the QuotaService's). */
export class TeamService {
  constructor(
    private readonly quota: QuotaService,
    private readonly audit: AuditService,
    private readonly log: Logger,
    private readonly db: Database,
  ) {}

  list(): Promise<Team[]> {
    return this.db.em().find(Team, {}, { orderBy: { name: 'asc', id: 'asc' } });
  }

  async get(id: string): Promise<Team | null> {
    if (!isUuid(id)) return null;
    return this.db.em().findOne(Team, { id });
  }

  /** Several teams by id in one query, in the order given (null where none has the id): for a page of `users { team }`. */
  async getMany(ids: readonly string[]): Promise<(Team | null)[]> {
    const teams = await this.db.em().find(Team, { id: { $in: ids.filter(isUuid) } });
    const byId = new Map(teams.map((team) => [team.id, team]));
    return ids.map((id) => byId.get(id) ?? null);
  }

  members(teamId: string): Promise<User[]> {
    return this.db.em().find(User, { teamId }, { orderBy: { email: 'asc' } });
  }

  /** The id of an existing team, or BAD_USER_INPUT naming `field`. */
  async assertExists(sql: Sql, teamId: string, field: string): Promise<string> {
    const team = isUuid(teamId) ? await sql.one<{ id: string }>('select id from teams where id = $1', [teamId]) : undefined;
    if (team === undefined) throw new BadUserInputError('No team has this id.', field);
    return team.id;
  }

  async create(actor: Viewer, input: CreateTeamInput, clientAddress: string): Promise<Team> {
    const team = new Team();
    team.name = validName(input.name);
    team.tokenLimit = validTokenLimit(input.tokenLimit, 'tokenLimit');
    team.quotaPeriod = input.quotaPeriod ?? QuotaPeriod.NONE;
    try {
      await this.db.transaction(async (tx) => {
        await tx.query(
          `insert into teams (id, name, token_limit, quota_period, created_at, updated_at) values ($1, $2, $3, $4, $5, $5)`,
          [team.id, team.name, team.tokenLimit, team.quotaPeriod, team.createdAt],
        );
        await this.quota.openAccount(tx, 'TEAM', team.id);
        await this.audit.record(tx, {
          action: AuditAction.TEAM_CREATED,
          actor: { userId: actor.userId, ip: clientAddress },
          targetUserId: null,
          details: { teamId: team.id, name: team.name, tokenLimit: team.tokenLimit, quotaPeriod: team.quotaPeriod },
        });
      });
    } catch (error) {
      if (isDuplicateName(error)) throw new BadUserInputError('A team with this name already exists.', 'name');
      throw error;
    }
    this.log.info({ event: 'team_created', teamId: team.id }, 'team created');
    return team;
  }

  async update(actor: Viewer, id: string, input: UpdateTeamInput, clientAddress: string): Promise<Team> {
    const name = input.name == null ? undefined : validName(input.name);
    const tokenLimit = input.tokenLimit === undefined ? undefined : validTokenLimit(input.tokenLimit, 'tokenLimit');
    try {
      const updated = await this.db.transaction(async (tx) => {
        const team = isUuid(id) ? await tx.one<TeamRow>(`select ${TEAM_COLUMNS} from teams where id = $1 for no key update`, [id]) : undefined;
        if (team === undefined) throw new BadUserInputError('No team has this id.', 'id');
        const quotaPeriod = input.quotaPeriod ?? team.quota_period;
        const newTokenLimit = tokenLimit === undefined ? team.token_limit : tokenLimit;
        await this.audit.record(tx, {
          action: AuditAction.TEAM_UPDATED,
          actor: { userId: actor.userId, ip: clientAddress },
          targetUserId: null,
          details: {
            teamId: team.id,
            changes: changedFields(
              { name: team.name, tokenLimit: team.token_limit, quotaPeriod: team.quota_period },
              { name: name ?? team.name, tokenLimit: newTokenLimit, quotaPeriod },
            ),
          },
        });
        const [row] = await tx.query<TeamRow>(
          `update teams set name = $2, token_limit = $3, quota_period = $4, updated_at = now() where id = $1 returning ${TEAM_COLUMNS}`,
          [team.id, name ?? team.name, newTokenLimit, quotaPeriod],
        );
        if (quotaPeriod !== team.quota_period) await this.quota.recountPeriod(tx, 'TEAM', team.id, quotaPeriod);
        return row;
      });
      this.log.info({ event: 'team_updated', teamId: updated.id }, 'team updated');
      return rowToTeam(this.db.em(), updated);
    } catch (error) {
      if (isDuplicateName(error)) throw new BadUserInputError('A team with this name already exists.', 'name');
      throw error;
    }
  }
}
