import { GraphQLError } from 'graphql';
import { loadConfig } from '../../src/config';
import { DocumentCache, extraValidationRules } from '../../src/graphql/validation';
import { buildExecutableSchema } from '../../src/graphql/schema';
import { TEST_JWT_SECRET } from '../helpers/server';

/**
 * The socket's document checks without a server: what DocumentCache refuses, and with which
 * code, for the documents and variables a hostile client sends.
 */
describe('DocumentCache (the WebSocket\'s parse, validation and request checks)', () => {
  const config = loadConfig({ NODE_ENV: 'production', JWT_SECRET: TEST_JWT_SECRET, DATABASE_URL: 'postgres://unused/unused', VLLM_BASE_URL: 'http://127.0.0.1:1/v1' });
  const schema = buildExecutableSchema();
  const cache = (): DocumentCache => new DocumentCache(schema, extraValidationRules(config), config.graphql.maxTokens);

  function codes(errors: readonly GraphQLError[] | null): unknown[] {
    return (errors ?? []).map((error) => [error.extensions.code, error.extensions.reason]);
  }

  const chat = 'mutation Chat($input: ChatInput!) { chat(input: $input) { id } }';

  it.each([
    ['an unknown input field', { input: { mesages: [] } }],
    ['maxTokens over 2^31 - 1', { input: { messages: [{ role: 'USER', content: 'hi' }], maxTokens: 2_147_483_648 } }],
    ['a missing required variable', {}],
    ['a string for a list', { input: { messages: 'hi' } }],
    ['an unknown enum value', { input: { messages: [{ role: 'ROOT', content: 'hi' }] } }],
    ['a 1 000-deep nested list', { input: { messages: JSON.parse(`${'['.repeat(1_000)}${']'.repeat(1_000)}`) as unknown } }],
  ])('prepare: variables with %s → BAD_USER_INPUT (VARIABLE_COERCION_FAILED)', (_label, variables) => {
    const { document, errors } = cache().prepare(chat, undefined, variables);
    expect(document).toBeNull();
    expect(errors?.length).toBeGreaterThan(0);
    expect(new Set(codes(errors).map((entry) => JSON.stringify(entry)))).toEqual(new Set([JSON.stringify(['BAD_USER_INPUT', 'VARIABLE_COERCION_FAILED'])]));
  });

  it('prepare: variables that fit → the document, checked once and cached', () => {
    const documents = cache();
    const first = documents.prepare(chat, 'Chat', { input: { messages: [{ role: 'USER', content: 'hi' }], maxTokens: 5 } });
    expect(first.errors).toBeNull();
    expect(documents.prepare(chat, null, { input: { messages: [{ role: 'USER', content: 'x' }] } }).document).toBe(first.document);
  });

  it.each([
    ['several operations and no name', 'query A { serverInfo { version } } query B { serverInfo { version } }', undefined],
    ['a name that names no operation', '{ serverInfo { version } }', 'Nope'],
  ])('prepare: %s → BAD_USER_INPUT (OPERATION_RESOLUTION_FAILURE)', (_label, query, operationName) => {
    const { errors } = cache().prepare(query, operationName, {});
    expect(codes(errors)).toEqual([['BAD_USER_INPUT', 'OPERATION_RESOLUTION_FAILURE']]);
  });

  it('prepare keeps the refusals of get: validation and parse errors', () => {
    const introspection = codes(cache().prepare('{ __schema { types { name } } }', undefined, {}).errors);
    expect(introspection.length).toBeGreaterThan(0);
    expect(new Set(introspection.map((entry) => JSON.stringify(entry)))).toEqual(new Set([JSON.stringify(['BAD_USER_INPUT', 'GRAPHQL_VALIDATION_FAILED'])]));
    expect(codes(cache().prepare('{ serverInfo {', undefined, {}).errors)).toEqual([['BAD_USER_INPUT', 'GRAPHQL_PARSE_FAILED']]);
    expect(codes(cache().prepare(`{ serverInfo { ${'version '.repeat(2_100)} } }`, undefined, {}).errors)).toEqual([['BAD_USER_INPUT', 'GRAPHQL_PARSE_FAILED']]);
  });

  it('a flood of distinct documents does not grow the cache without bound', () => {
    const documents = new DocumentCache(schema, extraValidationRules(config), config.graphql.maxTokens, 50);
    for (let i = 0; i < 500; i += 1) documents.get(`{ a${i}: serverInfo { version } }`);
    expect((documents as unknown as { entries: Map<string, unknown> }).entries.size).toBeLessThanOrEqual(50);
  });
});
