import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import type { ExecutionResult } from 'graphql';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import type { Clock } from '../../src/clock';
import { loadConfig, type Config } from '../../src/config';
import type { Logger } from '../../src/logger';
import { createServer, type GatewayServer } from '../../src/server';
import { startSimulator, type Simulator, type SimulatorOptions } from '../../src/simulator';
import { gql, signInAdmin, TEST_ADMIN, WsClient, type SignedIn } from './client';
import { createTestDatabase } from './database';

export const TEST_JWT_SECRET = 'test-secret-that-is-long-enough-for-hs256-0123456789';

export interface TestGateway {
  readonly server: GatewayServer;
  readonly simulator: Simulator;
  readonly databaseUrl: string;
  readonly config: Config;
  /** A POST /graphql with a typed document; returns the parsed response and the HTTP status. */
  gql<TData, TVariables>(
    document: TypedDocumentNode<TData, TVariables>,
    variables?: TVariables,
    token?: string,
  ): Promise<ExecutionResult<TData> & { status: number }>;
  /** A graphql-ws client on the server, authenticated with `token` when given; disposed by stop(). */
  ws(token?: string): WsClient;
  stop(): Promise<void>;
}

export interface TestGatewayOptions {
  env?: Record<string, string>;
  simulator?: SimulatorOptions | Simulator;
  databaseUrl?: string;
  /** Injected into the server, to cross quota period boundaries without waiting. */
  clock?: Clock;
  /** The server's logger instead of the default one, e.g. to capture its lines. */
  log?: Logger;
}

function testDataDir(): string {
  const dir = path.join(process.env.TEST_ROOT ?? '/tmp', `data-${process.pid}-${Math.random().toString(36).slice(2)}`);
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  return dir;
}

export async function startTestGateway(options: TestGatewayOptions = {}): Promise<TestGateway> {
  const simulator = options.simulator !== undefined && 'url' in options.simulator
    ? options.simulator
    : await startSimulator(options.simulator ?? {});
  const ownsSimulator = simulator !== options.simulator;
  const databaseUrl = options.databaseUrl ?? (await createTestDatabase());
  const config = loadConfig({
    NODE_ENV: 'test',
    PORT: '0',
    DATABASE_URL: databaseUrl,
    VLLM_BASE_URL: simulator.url,
    JWT_SECRET: TEST_JWT_SECRET,
    ADMIN_EMAIL: TEST_ADMIN.email,
    ADMIN_PASSWORD: TEST_ADMIN.password,
    DATA_DIR: testDataDir(),
    // OWASP's minimum argon2id cost instead of the 64 MiB default: tests create many users.
    PASSWORD_HASH_MEMORY_KIB: '19456',
    PASSWORD_HASH_TIME_COST: '2',
    PASSWORD_HASH_PARALLELISM: '1',
    ...options.env,
  });
  let server: GatewayServer;
  try {
    server = await createServer(config, { clock: options.clock, log: options.log });
  } catch (error) {
    if (ownsSimulator) await simulator.stop();
    throw error;
  }
  const clients: WsClient[] = [];

  return {
    server,
    simulator,
    databaseUrl,
    config,
    gql: (document, variables, token) => gql(server.url, document, variables, token),
    ws(token) {
      const client = new WsClient(server.wsUrl, token === undefined ? null : `Bearer ${token}`);
      clients.push(client);
      return client;
    },
    async stop() {
      await Promise.all(clients.map((client) => client.dispose()));
      await server.stop();
      if (ownsSimulator) await simulator.stop();
    },
  };
}

const repoRoot = path.resolve(__dirname, '../..');

/**
 * Fails clearly when pages the server serves from dist/ were not built (`npm test` builds
 * first; alone, run `npm run build`): a test that skipped itself would pass without running.
 */
export function requireBuilt(...files: string[]): void {
  for (const file of files) {
    if (!existsSync(path.join(repoRoot, file))) throw new Error(`${file} is missing: run \`npm run build\` first.`);
  }
}

/** A test gateway and its bootstrap admin, signed in: what most test files start from. */
export async function startWithAdmin(options: TestGatewayOptions = {}): Promise<{ gateway: TestGateway; admin: SignedIn }> {
  const gateway = await startTestGateway(options);
  return { gateway, admin: await signInAdmin(gateway) };
}

/** Undoes what a test injected into the simulator (a fault, latency), for the next test. */
export function resetSimulator(simulator: Simulator): void {
  simulator.setFault(null);
  simulator.setLatency({ timeToFirstTokenMs: 0, interTokenLatencyMs: 0, jitterMs: 0 });
}
