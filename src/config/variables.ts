import { z } from 'zod';
import { passwordProblem } from '../rules';

/**
 * How a configuration variable is declared (`variable`, `optional`) and the parsers the
 * declarations use. The declarations themselves are in `schema.ts` and `limits.ts`.
 */

export const NODE_ENVS = ['development', 'production', 'test'] as const;
export type NodeEnv = (typeof NODE_ENVS)[number];

/** Which README table lists the variable: the "Configuration" one, or the limits of "Security". */
export type Group = 'core' | 'security';

interface Declaration<T> {
  readonly name: string;
  readonly group: Group;
  /** Markdown, one table cell. */
  readonly meaning: string;
  /** Parses the variable's text; its error messages follow the variable's name in a ConfigError. */
  readonly schema: z.ZodType<T>;
  /** Taken as written, not trimmed: the spaces of a password are part of it. */
  readonly verbatim?: boolean;
}

/** Unset, the variable reads as if it held `text`, or the `NODE_ENV`-specific text if there is one. */
interface DefaultText {
  readonly text: string;
  readonly byNodeEnv: Partial<Record<NodeEnv, string>>;
}

/** Unset, the variable is `value`, which no text could express; `means` says what that does. */
interface UnsetValue<T> {
  readonly value: T;
  readonly means: string;
}

export class Variable<T> implements Declaration<T> {
  readonly name: string;
  readonly group: Group;
  readonly meaning: string;
  readonly schema: z.ZodType<T>;
  readonly verbatim: boolean;

  constructor(
    declaration: Declaration<T>,
    readonly unset: DefaultText | UnsetValue<T>,
  ) {
    this.name = declaration.name;
    this.group = declaration.group;
    this.meaning = declaration.meaning;
    this.schema = declaration.schema;
    this.verbatim = declaration.verbatim ?? false;
  }
}

export function variable<T>(
  declaration: Declaration<T> & { readonly default: string; readonly byNodeEnv?: Partial<Record<NodeEnv, string>> },
): Variable<T> {
  return new Variable(declaration, { text: declaration.default, byNodeEnv: declaration.byNodeEnv ?? {} });
}

export function optional<T, U>(declaration: Declaration<T> & { readonly unset: U; readonly unsetMeans: string }): Variable<T | U> {
  return new Variable<T | U>(declaration, { value: declaration.unset, means: declaration.unsetMeans });
}

/** "a, b or c" */
export function alternatives(values: readonly string[]): string {
  return values.length < 2 ? values.join('') : `${values.slice(0, -1).join(', ')} or ${values[values.length - 1]}`;
}

export function integer(min: number, max: number): z.ZodType<number> {
  const range = { error: (issue: { input?: unknown }) => `must be between ${min} and ${max}, got ${String(issue.input)}` };
  return z
    .string()
    .regex(/^-?\d+$/, { error: (issue) => `must be an integer, got "${String(issue.input)}"` })
    .transform(Number)
    .pipe(z.number().min(min, range).max(max, range));
}

export function decimal(min: number, max: number): z.ZodType<number> {
  const problem = { error: (issue: { input?: unknown }) => `must be a number between ${min} and ${max}, got "${String(issue.input)}"` };
  return z
    .string()
    .refine((text) => Number.isFinite(Number(text)), problem)
    .transform(Number)
    .pipe(z.number().min(min, problem).max(max, problem));
}

export const boolean = z.stringbool({
  truthy: ['true', '1', 'yes'],
  falsy: ['false', '0', 'no'],
  error: (issue) => `must be true or false, got "${String(issue.input)}"`,
});

export function oneOf<const V extends readonly [string, ...string[]]>(values: V): z.ZodType<V[number]> {
  return z.enum(values, { error: (issue) => `must be ${alternatives(values)}, got "${String(issue.input)}"` });
}

/** Kept as written (not normalized): only checked to parse with one of `protocols`, e.g. `https:`. */
export function url(protocols: readonly string[]): z.ZodType<string, string> {
  return z
    .string()
    .refine((text) => URL.canParse(text), { error: 'is not a valid URL', abort: true })
    .refine((text) => protocols.includes(new URL(text).protocol), {
      error: (issue) => `must use ${alternatives(protocols)}, got ${new URL(String(issue.input)).protocol}`,
    });
}

/** Paths are appended to a base URL with a leading slash, so it keeps none of its own at the end. */
export function withoutTrailingSlashes(text: string): string {
  return text.replace(/\/+$/, '');
}

/**
 * Comma-separated URLs (spaces around the commas allowed), each checked like `url` and kept without
 * trailing slashes. A problem names the entry's position, not its text: a URL may carry credentials.
 * The same URL twice is refused: it would be one server counted as two.
 */
export function urlList(protocols: readonly string[]): z.ZodType<readonly string[]> {
  const one = url(protocols);
  return z.string().transform((text, context) => {
    const urls: string[] = [];
    // Compared as parsed, so that `HTTP://Host/v1/` and `http://host/v1` are one server.
    const seen = new Map<string, number>();
    for (const [index, entry] of text.split(',').map((part) => part.trim()).entries()) {
      const position = index + 1;
      const parsed = one.safeParse(entry);
      if (!parsed.success) {
        const problem = entry === '' ? 'is empty' : (parsed.error.issues[0]?.message ?? 'is not valid');
        context.issues.push({ code: 'custom', input: text, message: `entry ${position} ${problem}` });
        return z.NEVER;
      }
      const key = withoutTrailingSlashes(new URL(parsed.data).href);
      const earlier = seen.get(key);
      if (earlier !== undefined) {
        context.issues.push({ code: 'custom', input: text, message: `entry ${position} repeats entry ${earlier}` });
        return z.NEVER;
      }
      seen.set(key, position);
      urls.push(withoutTrailingSlashes(parsed.data));
    }
    return urls;
  });
}

export function isWebOrigin(text: string): boolean {
  if (!URL.canParse(text)) return false;
  const parsed = new URL(text);
  return parsed.origin === text && (parsed.protocol === 'http:' || parsed.protocol === 'https:');
}

export const origins: z.ZodType<readonly string[]> = z
  .string()
  .transform((text) => text.split(',').map((entry) => entry.trim()))
  .pipe(
    z.array(
      z.string().refine(isWebOrigin, {
        error: (issue) => `holds "${String(issue.input)}", which is not an origin like https://app.example.com`,
      }),
    ),
  );

export const password = z.string().check((context) => {
  const problem = passwordProblem(context.value);
  if (problem !== null) context.issues.push({ code: 'custom', message: problem, input: context.value });
});

export interface Tree {
  readonly [key: string]: Variable<unknown> | Tree;
}

/** What the tree reads as: each variable replaced by its value. */
export type Values<T> = { readonly [K in keyof T]: T[K] extends Variable<infer V> ? V : Values<T[K]> };

/** The variables of `tree` in declaration order. */
export function variablesOf(tree: Tree): Variable<unknown>[] {
  return Object.values(tree).flatMap((node) => (node instanceof Variable ? [node] : variablesOf(node)));
}
