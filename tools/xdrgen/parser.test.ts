import { Declaration, Definition } from './ast';
import { XdrgenError, XdrgenSyntaxError } from './errors';
import { tokenize } from './lexer';
import { parse } from './parser';

const defs = (text: string): readonly Definition[] => parse(text, 'test.x').definitions;
const one = (text: string): Definition => {
  const d = defs(text);
  expect(d).toHaveLength(1);
  return d[0];
};
const field = (decl: string): Declaration => {
  const d = one(`struct s { ${decl}; };`);
  if (d.kind !== 'struct') throw new Error('not a struct');
  return d.fields[0];
};

/** Parses `text`, expects a syntax error and returns "line:column: detail". */
function syntaxError(text: string): string {
  try {
    parse(text, 'bad.x');
  } catch (e) {
    expect(e).toBeInstanceOf(XdrgenSyntaxError);
    const err = e as XdrgenSyntaxError;
    expect(err.code).toBe('XDRGEN_SYNTAX');
    expect(err.message.startsWith(`bad.x:${err.pos.line}:${err.pos.column}: `)).toBe(true);
    return `${err.pos.line}:${err.pos.column}: ${err.detail}`;
  }
  throw new Error('parse unexpectedly succeeded');
}

describe('lexer', () => {
  it('reads identifiers, numbers in three bases and punctuation with positions', () => {
    const toks = tokenize('const _A1 = 0x1F;\n  x 017 0 42 <>', 'f.x');
    expect(toks.map((t) => t.kind + ':' + t.text)).toEqual([
      'ident:const',
      'ident:_A1',
      'punct:=',
      'number:0x1F',
      'punct:;',
      'ident:x',
      'number:017',
      'number:0',
      'number:42',
      'punct:<',
      'punct:>',
      'eof:',
    ]);
    const nums = toks.filter((t) => t.kind === 'number').map((t) => (t.kind === 'number' ? t.value : 0));
    expect(nums).toEqual([31, 15, 0, 42]);
    expect(toks[5].pos).toEqual({ line: 2, column: 3 });
  });

  it('skips comments, % pass-through lines and preprocessor lines', () => {
    const text = [
      '%#include "foo.h"',
      '  % indented pass-through',
      '#ifdef RPC_HDR',
      '#define X \\',
      '   continued',
      '#endif',
      '/* multi',
      '   line */ a // rest of line',
      'b /* x */ c',
    ].join('\n');
    const toks = tokenize(text, 'f.x');
    expect(toks.map((t) => t.text)).toEqual(['a', 'b', 'c', '']);
    expect(toks[0].pos).toEqual({ line: 8, column: 12 });
    expect(toks[2].pos).toEqual({ line: 9, column: 11 });
  });

  it('does not treat % or # after a token as a line directive', () => {
    expect(() => tokenize('a %b', 'f.x')).toThrow(XdrgenSyntaxError);
  });

  it.each([
    ['/* never closed', '1:1: unterminated comment'],
    ['a\n  09', '2:3: malformed number \'09\''],
    ['12ab', "1:1: malformed number '12ab'"],
    ['0x', "1:1: malformed number '0x'"],
    ['9007199254740992', "1:1: number '9007199254740992' is larger than 2^53-1"],
    ['a $', "1:3: unexpected character '$'"],
  ])('rejects %j', (text, expected) => {
    expect(syntaxError(text)).toBe(expected);
  });
});

