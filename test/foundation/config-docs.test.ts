import { readFileSync } from 'node:fs';
import path from 'node:path';
import { withConfigurationTables } from '../../src/config/docs';
import { allVariables } from '../../src/config/schema';
import { firstDifference } from '../helpers/text-diff';

const readmeFile = path.resolve(__dirname, '../../README.md');
const committed = readFileSync(readmeFile, 'utf8');


describe('README.md configuration tables', () => {
  it('are what src/config/schema.ts generates (run `npm run docs:config` and commit README.md when this fails)', () => {
    const generated = withConfigurationTables(committed);
    if (generated !== committed) {
      throw new Error(
        `README.md's configuration tables are out of date with src/config/schema.ts: run \`npm run docs:config\` and commit README.md.\nFirst difference at ${firstDifference(generated, committed, 'generated')}`,
      );
    }
  });

  it('list every declared variable exactly once', () => {
    const counts = allVariables().map((variable) => [variable.name, committed.split(`| \`${variable.name}\` |`).length - 1]);
    expect(counts.filter(([, count]) => count !== 1)).toEqual([]);
    expect(counts.map(([name]) => name)).toEqual(expect.arrayContaining(['DATABASE_POOL_SIZE', 'DATABASE_ORM_POOL_SIZE']));
  });

  it('are refused without their markers', () => {
    expect(() => withConfigurationTables('# A README without markers\n')).toThrow(/<!-- configuration:start -->/);
  });
});
