// Values that a JSON schema accepts, made up deterministically: what the simulated model
// "generates" for tool-call arguments and for structured output (response_format), the way
// vLLM's guided decoding only ever lets valid JSON through. Covers what tool and output
// schemas use in practice (OpenAI's strict subset, zod's and pydantic's output): type (or a
// list of types), enum, const, properties with required, items with minItems/maxItems,
// minimum/maximum (exclusive too), minLength/maxLength, common string formats, anyOf/oneOf
// (the first branch), allOf (merged), and local $ref into $defs/definitions.
import { loremWords } from './generation';

type Schema = Record<string, unknown>;

function isSchema(value: unknown): value is Schema {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Python's json.dumps with its default separators (", " and ": "), as vLLM's tool parsers serialise arguments. */
export function pythonJsonDumps(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(pythonJsonDumps).join(', ')}]`;
  if (isSchema(value)) {
    return `{${Object.entries(value)
      .map(([key, item]) => `${JSON.stringify(key)}: ${pythonJsonDumps(item)}`)
      .join(', ')}}`;
  }
  return JSON.stringify(value);
}

const MAX_DEPTH = 8;

export class JsonValueMaker {
  constructor(
    private readonly root: Schema,
    private readonly random: () => number,
  ) {}

  make(): unknown {
    return this.value(this.root, 0);
  }

  private resolve(schema: Schema): Schema {
    const ref = schema['$ref'];
    if (typeof ref !== 'string') return schema;
    const match = /^#\/(\$defs|definitions)\/(.+)$/.exec(ref);
    const definitions = match === null ? undefined : this.root[match[1]];
    const target = match !== null && isSchema(definitions) ? definitions[match[2]] : undefined;
    return isSchema(target) ? target : {};
  }

  private value(raw: Schema, depth: number): unknown {
    const schema = this.resolve(raw);
    if (schema['const'] !== undefined) return schema['const'];
    if (Array.isArray(schema['enum']) && schema['enum'].length > 0) return schema['enum'][0];
    for (const key of ['anyOf', 'oneOf']) {
      const branches = schema[key];
      if (Array.isArray(branches)) {
        const first = branches.find((branch) => isSchema(branch) && this.resolve(branch)['type'] !== 'null') ?? branches[0];
        if (isSchema(first)) return this.value(first, depth + 1);
      }
    }
    if (Array.isArray(schema['allOf'])) {
      const merged = schema['allOf'].filter(isSchema).reduce<Schema>((into, part) => mergeSchemas(into, this.resolve(part)), {});
      return this.value(mergeSchemas(merged, { ...schema, allOf: undefined }), depth + 1);
    }
    switch (typeOf(schema)) {
      case 'object':
        return depth >= MAX_DEPTH ? {} : this.object(schema, depth);
      case 'array':
        return depth >= MAX_DEPTH ? [] : this.array(schema, depth);
      case 'integer':
        return this.integer(schema);
      case 'number':
        return this.integer(schema) + 0.5 <= upperBound(schema) ? this.integer(schema) + 0.5 : this.integer(schema);
      case 'boolean':
        return this.random() < 0.5;
      case 'null':
        return null;
      default:
        return this.string(schema);
    }
  }

  private object(schema: Schema, depth: number): Record<string, unknown> {
    const properties = isSchema(schema['properties']) ? schema['properties'] : {};
    const result: Record<string, unknown> = {};
    for (const [name, property] of Object.entries(properties)) {
      if (isSchema(property)) result[name] = this.value(property, depth + 1);
    }
    return result;
  }

  private array(schema: Schema, depth: number): unknown[] {
    const items = isSchema(schema['items']) ? schema['items'] : {};
    const min = typeof schema['minItems'] === 'number' ? schema['minItems'] : 1;
    const max = typeof schema['maxItems'] === 'number' ? schema['maxItems'] : Math.max(min, 2);
    const count = Math.min(Math.max(min, 1), max);
    return Array.from({ length: count }, () => this.value(items, depth + 1));
  }

  private integer(schema: Schema): number {
    const low = lowerBound(schema);
    const high = upperBound(schema);
    const start = Number.isFinite(low) ? Math.ceil(low) : Number.isFinite(high) ? Math.floor(high) - 10 : 1;
    const span = Number.isFinite(high) ? Math.max(0, Math.floor(high) - start) : 20;
    return start + Math.floor(this.random() * (Math.min(span, 20) + 1));
  }

  private string(schema: Schema): string {
    const format = schema['format'];
    if (format === 'date-time') return '2026-01-15T09:30:00Z';
    if (format === 'date') return '2026-01-15';
    if (format === 'time') return '09:30:00';
    if (format === 'email') return 'lorem@example.com';
    if (format === 'uri' || format === 'url') return 'https://example.com/lorem';
    if (format === 'uuid') return '3f2b8c1e-5d4a-4e8b-9c7d-2a1b0c9d8e7f';
    const min = typeof schema['minLength'] === 'number' ? schema['minLength'] : 0;
    const max = typeof schema['maxLength'] === 'number' ? schema['maxLength'] : Number.POSITIVE_INFINITY;
    let text = loremWords(this.random, 1 + Math.floor(this.random() * 3));
    while (text.length < min) text += ` ${loremWords(this.random, 1)}`;
    return text.slice(0, max);
  }
}

function typeOf(schema: Schema): string {
  const type = schema['type'];
  if (typeof type === 'string') return type;
  if (Array.isArray(type)) return (type.find((item) => item !== 'null') as string | undefined) ?? 'null';
  if (isSchema(schema['properties'])) return 'object';
  if (schema['items'] !== undefined) return 'array';
  return 'string';
}

function lowerBound(schema: Schema): number {
  if (typeof schema['minimum'] === 'number') return schema['minimum'];
  if (typeof schema['exclusiveMinimum'] === 'number') return Math.floor(schema['exclusiveMinimum']) + 1;
  return Number.NEGATIVE_INFINITY;
}

function upperBound(schema: Schema): number {
  if (typeof schema['maximum'] === 'number') return schema['maximum'];
  if (typeof schema['exclusiveMaximum'] === 'number') return Math.ceil(schema['exclusiveMaximum']) - 1;
  return Number.POSITIVE_INFINITY;
}

function mergeSchemas(a: Schema, b: Schema): Schema {
  const merged: Schema = { ...a };
  for (const [key, value] of Object.entries(b)) {
    if (value === undefined) continue;
    if (key === 'properties' && isSchema(merged[key]) && isSchema(value)) merged[key] = { ...merged[key], ...value };
    else merged[key] = value;
  }
  return merged;
}
