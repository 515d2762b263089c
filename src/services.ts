import { AuditService } from './audit/audit.service';
import { ApiKeyService } from './auth/api-key.service';
import { AuthService } from './auth/auth.service';
import { PasswordHasher } from './auth/passwords';
import { ChatAdmission } from './chat/chat-admission';
import { ChatService } from './chat/chat.service';
import { PromptCounter } from './chat/prompt-counter';
import { PromptBounds } from './chat/prompt-bound';
import type { Clock } from './clock';
import type { Config } from './config';
import type { Database } from './db/database';
import type { Logger } from './logger';
import { GatewayMetrics } from './metrics/metrics';
import type { GatewayInstance } from './quota/gateway-instance';
import { QuotaService } from './quota/quota.service';
import { RateLimiter } from './quota/rate-limiter';
import type { ServerInfo } from './server-info/server-info.resolver';
import { TeamService } from './teams/team.service';
import type { Fleet } from './upstreams/fleet';
import type { UsageBus } from './usage/usage-bus';
import { UsageService } from './usage/usage.service';
import { UserService } from './users/user.service';

/** The composition root's product: one instance of each service, shared by every request. */
export interface Services {
  readonly config: Config;
  readonly log: Logger;
  readonly db: Database;
  readonly clock: Clock;
  readonly serverInfo: ServerInfo;
  readonly audit: AuditService;
  readonly auth: AuthService;
  readonly apiKeys: ApiKeyService;
  readonly users: UserService;
  readonly teams: TeamService;
  readonly quota: QuotaService;
  /** This process as the instances sharing the database see it. */
  readonly instance: GatewayInstance;
  readonly rateLimiter: RateLimiter;
  readonly chatAdmission: ChatAdmission;
  readonly chat: ChatService;
  readonly fleet: Fleet;
  readonly usageBus: UsageBus;
  readonly usage: UsageService;
  readonly metrics: GatewayMetrics;
}

export interface ServiceDependencies {
  readonly config: Config;
  readonly log: Logger;
  readonly db: Database;
  readonly clock: Clock;
  readonly serverInfo: ServerInfo;
  readonly fleet: Fleet;
  readonly usageBus: UsageBus;
  readonly instance: GatewayInstance;
}

export function createServices(deps: ServiceDependencies): Services {
  const { config, log, db, clock, fleet, usageBus, instance } = deps;
  const metrics = new GatewayMetrics(fleet);
  const audit = new AuditService(config.audit, db, clock, log);
  const auth = new AuthService(config, new PasswordHasher(config.passwordHash), audit, log, db);
  const rateLimiter = new RateLimiter(config.rateLimit, db);
  // Kept for the instances from before instances were tracked, which judge reservations by age:
  // a minute past the upstream timeout, their reaper may give one back.
  const quota = new QuotaService(db, rateLimiter, clock, log, Math.ceil(config.vllm.timeoutMs / 1000) + 60, metrics, instance, config.orphans.settleAfterMs);
  const promptCounter = new PromptCounter(config.vllm.tiktokenMargin);
  const teams = new TeamService(quota, audit, log, db);
  return {
    config,
    log,
    db,
    clock,
    serverInfo: deps.serverInfo,
    audit,
    auth,
    apiKeys: new ApiKeyService(auth, audit, quota, log, db),
    users: new UserService(config, auth, audit, quota, teams, log, db),
    teams,
    quota,
    instance,
    rateLimiter,
    chatAdmission: new ChatAdmission(config, fleet, promptCounter, new PromptBounds(log), quota, rateLimiter, metrics, log),
    chat: new ChatService(config, fleet, promptCounter, log),
    fleet,
    usageBus,
    usage: new UsageService(usageBus, auth, db),
    metrics,
  };
}
