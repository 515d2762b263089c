import {
  GraphQLError,
  NoSchemaIntrospectionCustomRule,
  getOperationAST,
  getVariableValues,
  parse,
  specifiedRules,
  validate,
  type DocumentNode,
  type GraphQLSchema,
  type ValidationContext,
  type ValidationRule,
} from 'graphql';
import { costLimitRule } from '@escape.tech/graphql-armor-cost-limit';
import { maxAliasesRule } from '@escape.tech/graphql-armor-max-aliases';
import { maxDepthRule } from '@escape.tech/graphql-armor-max-depth';
import { maxDirectivesRule } from '@escape.tech/graphql-armor-max-directives';
import type { Config } from '../config';

/**
 * Rules added to graphql-js's own, on every transport: Apollo gets them as `validationRules`,
 * the WebSocket through `DocumentCache`, so a document refused over HTTP is refused over the
 * socket too.
 */
export function extraValidationRules(config: Config): ValidationRule[] {
  const limits = config.graphql;
  // graphql-armor throws by default, which Apollo turns into a 500: report as a validation error instead.
  const report = {
    propagateOnRejection: false,
    onReject: [(context: ValidationContext | null, error: GraphQLError) => context?.reportError(new GraphQLError(error.message.replace(/^Syntax Error: /, '')))],
  };
  const rules: ValidationRule[] = [
    maxDepthRule({ n: limits.maxDepth, ignoreIntrospection: true, flattenFragments: true, ...report }),
    // graphql-armor skips `__schema` when counting depth, so `__schema { types { fields { type
    // { fields … } } } }` would nest without bound: a second pass bounds introspection too.
    maxDepthRule({ n: limits.maxIntrospectionDepth, ignoreIntrospection: false, flattenFragments: true, ...report }),
    maxAliasesRule({ n: limits.maxAliases, ...report }),
    maxDirectivesRule({ n: limits.maxDirectives, ...report }),
    // Introspection's cost is bounded by the depth pass above; GraphiQL's own query costs ~90k.
    costLimitRule({ maxCost: limits.maxCost, ignoreIntrospection: true, ...report }),
  ];
  if (!limits.introspection) rules.push(NoSchemaIntrospectionCustomRule);
  return rules;
}

/** Token limit, applied by the parser itself (Apollo's parseOptions and the socket's parse). */
export function parseOptions(config: Config): { maxTokens: number } {
  return { maxTokens: config.graphql.maxTokens };
}

type Parsed = { document: DocumentNode; errors: null } | { document: null; errors: readonly GraphQLError[] };

function withCode(errors: readonly GraphQLError[], reason: string): GraphQLError[] {
  return errors.map(
    (error) =>
      new GraphQLError(error.message, {
        nodes: error.nodes,
        source: error.source,
        positions: error.positions,
        path: error.path,
        extensions: { ...error.extensions, code: 'BAD_USER_INPUT', reason },
      }),
  );
}

/**
 * Parsed and validated documents, for both transports: by their text for the WebSocket
 * (`get`, `prepare`), and as Apollo's document store for HTTP (`apolloStore`, keyed by Apollo's
 * hash of the text). Many requests send the same few documents, and parsing plus validation
 * would otherwise dominate their cost. Apollo validates with the same rules before it stores.
 */
export class DocumentCache {
  private readonly entries = new Map<string, Parsed>();
  private readonly rules: readonly ValidationRule[];

  constructor(
    private readonly schema: GraphQLSchema,
    extraRules: readonly ValidationRule[],
    private readonly maxTokens: number,
    private readonly maxEntries = 1000,
    private readonly maxCachedChars = 16_384,
  ) {
    this.rules = [...specifiedRules, ...extraRules];
  }

  /** Apollo's `KeyValueCache` side: only documents that passed validation are ever stored through it. */
  readonly apolloStore = {
    get: async (key: string): Promise<DocumentNode | undefined> => this.entries.get(key)?.document ?? undefined,
    set: async (key: string, document: DocumentNode): Promise<void> => {
      if ((document.loc?.source.body.length ?? Number.POSITIVE_INFINITY) <= this.maxCachedChars) this.remember(key, { document, errors: null });
    },
    delete: async (key: string): Promise<boolean | void> => {
      this.entries.delete(key);
    },
  };

  get(query: string): Parsed {
    const cached = this.entries.get(query);
    if (cached !== undefined) return cached;
    let parsed: Parsed;
    try {
      const document = parse(query, { maxTokens: this.maxTokens });
      const errors = validate(this.schema, document, this.rules);
      parsed = errors.length > 0 ? { document: null, errors: withCode(errors, 'GRAPHQL_VALIDATION_FAILED') } : { document, errors: null };
    } catch (error) {
      parsed = { document: null, errors: withCode([error instanceof GraphQLError ? error : new GraphQLError('Syntax error')], 'GRAPHQL_PARSE_FAILED') };
    }
    // Only texts of a usual size are kept: the cache is keyed by the whole text, and 1000 texts
    // of a WebSocket message's size (256 KiB by default, mostly comments or whitespace) would
    // let one client pin a quarter of a gigabyte.
    if (query.length <= this.maxCachedChars) this.remember(query, parsed);
    return parsed;
  }

  private remember(key: string, parsed: Parsed): void {
    if (this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (oldest.done !== true) this.entries.delete(oldest.value);
    }
    this.entries.set(key, parsed);
  }

  /**
   * `get`, then what graphql-js would otherwise refuse only inside `execute`/`subscribe`: an
   * operation name that names nothing (or none given for several operations) and variables
   * that do not fit their types. Those refusals carry no code, so the socket's error
   * formatting turned them into INTERNAL_SERVER_ERROR; here they get BAD_USER_INPUT, as Apollo
   * gives them over HTTP. (The variables are only checked: execution coerces them again.)
   */
  prepare(query: string, operationName: string | null | undefined, variables: Readonly<Record<string, unknown>> | null | undefined): Parsed {
    const parsed = this.get(query);
    if (parsed.errors !== null) return parsed;
    const operation = getOperationAST(parsed.document, operationName ?? undefined);
    if (operation == null) {
      const message =
        operationName == null ? 'Must provide operation name if query contains multiple operations.' : `Unknown operation named "${operationName}".`;
      return { document: null, errors: withCode([new GraphQLError(message)], 'OPERATION_RESOLUTION_FAILURE') };
    }
    const coerced = getVariableValues(this.schema, operation.variableDefinitions ?? [], variables ?? {}, { maxErrors: 50 });
    if (coerced.errors !== undefined) return { document: null, errors: withCode(coerced.errors, 'VARIABLE_COERCION_FAILED') };
    return parsed;
  }
}
