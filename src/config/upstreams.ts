import { readFileSync } from 'node:fs';
import { LineCounter, parseDocument } from 'yaml';
import { z } from 'zod';
import { ConfigError } from './errors';
import { url, withoutTrailingSlashes } from './variables';

/** One vLLM server of the fleet. */
export interface UpstreamSpec {
  /** Unique, `^[a-z0-9-]+$`: it names the upstream in logs and metrics. */
  readonly name: string;
  /** Without a trailing slash. */
  readonly baseUrl: string;
  /** Sent as its bearer token; null: none. */
  readonly apiKey: string | null;
}

/** What the fleet is read from: the three variables, as `SETTINGS.vllm` parsed them. */
export interface UpstreamSources {
  readonly baseUrls: readonly string[];
  readonly apiKey: string | null;
  readonly upstreamsFile: string | null;
}

const FILE_VARIABLE = 'UPSTREAMS_FILE';
const NAME = /^[a-z0-9-]+$/;

/** Zod's `invalid_type` issue for a missing key has `undefined` as its input. */
function stringProblem(issue: { readonly input?: unknown }): string {
  return issue.input === undefined ? 'is missing' : 'must be a string';
}

// Messages follow the issue's path (`upstreams[0].name …`) and never quote a value but the name:
// an apiKey's value must not reach a log, and a baseUrl may carry credentials.
const upstreamEntry = z.strictObject(
  {
    name: z.string({ error: stringProblem }).regex(NAME, {
      error: (issue) => `is ${JSON.stringify(issue.input)}, not lower-case letters, digits and dashes`,
    }),
    baseUrl: z
      .string({ error: stringProblem })
      .pipe(url(['http:', 'https:']))
      .transform(withoutTrailingSlashes),
    apiKey: z.string({ error: 'must be a string' }).min(1, { error: 'is empty (leave it out for none)' }).optional(),
  },
  { error: (issue) => (issue.code === 'invalid_type' ? 'must be a mapping with name and baseUrl' : undefined) },
);

const upstreamsFile = z.strictObject(
  {
    upstreams: z
      .array(upstreamEntry, { error: (issue) => (issue.input === undefined ? 'is missing' : 'must be a list') })
      .min(1, { error: 'is empty: at least one upstream is needed' }),
  },
  { error: (issue) => (issue.code === 'invalid_type' ? 'must hold a mapping with an "upstreams" list' : undefined) },
);

/** `upstreams[1].baseUrl` */
function pathText(path: readonly PropertyKey[]): string {
  return path.map((key, index) => (typeof key === 'number' ? `[${key}]` : `${index === 0 ? '' : '.'}${String(key)}`)).join('');
}

function issueText(issue: z.core.$ZodIssue): string {
  const at = pathText(issue.path);
  const problem =
    issue.code === 'unrecognized_keys'
      ? `has ${issue.keys.length === 1 ? 'an unknown key' : 'unknown keys'} ${issue.keys.map((key) => JSON.stringify(key)).join(', ')}`
      : issue.message;
  return at === '' ? problem : `${at} ${problem}`;
}

/**
 * The values written after `apiKey` in the file's text, in both YAML and JSON spelling. A parse error
 * leaves no parsed value to go by, and some of the yaml package's messages quote the source (a tag,
 * an escape, an alias), so every message about the file is scrubbed of these as a last guard.
 */
