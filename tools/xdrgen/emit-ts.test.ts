import path from 'path';
import ts from 'typescript';
import { Reader } from '@stellar/js-xdr';
import { callName, programPrefix } from './emit-ts';
import type { FieldRoleSpec } from './emit-ts';
import { XdrgenEmitError } from './errors';
import { generateTypeScript, generateTypeScriptSplit } from './generate';

/* Exercises every construct the generator handles; rpc/pkcs11.x only uses a few. */
const FIXTURE = `
const MAXNAME = 8;
enum color { RED = 0, GREEN = 1, BLUE = 5 };
typedef string name<MAXNAME>;
typedef opaque tag3[3];
struct node { int value; node *next; };
union shape switch (color c) {
  case RED: int radius;
  case GREEN:
  case BLUE: void;
};
union maybe switch (bool present) { case TRUE: unsigned hyper v; case FALSE: void; };
union open switch (unsigned int kind) { case 1: double d; default: float f; };
struct all {
  int i; unsigned int u; hyper h; unsigned hyper uh; bool b; float f; double d;
  color c; name n; tag3 t; int fixed[2]; hyper var<3>; node *list; shape s; maybe m; open o;
  string raw<>; color colors<>;
};
struct res { int rv; all value; };
program FIXTURE_PROG {
  version FIXTURE_V1 { res f_get(all) = 1; int f_ping(void) = 2; void f_nothing(int) = 3; } = 1;
  version FIXTURE_V2 { res f_get(all) = 1; } = 2;
} = 0x20000000;
`;

interface Codec<T = unknown> {
  encode(w: unknown, v: T): void;
  decode(r: Reader): T;
}
interface ProcedureDef {
  vers: number;
  proc: number;
  name: string;
  rpcName: string;
  args: Codec;
  ret: Codec;
  errorRet(rv: number): unknown;
}
interface FixtureModule {
  [codec: `${string}Codec`]: Codec;
  xdrEncode(c: Codec, v: unknown): Buffer;
  xdrDecode(c: Codec, b: Buffer): unknown;
  PROCEDURES: readonly ProcedureDef[];
  PROCEDURES_BY_VERSION: ReadonlyMap<number, ReadonlyMap<number, ProcedureDef>>;
  CALL_INVOKERS: Record<string, (impl: unknown, ctx: unknown, args: unknown) => unknown>;
  FixturePassthrough: new (next: unknown) => Record<string, (...a: unknown[]) => unknown>;
  [name: string]: unknown;
}

const COMPILER_OPTIONS: ts.CompilerOptions = {
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.CommonJS,
  moduleResolution: ts.ModuleResolutionKind.Node10,
  lib: ['lib.es2022.d.ts'],
  types: ['node'],
  strict: true,
  noImplicitReturns: true,
  noFallthroughCasesInSwitch: true,
  noUnusedLocals: true,
  esModuleInterop: true,
  skipLibCheck: true,
  noEmit: true,
};

/** Type-checks generated code as if it were a file of this folder (so '@stellar/js-xdr' resolves). */
function typeCheck(code: string): string[] {
  return typeCheckFiles({ __xdrgen_fixture__: code });
}

/** Type-checks several generated modules, named by their base name, as files of this folder. */
function typeCheckFiles(modules: Record<string, string>): string[] {
  const files = new Map(Object.entries(modules).map(([n, c]) => [path.join(__dirname, `${n}.ts`), c]));
  const host = ts.createCompilerHost(COMPILER_OPTIONS);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, lang, ...rest) => {
    const code = files.get(path.resolve(name));
    return code !== undefined ? ts.createSourceFile(name, code, lang) : getSourceFile(name, lang, ...rest);
  };
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => files.has(path.resolve(name)) || fileExists(name);
  const program = ts.createProgram([...files.keys()], COMPILER_OPTIONS, host);
  return ts
    .getPreEmitDiagnostics(program)
    .map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n') + (d.start !== undefined ? ` @${d.start}` : ''));
}

