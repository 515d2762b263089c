import { MapperKind, getDirective, mapSchema } from '@graphql-tools/utils';
import { defaultFieldResolver, type GraphQLFieldResolver, type GraphQLSchema } from 'graphql';
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
 * Ends a subscription's reservation when its stream ends, however it ends (completed, closed by
 * the client, failed), in case the resolver never got to settle it.
 *
 * Not an async generator: a generator queues `return()` behind its pending `next()`, and that
 * `next()` waits for the upstream's next token, which a stalled upstream never sends. Closing
 * the subscription would then reach the chat stream (which aborts the upstream call and
 * charges what was generated) only when the idle timeout fires. Here `return()` is passed on
 * at once.
 */
function releasingWhenDone<T>(source: AsyncIterable<T>, release: () => Promise<unknown>): AsyncIterableIterator<T> {
  const iterator = source[Symbol.asyncIterator]();
  let released: Promise<unknown> | null = null;
  const releaseOnce = (): Promise<unknown> => (released ??= release());
  return {
    [Symbol.asyncIterator]() {
      return this;
    },
    async next(): Promise<IteratorResult<T>> {
      let result: IteratorResult<T>;
      try {
        result = await iterator.next();
      } catch (error) {
        await releaseOnce();
        throw error;
      }
      if (result.done === true) await releaseOnce();
      return result;
    },
    async return(): Promise<IteratorResult<T>> {
      try {
        await iterator.return?.();
      } finally {
        await releaseOnce();
      }
      return { done: true, value: undefined };
    },
    async throw(error: unknown): Promise<IteratorResult<T>> {
      try {
        await iterator.return?.();
      } finally {
        await releaseOnce();
      }
      throw error;
    },
  };
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
              return releasingWhenDone(stream, () => metered.release(ctx.em));
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
