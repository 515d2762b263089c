import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { printGatewaySchema } from './schema';

const target = path.resolve(__dirname, '../../../schema.graphql');
writeFileSync(target, printGatewaySchema());
process.stdout.write(`wrote ${path.relative(process.cwd(), target) || target}\n`);