/** Runs a generated module; `siblings` answers its imports of other generated modules ('./name'). */
function load(code: string, siblings: Record<string, unknown> = {}): FixtureModule {
  const js = ts.transpileModule(code, { compilerOptions: COMPILER_OPTIONS }).outputText;
  const mod = { exports: {} as FixtureModule };
  const nodeRequire: NodeJS.Require = require;
  const req = (id: string): unknown => (id in siblings ? siblings[id] : nodeRequire(id));
  new Function('require', 'module', 'exports', js)(req, mod, mod.exports);
  return mod.exports;
}

const gen = (text: string): string => generateTypeScript(text, { sourceName: 'fixture.x' });

/* Test-only XDR writer, independent of the generated code. */
const i32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
};
const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};
const i64 = (n: number): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigInt64BE(BigInt(n));
  return b;
};
const f32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeFloatBE(n);
  return b;
};
const f64 = (n: number): Buffer => {
  const b = Buffer.alloc(8);
  b.writeDoubleBE(n);
  return b;
};
const pad = (b: Buffer): Buffer => Buffer.concat([b, Buffer.alloc((4 - (b.length % 4)) % 4)]);
const cat = (...p: Buffer[]): Buffer => Buffer.concat(p);

function codeOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
  return 'no error';
}

describe('emitter on a fixture with every construct', () => {
  const code = gen(FIXTURE);
  let m: FixtureModule;

  beforeAll(() => {
    m = load(code);
  });

  it('emits code that type-checks under the project settings', () => {
    expect(typeCheck(code)).toEqual([]);
  }, 30000);

  it('starts with the DO NOT EDIT header and is deterministic', () => {
    expect(code.split('\n').slice(0, 2)).toEqual([
      '// DO NOT EDIT. Generated by tools/xdrgen from fixture.x.',
      '// Regenerate with: npm run generate',
    ]);
    expect(gen(FIXTURE)).toBe(code);
  });

  it('emits constants, enum members and program numbers', () => {
    expect(m.MAXNAME).toBe(8);
    expect([m.RED, m.GREEN, m.BLUE]).toEqual([0, 1, 5]);
    expect(m.FIXTURE_PROG).toBe(0x20000000);
    expect([m.FIXTURE_V1, m.FIXTURE_V2]).toEqual([1, 2]);
  });

  const node = (values: number[]): unknown =>
    values.reduceRight<unknown>((next, value) => ({ value, next }), null);
  const sample = {
    i: -2,
    u: 0xfffffffe,
    h: -3,
    uh: 2 ** 40,
    b: true,
    f: 1.5,
    d: -0.25,
    c: 5,
    n: 'héllo',
    t: Buffer.from([9, 8, 7]),
    fixed: [1, 2],
    var: [10],
    list: node([1, 2]),
    s: { tag: 0, value: 42 },
    m: { tag: 1, value: 7 },
    o: { tag: 9, value: 0.5 },
    raw: '',
    colors: [0, 1],
  };
  const sampleBytes = cat(
    i32(-2),
    u32(0xfffffffe),
    i64(-3),
    i64(2 ** 40),
    i32(1),
    f32(1.5),
    f64(-0.25),
    i32(5),
    u32(6),
    pad(Buffer.from('héllo', 'utf8')),
    pad(Buffer.from([9, 8, 7])),
    i32(1),
    i32(2),
    u32(1),
    i64(10),
    cat(i32(1), i32(1), i32(1), i32(2), i32(0)),
    cat(i32(0), i32(42)),
    cat(i32(1), i64(7)),
    cat(u32(9), f32(0.5)),
    u32(0),
    cat(u32(2), i32(0), i32(1)),
  );

  it('encodes every construct to the hand-built bytes and decodes them back', () => {
    expect(m.xdrEncode(m.allCodec, sample)).toEqual(sampleBytes);
    expect(m.xdrDecode(m.allCodec, sampleBytes)).toEqual(sample);
  });

  it('unions: void arms, default arm, unknown tags', () => {
    expect(m.xdrEncode(m.shapeCodec, { tag: 1 })).toEqual(i32(1));
    expect(m.xdrDecode(m.shapeCodec, i32(5))).toEqual({ tag: 5, value: undefined });
    expect(codeOf(() => m.xdrDecode(m.shapeCodec, i32(2)))).toBe('XDR_DECODE');
    expect(codeOf(() => m.xdrEncode(m.shapeCodec, { tag: 2 }))).toBe('XDR_ENCODE');
    expect(codeOf(() => m.xdrDecode(m.maybeCodec, i32(2)))).toBe('XDR_DECODE');
    expect(m.xdrDecode(m.maybeCodec, i32(0))).toEqual({ tag: 0, value: undefined });
    expect(m.xdrDecode(m.openCodec, cat(u32(1), f64(2)))).toEqual({ tag: 1, value: 2 });
    expect(m.xdrDecode(m.openCodec, cat(u32(0xffffffff), f32(2)))).toEqual({ tag: 0xffffffff, value: 2 });
    expect(codeOf(() => m.xdrEncode(m.openCodec, { tag: -1, value: 1 }))).toBe('XDR_ENCODE');
  });

  it('enums, strings, fixed opaque and fixed arrays are checked both ways', () => {
    expect(codeOf(() => m.xdrEncode(m.colorCodec, 2))).toBe('XDR_ENCODE');
    expect(codeOf(() => m.xdrDecode(m.colorCodec, i32(2)))).toBe('XDR_DECODE');
    expect(m.xdrEncode(m.nameCodec, 'abcdefgh')).toEqual(cat(u32(8), Buffer.from('abcdefgh')));
    expect(codeOf(() => m.xdrEncode(m.nameCodec, 'ééééé'))).toBe('XDR_ENCODE');
    expect(codeOf(() => m.xdrDecode(m.nameCodec, cat(u32(9), Buffer.alloc(12))))).toBe('XDR_DECODE');
    expect(codeOf(() => m.xdrDecode(m.nameCodec, cat(u32(2), Buffer.from([0xc3, 0x28, 0, 0]))))).toBe('XDR_DECODE');
    expect(codeOf(() => m.xdrEncode(m.tag3Codec, Buffer.alloc(4)))).toBe('XDR_ENCODE');
    expect(codeOf(() => m.xdrDecode(m.tag3Codec, Buffer.from([1, 2, 3, 4])))).toBe('XDR_DECODE');
    expect(codeOf(() => m.xdrEncode(m.allCodec, { ...sample, fixed: [1] }))).toBe('XDR_ENCODE');
    expect(codeOf(() => m.xdrEncode(m.allCodec, { ...sample, var: [1, 2, 3, 4] }))).toBe('XDR_ENCODE');
    expect(codeOf(() => m.xdrEncode(m.allCodec, { ...sample, u: -1 }))).toBe('XDR_ENCODE');
    expect(codeOf(() => m.xdrEncode(m.allCodec, { ...sample, i: 2 ** 31 }))).toBe('XDR_ENCODE');
    expect(codeOf(() => m.xdrEncode(m.allCodec, { ...sample, uh: -1 }))).toBe('XDR_ENCODE');
    expect(codeOf(() => m.xdrEncode(m.allCodec, { ...sample, b: 1 }))).toBe('XDR_ENCODE');
    expect(codeOf(() => m.xdrDecode(m.allCodec, cat(sampleBytes.subarray(0, 24), i32(2))))).toBe('XDR_DECODE');
  });

  describe('recursion depth', () => {
    const list = (n: number): Buffer => {
      const parts: Buffer[] = [];
      for (let i = 0; i < n; i++) parts.push(i32(i), i32(i === n - 1 ? 0 : 1));
      return cat(...parts);
    };
    const values = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

    it('accepts 32 nested levels', () => {
      expect(m.xdrDecode(m.nodeCodec, list(32))).toEqual(node(values(32)));
      expect(m.xdrEncode(m.nodeCodec, node(values(32)))).toEqual(list(32));
    });

    it('rejects 33 levels on decode and encode, and recovers afterwards', () => {
      expect(codeOf(() => m.xdrDecode(m.nodeCodec, list(33)))).toBe('XDR_DECODE');
      expect(codeOf(() => m.xdrEncode(m.nodeCodec, node(values(33))))).toBe('XDR_ENCODE');
      expect(m.xdrDecode(m.nodeCodec, list(32))).toEqual(node(values(32)));
    });

    it('a cyclic value fails to encode instead of overflowing the stack', () => {
      const a: { value: number; next: unknown } = { value: 1, next: null };
      a.next = a;
      expect(codeOf(() => m.xdrEncode(m.nodeCodec, a))).toBe('XDR_ENCODE');
    });

    it('a deep list inside a struct is limited the same way', () => {
      // In sampleBytes the optional `list` (flag, then 2 nodes: 20 bytes) starts at offset 80.
      const withList = (n: number): Buffer => cat(sampleBytes.subarray(0, 80), i32(1), list(n), sampleBytes.subarray(100));
      expect(m.xdrDecode(m.allCodec, withList(2))).toEqual({ ...sample, list: node(values(2)) });
      expect((m.xdrDecode(m.allCodec, withList(32)) as { list: unknown }).list).toEqual(node(values(32)));
      expect(() => m.xdrDecode(m.allCodec, withList(33))).toThrow(/nesting deeper than 32/);
    });
  });

  it('builds the procedure table, call names and error results', async () => {
    expect(m.PROCEDURES.map((p) => `${p.vers}/${p.proc}/${p.rpcName}/${p.name}`)).toEqual([
      '1/1/f_get/f_get',
      '1/2/f_ping/f_ping',
      '1/3/f_nothing/f_nothing',
      '2/1/f_get/f_get',
    ]);
    expect(m.PROCEDURES_BY_VERSION.get(2)!.get(1)!.ret).toBe(m.resCodec);
    const get = m.PROCEDURES_BY_VERSION.get(1)!.get(1)!;
    const err = get.errorRet(3) as { rv: number; value: typeof sample };
    expect(err.rv).toBe(3);
    expect(err.value.t).toEqual(Buffer.alloc(3));
    expect(err.value.fixed).toEqual([0, 0]);
    expect(err.value.list).toBeNull();
    expect(err.value.s).toEqual({ tag: 0, value: 0 });
    expect(m.xdrDecode(get.ret, m.xdrEncode(get.ret, err))).toEqual(err);
    expect(m.PROCEDURES_BY_VERSION.get(1)!.get(2)!.errorRet(4)).toBe(4);
    expect(m.PROCEDURES_BY_VERSION.get(1)!.get(3)!.errorRet(4)).toBeUndefined();

    const calls: unknown[][] = [];
    const impl = {
      f_get: (...a: unknown[]) => (calls.push(['f_get', ...a]), Promise.resolve('g')),
      f_ping: (...a: unknown[]) => (calls.push(['f_ping', ...a]), Promise.resolve(1)),
      f_nothing: (...a: unknown[]) => (calls.push(['f_nothing', ...a]), Promise.resolve()),
    };
    const layer = new m.FixturePassthrough(impl);
    await layer.f_ping('c');
    await m.CALL_INVOKERS.f_get(layer, 'c', 'x');
    await m.CALL_INVOKERS.f_nothing(impl, 'c', 5);
    expect(calls).toEqual([['f_ping', 'c'], ['f_get', 'c', 'x'], ['f_nothing', 'c', 5]]);
  });

  it('passes a synchronous result through the passthrough and the invokers as it is, not as a promise', () => {
    const impl = { f_get: () => 'g', f_ping: () => 7, f_nothing: () => undefined };
    const layer = new m.FixturePassthrough(new m.FixturePassthrough(impl));
    expect(layer.f_ping('c')).toBe(7);
    expect(m.CALL_INVOKERS.f_get(layer, 'c', 'x')).toBe('g');
    const pending = Promise.resolve(3);
    expect(new m.FixturePassthrough({ ...impl, f_ping: () => pending }).f_ping('c')).toBe(pending);
    const isPromise = m.isPromise as (v: unknown) => boolean;
    expect([isPromise(pending), isPromise(7), isPromise(undefined), isPromise({ rv: 0 })]).toEqual([true, false, false, false]);
  });
});

