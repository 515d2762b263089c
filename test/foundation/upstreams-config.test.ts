import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, loadConfig, type Config } from '../../src/config';

const LONG_SECRET = 'a-jwt-secret-that-is-long-enough-0123456789';
const SECRET_KEY = 'sk-secret-123';

let folder: string;
beforeEach(() => {
  folder = mkdtempSync(path.join(os.tmpdir(), 'upstreams-config-'));
});
afterEach(() => rmSync(folder, { recursive: true, force: true }));

function envWith(overrides: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  return { NODE_ENV: 'test', DATA_DIR: path.join(folder, 'data'), JWT_SECRET: LONG_SECRET, ...overrides };
}

/** Writes `text` into the temp folder; its path. */
function file(name: string, text: string): string {
  const at = path.join(folder, name);
  writeFileSync(at, text);
  return at;
}

function load(overrides: Record<string, string | undefined>): Config {
  return loadConfig(envWith(overrides));
}

/** The ConfigError loadConfig throws for `overrides`, checked to be one line naming `variable`. */
function refusal(overrides: Record<string, string | undefined>, variable: string): ConfigError {
  let caught: unknown;
  try {
    loadConfig(envWith(overrides));
  } catch (error) {
    caught = error;
  }
  if (caught === undefined) throw new Error(`loadConfig accepted ${JSON.stringify(overrides)}`);
  expect(caught).toBeInstanceOf(ConfigError);
  const error = caught as ConfigError;
  expect(error.variable).toBe(variable);
  expect(error.message.startsWith(`${variable} `)).toBe(true);
  expect(error.message).not.toContain('\n');
  return error;
}

/** The refusal of an UPSTREAMS_FILE holding `text`; never mentions SECRET_KEY. */
function fileRefusal(text: string, name = 'upstreams.yaml'): string {
  const message = refusal({ UPSTREAMS_FILE: file(name, text) }, 'UPSTREAMS_FILE').message;
  expect(message).not.toContain(SECRET_KEY);
  return message;
}

describe('upstreams from VLLM_BASE_URL', () => {
  it('are none when nothing is configured: the simulator runs', () => {
    const config = load({});
    expect(config.upstreams).toEqual([]);
    expect(config.vllm).toEqual({ timeoutMs: 120_000, tiktokenMargin: 0.1, promptCount: 'bound' });
  });

  it('is one upstream for one URL, its trailing slashes removed, with VLLM_API_KEY', () => {
    const config = load({ VLLM_BASE_URL: 'http://gpu-host:8000/v1//', VLLM_API_KEY: 'key-1' });
    expect(config.upstreams).toEqual([{ name: 'upstream-1', baseUrl: 'http://gpu-host:8000/v1', apiKey: 'key-1' }]);
  });

  it('are several for comma-separated URLs, named in order, each with VLLM_API_KEY', () => {
    const config = load({ VLLM_BASE_URL: 'http://a:8000/v1/ ,https://b/v1 , http://c:9000', VLLM_API_KEY: 'shared' });
    expect(config.upstreams).toEqual([
      { name: 'upstream-1', baseUrl: 'http://a:8000/v1', apiKey: 'shared' },
      { name: 'upstream-2', baseUrl: 'https://b/v1', apiKey: 'shared' },
      { name: 'upstream-3', baseUrl: 'http://c:9000', apiKey: 'shared' },
    ]);
    expect(Object.isFrozen(config.upstreams)).toBe(true);
    expect(Object.isFrozen(config.upstreams[1])).toBe(true);
  });

  it('have no key without VLLM_API_KEY', () => {
    expect(load({ VLLM_BASE_URL: 'http://a/v1,http://b/v1' }).upstreams.map((upstream) => upstream.apiKey)).toEqual([null, null]);
  });

  it.each([
    ['http://a/v1, not a url', 'VLLM_BASE_URL entry 2 is not a valid URL'],
    ['http://a/v1,ftp://b/v1', 'VLLM_BASE_URL entry 2 must use http: or https:, got ftp:'],
    ['http://a/v1,,http://b/v1', 'VLLM_BASE_URL entry 2 is empty'],
    ['http://a/v1,', 'VLLM_BASE_URL entry 2 is empty'],
    ['nope', 'VLLM_BASE_URL entry 1 is not a valid URL'],
    ['http://a/v1, http://b/v1, http://a/v1/', 'VLLM_BASE_URL entry 3 repeats entry 1'],
    ['http://a/v1, HTTP://A/v1', 'VLLM_BASE_URL entry 2 repeats entry 1'],
  ])('refuses VLLM_BASE_URL=%j: %s', (value, message) => {
    expect(refusal({ VLLM_BASE_URL: value }, 'VLLM_BASE_URL').message).toBe(message);
  });

  it('never quotes an entry, which may carry credentials', () => {
    const message = refusal({ VLLM_BASE_URL: 'http://user:pw-in-url@a/v1, http://user:pw-in-url@a/v1' }, 'VLLM_BASE_URL').message;
    expect(message).not.toContain('pw-in-url');
  });
});

