// Bundles the GraphiQL page's script, styles and Monaco workers so the gateway can serve them
// itself: the page must work on machines with no route to a CDN.
//
//   node scripts/build-graphiql.mjs [--outdir <dir>]   (default: dist/public/graphiql)
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as esbuild from 'esbuild';

const root = fileURLToPath(new URL('..', import.meta.url));
const { values } = parseArgs({ options: { outdir: { type: 'string' } } });
const outdir = path.resolve(root, values.outdir ?? 'dist/public/graphiql');

const started = performance.now();
// A clean directory, so a renamed or dropped asset cannot linger and still be served.
await rm(outdir, { recursive: true, force: true });

/** @type {import('esbuild').BuildOptions} */
const common = {
  absWorkingDir: root,
  bundle: true,
  minify: true,
  platform: 'browser',
  target: ['es2022'],
  outdir,
  // React and friends pick their production code paths from this.
  define: { 'process.env.NODE_ENV': '"production"' },
  logLevel: 'warning',
  metafile: true,
};

const results = await Promise.all([
  esbuild.build({
    ...common,
    entryPoints: { graphiql: 'src/graphiql/client/main.tsx' },
    // ESM so that the page script can find its workers through import.meta.url.
    format: 'esm',
    tsconfig: 'src/graphiql/client/tsconfig.json',
    // Fonts referenced from CSS become files next to graphiql.css rather than external URLs.
    loader: { '.ttf': 'file', '.woff': 'file', '.woff2': 'file' },
    assetNames: '[name]-[hash]',
  }),
  esbuild.build({
    ...common,
    // The worker labels these serve are mapped in src/graphiql/client/main.tsx. Classic (IIFE)
    // workers, because Monaco's worker bootstrap does not need module workers.
    entryPoints: {
      'editor.worker': 'monaco-editor/esm/vs/editor/editor.worker.js',
      'json.worker': 'monaco-editor/esm/vs/language/json/json.worker.js',
      'graphql.worker': 'monaco-graphql/esm/graphql.worker.js',
    },
    format: 'iife',
  }),
]);

const outputs = results.flatMap((result) => Object.entries(result.metafile.outputs));
const totalBytes = outputs.reduce((sum, [, output]) => sum + output.bytes, 0);
const seconds = ((performance.now() - started) / 1000).toFixed(1);
console.log(
  `graphiql: ${outputs.length} files, ${(totalBytes / 1024 / 1024).toFixed(1)} MiB in ${path.relative(root, outdir) || '.'} (${seconds}s)`,
);
