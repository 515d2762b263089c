import 'reflect-metadata';
import { printSchemaWithDirectives } from '@graphql-tools/utils';
import { lexicographicSortSchema, type GraphQLSchema } from 'graphql';
import { buildSchemaSync, type NonEmptyArray } from 'type-graphql';
import { createPubSub } from '@graphql-yoga/subscription';
import { DateTimeResolver } from 'graphql-scalars';
import { AuditResolver } from '../audit/audit.resolver';
import { applyAuthDirective } from '../auth/auth.directive';
import { ApiKeyResolver } from '../auth/api-key.resolver';
import { AuthResolver } from '../auth/auth.resolver';
import { ChatResolver } from '../chat/chat.resolver';
import { applyQuotaDirective } from '../quota/quota.directive';
import { withDirectiveDefinitions } from './directives';
import { ServerInfoResolver } from '../server-info/server-info.resolver';
import { TeamResolver } from '../teams/team.resolver';
import { UpstreamsResolver } from '../upstreams/upstreams.resolver';
import { UsageResolver } from '../usage/usage.resolver';
import { UserResolver } from '../users/user.resolver';

// eslint-disable-next-line @typescript-eslint/no-unsafe-function-type -- type-graphql's own resolver list type
const resolvers: NonEmptyArray<Function> = [
  ServerInfoResolver,
  AuthResolver,
  ApiKeyResolver,
  UserResolver,
  TeamResolver,
  ChatResolver,
  UsageResolver,
  UpstreamsResolver,
  AuditResolver,
];

/** The executable schema: type-graphql's build, directive definitions, then directive behaviour. */
export function buildGatewaySchema(): GraphQLSchema {
  const built = buildSchemaSync({
    resolvers,
    validate: false,
    emitSchemaFile: false,
    scalarsMap: [{ type: Date, scalar: DateTimeResolver }],
    // type-graphql refuses subscriptions without a pubSub, though every one of ours brings its
    // own `subscribe` (events come from the UsageBus and the upstream stream), so it stays idle.
    pubSub: createPubSub(),
  });
  return withDirectiveDefinitions(built);
}

/** The schema with `@auth` and `@quota` doing what they declare. */
export function buildExecutableSchema(): GraphQLSchema {
  // @auth wraps @quota: the caller is known before anything is reserved.
  return applyAuthDirective(applyQuotaDirective(buildGatewaySchema()));
}

/** The text of `schema.graphql`: sorted, so the committed file changes only when the API does. */
export function printGatewaySchema(schema: GraphQLSchema = buildGatewaySchema()): string {
  return `${printSchemaWithDirectives(lexicographicSortSchema(schema)).trim()}\n`;
}
