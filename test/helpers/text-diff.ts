/**
 * The first line where a file the code would write and the committed one part, for a failure
 * message a person can act on (`schema.graphql`, the README's configuration tables).
 */
export function firstDifference(expected: string, actual: string, expectedLabel: string): string {
  const want = expected.split('\n');
  const have = actual.split('\n');
  const pad = ' '.repeat(Math.max(0, 'committed'.length - expectedLabel.length));
  for (let line = 0; line < Math.max(want.length, have.length); line++) {
    if (want[line] !== have[line]) {
      return `line ${line + 1}:\n  ${expectedLabel}:${pad} ${want[line] ?? '(end of file)'}\n  committed: ${have[line] ?? '(end of file)'}`;
    }
  }
  return '(no difference)';
}
