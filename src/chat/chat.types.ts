import { JSONResolver } from 'graphql-scalars';
import type { ChatCompletion as OpenAIChatCompletion, ChatCompletionChunk } from 'openai/resources/chat/completions';
import { Field, Float, ID, InputType, Int, ObjectType, registerEnumType } from 'type-graphql';
import type { ChatMessage, ChatRequest } from './chat-request';

export enum ChatRole {
  SYSTEM = 'SYSTEM',
  USER = 'USER',
  ASSISTANT = 'ASSISTANT',
  TOOL = 'TOOL',
}
registerEnumType(ChatRole, {
  name: 'ChatRole',
  valuesConfig: { TOOL: { description: "A tool's result, answering the assistant's call named in toolCallId." } },
});

@InputType({ description: 'A tool call the assistant made in an earlier turn, as the answer gave it.' })
export class ToolCallInput {
  @Field(() => ID)
  id!: string;

  @Field(() => String)
  name!: string;

  @Field(() => String, { description: 'The arguments as the model wrote them: a JSON text.' })
  arguments!: string;
}

@InputType()
export class ChatMessageInput {
  @Field(() => ChatRole)
  role!: ChatRole;

  @Field(() => String, { nullable: true, description: 'Null only on an assistant turn that only called tools.' })
  content?: string | null;

  @Field(() => String, { nullable: true, description: 'On a TOOL message: the id of the call it answers.' })
  toolCallId?: string | null;

  @Field(() => [ToolCallInput], { nullable: true, description: "On an ASSISTANT message: the calls it made (the answer's toolCalls)." })
  toolCalls?: ToolCallInput[] | null;
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

  @Field(() => [JSONResolver], {
    nullable: true,
    description: 'Tools the model may call, as OpenAI spells them: `{type: "function", function: {name, description, parameters}}` with a JSON schema.',
  })
  tools?: unknown[] | null;

  @Field(() => JSONResolver, { nullable: true, description: '"auto" (the default with tools), "none", "required", or `{type: "function", function: {name}}`.' })
  toolChoice?: unknown;

  @Field(() => JSONResolver, {
    nullable: true,
    description: 'OpenAI\'s response_format: `{type: "json_object"}`, or `{type: "json_schema", json_schema: {name, schema}}` for JSON of that schema.',
  })
  responseFormat?: unknown;
}

@ObjectType()
export class TokenCount {
  @Field(() => Int)
  promptTokens!: number;

  @Field(() => Int)
  completionTokens!: number;

  @Field(() => Int)
  totalTokens!: number;

  @Field(() => Int, { description: "Of the prompt tokens, those vLLM's prefix cache held (0 when it did not report them)." })
  cachedTokens!: number;
}

@ObjectType({ description: 'A call of one of the tools the request offered. Answer it with a TOOL message naming its id.' })
export class ToolCall {
  @Field(() => ID)
  id!: string;

  @Field(() => String)
  name!: string;

  @Field(() => String, { description: 'The arguments the model wrote: a JSON text.' })
  arguments!: string;
}

@ObjectType({ description: 'A piece of a tool call as it streams: the first names it (id, name), the rest add to its arguments.' })
export class ToolCallDelta {
  @Field(() => Int, { description: 'Which call of the answer this piece belongs to.' })
  index!: number;

  @Field(() => ID, { nullable: true })
  id!: string | null;

  @Field(() => String, { nullable: true })
  name!: string | null;

  @Field(() => String, { nullable: true, description: 'The next piece of the arguments.' })
  arguments!: string | null;
}

@ObjectType()
export class ChatCompletion {
  @Field(() => ID, { description: 'The request id; the usage record and UsageEvent carry the same.' })
  id!: string;

  @Field(() => String)
  model!: string;

  @Field(() => String, { description: 'Empty when the model only called tools.' })
  content!: string;

  @Field(() => [ToolCall], { description: 'The tools the model called (finishReason "tool_calls"); empty when it answered in text.' })
  toolCalls!: ToolCall[];