/* Handles, a typedef of one, a list of them, templates, and a union result; roles by type name. */
const ROLES_FIXTURE = `
typedef hyper sess;
typedef hyper obj;
typedef obj key;
struct attr { hyper type; opaque value<>; };
typedef attr tmpl<>;
struct mech { hyper m; };
struct init_args { sess s; mech mm; key k; obj o; tmpl t; hyper n; };
struct find_ret { hyper rv; obj objects<>; sess session; tmpl t; };
program R_PROG {
  version R_V1 { find_ret r_find(init_args) = 1; hyper r_count(sess) = 2; hyper r_void(void) = 3; } = 1;
} = 0x20000001;
`;
const ROLES = new Map<string, FieldRoleSpec>([
  ['sess', { role: 'session' }],
  ['obj', { role: 'object', invalidRv: 0x82, invalidRvName: 'CKR_OBJECT_HANDLE_INVALID' }],
  ['key', { role: 'object', invalidRv: 0x60, invalidRvName: 'CKR_KEY_HANDLE_INVALID', zeroAllowed: true }],
  ['tmpl', { role: 'template' }],
  ['mech', { role: 'mechanism' }],
]);

interface RoleFieldView {
  name: string;
  invalidRv?: number;
  zeroAllowed?: boolean;
  get(s: unknown): unknown;
  set(s: unknown, v: unknown): void;
}
type RoleFieldsView = Record<string, RoleFieldView[]>;
interface CallFieldsView {
  copyArgs(a: unknown): Record<string, unknown>;
  copyResult(r: unknown): unknown;
  args: RoleFieldsView;
  result: RoleFieldsView;
}

