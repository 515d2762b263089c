import { Field, Float, ID, InputType, Int, ObjectType, registerEnumType } from 'type-graphql';
import type { ChatRequest } from './chat-request';
import type { ChatMessage } from './upstream';

export enum ChatRole {
  SYSTEM = 'SYSTEM',
  USER = 'USER',
  ASSISTANT = 'ASSISTANT',
}
registerEnumType(ChatRole, { name: 'ChatRole' });

@InputType()
export class ChatMessageInput {
  @Field(() => ChatRole)
  role!: ChatRole;

  @Field(() => String)
  content!: string;
}

@InputType()
export class ChatInput {
  @Field(() => String, { nullable: true, description: 'A model from `models`; the first one served when omitted.' })
  model?: string | null;

  @Field(() => [ChatMessageInput])
  messages!: ChatMessageInput[];

  @Field(() => Int, {
    nullable: true,
    description: 'Most tokens to generate, 1 to the model limit. When omitted, capped to what remains of your quota.',
  })
  maxTokens?: number | null;

  @Field(() => Float, { nullable: true, description: '0 to 2.' })
  temperature?: number | null;

  @Field(() => Float, { nullable: true, description: 'Above 0, at most 1.' })
  topP?: number | null;

  @Field(() => [String], { nullable: true })
  stop?: string[] | null;

  @Field(() => Int, { nullable: true })
  seed?: number | null;

  @Field(() => String, {
    nullable: true,
    description: "A conversation's key: its requests go to the same upstream while that one is healthy, so vLLM's prefix cache stays warm.",
  })
  sessionId?: string | null;
}

@ObjectType()
export class TokenCount {
  @Field(() => Int)
  promptTokens!: number;

  @Field(() => Int)
  completionTokens!: number;

  @Field(() => Int)
  totalTokens!: number;
}

@ObjectType()
export class ChatCompletion {
  @Field(() => ID, { description: 'The request id; the usage record and UsageEvent carry the same.' })
  id!: string;

  @Field(() => String)
  model!: string;

  @Field(() => String)
  content!: string;

  @Field(() => String, { nullable: true, description: '"stop" or "length".' })
  finishReason!: string | null;

  @Field(() => TokenCount, { description: 'What was charged, as the upstream reported it.' })
  usage!: TokenCount;
}

@ObjectType()
export class ChatChunk {
  @Field(() => ID)
  id!: string;

  @Field(() => String)
  delta!: string;

  @Field(() => String, { nullable: true })
  finishReason!: string | null;

  @Field(() => TokenCount, { nullable: true, description: 'On the last chunk only: what was charged.' })
  usage!: TokenCount | null;
}

@ObjectType()
export class Model {
  @Field(() => ID)
  id!: string;

  @Field(() => Int, { description: 'Context length: prompt + completion tokens.' })
  maxModelLen!: number;

  @Field(() => String)
  ownedBy!: string;
}

const ROLE_OF: Record<ChatRole, ChatMessage['role']> = {
  [ChatRole.SYSTEM]: 'system',
  [ChatRole.USER]: 'user',
  [ChatRole.ASSISTANT]: 'assistant',
};

/** GraphQL's ChatInput in the chat service's terms. */
export function chatRequestOf(input: ChatInput): ChatRequest {
  return {
    model: input.model ?? null,
    messages: (input.messages ?? []).map((message) => ({ role: ROLE_OF[message.role], content: message.content })),
    maxTokens: input.maxTokens ?? null,
    temperature: input.temperature,
    topP: input.topP,
    stop: input.stop,
    seed: input.seed,
    sessionId: input.sessionId,
  };
}
