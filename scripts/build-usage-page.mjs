// Builds the live usage page served at /usage: index.html and usage.css copied as they are,
// src/usage-page/client/main.ts bundled (with graphql-ws) into usage.js. Everything is served
// by the gateway itself, nothing from a CDN.
//
//   node scripts/build-usage-page.mjs [--outdir <dir>]   (default: dist/public/usage)
import { copyFile, mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as esbuild from 'esbuild';

const root = fileURLToPath(new URL('..', import.meta.url));
const source = path.join(root, 'src/usage-page/client');
const { values } = parseArgs({ options: { outdir: { type: 'string' } } });
const outdir = path.resolve(root, values.outdir ?? 'dist/public/usage');

const started = performance.now();
// A clean directory, so that nothing renamed or dropped lingers.
await rm(outdir, { recursive: true, force: true });
await mkdir(outdir, { recursive: true });

const result = await esbuild.build({
  absWorkingDir: root,
  entryPoints: { usage: path.join(source, 'main.ts') },
  tsconfig: path.join(source, 'tsconfig.json'),
  bundle: true,
  minify: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2022'],
  outdir,
  logLevel: 'warning',
  metafile: true,
});
await Promise.all(['index.html', 'usage.css'].map((file) => copyFile(path.join(source, file), path.join(outdir, file))));

const bytes = Object.values(result.metafile.outputs).reduce((sum, output) => sum + output.bytes, 0);
const seconds = ((performance.now() - started) / 1000).toFixed(1);
console.log(`usage page: ${(bytes / 1024).toFixed(0)} KiB of script in ${path.relative(root, outdir) || '.'} (${seconds}s)`);
