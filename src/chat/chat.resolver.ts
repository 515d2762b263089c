import { Arg, Ctx, Directive, Mutation, Query, Resolver, Root, Subscription, type SubscribeResolverData } from 'type-graphql';
import { mapIterator } from '../async-iterator';
import type { GraphQLContext } from '../context';
import { Metered, meteredOf } from '../quota/quota.directive';
import type { MeteredChat } from './chat-admission';
import type { StreamEvent } from './chat.service';
import { ChatChunk, ChatCompletion, ChatInput, Model, chatChunkOf, chatCompletionOf } from './chat.types';

@Resolver()
export class ChatResolver {
  @Directive('@auth')
  @Query(() => [Model], { description: 'The models the upstream serves.' })
  models(@Ctx() ctx: GraphQLContext): Promise<Model[]> {
    return ctx.services.chatAdmission.models();
  }

  @Directive('@auth')
  @Directive('@quota')
  @Mutation(() => ChatCompletion, { description: 'One answer, whole. Charged what the model reports.' })
  async chat(@Arg('input', () => ChatInput) _input: ChatInput, @Metered() metered: MeteredChat, @Ctx() ctx: GraphQLContext): Promise<ChatCompletion> {
    const { response, usage } = await ctx.services.chat.complete(metered, ctx.clientGone);
    return chatCompletionOf(metered.reservation.requestId, response, usage);
  }

  @Directive('@auth')
  @Directive('@quota')
  @Subscription(() => ChatChunk, {
    description: 'The answer as it is generated; the last chunk carries usage. Closing it stops the model and charges what was generated.',
    subscribe: ({ context }: SubscribeResolverData<unknown, unknown, GraphQLContext>) => {
      const metered = meteredOf(context);
      return chunksOf(metered.reservation.requestId, context.services.chat.stream(metered));
    },
  })
  chatStream(@Root() chunk: ChatChunk, @Arg('input', () => ChatInput) _input: ChatInput): ChatChunk {
    return chunk;
  }
}

/** The service's stream events as GraphQL chunks: content, reasoning and tool-call deltas, then the charged usage. */
function chunksOf(id: string, events: AsyncIterableIterator<StreamEvent>): AsyncIterableIterator<ChatChunk> {
  return mapIterator(events, (event) => {
    if (event.kind === 'end') return { id, delta: '', toolCalls: null, reasoning: null, finishReason: event.finishReason, usage: event.usage };
    return chatChunkOf(id, event.chunk) ?? undefined;
  });
}
