import { readFileSync } from 'node:fs';
import path from 'node:path';
import { getDirective } from '@graphql-tools/utils';
import {
  buildSchema,
  getNamedType,
  isEnumType,
  isInputObjectType,
  isListType,
  isNonNullType,
  isScalarType,
  parse,
  subscribe,
  type GraphQLArgument,
  type GraphQLField,
  type GraphQLInputType,
  type GraphQLObjectType,
  type GraphQLSchema,
} from 'graphql';
import type { GraphQLContext } from '../../src/context';
import { buildExecutableSchema, buildGatewaySchema, printGatewaySchema } from '../../src/graphql/schema';
import { startTestGateway, type TestGateway } from '../helpers/server';
import { createUser, postGraphQL, signInAdmin, type SignedIn } from '../helpers/client';

/** The only root fields anyone may call (the issue's list, not the implementation's). */
const PUBLIC = new Set(['Query.serverInfo', 'Mutation.login', 'Mutation.refresh', 'Mutation.logout']);
const ADMIN_ONLY = new Set(['Query.user', 'Query.users', 'Mutation.createUser', 'Mutation.updateUser', 'Query.upstreams', 'Query.auditLog', 'Query.teams', 'Query.team', 'Mutation.createTeam', 'Mutation.updateTeam']);

interface RootField {
  name: string;
  operation: 'query' | 'mutation' | 'subscription';
  field: GraphQLField<unknown, unknown>;
}

function rootFields(schema: GraphQLSchema): RootField[] {
  const roots: [RootField['operation'], GraphQLObjectType | null | undefined][] = [
    ['query', schema.getQueryType()],
    ['mutation', schema.getMutationType()],
    ['subscription', schema.getSubscriptionType()],
  ];
  return roots.flatMap(([operation, type]) =>
    type == null ? [] : Object.values(type.getFields()).map((field) => ({ name: `${type.name}.${field.name}`, operation, field })),
  );
}

/** Root fields other than the public ones that carry no `@auth`. */
function unguarded(schema: GraphQLSchema): string[] {
  return rootFields(schema)
    .filter(({ name, field }) => !PUBLIC.has(name) && (getDirective(schema, field, 'auth') ?? []).length === 0)
    .map(({ name }) => name);
}

function requiredRole(schema: GraphQLSchema, field: GraphQLField<unknown, unknown>): string | undefined {
  const [auth] = getDirective(schema, field, 'auth') ?? [];
  return auth === undefined ? undefined : ((auth.role as string | undefined) ?? 'USER');
}

/** A value of `type` that passes GraphQL validation (not necessarily the resolver's). */
function sample(type: GraphQLInputType): unknown {
  if (isNonNullType(type)) return sample(type.ofType);
  if (isListType(type)) return [sample(type.ofType)];
  if (isEnumType(type)) return type.getValues()[0].name;
  if (isInputObjectType(type)) {
    return Object.fromEntries(
      Object.values(type.getFields())
        .filter((field) => isNonNullType(field.type) && field.defaultValue === undefined)
        .map((field) => [field.name, sample(field.type)]),
    );
  }
  if (isScalarType(type)) {
    const samples: Record<string, unknown> = { String: 'x', ID: '00000000-0000-4000-8000-000000000000', Int: 1, Float: 1, Boolean: false, DateTime: '2020-01-01T00:00:00Z' };
    return samples[type.name] ?? 'x';
  }
  throw new Error(`no sample for ${String(type)}`);
}

/** A document calling one root field with every required argument, and its variables. */
function callOf({ operation, field }: RootField): { document: string; variables: Record<string, unknown> } {
  const required = field.args.filter((arg: GraphQLArgument) => isNonNullType(arg.type) && arg.defaultValue === undefined);
  const declarations = required.map((arg) => `$${arg.name}: ${String(arg.type)}`).join(', ');
  const args = required.map((arg) => `${arg.name}: $${arg.name}`).join(', ');
  const named = getNamedType(field.type);
  const selection = isScalarType(named) || isEnumType(named) ? '' : ' { __typename }';
  return {
    document: `${operation} Probe${declarations ? `(${declarations})` : ''} { ${field.name}${args ? `(${args})` : ''}${selection} }`,
    variables: Object.fromEntries(required.map((arg) => [arg.name, sample(arg.type)])),
  };
}

