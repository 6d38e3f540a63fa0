import { XdrgenSemanticError } from './errors';
import { Model, RTypeDef, UNBOUNDED } from './model';
import { parse } from './parser';
import { resolve } from './resolve';

const model = (text: string): Model => resolve(parse(text, 'test.x'));
const type = (m: Model, name: string): RTypeDef => {
  const t = m.types.get(name);
  if (!t) throw new Error(`no type ${name}`);
  return t;
};

function semanticError(text: string): string {
  try {
    model(text);
  } catch (e) {
    expect(e).toBeInstanceOf(XdrgenSemanticError);
    const err = e as XdrgenSemanticError;
    expect(err.code).toBe('XDRGEN_SEMANTIC');
    expect(err.message.startsWith(`test.x:${err.pos.line}:${err.pos.column}: `)).toBe(true);
    return `${err.pos.line}:${err.pos.column}: ${err.detail}`;
  }
  throw new Error('resolve unexpectedly succeeded');
}

describe('resolver', () => {
  it('evaluates constants, forward references and enum values', () => {
    const m = model(`
      const B = A;
      const A = 0x20;
      enum e { X = B, Y, Z = 7, W };
      struct s { opaque o<A>; int f[Z]; string t<>; };`);
    expect(m.definitions.filter((d) => d.kind === 'const')).toEqual([
      expect.objectContaining({ name: 'B', value: 32, hex: false }),
      expect.objectContaining({ name: 'A', value: 32, hex: true }),
    ]);
    expect(type(m, 'e')).toMatchObject({ members: [{ value: 32 }, { value: 33 }, { value: 7 }, { value: 8 }] });
    expect(type(m, 's')).toMatchObject({
      fields: [
        { kind: 'varOpaque', max: 32 },
        { kind: 'fixedArray', size: 7 },
        { kind: 'string', max: UNBOUNDED },
      ],
    });
  });

  it('resolves references to their kind of definition', () => {
    const m = model('typedef int t; struct s { t a; u b; e c; }; union u switch (e d) { case A: void; }; enum e { A = 0 };');
    expect(type(m, 's')).toMatchObject({
      fields: [
        { type: { kind: 'ref', name: 't', target: 'typedef' } },
        { type: { kind: 'ref', name: 'u', target: 'union' } },
        { type: { kind: 'ref', name: 'e', target: 'enum' } },
      ],
    });
    expect(type(m, 'u')).toMatchObject({ discKind: 'enum', discEnum: 'e', arms: [{ labels: [0] }] });
  });

  it('union discriminants through typedefs, TRUE/FALSE labels', () => {
    const m = model(`
      typedef unsigned int k;
      union a switch (k x) { case 4294967295: int y; };
      union b switch (bool x) { case TRUE: int y; case FALSE: void; };`);
    expect(type(m, 'a')).toMatchObject({ discKind: 'uint', arms: [{ labels: [UNBOUNDED] }] });
    expect(type(m, 'b')).toMatchObject({ discKind: 'bool', arms: [{ labels: [1] }, { labels: [0] }] });
  });

  it('marks structs and unions that reach themselves as recursive', () => {
    const m = model(`
      struct node { int v; node *next; };
      typedef tree forest<>;
      struct tree { forest kids; };
      union l switch (int t) { case 0: void; case 1: m *x; };
      struct m { l back; };
      struct plain { node *n; };`);
    for (const n of ['node', 'tree', 'l', 'm']) expect(type(m, n)).toMatchObject({ recursive: true });
    expect(type(m, 'plain')).toMatchObject({ recursive: false });
  });

  it('resolves programs', () => {
    const m = model('const N = 9; program P { version V { int F(void) = N; } = 2; } = 0x40000000;');
    expect(m.definitions[1]).toMatchObject({
      kind: 'program',
      number: 0x40000000,
      versions: [{ name: 'V', number: 2, procedures: [{ name: 'F', number: 9, arg: null, ret: { kind: 'primitive', prim: 'int' } }] }],
    });
  });

  it.each([
    ['struct s { foo x; };', "1:12: unknown type 'foo'"],
    ['const C = 1; struct s { C x; };', "1:25: 'C' is not a type"],
    ['struct s { int x<N>; };', "1:18: unknown constant 'N'"],
    ['struct t { int a; }; struct s { int x<t>; };', "1:39: 't' is not a constant"],
    ['const A = 1;\nconst A = 2;', "2:1: 'A' is already defined at 1:1"],
    ['enum e { A = 1 }; const A = 2;', "1:19: 'A' is already defined at 1:10"],
    ['struct TRUE { int a; };', "1:1: 'TRUE' is a predefined XDR constant"],
    ['const A = B; const B = A;', "1:24: constant 'A' is defined in terms of itself"],
    ['struct s { int x; int x; };', "1:19: 'x' is declared twice in struct s (first at 1:12)"],
    ['struct s { void; };', "1:12: 'void' is not allowed as a member of struct s"],
    ['struct s { int x<-1>; };', '1:18: bound of x in struct s must be in 0..4294967295, got -1'],
    ['struct s { opaque x[0x100000000]; };', '1:21: size of x in struct s must be in 0..4294967295, got 4294967296'],
    ['struct s { quadruple q; };', "1:12: 'quadruple' is not supported"],
    ['enum e { A = 0x80000000 };', "1:14: enum value 2147483648 of 'A' does not fit in an int"],
    ['enum e { A = 0x7fffffff, B };', "1:26: enum value 2147483648 of 'B' does not fit in an int"],
    ['union u switch (hyper d) { case 1: void; };', '1:17: the discriminant of union u must be int, unsigned int, bool or an enum'],
    ['union u switch (int d[2]) { case 1: void; };', '1:17: the discriminant of union u must be a plain int, unsigned int, bool or enum'],
    ['union u switch (int d) { case 1: void; case 1: int x; };', '1:45: case value 1 of union u already used at 1:31'],
    ['union u switch (bool d) { case 2: void; };', '1:32: case value 2 is not a valid bool for union u'],
    ['union u switch (unsigned int d) { case -1: void; };', '1:40: case value -1 is not a valid uint for union u'],
    ['enum e { A = 1 }; union u switch (e d) { case 2: void; };', '1:47: case value 2 is not a valid e value for union u'],
    ['union u switch (int d) { case 1: int d; };', "1:34: 'd' is declared twice in union u (first at 1:17)"],
    ['struct s { union s x; };', "1:12: 'union s' names a struct, not a union"],
    ['struct s { s x; };', "1:12: type s contains itself (s -> s); break the cycle with '*' or '<>'"],
    ['struct a { b x[2]; }; struct b { a y; };', "1:34: type a contains itself (a -> b -> a); break the cycle with '*' or '<>'"],
    ['typedef a b<>; typedef b a<>;', '1:1: typedefs a, b are defined in terms of each other'],
    ['typedef a b; typedef b a;', "1:22: type b contains itself (b -> a -> b); break the cycle with '*' or '<>'"],
    ['program P { version V { int F(void) = 1; } = 1; version W { int F(void) = 1; } = 1; } = 1;', '1:82: version number 1 already used at 1:46'],
    ['program P { version V { int F(void) = 1; int G(void) = 1; } = 1; } = 1;', '1:56: procedure number 1 already used in version V at 1:39'],
    ['program P { version V { int F(void) = 1; int F(void) = 2; } = 1; } = 1;', "1:42: 'F' is declared twice in version V (first at 1:25)"],
    ['program P { version V { foo F(void) = 1; } = 1; } = 1;', "1:25: unknown type 'foo'"],
    ['program P { version P { int F(void) = 1; } = 1; } = 1;', "1:13: 'P' is already defined at 1:1"],
  ])('%j', (text, expected) => {
    expect(semanticError(text)).toBe(expected);
  });
});
