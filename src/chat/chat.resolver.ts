import { Arg, Ctx, Directive, Mutation, Query, Resolver, Root, Subscription, type SubscribeResolverData } from 'type-graphql';
import type { GraphQLContext } from '../context';
import { meteredOf } from '../quota/quota.directive';
import { ChatChunk, ChatCompletion, ChatInput, Model } from './chat.types';

@Resolver()
export class ChatResolver {
  @Directive('@auth')
  @Query(() => [Model], { description: 'The models the upstream serves.' })
  models(@Ctx() ctx: GraphQLContext): Promise<Model[]> {
    return ctx.services.chat.models();
  }

  @Directive('@auth')
  @Directive('@quota')
  @Mutation(() => ChatCompletion, { description: 'One answer, whole. Charged what the model reports.' })
  chat(@Arg('input', () => ChatInput) _input: ChatInput, @Ctx() ctx: GraphQLContext): Promise<ChatCompletion> {
    return ctx.services.chat.complete(ctx.em, meteredOf(ctx));
  }

  @Directive('@auth')
  @Directive('@quota')
  @Subscription(() => ChatChunk, {
    description: 'The answer as it is generated; the last chunk carries usage. Closing it stops the model and charges what was generated.',
    subscribe: ({ context }: SubscribeResolverData<unknown, unknown, GraphQLContext>) => context.services.chat.stream(context.em, meteredOf(context)),
  })
  chatStream(@Root() chunk: ChatChunk, @Arg('input', () => ChatInput) _input: ChatInput): ChatChunk {
    return chunk;
  }
}