describe('@auth on the schema', () => {
  it('is on every root field but login, refresh, logout and serverInfo, with ADMIN where the contract says', () => {
    const schema = buildGatewaySchema();
    expect(unguarded(schema)).toEqual([]);

    const names = rootFields(schema).map(({ name }) => name);
    // The walk saw the fields this issue is about (an empty walk would pass vacuously).
    for (const name of ['Query.me', 'Query.apiKeys', 'Mutation.changePassword', 'Mutation.createApiKey', 'Mutation.revokeApiKey', ...ADMIN_ONLY, ...PUBLIC]) {
      expect(names).toContain(name);
    }
    for (const { name, field } of rootFields(schema)) {
      if (PUBLIC.has(name)) expect([name, requiredRole(schema, field)]).toEqual([name, undefined]);
      else expect([name, requiredRole(schema, field)]).toEqual([name, ADMIN_ONLY.has(name) ? 'ADMIN' : 'USER']);
    }
  });

  it('shows in schema.graphql as it is in the code', () => {
    const onDisk = buildSchema(readFileSync(path.join(__dirname, '../../schema.graphql'), 'utf8'));
    expect(unguarded(onDisk)).toEqual([]);
    const guarded = (schema: GraphQLSchema) =>
      rootFields(schema)
        .map(({ name, field }) => `${name}:${requiredRole(schema, field) ?? '-'}`)
        .sort();
    expect(guarded(onDisk)).toEqual(guarded(buildGatewaySchema()));
  });

  it('the walk catches a field whose @auth was removed, or a new field without one', () => {
    const printed = printGatewaySchema();
    const stripped = printed.replace(/^(\s+me: User!) @auth$/m, '$1').replace(/^(\s+createUser\(input: CreateUserInput!\): User!) @auth\(role: ADMIN\)$/m, '$1');
    expect(stripped).not.toBe(printed);
    expect(unguarded(buildSchema(stripped)).sort()).toEqual(['Mutation.createUser', 'Query.me']);

    const extended = printed.replace(/^type Query \{$/m, 'type Query {\n  secrets: [String!]!');
    expect(unguarded(buildSchema(extended))).toEqual(['Query.secrets']);
  });
});

describe('@auth at run time, for every guarded root field', () => {
  let gateway: TestGateway;
  let user: SignedIn;
  const schema = buildGatewaySchema();
  const guarded = rootFields(schema).filter(({ name }) => !PUBLIC.has(name));

  beforeAll(async () => {
    gateway = await startTestGateway();
    const admin = await signInAdmin(gateway);
    user = await createUser(gateway, admin.token);
  });
  afterAll(() => gateway.stop());

  it('answers UNAUTHENTICATED to an anonymous query or mutation over HTTP, and FORBIDDEN to a USER on ADMIN fields', async () => {
    const http = guarded.filter(({ operation }) => operation !== 'subscription');
    expect(http.length).toBeGreaterThanOrEqual(10);
    for (const root of http) {
      const { document, variables } = callOf(root);
      const anonymous = await postGraphQL(gateway.server.url, document, variables);
      expect([root.name, anonymous.body.errors?.map((error) => error.extensions?.code)]).toEqual([root.name, ['UNAUTHENTICATED']]);
      if (ADMIN_ONLY.has(root.name)) {
        const asUser = await postGraphQL(gateway.server.url, document, variables, { headers: { authorization: `Bearer ${user.token}` } });
        expect([root.name, asUser.body.errors?.map((error) => error.extensions?.code)]).toEqual([root.name, ['FORBIDDEN']]);
      }
    }
  });

  it('refuses to start any subscription without credentials (the guard wraps subscribe)', async () => {
    const executable = buildExecutableSchema();
    const subscriptions = guarded.filter(({ operation }) => operation === 'subscription');
    expect(subscriptions.length).toBeGreaterThan(0);
    for (const root of subscriptions) {
      const { document, variables } = callOf(root);
      const contextValue: GraphQLContext = {
        requestId: 'schema-walk',
        log: gateway.server.services.log,
        services: gateway.server.services,
        authorization: null,
        clientAddress: '127.0.0.1',
        transport: 'ws',
      receivedAt: performance.now(),
      };
      const outcome = await subscribe({ schema: executable, document: parse(document), variableValues: variables, contextValue });
      expect(Symbol.asyncIterator in outcome).toBe(false);
      const codes = 'errors' in outcome ? outcome.errors?.map((error) => error.extensions.code) : undefined;
      expect([root.name, codes]).toEqual([root.name, ['UNAUTHENTICATED']]);
    }
  });
});
