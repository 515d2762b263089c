import { MapperKind, getDirective, mapSchema } from '@graphql-tools/utils';
import { defaultFieldResolver, type GraphQLFieldResolver, type GraphQLSchema } from 'graphql';
import { createParameterDecorator } from 'type-graphql';
import { viewerOf } from '../auth/viewer';
import type { MeteredChat } from '../chat/chat-admission';
import { chatRequestOf, type ChatInput } from '../chat/chat.types';
import type { GraphQLContext } from '../context';

type Resolver = GraphQLFieldResolver<unknown, GraphQLContext, { input: ChatInput }>;

/** The reservation `@quota` made for this field; a field without `@quota` asking for it is a programming error. */
export function meteredOf(ctx: GraphQLContext): MeteredChat {
  if (ctx.metered === undefined) throw new Error('meteredOf called on a field without @quota');
  return ctx.metered;
}

/** The reservation `@quota` made for this field, as a resolver parameter. */
export function Metered() {
  return createParameterDecorator<GraphQLContext>(({ context }) => meteredOf(context));
}

/**
 * Gives `@quota` its behaviour: the reservation is made before the resolver (or the
 * subscription) starts and handed to it on the context. The chat service, which the field
 * runs it through, ends it. Must sit inside `@auth` (applied first), which sets the viewer.
 */
export function applyQuotaDirective(schema: GraphQLSchema): GraphQLSchema {
  return mapSchema(schema, {
    [MapperKind.OBJECT_FIELD]: (fieldConfig) => {
      if (getDirective(schema, fieldConfig, 'quota')?.[0] === undefined) return fieldConfig;
      const reserving =
        (inner: Resolver): Resolver =>
        async (source, args, ctx, info) => {
          ctx.metered = await ctx.services.chatAdmission.reserve(viewerOf(ctx), chatRequestOf(args.input), 'graphql', ctx.receivedAt);
          return inner(source, args, ctx, info);
        };
      const subscribe = fieldConfig.subscribe as Resolver | undefined;
      if (subscribe !== undefined) return { ...fieldConfig, subscribe: reserving(subscribe) };
      return { ...fieldConfig, resolve: reserving((fieldConfig.resolve ?? defaultFieldResolver) as Resolver) };
    },
  });
}