describe('parser: definitions', () => {
  it('const, including hex, octal, negative and named values', () => {
    expect(defs('const A = 10; const B = 0x10; const C = -1; const D = A; const E = 010;')).toEqual([
      { kind: 'const', name: 'A', value: { kind: 'number', value: 10, hex: false, pos: { line: 1, column: 11 } }, pos: { line: 1, column: 1 } },
      expect.objectContaining({ name: 'B', value: expect.objectContaining({ value: 16, hex: true }) }),
      expect.objectContaining({ name: 'C', value: expect.objectContaining({ value: -1 }) }),
      expect.objectContaining({ name: 'D', value: { kind: 'ident', name: 'A', pos: { line: 1, column: 55 } } }),
      expect.objectContaining({ name: 'E', value: expect.objectContaining({ value: 8, hex: false }) }),
    ]);
  });

  it('enum with explicit, named and implicit values', () => {
    const d = one('enum color { RED = 0, GREEN = RED, BLUE };');
    expect(d).toMatchObject({
      kind: 'enum',
      name: 'color',
      members: [
        { name: 'RED', value: { kind: 'number', value: 0 } },
        { name: 'GREEN', value: { kind: 'ident', name: 'RED' } },
        { name: 'BLUE', value: null },
      ],
    });
  });

  it('typedef of every declaration form', () => {
    expect(defs('typedef int a; typedef opaque b<>; typedef string c<8>; typedef foo d[3]; typedef foo *e;')).toMatchObject([
      { kind: 'typedef', decl: { kind: 'plain', name: 'a', type: { kind: 'primitive', prim: 'int' } } },
      { kind: 'typedef', decl: { kind: 'varOpaque', name: 'b', max: null } },
      { kind: 'typedef', decl: { kind: 'string', name: 'c', max: { value: 8 } } },
      { kind: 'typedef', decl: { kind: 'fixedArray', name: 'd', type: { kind: 'ref', name: 'foo' }, size: { value: 3 } } },
      { kind: 'typedef', decl: { kind: 'optional', name: 'e', type: { kind: 'ref', name: 'foo' } } },
    ]);
  });

  it.each<[string, object]>([
    ['int x', { kind: 'plain', type: { prim: 'int' } }],
    ['unsigned int x', { kind: 'plain', type: { prim: 'uint' } }],
    ['unsigned x', { kind: 'plain', type: { prim: 'uint' } }],
    ['hyper x', { kind: 'plain', type: { prim: 'hyper' } }],
    ['unsigned hyper x', { kind: 'plain', type: { prim: 'uhyper' } }],
    ['bool x', { kind: 'plain', type: { prim: 'bool' } }],
    ['float x', { kind: 'plain', type: { prim: 'float' } }],
    ['double x', { kind: 'plain', type: { prim: 'double' } }],
    ['quadruple x', { kind: 'plain', type: { prim: 'quadruple' } }],
    ['foo x', { kind: 'plain', type: { kind: 'ref', name: 'foo', keyword: null } }],
    ['struct foo x', { kind: 'plain', type: { kind: 'ref', name: 'foo', keyword: 'struct' } }],
    ['union foo x', { kind: 'plain', type: { kind: 'ref', name: 'foo', keyword: 'union' } }],
    ['enum foo x', { kind: 'plain', type: { kind: 'ref', name: 'foo', keyword: 'enum' } }],
    ['opaque x[16]', { kind: 'fixedOpaque', size: { value: 16 } }],
    ['opaque x<32>', { kind: 'varOpaque', max: { value: 32 } }],
    ['opaque x<>', { kind: 'varOpaque', max: null }],
    ['opaque x<MAX>', { kind: 'varOpaque', max: { kind: 'ident', name: 'MAX' } }],
    ['string x<255>', { kind: 'string', max: { value: 255 } }],
    ['string x<>', { kind: 'string', max: null }],
    ['int x[4]', { kind: 'fixedArray', size: { value: 4 } }],
    ['hyper x<10>', { kind: 'varArray', max: { value: 10 } }],
    ['foo x<>', { kind: 'varArray', max: null }],
    ['foo *x', { kind: 'optional', type: { name: 'foo' } }],
    ['struct foo *x', { kind: 'optional', type: { name: 'foo', keyword: 'struct' } }],
  ])('struct member %s', (text, expected) => {
    expect(field(text)).toMatchObject({ name: 'x', ...expected });
  });

  it('void is parsed as a declaration (the resolver rejects it in structs)', () => {
    expect(field('void')).toMatchObject({ kind: 'void' });
  });

  it('union with multi-label cases, void arms and default', () => {
    const d = one(`
      union result switch (status s) {
        case OK:
          opaque data<>;
        case 1:
        case -2:
          void;
        default:
          int code;
      };`);
    expect(d).toMatchObject({
      kind: 'union',
      name: 'result',
      discriminant: { kind: 'plain', name: 's', type: { kind: 'ref', name: 'status' } },
      arms: [
        { labels: [{ kind: 'ident', name: 'OK' }], decl: { kind: 'varOpaque', name: 'data' } },
        { labels: [{ value: 1 }, { value: -2 }], decl: { kind: 'void' } },
      ],
      defaultArm: { kind: 'plain', name: 'code' },
    });
  });

  it('union without default', () => {
    expect(one('union u switch (bool b) { case TRUE: int x; };')).toMatchObject({ defaultArm: null });
  });

  it('program with versions and procedures taking void or one argument', () => {
    const d = one(`
      program P {
        version V1 { void NULLPROC(void) = 0; int PING(foo) = 1; } = 1;
        version V2 { foo GET(unsigned hyper) = 1; } = 2;
      } = 0x20000001;`);
    expect(d).toMatchObject({
      kind: 'program',
      name: 'P',
      number: { value: 0x20000001 },
      versions: [
        {
          name: 'V1',
          number: { value: 1 },
          procedures: [
            { name: 'NULLPROC', ret: null, arg: null, number: { value: 0 } },
            { name: 'PING', ret: { prim: 'int' }, arg: { kind: 'ref', name: 'foo' }, number: { value: 1 } },
          ],
        },
        { name: 'V2', procedures: [{ name: 'GET', ret: { name: 'foo' }, arg: { prim: 'uhyper' } }] },
      ],
    });
  });

  it('parses rpc/pkcs11.x', () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const text = require('fs').readFileSync(require('path').join(__dirname, '../../rpc/pkcs11.x'), 'utf8') as string;
    const all = parse(text, 'rpc/pkcs11.x').definitions;
    const prog = all.find((d) => d.kind === 'program');
    expect(prog).toMatchObject({ name: 'PKCS11_PROG', versions: [{ name: 'PKCS11_V3' }] });
  });
});

