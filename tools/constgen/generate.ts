/**
 * Reads the `#define CK*` constants of an OASIS-derived pkcs11.h and emits a
 * TypeScript table of their numbers. Values are evaluated with BigInt; only
 * the operators the header uses are understood (literals with U/L suffixes,
 * casts to unsigned long, names defined earlier, `<<`, `|`, `+`, unary `-`,
 * parentheses). A define whose value is anything else is an error, so a new
 * header cannot silently drop a constant.
 */

/** Defines that are not numbers (calling conventions, pointer macros). */
const NOT_NUMBERS: ReadonlySet<string> = new Set(['CK_SPEC', 'CK_PTR', 'CK_DECLARE_FUNCTION', 'CK_DECLARE_FUNCTION_POINTER', 'CK_CALLBACK_FUNCTION', 'CK_NEED_ARG_LIST']);

/** ~0UL and other values that do not fit a CK_ULONG of 32 bits are left out: a JS number cannot carry ~0UL of 64 bits exactly. */
const MAX_VALUE = 0xffffffffn;

export interface Constant {
  name: string;
  value: bigint;
  line: number;
}

export class ConstgenError extends Error {
  constructor(
    readonly file: string,
    readonly line: number,
    rule: string,
  ) {
    super(`${file}:${line}: ${rule}`);
    this.name = 'ConstgenError';
  }
}

type Tok = { k: 'num'; v: bigint } | { k: 'name'; v: string } | { k: 'op'; v: string };

function tokenize(expr: string): Tok[] | null {
  const out: Tok[] = [];
  const re = /\s*(?:(0[xX][0-9a-fA-F]+|[0-9]+)[uUlL]*|([A-Za-z_][A-Za-z0-9_]*)|(<<|[()|+\-~]))/y;
  let i = 0;
  while (i < expr.length) {
    if (/^\s*$/.test(expr.slice(i))) break;
    re.lastIndex = i;
    const m = re.exec(expr);
    if (!m) return null;
    if (m[1] !== undefined) out.push({ k: 'num', v: BigInt(m[1]) });
    else if (m[2] !== undefined) out.push({ k: 'name', v: m[2] });
    else out.push({ k: 'op', v: m[3] });
    i = re.lastIndex;
  }
  return out;
}

/** Evaluates with C unsigned long (64-bit) semantics. */
function evaluate(toks: Tok[], known: ReadonlyMap<string, bigint>): bigint | string {
  let p = 0;
  const MASK = (1n << 64n) - 1n;
  const peek = (): Tok | undefined => toks[p];
  const isOp = (v: string): boolean => peek()?.k === 'op' && peek()?.v === v;
  const primary = (): bigint => {
    const t = toks[p++];
    if (!t) throw new Error('unexpected end of expression');
    if (t.k === 'num') return t.v;
    if (t.k === 'name') {
      const v = known.get(t.v);
      if (v === undefined) throw new Error(`unknown name '${t.v}'`);
      return v;
    }
    if (t.v === '(') {
      // A cast: (unsigned long) or (CK_ULONG).
      const cast: string[] = [];
      let q = p;
      while (toks[q]?.k === 'name' && ['unsigned', 'long', 'CK_ULONG'].includes(toks[q].v as string)) cast.push(toks[q++].v as string);
      if (cast.length > 0 && toks[q]?.k === 'op' && toks[q].v === ')') {
        p = q + 1;
        return unary();
      }
      const v = or();
      if (!isOp(')')) throw new Error("missing ')'");
      p++;
      return v;
    }
    if (t.v === '-') return (-unary()) & MASK;
    if (t.v === '~') return ~unary() & MASK;
    throw new Error(`unexpected '${t.v}'`);
  };
  const unary = (): bigint => primary();
  const shift = (): bigint => {
    let v = unary();
    while (isOp('<<')) {
      p++;
      v = (v << unary()) & MASK;
    }
    return v;
  };
  const add = (): bigint => {
    let v = shift();
    while (isOp('+')) {
      p++;
      v = (v + shift()) & MASK;
    }
    return v;
  };
  const or = (): bigint => {
    let v = add();
    while (isOp('|')) {
      p++;
      v |= add();
    }
    return v;
  };
  try {
    const v = or();
    if (p !== toks.length) return 'trailing tokens';
    return v & MASK;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

/** Every CK* numeric define of the header, in file order, first definition of each name. */
export function parseHeader(text: string, file: string): Constant[] {
  const known = new Map<string, bigint>();
  const out: Constant[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\/\*.*?\*\//g, '').replace(/\/\/.*$/, '');
    const m = /^\s*#\s*define\s+(CK[A-Z]*_[A-Za-z0-9_]+|CRYPTOKI_VERSION_[A-Z]+)\s+(.+?)\s*$/.exec(line);
    if (!m || NOT_NUMBERS.has(m[1])) return;
    const [, name, expr] = m;
    const toks = tokenize(expr);
    if (!toks) throw new ConstgenError(file, i + 1, `cannot read the value of ${name}: ${expr}`);
    const v = evaluate(toks, known);
    if (typeof v === 'string') throw new ConstgenError(file, i + 1, `cannot evaluate ${name}: ${v}`);
    const prev = known.get(name);
    if (prev !== undefined) {
      if (prev !== v) throw new ConstgenError(file, i + 1, `${name} redefined with another value`);
      return;
    }
    known.set(name, v);
    out.push({ name, value: v, line: i + 1 });
  });
  return out;
}

const hex = (v: bigint): string => `0x${v.toString(16)}`;

/** Header constants in header order; a name also in `extras` takes the extras value. */
export function emit(constants: readonly Constant[], source: string, extras: readonly Constant[], extrasSource: string): string {
  const seen = new Set<string>();
  const fix = new Map(extras.map((c) => [c.name, c]));
  const lines: string[] = [];
  const push = (c: Constant, from: string | null): void => {
    if (seen.has(c.name) || c.value > MAX_VALUE) return;
    seen.add(c.name);
    lines.push(`  ${c.name}: ${hex(c.value)},${from !== null ? ` // ${from}:${c.line}` : ''}`);
  };
  for (const c of constants) {
    const f = fix.get(c.name);
    push(f ?? c, f ? extrasSource : null);
  }
  for (const c of extras) push(c, extrasSource);
  return [
    `// DO NOT EDIT. Generated by tools/constgen from ${source} and ${extrasSource}.`,
    '// Regenerate with: npm run generate:constants',
    '',
    '/**',
    ' * PKCS#11 constant numbers. Values above 0xffffffff (CK_UNAVAILABLE_INFORMATION',
    ' * is ~0UL) are left out; see src/pkcs11/constants.ts for their wire forms.',
    ' */',
    'const table = {',
    ...lines,
    '};',
    '',
    'export const ck: Readonly<typeof table> = Object.freeze(table);',
    '',
    'export type CkName = keyof typeof table;',
    '',
  ].join('\n');
}
