import { loadConfig } from '../../src/config';
import { DocumentCache, extraValidationRules } from '../../src/graphql/validation';
import { buildExecutableSchema } from '../../src/graphql/schema';
import { TEST_JWT_SECRET } from '../helpers/server';

describe('DocumentCache (parse and validation for the WebSocket)', () => {
  const config = loadConfig({ NODE_ENV: 'test', JWT_SECRET: TEST_JWT_SECRET, DATABASE_URL: 'postgres://localhost/unused' });
  const cache = new DocumentCache(buildExecutableSchema(), extraValidationRules(config), config.graphql.maxTokens);

  it('answers a usual document from the cache', () => {
    const query = 'subscription { usageUpdated { requestId used } }';
    const first = cache.get(query);
    expect(first.errors).toBeNull();
    expect(cache.get(query)).toBe(first);
  });

  it('does not keep huge texts (a valid document padded with a comment), though it still answers them', () => {
    const query = `{ me { id } } # ${'x'.repeat(200_000)}`;
    const first = cache.get(query);
    expect(first.errors).toBeNull();
    const second = cache.get(query);
    expect(second.errors).toBeNull();
    expect(second).not.toBe(first);
  });

  it('prepare() refuses, as BAD_USER_INPUT, an operation name that names nothing and variables that do not fit', () => {
    const two = 'query A { me { id } } query B { serverInfo { version } }';
    const page = 'query Page($n: Int!) { usage(first: $n) { pageInfo { hasNextPage } } }';
    const refusals = {
      unknownOperation: cache.prepare(two, 'C', {}),
      noOperationName: cache.prepare(two, undefined, {}),
      badVariable: cache.prepare(page, undefined, { n: 'ten' }),
      missingVariable: cache.prepare(page, null, null),
    };
    for (const [name, parsed] of Object.entries(refusals)) {
      expect({ name, code: parsed.errors?.[0].extensions.code }).toEqual({ name, code: 'BAD_USER_INPUT' });
    }
    expect(cache.prepare(two, 'B', {}).errors).toBeNull();
    expect(cache.prepare(page, 'Page', { n: 10 }).errors).toBeNull();
  });

  it('answers refused documents the same way every time', () => {
    const query = '{ me { id nope } }';
    const first = cache.get(query);
    expect(first.errors?.[0].extensions).toMatchObject({ code: 'BAD_USER_INPUT', reason: 'GRAPHQL_VALIDATION_FAILED' });
    expect(cache.get(query).errors?.[0].message).toBe(first.errors?.[0].message);
  });
});
