import { DirectiveLocation, GraphQLDirective, GraphQLSchema, type GraphQLEnumType } from 'graphql';

/**
 * type-graphql only attaches directive usages (`@Directive("@auth")`) to fields; the
 * definitions are added here, after the build, because `@auth`'s argument is the schema's
 * own `Role` enum, which exists only once type-graphql has built it.
 */
export function withDirectiveDefinitions(schema: GraphQLSchema): GraphQLSchema {
  const role = schema.getType('Role') as GraphQLEnumType | undefined;
  const directives = [...schema.getDirectives()];
  if (role !== undefined) {
    directives.push(
      new GraphQLDirective({
        name: 'auth',
        description: 'Needs a signed-in, enabled user of at least this role (an access token or an API key).',
        locations: [DirectiveLocation.FIELD_DEFINITION],
        args: { role: { type: role, defaultValue: 'USER' } },
      }),
    );
  }
  directives.push(
    new GraphQLDirective({
      name: 'quota',
      description:
        "Spends tokens: reserves the budget at every level of the request (API key, user, team) before any call upstream; refused with QUOTA_EXCEEDED when it cannot fit in one of them.",
      locations: [DirectiveLocation.FIELD_DEFINITION],
    }),
  );
  return new GraphQLSchema({ ...schema.toConfig(), directives });
}
