import { SourcePos, XdrgenEmitError } from './errors';
import { Model, RDecl, RNamedDecl, RProcedure, RProgram, RType, RTypeDef, UNBOUNDED } from './model';
import { ALWAYS, BASE_IMPORTS, SNIPPETS, snippetNames } from './runtime';

export interface EmitOptions {
  /** Source path written in the header, with forward slashes (e.g. `rpc/pkcs11.x`). */
  readonly sourceName: string;
  /** Command named in the header. */
  readonly regenerateCommand?: string;
  /** What the fields of some types mean to the proxy; drives CALL_FIELDS. */
  readonly fieldRoles?: FieldRoles;
  /** Source path of the field roles, named in the header. */
  readonly fieldRolesName?: string;
}

/** Roles the proxy gives to argument and result fields, by the type they are declared with. */
export type FieldRole = 'session' | 'object' | 'template' | 'mechanism';
export const FIELD_ROLES: readonly FieldRole[] = ['session', 'object', 'template', 'mechanism'];

export interface FieldRoleSpec {
  readonly role: FieldRole;
  /** object: the CK_RV answered for a handle the caller does not hold, by number and name. */
  readonly invalidRv?: number;
  readonly invalidRvName?: string;
  /** object: 0 stands for "no object" in this position. */
  readonly zeroAllowed?: boolean;
}

/** Type name (typedef, struct) -> role. A field has the role of the first named type on its typedef chain. */
export type FieldRoles = ReadonlyMap<string, FieldRoleSpec>;

/** The generated files of one .x in split form. */
export interface SplitOutput {
  /** Runtime glue, constants, types and codecs. */
  readonly codecs: string;
  /** Program numbers, procedure table, call interface, passthrough, invokers and CALL_FIELDS. */
  readonly calls: string;
  /** Re-exports both. */
  readonly index: string;
}

/** Module specifiers (e.g. `./pkcs11_rpc_codecs`) of the split files, for their imports of each other. */
export interface SplitModules {
  readonly codecs: string;
  readonly calls: string;
}

/** Words that cannot name a TypeScript value or type, and globals the generated code relies on. */
const RESERVED = new Set([
  ...'break case catch class const continue debugger default delete do else enum export extends false finally for function if import in instanceof new null return super switch this throw true try typeof var void while with'.split(' '),
  ...'implements interface let package private protected public static yield await arguments eval'.split(' '),
  ...'any bigint boolean never number object string symbol undefined unknown type keyof infer is asserts declare namespace module readonly abstract satisfies'.split(' '),
  ...'Array Boolean Buffer Error Map Math Number Object Promise ReadonlyMap ReadonlySet Record Set String Symbol NaN Infinity globalThis require exports'.split(' '),
]);

/** Names the program section declares; the Calls/Passthrough names depend on the program name. */
const PROGRAM_NAMES = [
  'CallName', 'CallSignatures', 'ProcedureDef', 'PROCEDURES', 'PROCEDURES_BY_VERSION', 'CALL_INVOKERS', 'defineProcedure',
  'indexProcedures', 'MaybePromise', 'isPromise', 'Field', 'ObjectField', 'RoleFields', 'CallFields', 'CALL_FIELDS',
  'callFieldsOf',
];

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

/** Like emitTypeScript, in three files: codecs, calls (importing the codecs) and an index re-exporting both. */
export function emitTypeScriptSplit(model: Model, options: EmitOptions, modules: SplitModules): SplitOutput {
  return new Emitter(model, options).runSplit(modules);
}

/** Joins lines, without trailing blank lines, ending in one newline. */
function finish(lines: string[]): string {
  while (lines[lines.length - 1] === '') lines.pop();
  return lines.join('\n') + '\n';
}

