import { SourcePos, XdrgenEmitError } from './errors';
import { Model, RDecl, RNamedDecl, RProcedure, RProgram, RType, RTypeDef, UNBOUNDED } from './model';
import { ALWAYS, BASE_IMPORTS, SNIPPETS, snippetNames } from './runtime';

export interface EmitOptions {
  /** Source path written in the header, with forward slashes (e.g. `rpc/pkcs11.x`). */
  readonly sourceName: string;
  /** Command named in the header. */
  readonly regenerateCommand?: string;
}

/** Words that cannot name a TypeScript value or type, and globals the generated code relies on. */
const RESERVED = new Set([
  ...'break case catch class const continue debugger default delete do else enum export extends false finally for function if import in instanceof new null return super switch this throw true try typeof var void while with'.split(' '),
  ...'implements interface let package private protected public static yield await arguments eval'.split(' '),
  ...'any bigint boolean never number object string symbol undefined unknown type keyof infer is asserts declare namespace module readonly abstract satisfies'.split(' '),
  ...'Array Boolean Buffer Error Map Math Number Object Promise ReadonlyMap ReadonlySet Record Set String Symbol NaN Infinity globalThis require exports'.split(' '),
]);

/** Names the program section declares; the Calls/Passthrough names depend on the program name. */
const PROGRAM_NAMES = ['CallName', 'CallSignatures', 'ProcedureDef', 'PROCEDURES', 'PROCEDURES_BY_VERSION', 'CALL_INVOKERS', 'defineProcedure', 'indexProcedures'];

type Base =
  | { kind: 'prim'; prim: 'int' | 'uint' | 'hyper' | 'uhyper' | 'float' | 'double' | 'bool' }
  | { kind: 'enum' | 'struct' | 'union'; name: string };

const PRIM_TS: Record<string, string> = {
  int: 'number',
  uint: 'number',
  hyper: 'number',
  uhyper: 'number',
  float: 'number',
  double: 'number',
  bool: 'boolean',
};
const PRIM_READ: Record<string, string> = {
  int: 'readInt',
  uint: 'readUint',
  hyper: 'readHyper',
  uhyper: 'readUhyper',
  float: 'readFloat',
  double: 'readDouble',
  bool: 'readBool',
};
const PRIM_WRITE: Record<string, string> = {
  int: 'writeInt',
  uint: 'writeUint',
  hyper: 'writeHyper',
  uhyper: 'writeUhyper',
  float: 'writeFloat',
  double: 'writeDouble',
  bool: 'writeBool',
};
const PRIM_CODEC: Record<string, string> = {
  int: 'intCodec',
  uint: 'unsignedIntCodec',
  hyper: 'hyperCodec',
  uhyper: 'unsignedHyperCodec',
  float: 'floatCodec',
  double: 'doubleCodec',
  bool: 'boolCodec',
};
const PRIM_SIZE: Record<string, number> = { int: 4, uint: 4, hyper: 8, uhyper: 8, float: 4, double: 8, bool: 4 };