describe('parser: errors carry line:column', () => {
  it.each([
    ['typedef int;', "1:12: expected a name in declaration, found ';'"],
    ['const A = 1', "1:12: expected ';' after constant A, found end of file"],
    ['const int = 1;', "1:7: expected a constant name, found keyword 'int'"],
    ['struct s {\n  int a\n};', "3:1: expected ';' after struct member, found '}'"],
    ['struct s { };', "1:12: expected a type, found '}'"],
    ['struct s {\n  opaque x;\n};', "2:11: opaque x needs a size: '[N]', '<N>' or '<>'"],
    ['struct s { string x[3]; };', "1:20: string x needs a maximum size: '<N>' or '<>'"],
    ['struct s { struct t { int a; } x; };', "1:21: inline struct definitions are not supported; define struct t at top level"],
    ['struct s { int x<; };', "1:18: expected a number or constant name, found ';'"],
    ['struct s { int x[]; };', "1:18: expected a number or constant name, found ']'"],
    ['struct s { int x<3; };', "1:19: expected '>' after maximum size, found ';'"],
    ['union u switch (int d) { default: void; };', "1:26: expected 'case' in union u, found keyword 'default'"],
    ['union u switch (int d) { case 1 int x; };', "1:33: expected ':' after case value, found keyword 'int'"],
    ['union u switch (int d) { case 1: int x; }', "1:42: expected ';' after union u, found end of file"],
    ['typedef void;', "1:9: 'typedef void' is not allowed"],
    ['enum e { A = 1, };', "1:17: expected an enum member name, found '}'"],
    ['enum e { A = 1 B };', "1:16: expected '}' or ',' in enum body, found identifier 'B'"],
    ['foo bar;', "1:1: expected a definition (const, typedef, enum, struct, union or program), found identifier 'foo'"],
    ['const A = - x;', "1:13: expected a number after '-', found identifier 'x'"],
    [
      'program P { version V { int F(int, int) = 1; } = 1; } = 1;',
      '1:34: procedure F has more than one argument; declare one struct argument instead',
    ],
    ['program P { version V { int F(int) } = 1; } = 1;', "1:36: expected '=' before the number of procedure F, found '}'"],
    ['program P { } = 1;', "1:13: expected 'version', found '}'"],
    ['program P { version V { } = 1; } = 1;', "1:25: expected a type, found '}'"],
    ['struct s { string *x; };', "1:19: expected a name after 'string', found '*'"],
  ])('%j', (text, expected) => {
    expect(syntaxError(text)).toBe(expected);
  });

  it('errors are XdrgenError with a stable code', () => {
    let caught: unknown;
    try {
      parse('struct', 'x.x');
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(XdrgenError);
    expect((caught as XdrgenError).code).toBe('XDRGEN_SYNTAX');
  });
});