describe('emitter: field roles and the split output', () => {
  const split = generateTypeScriptSplit(
    ROLES_FIXTURE,
    { sourceName: 'roles.x', fieldRoles: ROLES, fieldRolesName: 'roles.json' },
    { codecs: './r_codecs', calls: './r_calls' },
  );
  let calls: FixtureModule;

  beforeAll(() => {
    const codecs = load(split.codecs);
    calls = load(split.calls, { './r_codecs': codecs });
  });

  it('emits codecs, calls and index that type-check together, the calls importing only what they use', () => {
    expect(typeCheckFiles({ r_codecs: split.codecs, r_calls: split.calls, r_index: split.index })).toEqual([]);
    expect(split.codecs).not.toMatch(/CALL_FIELDS|PROCEDURES|RPassthrough/);
    expect(split.calls).toMatch(/^import \{ [^}]+ \} from '\.\/r_codecs';$/m);
    expect(split.calls).not.toMatch(/function readInt|class SlabSink/);
    expect(split.index).toContain("export * from './r_codecs';\nexport * from './r_calls';\n");
    for (const f of [split.codecs, split.calls, split.index]) {
      expect(f.split('\n')[0]).toBe('// DO NOT EDIT. Generated by tools/xdrgen from roles.x and roles.json.');
    }
  }, 30000);

  it('finds role fields by their declared type, through typedefs and in arrays', () => {
    const find = (calls.CALL_FIELDS as Record<string, CallFieldsView>).r_find;
    const names = (fs: RoleFieldsView) =>
      Object.fromEntries(Object.entries(fs).filter(([, v]) => v.length > 0).map(([k, v]) => [k, v.map((f) => f.name)]));
    expect(names(find.args)).toEqual({ session: ['s'], object: ['k', 'o'], template: ['t'], mechanism: ['mm'] });
    expect(names(find.result)).toEqual({ session: ['session'], objectList: ['objects'], template: ['t'] });
    expect(find.args.object.map((f) => [f.invalidRv, f.zeroAllowed])).toEqual([[0x60, true], [0x82, false]]);
    const count = (calls.CALL_FIELDS as Record<string, CallFieldsView>).r_count;
    expect(Object.values(count.args).flat()).toEqual([]);
    expect(count.copyArgs(5)).toBe(5);
  });

  it('copies with every field and sets one field of the copy only', () => {
    const find = (calls.CALL_FIELDS as Record<string, CallFieldsView>).r_find;
    const a = { s: 1, mm: { m: 2 }, k: 3, o: 4, t: [], n: 5 };
    const c = find.copyArgs(a);
    expect(c).toEqual(a);
    expect(Object.keys(c)).toEqual(['s', 'mm', 'k', 'o', 't', 'n']);
    find.args.session[0].set(c, 11);
    find.args.object[1].set(c, 14);
    expect([find.args.session[0].get(c), find.args.object[1].get(c), a.s, a.o]).toEqual([11, 14, 1, 4]);
    const r = { rv: 0, objects: [7, 8], session: 9, t: [] };
    const rc = find.copyResult(r) as typeof r;
    find.result.objectList[0].set(rc, [70, 80]);
    expect([rc.objects, r.objects]).toEqual([[70, 80], [7, 8]]);
  });
});

