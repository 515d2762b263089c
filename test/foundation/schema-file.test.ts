import { readFileSync } from 'node:fs';
import path from 'node:path';
import { buildSchema, Kind, parse, print, type DirectiveNode, type ObjectTypeDefinitionNode } from 'graphql';
import { printGatewaySchema } from '../../src/graphql/schema';
import { firstDifference } from '../helpers/text-diff';

const schemaFile = path.resolve(__dirname, '../../schema.graphql');
const committed = readFileSync(schemaFile, 'utf8');


/** `field -> directives as written`, e.g. `Query.users -> @auth(role: ADMIN)`, from the committed file. */
function fieldDirectives(): Map<string, string> {
  const result = new Map<string, string>();
  for (const definition of parse(committed).definitions) {
    if (definition.kind !== Kind.OBJECT_TYPE_DEFINITION) continue;
    const type = definition as ObjectTypeDefinitionNode;
    for (const field of type.fields ?? []) {
      const directives = (field.directives ?? []).map((directive: DirectiveNode) => print(directive));
      result.set(`${type.name.value}.${field.name.value}`, directives.join(' '));
    }
  }
  return result;
}

// From CONTRACT.md. Fields that later issues add are checked once they exist.
const CONTRACT_DIRECTIVES: Record<string, string> = {
  'Query.me': '@auth',
  'Query.user': '@auth(role: ADMIN)',
  'Query.users': '@auth(role: ADMIN)',
  'Query.models': '@auth',
  'Query.usage': '@auth',
  'Query.usageSummary': '@auth',
  'Query.apiKeys': '@auth',
  'Query.auditLog': '@auth(role: ADMIN)',
  'Query.serverInfo': '',
  'Mutation.login': '',
  'Mutation.refresh': '',
  'Mutation.logout': '',
  'Mutation.changePassword': '@auth',
  'Mutation.createUser': '@auth(role: ADMIN)',
  'Mutation.updateUser': '@auth(role: ADMIN)',
  'Mutation.createApiKey': '@auth',
  'Mutation.revokeApiKey': '@auth',
  'Mutation.chat': '@auth @quota',
  'Subscription.usageUpdated': '@auth',
  'Subscription.chatStream': '@auth @quota',
};
// What the foundation and the users/auth work already serve.
const MUST_EXIST = ['Query.me', 'Query.user', 'Query.users', 'Query.serverInfo', 'Mutation.login', 'Mutation.createUser', 'Mutation.updateUser'];

describe('schema.graphql', () => {
  it('is what the code builds (run `npm run schema` and commit the file when this fails)', () => {
    const built = printGatewaySchema();
    if (built !== committed) {
      throw new Error(
        `schema.graphql is out of date with the code: run \`npm run schema\` and commit schema.graphql.\nFirst difference at ${firstDifference(built, committed, 'built')}`,
      );
    }
    // It is a schema clients can build from (codegen does).
    expect(() => buildSchema(committed)).not.toThrow();
  });

  it('declares the @auth and @quota directives', () => {
    expect(committed).toContain('directive @auth(role: Role = USER) on FIELD_DEFINITION');
    expect(committed).toContain('directive @quota on FIELD_DEFINITION');
  });

  it('shows @auth on the protected fields and none on the public ones, as the contract says', () => {
    const actual = fieldDirectives();
    const missing = MUST_EXIST.filter((field) => !actual.has(field));
    expect(missing).toEqual([]);

    const mismatched: string[] = [];
    for (const [field, expected] of Object.entries(CONTRACT_DIRECTIVES)) {
      const found = actual.get(field);
      if (found !== undefined && found !== expected) mismatched.push(`${field}: expected "${expected}", found "${found}"`);
    }
    expect(mismatched).toEqual([]);
  });
});
