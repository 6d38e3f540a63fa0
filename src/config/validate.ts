/**
 * Schema validation of plain config data, with ajv errors turned into
 * `FILE:LINE:COL: key 'a.b[0].c': <rule>` via the parser's source map.
 */
import Ajv, { type ErrorObject, type SchemaObject, type ValidateFunction } from 'ajv';
import { ConfigInvalidError } from './errors';
import { type Plain, type Position, type SourceMap, pointerEscape, pointerSegments } from './syntax';

/**
 * `ruleText` is our schema annotation: the rule to report when this schema
 * node fails (instead of the generic text derived from the ajv keyword).
 */
const ajv = new Ajv({
  allErrors: true,
  verbose: true,
  strict: true,
  strictTuples: true,
  allowUnionTypes: true,
});
ajv.addVocabulary(['ruleText']);

export function compileSchema(schema: SchemaObject): ValidateFunction {
  return ajv.compile(schema);
}

/** Dotted display path for a JSON pointer: object keys joined by `.`, array indices as `[i]`. */
export function displayPath(data: Plain, pointer: string): string {
  let out = '';
  let cur: Plain | undefined = data;
  for (const seg of pointerSegments(pointer)) {
    if (Array.isArray(cur)) {
      out += `[${seg}]`;
      cur = cur[Number(seg)];
    } else {
      out += out === '' ? seg : `.${seg}`;
      cur = cur !== undefined && typeof cur === 'object' ? cur[seg] : undefined;
    }
  }
  return out;
}

function valueAt(data: Plain, pointer: string): Plain | undefined {
  let cur: Plain | undefined = data;
  for (const seg of pointerSegments(pointer)) {
    if (cur === undefined || typeof cur !== 'object') return undefined;
    cur = Array.isArray(cur) ? cur[Number(seg)] : cur[seg];
  }
  return cur;
}

const ORIGIN: Position = { line: 1, column: 1 };

/** Error for the entry at `pointer`, positioned at its key (or value when `at` is 'value'). */
export function invalidAt(
  file: string,
  data: Plain,
  map: SourceMap,
  pointer: string,
  rule: string,
  at: 'key' | 'value' = 'value',
  key?: string,
): ConfigInvalidError {
  const spot = map.get(pointer);
  const pos = (at === 'key' ? (spot?.key ?? spot?.value) : spot?.value) ?? ORIGIN;
  return new ConfigInvalidError(file, pos.line, pos.column, key ?? displayPath(data, pointer), rule);
}

const TYPE_NAMES: Record<string, string> = {
  string: 'a string',
  integer: 'an integer',
  number: 'a number',
  boolean: 'a boolean (true or false)',
  array: 'a list',
  object: 'a block { ... }',
};

function typeRule(expected: string, actual: Plain | undefined): string {
  if (expected === 'object' && Array.isArray(actual)) return 'block must appear at most once';
  const names = expected.split(',').map((t) => TYPE_NAMES[t] ?? t);
  return `must be ${names.join(' or ')}`;
}

interface Mapped {
  pos: Position;
  key: string;
  rule: string;
  /** Orders errors at the same position: a missing key is usually caused by a misspelt one there. */
  rank: number;
}

function mapError(e: ErrorObject, data: Plain, map: SourceMap): Mapped | null {
  const spot = map.get(e.instancePath);
  const here = spot?.value ?? ORIGIN;
  const display = displayPath(data, e.instancePath);
  const join = (child: string): string => (display === '' ? child : `${display}.${child}`);
  const ruleText = (e.parentSchema as { ruleText?: unknown } | undefined)?.ruleText;
  const p = e.params as Record<string, unknown>;

  switch (e.keyword) {
    case 'if':
      return null;
    case 'additionalProperties': {
      const child = String(p.additionalProperty);
      const childSpot = map.get(`${e.instancePath}/${pointerEscape(child)}`);
      return {
        pos: childSpot?.key ?? childSpot?.value ?? here,
        key: join(child),
        rule: 'unknown key',
        rank: 0,
      };
    }
    case 'required':
      return {
        pos: spot?.key ?? here,
        key: join(String(p.missingProperty)),
        rule: 'missing required key',
        rank: 1,
      };
    case 'dependencies':
      return {
        pos: spot?.key ?? here,
        key: join(String(p.missingProperty)),
        rule: `missing required key (needed by '${String(p.property)}')`,
        rank: 1,
      };
    default:
      break;
  }
  let rule: string;
  if (typeof ruleText === 'string') {
    rule = ruleText;
  } else {
    switch (e.keyword) {
      case 'type':
        rule = typeRule(String(p.type), valueAt(data, e.instancePath));
        break;
      case 'enum':
        rule = `must be one of: ${(p.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
        break;
      case 'const':
        rule = `must be ${JSON.stringify(p.allowedValue)}`;
        break;
      case 'minItems':
        rule = p.limit === 1 ? 'must not be empty' : `must have at least ${String(p.limit)} items`;
        break;
      case 'maxItems':
      case 'additionalItems':
        rule = `must have at most ${String(p.limit)} items`;
        break;
      case 'minLength':
        rule = p.limit === 1 ? 'must not be empty' : `must be at least ${String(p.limit)} characters`;
        break;
      case 'maxLength':
        rule = `must be at most ${String(p.limit)} characters`;
        break;
      case 'minimum':
      case 'maximum':
      case 'exclusiveMinimum':
      case 'exclusiveMaximum':
        rule = `must be ${String(p.comparison)} ${String(p.limit)}`;
        break;
      case 'pattern':
        rule = `must match ${String(p.pattern)}`;
        break;
      case 'not':
      case 'false schema':
        rule = 'not allowed here';
        break;
      default:
        rule = e.message ?? e.keyword;
    }
  }
  return { pos: here, key: display, rule, rank: 0 };
}

/**
 * Validate and throw the error that comes first in the file. Reporting in
 * source order (not ajv's traversal order) makes the message stable and
 * points the user at the first thing to fix.
 */
export function validatePlain(validate: ValidateFunction, data: Plain, map: SourceMap, file: string): void {
  if (validate(data)) return;
  const mapped = (validate.errors ?? [])
    .map((e) => mapError(e, data, map))
    .filter((m): m is Mapped => m !== null)
    .sort((a, b) => a.pos.line - b.pos.line || a.pos.column - b.pos.column || a.rank - b.rank);
  const first = mapped[0] ?? { pos: ORIGIN, key: '', rule: 'invalid configuration', rank: 0 };
  throw new ConfigInvalidError(file, first.pos.line, first.pos.column, first.key || undefined, first.rule);
}
