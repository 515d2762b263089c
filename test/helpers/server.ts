import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { print, type ExecutionResult } from 'graphql';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import type { Clock } from '../../src/clock';
import { loadConfig, type Config } from '../../src/config';
import { createServer, type GatewayServer } from '../../src/server';
import { startSimulator, type Simulator, type SimulatorOptions } from '../../src/simulator';
import { createTestDatabase } from './database';

export const TEST_JWT_SECRET = 'test-secret-that-is-long-enough-for-hs256-0123456789';
export const TEST_ADMIN = { email: 'admin@example.test', password: 'admin-password-123' } as const;

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
  /** A graphql-ws client on the server, authenticated with `token` when given. */
  ws(token?: string, options?: { lazy?: boolean }): Client;
  stop(): Promise<void>;
}

export interface TestGatewayOptions {
  env?: Record<string, string>;
  simulator?: SimulatorOptions | Simulator;
  databaseUrl?: string;
  /** Injected into the server, to cross quota period boundaries without waiting. */
  clock?: Clock;
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
    server = await createServer(config, { clock: options.clock });
  } catch (error) {
    if (ownsSimulator) await simulator.stop();
    throw error;
  }
  const clients: Client[] = [];

  return {
    server,
    simulator,
    databaseUrl,
    config,
    async gql(document, variables, token) {
      const response = await fetch(server.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
        },
        body: JSON.stringify({ query: print(document), variables }),
      });
      const body = (await response.json()) as ExecutionResult<never>;
      return { ...body, status: response.status };
    },
    ws(token, wsOptions = {}) {
      const client = createClient({
        url: server.wsUrl,
        webSocketImpl: WebSocket,
        lazy: wsOptions.lazy ?? true,
        retryAttempts: 0,
        connectionParams: token === undefined ? {} : { authorization: `Bearer ${token}` },
      });
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
