import { allVariables } from './schema';
import type { Group, Variable } from './variables';

/** The README marks each generated table with `<!-- marker:start -->` … `<!-- marker:end -->`. */
const TABLES: readonly { readonly group: Group; readonly marker: string }[] = [
  { group: 'core', marker: 'configuration' },
  { group: 'security', marker: 'security-limits' },
];

function defaultCell(variable: Variable<unknown>): string {
  const unset = variable.unset;
  if ('means' in unset) return unset.means;
  const exceptions = Object.entries(unset.byNodeEnv).map(([nodeEnv, text]) => ` (\`${text}\` when \`NODE_ENV=${nodeEnv}\`)`);
  return `\`${unset.text}\`${exceptions.join('')}`;
}

/** The Markdown table of the variables of `group`, in declaration order. */
export function configurationTable(group: Group): string {
  const rows = allVariables()
    .filter((variable) => variable.group === group)
    .map((variable) => `| \`${variable.name}\` | ${variable.meaning} | ${defaultCell(variable)} |`);
  return ['| variable | meaning | default |', '| --- | --- | --- |', ...rows].join('\n');
}

/** `readme` with the text between each pair of markers replaced by its generated table. */
export function withConfigurationTables(readme: string): string {
  let result = readme;
  for (const { group, marker } of TABLES) {
    const start = `<!-- ${marker}:start -->`;
    const end = `<!-- ${marker}:end -->`;
    const from = result.indexOf(start);
    const to = result.indexOf(end, from);
    if (from === -1 || to === -1) throw new Error(`README.md has no ${start} … ${end} pair`);
    result = `${result.slice(0, from + start.length)}\n\n${configurationTable(group)}\n\n${result.slice(to)}`;
  }
  return result;
}