describe('upstreams from UPSTREAMS_FILE', () => {
  const YAML_FLEET = [
    'upstreams:',
    '  - name: gpu-a',
    '    baseUrl: http://gpu-a:8000/v1/',
    `    apiKey: ${SECRET_KEY}`,
    '  - name: gpu-b',
    '    baseUrl: https://gpu-b.example/v1',
    '',
  ].join('\n');

  it('reads a YAML file', () => {
    const config = load({ UPSTREAMS_FILE: file('fleet.yaml', YAML_FLEET) });
    expect(config.upstreams).toEqual([
      { name: 'gpu-a', baseUrl: 'http://gpu-a:8000/v1', apiKey: SECRET_KEY },
      { name: 'gpu-b', baseUrl: 'https://gpu-b.example/v1', apiKey: null },
    ]);
  });

  it('reads a JSON file, tab-indented too', () => {
    const fleet = { upstreams: [{ name: 'one', baseUrl: 'http://one/v1/', apiKey: 'k1' }, { name: 'two', baseUrl: 'http://two/v1' }] };
    for (const text of [JSON.stringify(fleet), JSON.stringify(fleet, null, '\t')]) {
      expect(load({ UPSTREAMS_FILE: file('fleet.json', text) }).upstreams).toEqual([
        { name: 'one', baseUrl: 'http://one/v1', apiKey: 'k1' },
        { name: 'two', baseUrl: 'http://two/v1', apiKey: null },
      ]);
    }
  });

  it('resolves a relative path against the working directory', () => {
    const at = file('fleet.yaml', YAML_FLEET);
    expect(load({ UPSTREAMS_FILE: path.relative(process.cwd(), at) }).upstreams).toHaveLength(2);
  });

  it.each([
    ['VLLM_BASE_URL', { VLLM_BASE_URL: 'http://a/v1' }],
    ['VLLM_API_KEY', { VLLM_API_KEY: 'env-key-456' }],
  ])('is refused together with %s, in one line that says the file replaces them', (_name, others) => {
    const message = refusal({ UPSTREAMS_FILE: file('fleet.yaml', YAML_FLEET), ...others }, 'UPSTREAMS_FILE').message;
    expect(message).toMatch(/^UPSTREAMS_FILE replaces VLLM_BASE_URL and VLLM_API_KEY/);
    expect(message).toContain(_name);
    expect(message).not.toContain('env-key-456');
  });

  it('names the missing file', () => {
    const missing = path.join(folder, 'no-such.yaml');
    expect(refusal({ UPSTREAMS_FILE: missing }, 'UPSTREAMS_FILE').message).toBe(`UPSTREAMS_FILE ${missing} does not exist`);
  });

  it('names a path that is a directory', () => {
    expect(refusal({ UPSTREAMS_FILE: folder }, 'UPSTREAMS_FILE').message).toBe(`UPSTREAMS_FILE ${folder} is a directory`);
  });

  it('names an unreadable file', () => {
    // root reads any file whatever its mode: nothing to test then.
    if (process.getuid?.() === 0) return;
    const at = file('locked.yaml', YAML_FLEET);
    chmodSync(at, 0o000);
    expect(refusal({ UPSTREAMS_FILE: at }, 'UPSTREAMS_FILE').message).toBe(`UPSTREAMS_FILE ${at} cannot be read: permission denied`);
  });

  it('gives the line of a YAML parse error, without the source', () => {
    const message = fileRefusal(['upstreams:', '  - name: a', `    apiKey: ${SECRET_KEY}`, '   bad: [', ''].join('\n'));
    expect(message).toMatch(/^UPSTREAMS_FILE \S+upstreams\.yaml line 4, column \d+: \S/);
  });

  it('gives the line of a JSON parse error', () => {
    const text = ['{', '  "upstreams": [', `    {"name": "a", "baseUrl": "http://a/v1", "apiKey": "${SECRET_KEY}"}`, '    {"name": "b"}', '  ]', '}'].join('\n');
    expect(fileRefusal(text, 'fleet.json')).toMatch(/fleet\.json line 4, column \d+: /);
  });

  it('gives the line of a duplicate key', () => {
    expect(fileRefusal(['upstreams:', '  - name: a', '    name: b', '    baseUrl: http://a/v1', ''].join('\n'))).toMatch(
      /line 3, column \d+: Map keys must be unique/,
    );
  });

  it('never quotes an apiKey, even where the yaml package quotes the source', () => {
    // A tag, an escape and an alias are quoted by the yaml package's own messages.
    const message = fileRefusal(['upstreams:', '  - name: a', '    baseUrl: http://a/v1', `    apiKey: !!${SECRET_KEY} x`, ''].join('\n'));
    expect(message).toMatch(/line 4, column \d+: Unresolved tag: \S*\[redacted\]$/);
    fileRefusal(['upstreams:', '  - name: a', '    baseUrl: http://a/v1', `    apiKey: "${SECRET_KEY}\\q"`, ''].join('\n'));
    fileRefusal(['upstreams:', '  - name: a', '    baseUrl: http://a/v1', `    apiKey: *${SECRET_KEY}`, ''].join('\n'));
    fileRefusal(`{"upstreams": [{"name": "a", "baseUrl": "http://a/v1", "apiKey": !!${SECRET_KEY} "x"}]}`, 'fleet.json');
  });

  it('names an unknown key and the entry holding it', () => {
    const message = fileRefusal(`${YAML_FLEET}    x: 1\n`);
    expect(message).toMatch(/: upstreams\[1\] has an unknown key "x"$/);
  });

  it('names an unknown key at the top', () => {
    expect(fileRefusal(`${YAML_FLEET}retries: 3\n`)).toMatch(/ has an unknown key "retries"$/);
  });

  it.each([
    ['a duplicate name', [['a', 'http://a/v1'], ['a', 'http://b/v1']], /: upstreams\[1\]\.name "a" repeats upstreams\[0\]'s$/],
    ['a duplicate URL', [['a', 'http://a/v1'], ['b', 'http://a/v1/']], /: upstreams\[1\]\.baseUrl repeats upstreams\[0\]'s$/],
    ['a name with capitals', [['GPU-A', 'http://a/v1']], /: upstreams\[0\]\.name is "GPU-A", not lower-case letters, digits and dashes$/],
    ['a name with a space', [['gpu a', 'http://a/v1']], /: upstreams\[0\]\.name is "gpu a", not lower-case/],
    ['an empty name', [['', 'http://a/v1']], /: upstreams\[0\]\.name is "", not lower-case/],
    ['a bad URL', [['a', 'not a url']], /: upstreams\[0\]\.baseUrl is not a valid URL$/],
    ['an ftp URL', [['a', 'http://a/v1'], ['b', 'ftp://b/v1']], /: upstreams\[1\]\.baseUrl must use http: or https:, got ftp:$/],
  ])('refuses %s', (_case, entries, expected) => {
    const upstreams = entries.map(([name, baseUrl]) => ({ name, baseUrl, apiKey: SECRET_KEY }));
    expect(fileRefusal(JSON.stringify({ upstreams }), 'fleet.json')).toMatch(expected);
  });

  it.each([
    ['an empty file', '', / must hold a mapping with an "upstreams" list$/],
    ['no upstreams but another key', 'other: 1\n', /: upstreams is missing$/],
    ['an empty list', 'upstreams: []\n', /: upstreams is empty: at least one upstream is needed$/],
    ['a list of strings', `upstreams:\n  - ${SECRET_KEY}\n`, /: upstreams\[0\] must be a mapping with name and baseUrl$/],
    ['upstreams as a mapping', 'upstreams:\n  name: a\n', /: upstreams must be a list$/],
    ['a missing name', 'upstreams:\n  - baseUrl: http://a/v1\n', /: upstreams\[0\]\.name is missing$/],
    ['a missing baseUrl', 'upstreams:\n  - name: a\n', /: upstreams\[0\]\.baseUrl is missing$/],
    ['a numeric name', 'upstreams:\n  - name: 7\n    baseUrl: http://a/v1\n', /: upstreams\[0\]\.name must be a string$/],
    ['an empty apiKey', 'upstreams:\n  - name: a\n    baseUrl: http://a/v1\n    apiKey: ""\n', /: upstreams\[0\]\.apiKey is empty/],
    ['a numeric apiKey', 'upstreams:\n  - name: a\n    baseUrl: http://a/v1\n    apiKey: 123456\n', /: upstreams\[0\]\.apiKey must be a string$/],
  ])('refuses %s', (_case, text, expected) => {
    expect(fileRefusal(text)).toMatch(expected);
  });

  it('refuses a file without upstreams', () => {
    expect(fileRefusal('{}\n')).toMatch(/: upstreams is missing$/);
  });

  it('never puts an apiKey in any of its messages', () => {
    const withKey = (extra: string): string =>
      ['upstreams:', '  - name: Bad', '    baseUrl: http://a/v1', `    apiKey: ${SECRET_KEY}`, extra, ''].join('\n');
    for (const text of [withKey(''), withKey('    x: 1'), withKey('  - name: Bad'), withKey(`    apiKey: ${SECRET_KEY}`)]) fileRefusal(text);
  });
});