  @Field(() => String, { nullable: true, description: "A reasoning model's thinking before its answer." })
  reasoning!: string | null;

  @Field(() => String, { nullable: true, description: '"stop", "length" or "tool_calls".' })
  finishReason!: string | null;

  @Field(() => TokenCount, { description: 'What was charged, as the upstream reported it.' })
  usage!: TokenCount;
}

@ObjectType()
export class ChatChunk {
  @Field(() => ID)
  id!: string;

  @Field(() => String, { description: 'The next piece of the content.' })
  delta!: string;

  @Field(() => [ToolCallDelta], { nullable: true })
  toolCalls!: ToolCallDelta[] | null;

  @Field(() => String, { nullable: true, description: "The next piece of a reasoning model's thinking." })
  reasoning!: string | null;

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

const ROLE_OF: Record<ChatRole, string> = {
  [ChatRole.SYSTEM]: 'system',
  [ChatRole.USER]: 'user',
  [ChatRole.ASSISTANT]: 'assistant',
  [ChatRole.TOOL]: 'tool',
};

function messageOf(message: ChatMessageInput): ChatMessage {
  const toolCalls = message.toolCalls ?? [];
  return {
    role: ROLE_OF[message.role],
    content: message.content ?? null,
    ...(message.toolCallId == null ? {} : { tool_call_id: message.toolCallId }),
    ...(toolCalls.length === 0 ? {} : { tool_calls: toolCalls.map((call) => ({ id: call.id, type: 'function' as const, function: { name: call.name, arguments: call.arguments } })) }),
  };
}

/** GraphQL's ChatInput in the chat service's terms. */
export function chatRequestOf(input: ChatInput): ChatRequest {
  return {
    model: input.model ?? null,
    messages: (input.messages ?? []).map(messageOf),
    maxTokens: input.maxTokens ?? null,
    temperature: input.temperature,
    topP: input.topP,
    stop: input.stop,
    seed: input.seed,
    sessionId: input.sessionId,
    tools: input.tools,
    toolChoice: input.toolChoice,
    responseFormat: input.responseFormat,
  };
}

/** vLLM's reasoning: `reasoning` now, `reasoning_content` in older releases. */
function reasoningOf(part: { reasoning?: unknown; reasoning_content?: unknown } | undefined): string | null {
  const reasoning = part?.reasoning ?? part?.reasoning_content;
  return typeof reasoning === 'string' ? reasoning : null;
}

/** The first choice of vLLM's answer as GraphQL's ChatCompletion. */
export function chatCompletionOf(id: string, response: OpenAIChatCompletion, usage: TokenCount): ChatCompletion {
  const choice = response.choices[0];
  const message = choice?.message as (OpenAIChatCompletion['choices'][number]['message'] & { reasoning?: unknown; reasoning_content?: unknown }) | undefined;
  const toolCalls = (message?.tool_calls ?? []).flatMap((call) => (call.type === 'function' ? [{ id: call.id, name: call.function.name, arguments: call.function.arguments }] : []));
  return { id, model: response.model, content: message?.content ?? '', toolCalls, reasoning: reasoningOf(message), finishReason: choice?.finish_reason ?? null, usage };
}

/** The first choice's piece of a streamed answer as a ChatChunk; null when it carries nothing. */
export function chatChunkOf(id: string, chunk: ChatCompletionChunk): ChatChunk | null {
  const choice = chunk.choices.find((candidate) => candidate.index === 0);
  const delta = choice?.delta as (ChatCompletionChunk['choices'][number]['delta'] & { reasoning?: unknown; reasoning_content?: unknown }) | undefined;
  const toolCalls = (delta?.tool_calls ?? []).map((call) => ({ index: call.index, id: call.id ?? null, name: call.function?.name ?? null, arguments: call.function?.arguments ?? null }));
  const content = delta?.content ?? '';
  const reasoning = reasoningOf(delta);
  if (content === '' && reasoning === null && toolCalls.length === 0) return null;
  return { id, delta: content, toolCalls: toolCalls.length === 0 ? null : toolCalls, reasoning, finishReason: null, usage: null };
}
