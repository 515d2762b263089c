import type { CodegenConfig } from '@graphql-codegen/cli';

/** Typed documents for the operations the tests send: `test/**\/*.graphql` → `test/generated/`. */
const config: CodegenConfig = {
  schema: 'schema.graphql',
  documents: ['test/**/*.graphql'],
  ignoreNoDocuments: false,
  generates: {
    'test/generated/': {
      preset: 'client',
      presetConfig: { fragmentMasking: false, gqlTagName: 'graphql' },
      config: { useTypeImports: true, enumsAsTypes: true, scalars: { DateTime: 'string', JSON: 'unknown' } },
    },
  },
  errorsOnly: true,
};

export default config;
