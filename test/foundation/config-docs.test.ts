import { readFileSync } from 'node:fs';
import path from 'node:path';
import { withConfigurationTables } from '../../src/config/docs';
import { allVariables } from '../../src/config/schema';

const readmeFile = path.resolve(__dirname, '../../README.md');
const committed = readFileSync(readmeFile, 'utf8');

/** The first line where the two texts part, for a failure message a person can act on. */
function firstDifference(expected: string, actual: string): string {
  const want = expected.split('\n');
  const have = actual.split('\n');
  for (let line = 0; line < Math.max(want.length, have.length); line++) {
    if (want[line] !== have[line]) {
      return `line ${line + 1}:\n  generated: ${want[line] ?? '(end of file)'}\n  committed: ${have[line] ?? '(end of file)'}`;
    }
  }
  return '(no difference)';
}

describe('README.md configuration tables', () => {
  it('are what src/config/schema.ts generates (run `npm run docs:config` and commit README.md when this fails)', () => {
    const generated = withConfigurationTables(committed);
    if (generated !== committed) {
      throw new Error(
        `README.md's configuration tables are out of date with src/config/schema.ts: run \`npm run docs:config\` and commit README.md.\nFirst difference at ${firstDifference(generated, committed)}`,
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