function apiKeysIn(text: string): string[] {
  const keys: string[] = [];
  // The scalar after the colon: double-quoted (escapes and all), single-quoted, or plain up to the
  // end of a flow item or of the line.
  for (const match of text.matchAll(/apiKey["']?\s*:\s*("(?:[^"\\\n]|\\.)*"?|'[^'\n]*'?|[^,\]}\n]*)/g)) {
    const value = (match[1] ?? '').trim();
    const unquoted = value.replace(/^["']|["']$/g, '');
    // As written, unquoted, and its words without a tag's, alias's or anchor's sigil: a message may quote any.
    const words = unquoted.split(/\s+/).map((word) => word.replace(/^[!&*]+/, ''));
    for (const candidate of [value, unquoted, ...words]) {
      if (candidate.length >= 3) keys.push(candidate);
    }
  }
  // Longest first, so that a part never leaves the rest of its key behind.
  return keys.sort((a, b) => b.length - a.length);
}

function scrubbed(message: string, secrets: readonly string[]): string {
  let result = message;
  for (const secret of secrets) result = result.split(secret).join('[redacted]');
  // One line, so that main.ts prints one line.
  return result.replace(/\s*\n[\s\S]*$/, '');
}

function readText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why: Record<string, string> = { ENOENT: 'does not exist', EISDIR: 'is a directory', EACCES: 'cannot be read: permission denied' };
    const problem = (code === undefined ? undefined : why[code]) ?? `cannot be read (${code ?? 'unknown error'})`;
    throw new ConfigError(FILE_VARIABLE, `${file} ${problem}`);
  }
}

type Refuse = (problem: string) => ConfigError;

/** The parsed file as plain data; YAML and JSON alike, since JSON is YAML. */
function parsedData(file: string, text: string, refuse: Refuse): unknown {
  const lineCounter = new LineCounter();
  // Plain messages: the pretty ones add lines of the source, which may hold a key.
  const document = parseDocument(text, { lineCounter, prettyErrors: false });
  // A warning is refused too: an unresolved tag, say, would silently read as a plain string.
  const error = document.errors[0] ?? document.warnings[0];
  if (error !== undefined) {
    const { line, col } = lineCounter.linePos(error.pos[0]);
    throw refuse(`${file} line ${line}, column ${col}: ${error.message}`);
  }
  try {
    return document.toJS();
  } catch (error) {
    // toJS throws for an alias without its anchor, and for aliases expanding beyond its limit.
    throw refuse(`${file} cannot be read as data: ${(error as Error).message}`);
  }
}

function fromFile(file: string): readonly UpstreamSpec[] {
  const text = readText(file);
  const secrets = apiKeysIn(text);
  const refuse: Refuse = (problem) => new ConfigError(FILE_VARIABLE, scrubbed(problem, secrets));
  const result = upstreamsFile.safeParse(parsedData(file, text, refuse));
  if (!result.success) {
    const issue = result.error.issues[0];
    throw refuse(`${file}: ${issue === undefined ? 'is not valid' : issueText(issue)}`);
  }
  const upstreams = result.data.upstreams;
  const firstByName = new Map<string, number>();
  const firstByUrl = new Map<string, number>();
  for (const [index, upstream] of upstreams.entries()) {
    const sameName = firstByName.get(upstream.name);
    if (sameName !== undefined) throw refuse(`${file}: upstreams[${index}].name "${upstream.name}" repeats upstreams[${sameName}]'s`);
    // One server listed twice would be counted, probed and retried as two.
    const urlKey = withoutTrailingSlashes(new URL(upstream.baseUrl).href);
    const sameUrl = firstByUrl.get(urlKey);
    if (sameUrl !== undefined) throw refuse(`${file}: upstreams[${index}].baseUrl repeats upstreams[${sameUrl}]'s`);
    firstByName.set(upstream.name, index);
    firstByUrl.set(urlKey, index);
  }
  return upstreams.map(({ name, baseUrl, apiKey }) => ({ name, baseUrl, apiKey: apiKey ?? null }));
}

/**
 * The fleet: UPSTREAMS_FILE's list, or VLLM_BASE_URL's URLs named `upstream-1`, `upstream-2`, …
 * each with VLLM_API_KEY. Empty when neither is set: the built-in simulator answers.
 */
export function configuredUpstreams(sources: UpstreamSources): readonly UpstreamSpec[] {
  if (sources.upstreamsFile === null) {
    return sources.baseUrls.map((baseUrl, index) => ({ name: `upstream-${index + 1}`, baseUrl, apiKey: sources.apiKey }));
  }
  // Both at once leaves unclear which one the operator meant; only names are said, never the values.
  const alsoSet = [sources.baseUrls.length > 0 ? 'VLLM_BASE_URL' : null, sources.apiKey !== null ? 'VLLM_API_KEY' : null].filter(
    (name): name is string => name !== null,
  );
  if (alsoSet.length > 0) {
    throw new ConfigError(FILE_VARIABLE, `replaces VLLM_BASE_URL and VLLM_API_KEY: unset ${alsoSet.join(' and ')}, or UPSTREAMS_FILE`);
  }
  return fromFile(sources.upstreamsFile);
}