/** Identifiers of TypeScript code outside comments and string literals. */
function identifiers(code: string): Set<string> {
  const bare = code
    .replace(/\/\*[\s\S]*?\*\//g, ' ')
    .replace(/\/\/.*$/gm, ' ')
    .replace(/'(?:[^'\\\n]|\\.)*'/g, "''")
    .replace(/`(?:[^`\\]|\\.)*`/g, '``');
  return new Set(bare.match(/[A-Za-z_$][\w$]*/g) ?? []);
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

  /** Definitions in .x order, then the program section (empty without a program). */
  private emitParts(): { defs: string[]; program: string[] } {
    const programs = this.model.definitions.filter((d): d is RProgram => d.kind === 'program');
    if (programs.length > 1) this.fail(programs[1].pos, 'only one program per file is supported');
    if (programs.length === 1) {
      const prefix = programPrefix(programs[0].name);
      for (const n of [...PROGRAM_NAMES, `${prefix}Calls`, `${prefix}Passthrough`]) {
        this.claim(n, 'a declaration of the procedure table', null);
      }
    }
    this.checkRoles();
    const defs: string[] = [];
    this.model.definitions.forEach((def, i) => {
      switch (def.kind) {
        case 'const': {
          this.claim(def.name, 'constant', def.pos);
          defs.push(`export const ${def.name} = ${this.literal(def.value, def.hex)};`);
          // Consecutive constants stay together.
          if (this.model.definitions[i + 1]?.kind !== 'const') defs.push('');
          break;
        }
        case 'typedef':
          defs.push(...this.emitTypedef(def));
          break;
        case 'enum':
          defs.push(...this.emitEnum(def));
          break;
        case 'struct':
          defs.push(...this.emitStruct(def));
          break;
        case 'union':
          defs.push(...this.emitUnion(def));
          break;
        case 'program':
          break;
      }
    });
    return { defs, program: programs.length === 1 ? this.emitProgram(programs[0]) : [] };
  }

  private header(extra: readonly string[] = []): string[] {
    const roles = this.options.fieldRolesName ? ` and ${this.options.fieldRolesName}` : '';
    return [
      `// DO NOT EDIT. Generated by tools/xdrgen from ${this.options.sourceName}${roles}.`,
      `// Regenerate with: ${this.options.regenerateCommand ?? 'npm run generate'}`,
      ...extra,
    ];
  }

  private static readonly VALUE_MAPPING = [
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
  ];

  private static readonly CALLS_DOC = [
    '',
    '/*',
    ' * Call interface: `<Prefix>Calls<Ctx>` has one method per call name; a method returns its result directly',
    ' * (`MaybePromise<R>` = R | Promise<R>) when it has nothing to wait for, so a stack of layers over a',
    ' * synchronous backend answers a call without creating a promise. A layer that awaits may still be an',
    ' * `async` method: Promise<R> is assignable. `<Prefix>Passthrough` forwards every call unchanged, without',
    ' * wrapping the result; `CALL_INVOKERS[name](impl, ctx, args)` calls a method by name the same way.',
    ' *',
    ' * Field accessors: `CALL_FIELDS[name]` says where the fields with a proxy role are in the arguments and',
    ' * the result of that call, derived from the types the .x declares them with (roles by type name in the',
    ' * field roles file): `session` (a session handle), `object` (an object handle, with the CK_RV for one',
    ' * the caller does not hold and whether 0 means "none"), `template` (an attribute list), `mechanism`.',
    ' * Each role has a list of scalar fields and one of array fields (`objectList`: C_FindObjects_ret.objects);',
    ' * a field has get/set closures bound to its name. `copyArgs`/`copyResult` build a shallow copy as one object',
    ' * literal with the fields in .x order (one hidden class per type). A layer that rewrites a field copies',
    ' * first, then sets: the caller above keeps its own object.',
    ' */',
  ];

  run(): string {
    const { defs, program } = this.emitParts();
    const snippets = this.closure();
    const imports = [...BASE_IMPORTS, ...snippets.flatMap((s) => s.imports ?? [])];
    const out = [
      ...this.header(),
      ...Emitter.VALUE_MAPPING,
      ...(program.length > 0 ? Emitter.CALLS_DOC : []),
      '',
      ...imports,
      '',
      'export { Reader, Writer };',
      '',
      ...snippets.map((s) => s.code),
      ...defs,
      ...program,
    ];
    return finish(out);
  }

  runSplit(modules: SplitModules): SplitOutput {
    const { defs, program } = this.emitParts();
    const snippets = this.closure();
    const imports = [...BASE_IMPORTS, ...snippets.flatMap((s) => s.imports ?? [])];
    const codecs = finish([
      ...this.header(),
      ...Emitter.VALUE_MAPPING,
      '',
      ...imports,
      '',
      'export { Reader, Writer };',
      '',
      ...snippets.map((s) => s.code),
      ...defs,
    ]);
    // The calls file imports what it uses of the names the codecs file exports.
    const exported = new Set<string>();
    for (const m of codecs.matchAll(/^export (?:abstract )?(?:function|const|let|class|interface|type) (\w+)/gm)) exported.add(m[1]);
    const used = [...identifiers(program.join('\n'))].filter((n) => exported.has(n)).sort();
    const calls = finish([
      ...this.header(),
      ...Emitter.CALLS_DOC,
      '',
      ...(used.length > 0 ? [`import { ${used.join(', ')} } from '${modules.codecs}';`, ''] : []),
      ...program,
    ]);
    const index = finish([
      ...this.header(['', '/* One import path for the codecs and the call interface. */']),
      '',
      `export * from '${modules.codecs}';`,
      `export * from '${modules.calls}';`,
    ]);
    return { codecs, calls, index };
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

  // ---- field roles ----

  private checkRoles(): void {
    const fail = (detail: string): never => {
      throw new XdrgenEmitError(this.options.fieldRolesName ?? this.model.file, null, detail);
    };
    for (const [name, spec] of this.options.fieldRoles ?? []) {
      const where = `field roles: type '${name}'`;
      if (!this.model.types.has(name)) fail(`${where} is not declared in the .x`);
      if (!FIELD_ROLES.includes(spec.role)) fail(`${where}: unknown role '${String(spec.role)}'`);
      if (spec.role === 'object' && !(Number.isSafeInteger(spec.invalidRv) && typeof spec.invalidRvName === 'string')) {
        fail(`${where}: an object role needs invalidRv (a number) and invalidRvName`);
      }
      if (spec.zeroAllowed !== undefined && typeof spec.zeroAllowed !== 'boolean') fail(`${where}: zeroAllowed must be a boolean`);
    }
  }

  /** The role of a value of type `name`: its own, or that of the type it is a typedef of. */
  private roleOfType(name: string): { spec: FieldRoleSpec; list: boolean } | null {
    const spec = this.options.fieldRoles?.get(name);
    if (spec) return { spec, list: false };
    const def = this.typeDef(name);
    if (def.kind !== 'typedef') return null;
    const d = def.decl;
    if (d.kind === 'plain' && d.type.kind === 'ref') return this.roleOfType(d.type.name);
    if ((d.kind === 'varArray' || d.kind === 'fixedArray') && d.type.kind === 'ref') {
      const r = this.roleOfType(d.type.name);
      return r && !r.list ? { spec: r.spec, list: true } : null;
    }
    return null;
  }

  private roleOfField(f: RNamedDecl): { spec: FieldRoleSpec; list: boolean } | null {
    if (f.kind === 'plain' && f.type.kind === 'ref') return this.roleOfType(f.type.name);
    if ((f.kind === 'varArray' || f.kind === 'fixedArray') && f.type.kind === 'ref') {
      const r = this.roleOfType(f.type.name);
      return r && !r.list ? { spec: r.spec, list: true } : null;
    }
    return null;
  }

  /** The struct a procedure argument or result is (through typedefs), or null. */
  private structOf(t: RType | null): (RTypeDef & { kind: 'struct' }) | null {
    if (t === null) return null;
    const b = this.baseOfType(t);
    return b?.kind === 'struct' ? (this.typeDef(b.name) as RTypeDef & { kind: 'struct' }) : null;
  }

  /** A shallow copy of a value of `t` as one expression over `v`. */
  private copyExpr(t: RType | null, v: string): string {
    if (t === null) return 'undefined';
    const b = this.baseOfType(t);
    if (b?.kind === 'struct') {
      const def = this.typeDef(b.name) as RTypeDef & { kind: 'struct' };
      return `({ ${def.fields.map((f) => `${f.name}: ${v}.${f.name}`).join(', ')} })`;
    }
    if (b?.kind === 'union') return `({ tag: ${v}.tag, value: ${v}.value } as ${this.tsTypeOf(t)})`;
    return v;
  }

  private emitCallFields(calls: { name: string; arg: RType | null; ret: RType | null }[]): string[] {
    // Element types per role, for the typing of the accessors.
    const elemTypes = new Map<FieldRole, Set<string>>(FIELD_ROLES.map((r) => [r, new Set<string>()]));
    const roleFields = (t: RType | null) => {
      const def = this.structOf(t);
      const out: { field: RNamedDecl; spec: FieldRoleSpec; list: boolean }[] = [];
      for (const f of def?.fields ?? []) {
        const r = this.roleOfField(f);
        if (!r) continue;
        out.push({ field: f, ...r });
        const ts = this.tsDeclType(f);
        elemTypes.get(r.spec.role)!.add(r.list ? ts.replace(/\[\]$/, '') : ts);
      }
      return out;
    };
    const perCall = calls.map((c) => ({ ...c, args: roleFields(c.arg), result: roleFields(c.ret) }));
    const elem = (r: FieldRole): string => {
      const ts = [...elemTypes.get(r)!].sort();
      return ts.length === 0 ? 'never' : ts.join(' | ');
    };
    const fieldType = (r: FieldRole, list: boolean): string => {
      const t = list ? `(${elem(r)})[]` : elem(r);
      return r === 'object' ? `ObjectField<S, ${t}>` : `Field<S, ${t}>`;
    };
    const lines: string[] = [
      '/** One field of an argument or result struct, reached by closures bound to its name. */',
      'export interface Field<S, T> {',
      '  /** The field\'s name in the .x. */',
      '  readonly name: string;',
      '  get(s: S): T;',
      '  /** Writes the field of `s`: call it on a copy (copyArgs/copyResult), never on the caller\'s object. */',
      '  set(s: S, v: T): void;',
      '}',
      '',
      '/** An object handle field. */',
      'export interface ObjectField<S, T> extends Field<S, T> {',
      '  /** The CK_RV answered for a handle the caller does not hold in this position. */',
      '  readonly invalidRv: number;',
      '  /** 0 stands for "no object" here (CK_INVALID_HANDLE is passed on). */',
      '  readonly zeroAllowed: boolean;',
      '}',
      '',
      '/** The fields of one struct, by role; `...List` fields hold arrays of such values. */',
      'export interface RoleFields<S> {',
      ...FIELD_ROLES.flatMap((r) => [
        `  readonly ${r}: readonly ${fieldType(r, false)}[];`,
        `  readonly ${r}List: readonly ${fieldType(r, true)}[];`,
      ]),
      '}',
      '',
      '/** Where the role-carrying fields of one call are, and shape-stable shallow copies of its values. */',
      'export interface CallFields<A, R> {',
      '  readonly name: CallName;',
      '  copyArgs(a: A): A;',
      '  copyResult(r: R): R;',
      '  readonly args: RoleFields<A>;',
      '  readonly result: RoleFields<R>;',
      '}',
      '',
      '/** Field accessors per call name, derived from the types of the .x (see the header). */',
      "export const CALL_FIELDS: { readonly [N in CallName]: CallFields<CallSignatures[N]['args'], CallSignatures[N]['ret']> } = Object.freeze({",
    ];
    const emitRoles = (fs: { field: RNamedDecl; spec: FieldRoleSpec; list: boolean }[], v: string): string[] => {
      const out: string[] = [];
      const empty: string[] = [];
      for (const r of FIELD_ROLES) {
        for (const list of [false, true]) {
          const mine = fs.filter((f) => f.spec.role === r && f.list === list);
          const key = list ? `${r}List` : r;
          if (mine.length === 0) {
            empty.push(`${key}: []`);
            continue;
          }
          out.push(`      ${key}: [`);
          for (const f of mine) {
            const n = f.field.name;
            const extra =
              r === 'object'
                ? ` invalidRv: ${f.spec.invalidRv} /* ${f.spec.invalidRvName} */, zeroAllowed: ${f.spec.zeroAllowed === true},`
                : '';
            // A role shared by fields of different types (px_mechanism, px_mechanism_typed) is typed as their
            // union; a setter keeps the field's own type.
            const own = this.tsDeclType(f.field);
            const x = elem(r).includes(' | ') && r !== 'object' && r !== 'session' ? `x as ${own}` : 'x';
            out.push(`        { name: ${q(n)},${extra} get: (${v}) => ${v}.${n}, set: (${v}, x) => { ${v}.${n} = ${x}; } },`);
          }
          out.push('      ],');
        }
      }
      out.push(`      ${empty.join(', ')},`);
      return out;
    };
    for (const c of perCall) {
      lines.push(
        `  ${c.name}: {`,
        `    name: ${q(c.name)},`,
        `    copyArgs: (${c.arg === null ? '' : 'a'}) => ${this.copyExpr(c.arg, 'a')},`,
        `    copyResult: (${c.ret === null ? '' : 'r'}) => ${this.copyExpr(c.ret, 'r')},`,
        '    args: {',
        ...emitRoles(c.args, 'a'),
        '    },',
        '    result: {',
        ...emitRoles(c.result, 'r'),
        '    },',
        '  },',
      );
    }
    lines.push(
      '});',
      '',
      '/** CALL_FIELDS of a call whose name is known only at run time (a generic layer). */',
      'export function callFieldsOf(name: CallName): CallFields<unknown, unknown> {',
      '  return CALL_FIELDS[name];',
      '}',
      '',
    );
    return lines;
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
    const firstProc = new Map<string, RProcedure>();
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
        if (!prev) {
          sigs.set(name, sig);
          firstProc.set(name, p);
        }
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
      '/** A result, or a promise of it when the implementation has to wait. */',
      'export type MaybePromise<R> = R | Promise<R>;',
      '',
      '/** True if the result is still to come (a promise or another thenable). */',
      'export function isPromise<R>(r: MaybePromise<R> | PromiseLike<R>): r is Promise<R> {',
      "  return typeof (r as { then?: unknown } | null | undefined)?.then === 'function';",
      '}',
      '',
      `/** The call interface shared by every layer of the proxy; one method per call name. */`,
      `export interface ${callsName}<Ctx> {`,
      ...all.map((s) => `  ${s.name}(${params(s)}): MaybePromise<${s.ret}>;`),
      '}',
      '',
      `/** A layer that forwards every call to \`next\` (its result as it is); subclasses override the calls they change. */`,
      `export class ${passName}<Ctx> implements ${callsName}<Ctx> {`,
      `  constructor(protected readonly next: ${callsName}<Ctx>) {}`,
    ];
    for (const s of all) {
      lines.push('', `  ${s.name}(${params(s)}): MaybePromise<${s.ret}> {`, `    return this.next.${s.name}(${argNames(s)});`, '  }');
    }
    lines.push(
      '}',
      '',
      '/** Calls a method of an implementation by call name; `args` is ignored for calls without arguments. */',
      `export const CALL_INVOKERS: Record<CallName, (impl: ${callsName}<any>, ctx: any, args: any) => MaybePromise<any>> = Object.freeze({`,
      ...all.map((s) => `  ${s.name}: (impl, ctx${s.hasArg ? ', args' : ''}) => impl.${s.name}(${argNames(s)}),`),
      '});',
      '',
      ...this.emitCallFields(all.map((s) => ({ name: s.name, arg: firstProc.get(s.name)!.arg, ret: firstProc.get(s.name)!.ret }))),
    );
    return lines;
  }
}