describe('emitter naming', () => {
  it('derives names from the program and procedures', () => {
    expect(programPrefix('PKCS11_PROG')).toBe('Pkcs11');
    expect(programPrefix('NFS_PROGRAM')).toBe('Nfs');
    expect(programPrefix('MY_SERVICE')).toBe('MyService');
    expect(callName('c_Sign')).toBe('C_Sign');
    expect(callName('C_Sign')).toBe('C_Sign');
    expect(callName('ping')).toBe('ping');
  });

  it('only includes the runtime helpers a file uses', () => {
    const code = gen('struct s { hyper a; };');
    expect(code).not.toMatch(/function readString|function readOptional|enterDecode|isUtf8|noArm/);
    expect(typeCheck(code)).toEqual([]);
    const unions = gen(`
      union a switch (int d) { case 1: int x; default: void; };
      union b switch (bool d) { case TRUE: int x; default: void; };`);
    expect(unions).not.toMatch(/noArmDecode/);
    expect(typeCheck(unions)).toEqual([]);
  }, 30000);
});

describe('emitter errors', () => {
  function emitError(text: string): string {
    try {
      gen(text);
    } catch (e) {
      expect(e).toBeInstanceOf(XdrgenEmitError);
      expect((e as XdrgenEmitError).code).toBe('XDRGEN_EMIT');
      return (e as Error).message;
    }
    throw new Error('generation unexpectedly succeeded');
  }

  it.each([
    ['typedef int Codec;', "fixture.x:1:1: typedef 'Codec' clashes with the runtime glue of the same name in the generated code"],
    ['typedef int number;', "fixture.x:1:1: typedef 'number' cannot be used as a TypeScript name"],
    ['struct s { int a; }; const sCodec = 1;', "fixture.x:1:22: constant 'sCodec' clashes with codec of struct s of the same name in the generated code"],
    ['struct s { int __proto__; };', "fixture.x:1:12: a field cannot be named '__proto__'"],
    [
      'struct s { int a; }; program P { version V { s F(void) = 1; } = 1; } = 1;',
      "fixture.x:1:46: procedure F: result type s is not an integer and has no integer 'rv' field, so errorRet cannot be built",
    ],
    [
      'program P { version V { int F(void) = 1; } = 1; } = 1; program Q { version W { int G(void) = 1; } = 1; } = 2;',
      'fixture.x:1:56: only one program per file is supported',
    ],
    [
      'program P { version V { int F(void) = 1; } = 1; version W { int F(int) = 1; } = 2; } = 1;',
      'fixture.x:1:61: F is declared as (number) => number here and as (void) => number at 1:25',
    ],
    ['program P { version V { int CallName(void) = 1; } = 1; } = 1; const PROCEDURES = 1;', "fixture.x:1:63: constant 'PROCEDURES' clashes with a declaration of the procedure table of the same name in the generated code"],
  ])('%j', (text, expected) => {
    expect(emitError(text)).toBe(expected);
  });
});
