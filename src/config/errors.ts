/**
 * A refused configuration: `main.ts` prints its message, one line that starts with the variable's
 * name. Its own file so that `config.ts` and `upstreams.ts`, which both throw it, need not import each other.
 */
export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    problem: string,
  ) {
    super(`${variable} ${problem}`);
    this.name = 'ConfigError';
  }
}
