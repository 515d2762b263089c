import 'reflect-metadata';
import type { MikroORM } from '@mikro-orm/postgresql';
import { startAuditRetention } from '../audit/retention';
import { systemClock, type Clock } from '../clock';
import type { Config } from '../config';
import { connectDatabase, migrate, whileHoldingStartLock } from '../db/connect';
import { startEmbeddedPostgres } from '../db/embedded';
import { PgNotifications } from '../db/notifications';
import { createLogger, type Logger } from '../logger';
import { GatewayInstance } from '../quota/gateway-instance';
import { startQuotaMaintenance } from '../quota/maintenance';
import { connectFleet } from '../upstreams/connect';
import { createServices, type Services } from '../services';
import { PgUsageBus } from '../usage/usage-bus';
import { VERSION } from '../version';
import { startHttp, type HostScope } from './http-server';
import { Lifecycle } from './lifecycle';
import { LocalConnectionSlots } from './sockets';

export interface GatewayServer {
  /** http://host:port/graphql */
  readonly url: string;
  /** ws://host:port/graphql */
  readonly wsUrl: string;
  readonly origin: string;
  readonly orm: MikroORM;
  readonly services: Services;
  /** Set when this start created the first admin; `generatedPassword` only when none was configured. */
  readonly adminBootstrap: { email: string; generatedPassword: string | null } | null;
  /** Drains in-flight requests, closes sockets, then releases the database and upstream. */
  stop(): Promise<void>;
}

/** A worker's part of a host of several (WORKERS above 1), handed over by the primary. */
export interface WorkerShare extends HostScope {
  /** The database the primary prepared (the configured one, or the embedded one it started) and migrated. */
  readonly databaseUrl: string;
  /** The built-in simulator the primary started; null when upstreams are configured. */
  readonly simulatorUrl: string | null;
}

export interface ServerOptions {
  log?: Logger;
  /** Tests inject a clock to cross quota period boundaries. */
  clock?: Clock;
  /** Set in a worker: what the primary started and keeps for every worker. */
  worker?: WorkerShare;
}

/** The gateway, started step by step (see the log's `step` names); `stop` undoes them in reverse. */
export function createServer(config: Config, options: ServerOptions = {}): Promise<GatewayServer> {
  const log = options.log ?? createLogger(config);
  const life = new Lifecycle(log);
  const worker = options.worker ?? null;
  return life.run(async () => {
    const databaseUrl =
      worker?.databaseUrl ??
      config.databaseUrl ??
      (await life.step('embedded PostgreSQL', () => startEmbeddedPostgres(config.dataDir, log), (pg) => pg.stop())).url;
    const { orm, db } = await life.step('database pools', () => connectDatabase(databaseUrl, config, log), (pools) => pools.close());
    const upstreams = await life.step('upstreams', () => connectFleet(config, log, worker?.simulatorUrl ?? null), (connection) => connection.close());
    const notifications = await life.step(
      'notification connection',
      async () => {
        const listening = new PgNotifications(databaseUrl, log);
        await listening.start();
        return listening;
      },
      (listening) => listening.stop(),
    );
    const instance = new GatewayInstance(db, notifications, log);
    const services = createServices({
      config,
      log,
      db,
      clock: options.clock ?? systemClock,
      fleet: upstreams.fleet,
      usageBus: new PgUsageBus(notifications),
      instance,
      serverInfo: { version: VERSION, upstreamBaseUrl: upstreams.fleet.members[0].baseUrl, simulator: upstreams.builtInSimulator, environment: config.env },
    });
    // Stopped after HTTP (whose last requests may end while the database is away), before the pools.
    await life.step(
      'pending settlements',
      () => {
        services.quota.pendingSettlements.followListening(notifications);
        return services.quota.pendingSettlements;
      },
      (pending) => pending.finish(),
    );
    // Instances and workers take turns under the start lock: the first creates the admin, the
    // others find it. A worker's migrations were the primary's, before it forked.
    const adminBootstrap = await life.step('migrations and first admin', () =>
      whileHoldingStartLock(databaseUrl, async () => {
        if (config.migrateOnStart && worker === null) await migrate(databaseUrl, log);
        return services.users.bootstrapAdmin();
      }),
    );
    // The dummy hash, made now, so the first unknown-email sign-in costs what the others do.
    await life.step('password hasher', () => services.auth.passwords.verifyDummy('warm-up'));
    await life.step('instance registration', () => instance.start(), (registered) => registered.stop());
    await life.step('quota maintenance', async () => startQuotaMaintenance(services.quota, services.rateLimiter, log), (jobs) => jobs.stop());
    await life.step('audit log retention', () => startAuditRetention(services.audit, log), (job) => job.stop());
    const host: HostScope = worker ?? { connectionSlots: new LocalConnectionSlots(config.ws.maxConnectionsPerUser), metrics: services.metrics };
    const http = await life.step('HTTP and WebSocket', () => startHttp(config, services, notifications, host, log), (endpoint) => endpoint.stop());
    return { url: http.url, wsUrl: http.wsUrl, origin: http.origin, orm, services, adminBootstrap, stop: () => life.stop() };
  });
}
