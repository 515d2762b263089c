import type { MikroORM } from '@mikro-orm/postgresql';
import { ApiKeyService } from './auth/api-key.service';
import { AuthService } from './auth/auth.service';
import { PasswordHasher } from './auth/passwords';
import type { Clock } from './clock';
import type { Config } from './config';
import type { Database } from './db/database';
import type { Logger } from './logger';
import { ChatService } from './chat/chat.service';
import { PromptCounter } from './chat/prompt-counter';
import { Upstream } from './chat/upstream';
import { QuotaService } from './quota/quota.service';
import { RateLimiter } from './quota/rate-limiter';
import type { UsageBus } from './usage/usage-bus';
import { UsageService } from './usage/usage.service';
import type { ServerInfo } from './server-info/server-info.resolver';
import { UserService } from './users/user.service';

/** The composition root's product: one instance of each service, shared by every request. */
export interface Services {
  readonly config: Config;
  readonly log: Logger;
  readonly orm: MikroORM;
  readonly db: Database;
  readonly clock: Clock;
  readonly serverInfo: ServerInfo;
  readonly auth: AuthService;
  readonly apiKeys: ApiKeyService;
  readonly users: UserService;
  readonly quota: QuotaService;
  readonly upstream: Upstream;
  readonly chat: ChatService;
  readonly usageBus: UsageBus;
  readonly usage: UsageService;
  readonly rateLimiter: RateLimiter;
}

export function createServices(deps: {
  config: Config;
  log: Logger;
  orm: MikroORM;
  db: Database;
  clock: Clock;
  serverInfo: ServerInfo;
  upstreamBaseUrl: string;
  usageBus: UsageBus;
}): Services {
  const { config, log, clock, usageBus, upstreamBaseUrl, ...rest } = deps;
  const auth = new AuthService(config, new PasswordHasher(config.passwordHash), log, deps.db);
  // A reservation outlives its request only if the process died; a minute past the upstream
  // timeout, the reaper may safely give it back.
  const quota = new QuotaService(clock, log, Math.ceil(config.vllm.timeoutMs / 1000) + 60);
  const upstream = new Upstream({ baseUrl: upstreamBaseUrl, apiKey: config.vllm.apiKey, timeoutMs: config.vllm.timeoutMs, log });
  const rateLimiter = new RateLimiter(config.rateLimit, deps.db);
  const chat = new ChatService(config, upstream, new PromptCounter(upstream, config.vllm.tiktokenMargin), quota, usageBus, rateLimiter, log);
  return {
    ...rest,
    config,
    log,
    clock,
    auth,
    apiKeys: new ApiKeyService(auth, log, deps.db),
    users: new UserService(config, auth, quota, log, deps.db),
    quota,
    upstream,
    chat,
    usageBus,
    usage: new UsageService(usageBus, auth, deps.db),
    rateLimiter,
  };
}
