import { MapperKind, getDirective, mapSchema } from '@graphql-tools/utils';
import { defaultFieldResolver, type GraphQLFieldResolver, type GraphQLSchema } from 'graphql';
import { hookIterator } from '../async-iterator';
import { viewerOf } from '../auth/viewer';
import { ChatService, type MeteredChat } from '../chat/chat.service';
import type { ChatInput } from '../chat/chat.types';
import type { GraphQLContext } from '../context';

type Resolver = GraphQLFieldResolver<unknown, GraphQLContext, { input: ChatInput }>;

/** The reservation `@quota` made for this field; a field without `@quota` asking for it is a programming error. */
export function meteredOf(ctx: GraphQLContext): MeteredChat {
  if (ctx.metered === undefined) throw new Error('meteredOf called on a field without @quota');
  return ctx.metered;
}

/**
 * Gives `@quota` its behaviour: the reservation is made before the resolver (or the
 * subscription) starts and handed over on the context, and released on every path where the
 * resolver did not settle it. Must sit inside `@auth` (applied first), which sets the viewer.
 */
export function applyQuotaDirective(schema: GraphQLSchema): GraphQLSchema {
  return mapSchema(schema, {
    [MapperKind.OBJECT_FIELD]: (fieldConfig) => {
      if (getDirective(schema, fieldConfig, 'quota')?.[0] === undefined) return fieldConfig;
      const reserve = async (ctx: GraphQLContext, args: { input: ChatInput }): Promise<MeteredChat> => {
        ctx.metered = await ctx.services.chat.reserve(ctx.em, viewerOf(ctx), ChatService.requestFromInput(args.input), 'graphql');
        return ctx.metered;
      };

      const subscribe = fieldConfig.subscribe as Resolver | undefined;
      if (subscribe !== undefined) {
        return {
          ...fieldConfig,
          subscribe: async (source, args, ctx, info) => {
            const metered = await reserve(ctx, args);
            try {
              const stream = (await subscribe(source, args, ctx, info)) as AsyncIterable<unknown>;
              return hookIterator(stream[Symbol.asyncIterator](), { onEnd: () => metered.release(ctx.em) });
            } catch (error) {
              await metered.release(ctx.em);
              throw error;
            }
          },
        };
      }
      const resolve = (fieldConfig.resolve ?? defaultFieldResolver) as Resolver;
      return {
        ...fieldConfig,
        resolve: async (source, args, ctx, info) => {
          const metered = await reserve(ctx, args);
          try {
            return await resolve(source, args, ctx, info);
          } finally {
            await metered.release(ctx.em);
          }
        },
      };
    },
  });
}
