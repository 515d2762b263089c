import { MapperKind, getDirective, mapSchema } from '@graphql-tools/utils';
import { defaultFieldResolver, type GraphQLFieldResolver, type GraphQLSchema } from 'graphql';
import type { GraphQLContext } from '../context';
import { Role } from '../users/user.entity';

type Resolver = GraphQLFieldResolver<unknown, GraphQLContext>;

/**
 * Gives `@auth(role:)` its behaviour: before the field resolves (and, on subscriptions, before
 * the subscription starts) the caller's credentials are verified against the database and the
 * role compared. The viewer is then on the context for the resolver.
 */
export function applyAuthDirective(schema: GraphQLSchema): GraphQLSchema {
  return mapSchema(schema, {
    [MapperKind.OBJECT_FIELD]: (fieldConfig) => {
      const directive = getDirective(schema, fieldConfig, 'auth')?.[0];
      if (directive === undefined) return fieldConfig;
      const required = (directive.role as Role | undefined) ?? Role.USER;

      const guard = async (ctx: GraphQLContext): Promise<void> => {
        ctx.viewer ??= await ctx.services.auth.authenticate(ctx.authorization);
        ctx.services.auth.assertRole(ctx.viewer, required);
      };
      const guarded = (inner: Resolver): Resolver =>
        async (source, args, ctx, info) => {
          await guard(ctx);
          return inner(source, args, ctx, info);
        };

      const resolve = (fieldConfig.resolve ?? defaultFieldResolver) as Resolver;
      const subscribe = fieldConfig.subscribe as Resolver | undefined;
      return {
        ...fieldConfig,
        resolve: subscribe === undefined ? guarded(resolve) : resolve,
        subscribe: subscribe === undefined ? undefined : guarded(subscribe),
      };
    },
  });
}
