import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { withConfigurationTables } from './docs';

const target = path.resolve(__dirname, '../../../README.md');
writeFileSync(target, withConfigurationTables(readFileSync(target, 'utf8')));
process.stdout.write(`wrote the configuration tables of ${path.relative(process.cwd(), target) || target}\n`);