const q = (s: string): string => `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
const pad4 = (n: number): number => n + ((4 - (n % 4)) % 4);
const num = (n: number): string => (n === UNBOUNDED ? 'XDR_UNBOUNDED' : String(n));

/** `PKCS11_PROG` -> `Pkcs11`: the prefix of the generated call interface and passthrough class. */
export function programPrefix(programName: string): string {
  const stem = programName.replace(/_PROG(RAM)?$/i, '') || programName;
  return stem
    .split('_')
    .filter((p) => p.length > 0)
    .map((p) => p[0].toUpperCase() + p.slice(1).toLowerCase())
    .join('');
}

/** `c_Sign` -> `C_Sign`; other names are kept. */
export function callName(rpcName: string): string {
  return rpcName.startsWith('c_') ? 'C_' + rpcName.slice(2) : rpcName;
}

/**
 * Emits one TypeScript module for a checked model. See the header comment of the output for the value
 * mapping. Throws XdrgenEmitError for names that cannot be TypeScript identifiers or that clash with the
 * generated ones, for procedures whose result has no integer `rv` field, and for conflicting signatures of
 * one call name across versions.
 */
export function emitTypeScript(model: Model, options: EmitOptions): string {
  return new Emitter(model, options).run();
}

class Emitter {
  private readonly used = new Set<string>(ALWAYS);
  private readonly declared = new Map<string, string>();

  constructor(
    private readonly model: Model,
    private readonly options: EmitOptions,
  ) {
    for (const n of snippetNames()) this.declared.set(n, 'the runtime glue');
  }

  private fail(pos: SourcePos | null, detail: string): never {
    throw new XdrgenEmitError(this.model.file, pos, detail);
  }

  private claim(name: string, what: string, pos: SourcePos | null): void {
    if (RESERVED.has(name)) this.fail(pos, `${what} '${name}' cannot be used as a TypeScript name`);
    const prev = this.declared.get(name);
    if (prev) this.fail(pos, `${what} '${name}' clashes with ${prev} of the same name in the generated code`);
    this.declared.set(name, what);
  }

  private use(...names: string[]): void {
    for (const n of names) this.used.add(n);
  }

  run(): string {
    const programs = this.model.definitions.filter((d): d is RProgram => d.kind === 'program');
    if (programs.length > 1) this.fail(programs[1].pos, 'only one program per file is supported');
    if (programs.length === 1) {
      const prefix = programPrefix(programs[0].name);
      for (const n of [...PROGRAM_NAMES, `${prefix}Calls`, `${prefix}Passthrough`]) {
        this.claim(n, 'a declaration of the procedure table', null);
      }
    }
    const body: string[] = [];
    this.model.definitions.forEach((def, i) => {
      switch (def.kind) {
        case 'const': {
          this.claim(def.name, 'constant', def.pos);
          body.push(`export const ${def.name} = ${this.literal(def.value, def.hex)};`);
          // Consecutive constants stay together.
          if (this.model.definitions[i + 1]?.kind !== 'const') body.push('');
          break;
        }
        case 'typedef':
          body.push(...this.emitTypedef(def));
          break;
        case 'enum':
          body.push(...this.emitEnum(def));
          break;
        case 'struct':
          body.push(...this.emitStruct(def));
          break;
        case 'union':
          body.push(...this.emitUnion(def));
          break;
        case 'program':
          break;
      }
    });
    if (programs.length === 1) body.push(...this.emitProgram(programs[0]));

    const snippets = this.closure();
    const imports = [...BASE_IMPORTS, ...snippets.flatMap((s) => s.imports ?? [])];
    const out = [
      `// DO NOT EDIT. Generated by tools/xdrgen from ${this.options.sourceName}.`,
      `// Regenerate with: ${this.options.regenerateCommand ?? 'npm run generate'}`,
      '',
      '/*',
      ' * Value mapping:',
      ' *  - int, unsigned int, hyper, unsigned hyper, enum: number. hyper values must be safe integers',
      ' *    (|v| <= 2^53-1); other 64-bit values fail to decode. Negative hyper values are two\'s complement.',
      ' *  - bool: boolean. opaque[N] and opaque<N>: Buffer (decoded Buffers do not alias the input).',
      ' *    string<N>: string, UTF-8 on the wire, N bounds the byte length.',
      ' *  - T x[N] and T x<N>: T[]. T *x: T | null.',
      ' *  - struct: an object with the fields of the .x, same names.',
      ' *  - union: { tag, value }. tag is the discriminant as a number (bool discriminants: 0 or 1); value is the',
      ' *    selected arm\'s value, undefined for void arms. The arm\'s name in the .x is not used.',
      ' *  - void: undefined.',
      ' */',
      '',
      ...imports,
      '',
      'export { Reader, Writer };',
      '',
      ...snippets.map((s) => s.code),
      ...body,
    ];
    while (out[out.length - 1] === '') out.pop();
    return out.join('\n') + '\n';
  }

  private closure(): typeof SNIPPETS {
    const byName = new Map(SNIPPETS.map((s) => [s.name, s]));
    const want = new Set<string>();
    const add = (n: string): void => {
      if (want.has(n)) return;
      const s = byName.get(n);
      if (!s) throw new Error(`xdrgen internal error: no runtime snippet '${n}'`);
      want.add(n);
      s.deps.forEach(add);
    };
    this.used.forEach(add);
    return SNIPPETS.filter((s) => want.has(s.name));
  }

  private literal(v: number, hex: boolean): string {
    if (!hex) return String(v);
    return v < 0 ? `-0x${(-v).toString(16)}` : `0x${v.toString(16)}`;
  }

  private typeDef(name: string): RTypeDef {
    const t = this.model.types.get(name);
    if (!t) throw new Error(`xdrgen internal error: unresolved type ${name}`);
    return t;
  }

  /** Follows plain typedefs: a primitive or an enum/struct/union, or a typedef of another declaration form. */
  private expand(decl: RNamedDecl): RNamedDecl {
    let d = decl;
    while (d.kind === 'plain' && d.type.kind === 'ref' && d.type.target === 'typedef') {
      d = { ...(this.typeDef(d.type.name) as RTypeDef & { kind: 'typedef' }).decl, name: d.name };
      if (d.kind !== 'plain') return d;
    }
    return d;
  }

  private baseOfType(t: RType): Base | null {
    const d = this.expand({ kind: 'plain', name: '', type: t, pos: { line: 0, column: 0 } });
    if (d.kind !== 'plain') return null;
    if (d.type.kind === 'primitive') return { kind: 'prim', prim: d.type.prim };
    return { kind: d.type.target as 'enum' | 'struct' | 'union', name: d.type.name };
  }

  // ---- TypeScript types ----

  private tsTypeOf(t: RType): string {
    return t.kind === 'primitive' ? PRIM_TS[t.prim] : t.name;
  }

  private tsDeclType(d: RDecl): string {
    switch (d.kind) {
      case 'void':
        return 'undefined';
      case 'plain':
        return this.tsTypeOf(d.type);
      case 'fixedArray':
      case 'varArray':
        return `${this.tsTypeOf(d.type)}[]`;
      case 'fixedOpaque':
      case 'varOpaque':
        return 'Buffer';
      case 'string':
        return 'string';
      case 'optional':
        return `${this.tsTypeOf(d.type)} | null`;
    }
  }

  // ---- decode / encode code ----

  private minSizeOfType(t: RType, seen: Set<string> = new Set()): number {
    if (t.kind === 'primitive') return PRIM_SIZE[t.prim];
    if (seen.has(t.name)) return 0;
    seen.add(t.name);
    const def = this.typeDef(t.name);
    let size: number;
    switch (def.kind) {
      case 'enum':
        size = 4;
        break;
      case 'typedef':
        size = this.minSizeOfDecl(def.decl, seen);
        break;
      case 'struct':
        size = def.fields.reduce((acc, f) => acc + this.minSizeOfDecl(f, seen), 0);
        break;
      case 'union': {
        const arms = [...def.arms.map((a) => a.decl), ...(def.defaultArm ? [def.defaultArm] : [])];
        size = 4 + Math.min(...arms.map((a) => this.minSizeOfDecl(a, seen)));
        break;
      }
    }
    seen.delete(t.name);
    return size;
  }

  private minSizeOfDecl(d: RDecl, seen: Set<string>): number {
    switch (d.kind) {
      case 'void':
        return 0;
      case 'plain':
        return this.minSizeOfType(d.type, seen);
      case 'fixedArray':
        return Math.min(d.size * this.minSizeOfType(d.type, seen), UNBOUNDED);
      case 'fixedOpaque':
        return pad4(d.size);
      case 'varArray':
      case 'varOpaque':
      case 'string':
      case 'optional':
        return 4;
    }
  }

  private elemDecoder(t: RType): string {
    return t.kind === 'primitive' ? `${PRIM_CODEC[t.prim]}.decode` : `${t.name}Codec.decode`;
  }

  private elemEncoder(t: RType): string {
    return t.kind === 'primitive' ? `${PRIM_CODEC[t.prim]}.encode` : `${t.name}Codec.encode`;
  }

  /** An expression reading one value of `decl` from `r`. */
  private decodeExpr(decl: RNamedDecl, path: string): string {
    const d = this.expand(decl);
    const p = q(path);
    switch (d.kind) {
      case 'plain': {
        const t = d.type;
        if (t.kind === 'primitive') return `${PRIM_READ[t.prim]}(r, ${p})`;
        if (t.target === 'enum') {
          this.use('readEnum');
          return `readEnum(r, ${t.name}Values, ${p})`;
        }
        return `${t.name}Codec.decode(r)`;
      }
      case 'fixedArray':
        this.use('readFixedArray');
        return `readFixedArray(r, ${d.size}, ${this.minSizeOfType(d.type)}, ${this.elemDecoder(d.type)}, ${p})`;
      case 'varArray':
        this.use('readVarArray');
        return `readVarArray(r, ${num(d.max)}, ${this.minSizeOfType(d.type)}, ${this.elemDecoder(d.type)}, ${p})`;
      case 'fixedOpaque':
        this.use('readFixedOpaque');
        return `readFixedOpaque(r, ${d.size}, ${p})`;
      case 'varOpaque':
        this.use('readVarOpaque');
        return `readVarOpaque(r, ${num(d.max)}, ${p})`;
      case 'string':
        this.use('readString');
        return `readString(r, ${num(d.max)}, ${p})`;
      case 'optional':
        this.use('readOptional');
        return `readOptional(r, ${this.elemDecoder(d.type)}, ${p})`;
    }
  }

  /** A statement writing `value` (an expression of the declaration's TS type) to `w`. */
  private encodeStmt(decl: RNamedDecl, value: string, path: string): string {
    const d = this.expand(decl);
    const p = q(path);
    switch (d.kind) {
      case 'plain': {
        const t = d.type;
        if (t.kind === 'primitive') return `${PRIM_WRITE[t.prim]}(w, ${value}, ${p});`;
        if (t.target === 'enum') {
          this.use('writeEnum');
          return `writeEnum(w, ${value}, ${t.name}Values, ${p});`;
        }
        return `${t.name}Codec.encode(w, ${value});`;
      }
      case 'fixedArray':
        this.use('writeFixedArray');
        return `writeFixedArray(w, ${value}, ${d.size}, ${this.elemEncoder(d.type)}, ${p});`;
      case 'varArray':
        this.use('writeVarArray');
        return `writeVarArray(w, ${value}, ${num(d.max)}, ${this.elemEncoder(d.type)}, ${p});`;
      case 'fixedOpaque':
        this.use('writeFixedOpaque');
        return `writeFixedOpaque(w, ${value}, ${d.size}, ${p});`;
      case 'varOpaque':
        this.use('writeVarOpaque');
        return `writeVarOpaque(w, ${value}, ${num(d.max)}, ${p});`;
      case 'string':
        this.use('writeString');
        return `writeString(w, ${value}, ${num(d.max)}, ${p});`;
      case 'optional':
        this.use('writeOptional');
        return `writeOptional(w, ${value}, ${this.elemEncoder(d.type)});`;
    }
  }

  /** An expression building a fresh zero value of `d`. */
  private zeroOfDecl(d: RDecl): string {
    switch (d.kind) {
      case 'void':
        return 'undefined';
      case 'plain':
        return this.zeroOfType(d.type);
      case 'fixedArray':
        return d.size === 0 ? '[]' : `Array.from({ length: ${d.size} }, () => ${this.zeroOfType(d.type)})`;
      case 'varArray':
        return '[]';
      case 'fixedOpaque':
        return `Buffer.alloc(${d.size})`;
      case 'varOpaque':
        return 'Buffer.alloc(0)';
      case 'string':
        return "''";
      case 'optional':
        return 'null';
    }
  }

  /** Like zeroOfDecl; `overrides` replaces fields of a struct type by name (top level only). */
  private zeroOfType(t: RType, overrides: ReadonlyMap<string, string> = new Map()): string {
    if (t.kind === 'primitive') return t.prim === 'bool' ? 'false' : '0';
    const def = this.typeDef(t.name);
    switch (def.kind) {
      case 'typedef':
        return def.decl.kind === 'plain' ? this.zeroOfType(def.decl.type, overrides) : this.zeroOfDecl(def.decl);
      case 'enum':
        return String(def.members[0].value);
      case 'struct':
        return `{ ${def.fields.map((f) => `${f.name}: ${overrides.get(f.name) ?? this.zeroOfDecl(f)}`).join(', ')} }`;
      case 'union': {
        const arm = def.arms[0];
        return `{ tag: ${arm.labels[0]}, value: ${this.zeroOfDecl(arm.decl)} }`;
      }
    }
  }

  // ---- definitions ----

  private claimType(name: string, what: string, pos: SourcePos): void {
    this.claim(name, what, pos);
    this.claim(`${name}Codec`, `codec of ${what} ${name}`, pos);
  }

  private emitTypedef(def: RTypeDef & { kind: 'typedef' }): string[] {
    this.claimType(def.name, 'typedef', def.pos);
    return [
      `export type ${def.name} = ${this.tsDeclType(def.decl)};`,
      '',
      `export const ${def.name}Codec: Codec<${def.name}> = {`,
      `  encode(w: XdrSink, v: ${def.name}): void {`,
      `    ${this.encodeStmt(def.decl, 'v', def.name)}`,
      '  },',
      `  decode(r: Reader): ${def.name} {`,
      `    return ${this.decodeExpr(def.decl, def.name)};`,
      '  },',
      '};',
      '',
    ];
  }

  private emitEnum(def: RTypeDef & { kind: 'enum' }): string[] {
    this.claimType(def.name, 'enum', def.pos);
    this.claim(`${def.name}Values`, `value set of enum ${def.name}`, def.pos);
    this.use('readEnum', 'writeEnum');
    const lines: string[] = [];
    for (const m of def.members) {
      this.claim(m.name, 'enum member', m.pos);
      lines.push(`export const ${m.name} = ${m.value};`);
    }
    lines.push(
      '',
      `/** enum ${def.name}: one of ${def.members.map((m) => m.name).join(', ')}. */`,
      `export type ${def.name} = number;`,
      '',
      `const ${def.name}Values: ReadonlySet<number> = new Set([${def.members.map((m) => m.name).join(', ')}]);`,
      '',
      `export const ${def.name}Codec: Codec<${def.name}> = {`,
      `  encode(w: XdrSink, v: ${def.name}): void {`,
      `    writeEnum(w, v, ${def.name}Values, ${q(def.name)});`,
      '  },',
      `  decode(r: Reader): ${def.name} {`,
      `    return readEnum(r, ${def.name}Values, ${q(def.name)});`,
      '  },',
      '};',
      '',
    );
    return lines;
  }

  /** Wraps codec bodies of recursive types in the depth guard. */
  private guarded(recursive: boolean, name: string, encode: string[], decode: string[]): string[] {
    const indent = (ls: string[], by: string): string[] => ls.map((l) => (l ? by + l : l));
    if (!recursive) {
      return [
        `  encode(w: XdrSink, v: ${name}): void {`,
        ...indent(encode, '    '),
        '  },',
        `  decode(r: Reader): ${name} {`,
        ...indent(decode, '    '),
        '  },',
      ];
    }
    this.use('depth');
    return [
      `  encode(w: XdrSink, v: ${name}): void {`,
      `    enterEncode(${q(name)});`,
      '    try {',
      ...indent(encode, '      '),
      '    } finally {',
      '      exitEncode();',
      '    }',
      '  },',
      `  decode(r: Reader): ${name} {`,
      `    enterDecode(r, ${q(name)});`,
      '    try {',
      ...indent(decode, '      '),
      '    } finally {',
      '      exitDecode();',
      '    }',
      '  },',
    ];
  }

  private emitStruct(def: RTypeDef & { kind: 'struct' }): string[] {
    this.claimType(def.name, 'struct', def.pos);
    this.use('checkStruct');
    for (const f of def.fields) {
      if (f.name === '__proto__') this.fail(f.pos, "a field cannot be named '__proto__'");
    }
    const encode = [
      `checkStruct(v, ${q(def.name)});`,
      ...def.fields.map((f) => this.encodeStmt(f, `v.${f.name}`, `${def.name}.${f.name}`)),
    ];
    const decode = [
      'return {',
      ...def.fields.map((f) => `  ${f.name}: ${this.decodeExpr(f, `${def.name}.${f.name}`)},`),
      '};',
    ];
    return [
      `export interface ${def.name} {`,
      ...def.fields.map((f) => `  ${f.name}: ${this.tsDeclType(f)};`),
      '}',
      '',
      `export const ${def.name}Codec: Codec<${def.name}> = {`,
      ...this.guarded(def.recursive, def.name, encode, decode),
      '};',
      '',
    ];
  }

  private emitUnion(def: RTypeDef & { kind: 'union' }): string[] {
    this.claimType(def.name, 'union', def.pos);
    this.use('checkStruct');
    const disc = def.discriminant;
    const discPath = q(`${def.name}.${disc.name}`);
    let readTag: string;
    let writeTag: string;
    switch (def.discKind) {
      case 'int':
        readTag = `readInt(r, ${discPath})`;
        writeTag = `writeInt(w, v.tag, ${discPath});`;
        break;
      case 'uint':
        readTag = `readUint(r, ${discPath})`;
        writeTag = `writeUint(w, v.tag, ${discPath});`;
        break;
      case 'bool':
        readTag = `readBool(r, ${discPath}) ? 1 : 0`;
        writeTag = `writeInt(w, v.tag, ${discPath});`;
        break;
      case 'enum':
        this.use('readEnum', 'writeEnum');
        readTag = `readEnum(r, ${def.discEnum}Values, ${discPath})`;
        writeTag = `writeEnum(w, v.tag, ${def.discEnum}Values, ${discPath});`;
        break;
    }
    const armPath = (d: RDecl): string => (d.kind === 'void' ? def.name : `${def.name}.${d.name}`);
    const variants = def.arms.map((a) => `{ tag: ${a.labels.join(' | ')}; ${a.decl.kind === 'void' ? 'value?: undefined' : `value: ${this.tsDeclType(a.decl)}`} }`);
    if (def.defaultArm) {
      variants.push(`{ tag: number; ${def.defaultArm.kind === 'void' ? 'value?: undefined' : `value: ${this.tsDeclType(def.defaultArm)}`} }`);
    }
    const encodeArm = (d: RDecl): string[] =>
      d.kind === 'void' ? [] : [this.encodeStmt(d, `v.value as ${this.tsDeclType(d)}`, armPath(d))];
    const decodeArm = (d: RDecl): string =>
      `return { tag, value: ${d.kind === 'void' ? 'undefined' : this.decodeExpr(d, armPath(d))} } as ${def.name};`;

    const encode = [`checkStruct(v, ${q(def.name)});`, 'switch (v.tag) {'];
    const decode = [...(def.defaultArm ? [] : ['const at = r.offset;']), `const tag = ${readTag};`, 'switch (tag) {'];
    for (const a of def.arms) {
      encode.push(...a.labels.map((l) => `  case ${l}:`), `    ${writeTag}`, ...encodeArm(a.decl).map((s) => `    ${s}`), '    return;');
      decode.push(...a.labels.map((l) => `  case ${l}:`), `    ${decodeArm(a.decl)}`);
    }
    encode.push('  default:');
    decode.push('  default:');
    if (def.defaultArm) {
      if (def.discKind === 'bool') {
        this.use('noArmEncode');
        encode.push(`    if (v.tag !== 0 && v.tag !== 1) throw noArmEncode(v.tag, ${q(def.name)});`);
      }
      encode.push(`    ${writeTag}`, ...encodeArm(def.defaultArm).map((s) => `    ${s}`), '    return;');
      decode.push(`    ${decodeArm(def.defaultArm)}`);
    } else {
      this.use('noArmEncode', 'noArmDecode');
      encode.push(`    throw noArmEncode((v as { tag: unknown }).tag, ${q(def.name)});`);
      decode.push(`    throw noArmDecode(tag, at, ${q(def.name)});`);
    }
    encode.push('}');
    decode.push('}');
    return [
      `/** union ${def.name}, switched on ${disc.name}. */`,
      `export type ${def.name} =`,
      ...variants.map((v, i) => `  | ${v}${i === variants.length - 1 ? ';' : ''}`),
      '',
      `export const ${def.name}Codec: Codec<${def.name}> = {`,
      ...this.guarded(def.recursive, def.name, encode, decode),
      '};',
      '',
    ];
  }

  // ---- program ----

  private tsOfProcType(t: RType | null): string {
    return t === null ? 'void' : this.tsTypeOf(t);
  }

  private codecOfProcType(t: RType | null): string {
    if (t === null) return 'voidCodec';
    return t.kind === 'primitive' ? PRIM_CODEC[t.prim] : `${t.name}Codec`;
  }

  /** The `errorRet` function of a procedure: a zero result carrying `rv`. */
  private errorRet(p: RProcedure): string {
    if (p.ret === null) return '() => undefined';
    const base = this.baseOfType(p.ret);
    const type = this.tsTypeOf(p.ret);
    if (base?.kind === 'prim' && base.prim !== 'bool' && base.prim !== 'float' && base.prim !== 'double') {
      return `(rv: number): ${type} => rv`;
    }
    if (base?.kind === 'struct') {
      const def = this.typeDef(base.name) as RTypeDef & { kind: 'struct' };
      const rv = def.fields.find((f) => f.name === 'rv');
      if (rv) {
        const rvd = this.expand(rv);
        if (rvd.kind === 'plain' && rvd.type.kind === 'primitive' && PRIM_TS[rvd.type.prim] === 'number') {
          return `(rv: number): ${type} => (${this.zeroOfType(p.ret, new Map([['rv', 'rv']]))})`;
        }
      }
    }
    return this.fail(p.pos, `procedure ${p.name}: result type ${type} is not an integer and has no integer 'rv' field, so errorRet cannot be built`);
  }

  private emitProgram(prog: RProgram): string[] {
    const prefix = programPrefix(prog.name);
    const callsName = `${prefix}Calls`;
    const passName = `${prefix}Passthrough`;
    this.claim(prog.name, 'program', prog.pos);
    for (const v of prog.versions) this.claim(v.name, 'version', v.pos);

    interface Sig {
      name: string;
      arg: string;
      ret: string;
      hasArg: boolean;
      pos: SourcePos;
    }
    const sigs = new Map<string, Sig>();
    const entries: string[] = [];
    for (const v of prog.versions) {
      for (const p of v.procedures) {
        const name = callName(p.name);
        if (RESERVED.has(name) || name === 'constructor' || name === 'next') {
          this.fail(p.pos, `procedure name '${name}' cannot be a method name`);
        }
        const sig: Sig = { name, arg: this.tsOfProcType(p.arg), ret: this.tsOfProcType(p.ret), hasArg: p.arg !== null, pos: p.pos };
        const prev = sigs.get(name);
        if (prev && (prev.arg !== sig.arg || prev.ret !== sig.ret)) {
          this.fail(
            p.pos,
            `${name} is declared as (${sig.arg}) => ${sig.ret} here and as (${prev.arg}) => ${prev.ret} at ${prev.pos.line}:${prev.pos.column}`,
          );
        }
        if (!prev) sigs.set(name, sig);
        entries.push(
          `  defineProcedure<${sig.arg}, ${sig.ret}>({`,
          `    prog: ${prog.name},`,
          `    vers: ${v.name},`,
          `    proc: ${p.number},`,
          `    rpcName: ${q(p.name)},`,
          `    name: ${q(name)},`,
          `    args: ${this.codecOfProcType(p.arg)},`,
          `    ret: ${this.codecOfProcType(p.ret)},`,
          `    errorRet: ${this.errorRet(p)},`,
          '  }),',
        );
      }
    }
    const all = [...sigs.values()];
    const params = (s: Sig): string => (s.hasArg ? `ctx: Ctx, args: ${s.arg}` : 'ctx: Ctx');
    const argNames = (s: Sig): string => (s.hasArg ? 'ctx, args' : 'ctx');

    const lines: string[] = [
      `export const ${prog.name} = ${prog.number};`,
      ...prog.versions.map((v) => `export const ${v.name} = ${v.number};`),
      '',
      `/** PKCS#11-style names of the procedures of ${prog.name} (a leading 'c_' becomes 'C_'). */`,
      'export type CallName =',
      ...all.map((s, i) => `  | ${q(s.name)}${i === all.length - 1 ? ';' : ''}`),
      '',
      '/** Argument and result type of each call; `void` arguments are absent. */',
      'export interface CallSignatures {',
      ...all.map((s) => `  ${s.name}: { args: ${s.arg}; ret: ${s.ret} };`),
      '}',
      '',
      '/** One procedure of one version: its numbers, names and codecs. */',
      'export interface ProcedureDef<A = unknown, R = unknown> {',
      '  readonly prog: number;',
      '  readonly vers: number;',
      '  readonly proc: number;',
      "  /** Name in the .x, e.g. 'c_Sign'. */",
      '  readonly rpcName: string;',
      "  /** e.g. 'C_Sign'. */",
      '  readonly name: CallName;',
      '  readonly args: Codec<A>;',
      '  readonly ret: Codec<R>;',
      '  /** A zero-valued result whose rv is `rv` (for an integer result type: `rv` itself). */',
      '  errorRet(rv: number): R;',
      '}',
      '',
      'function defineProcedure<A, R>(def: ProcedureDef<A, R>): ProcedureDef<A, R> {',
      '  return Object.freeze(def);',
      '}',
      '',
      '/** Every procedure of every version, in .x order. */',
      'export const PROCEDURES: readonly ProcedureDef[] = Object.freeze([',
      ...entries,
      ']);',
      '',
      'function indexProcedures(procs: readonly ProcedureDef[]): ReadonlyMap<number, ReadonlyMap<number, ProcedureDef>> {',
      '  const byVersion = new Map<number, Map<number, ProcedureDef>>();',
      '  for (const p of procs) {',
      '    let m = byVersion.get(p.vers);',
      '    if (!m) {',
      '      m = new Map();',
      '      byVersion.set(p.vers, m);',
      '    }',
      '    m.set(p.proc, p);',
      '  }',
      '  return byVersion;',
      '}',
      '',
      '/** version number -> procedure number -> procedure. */',
      'export const PROCEDURES_BY_VERSION: ReadonlyMap<number, ReadonlyMap<number, ProcedureDef>> = indexProcedures(PROCEDURES);',
      '',
      `/** The call interface shared by every layer of the proxy; one method per call name. */`,
      `export interface ${callsName}<Ctx> {`,
      ...all.map((s) => `  ${s.name}(${params(s)}): Promise<${s.ret}>;`),
      '}',
      '',
      `/** A layer that forwards every call to \`next\`; subclasses override the calls they change. */`,
      `export class ${passName}<Ctx> implements ${callsName}<Ctx> {`,
      `  constructor(protected readonly next: ${callsName}<Ctx>) {}`,
    ];
    for (const s of all) {
      lines.push('', `  ${s.name}(${params(s)}): Promise<${s.ret}> {`, `    return this.next.${s.name}(${argNames(s)});`, '  }');
    }
    lines.push(
      '}',
      '',
      '/** Calls a method of an implementation by call name; `args` is ignored for calls without arguments. */',
      `export const CALL_INVOKERS: Record<CallName, (impl: ${callsName}<any>, ctx: any, args: any) => Promise<any>> = Object.freeze({`,
      ...all.map((s) => `  ${s.name}: (impl, ctx${s.hasArg ? ', args' : ''}) => impl.${s.name}(${argNames(s)}),`),
      '});',
      '',
    );
    return lines;
  }
}
