import { ConfigError } from '../../src/config';
import { type Dialect, MAX_NESTING, parseConfigText, toPlain } from '../../src/config/syntax';

interface Case {
  name: string;
  dialect: Dialect;
  input: string;
  output?: unknown;
  error?: RegExp;
  code?: string;
}

function plain(input: string, dialect: Dialect): unknown {
  const tree = parseConfigText(input, 't.conf', dialect);
  return toPlain(tree, 't.conf', { repeatBlocks: dialect === 'netplex' }).data;
}

const valueCases: Case[] = [
  { name: 'decimal integer', dialect: 'filter', input: 'a = 42', output: { a: 42 } },
  { name: 'negative integer', dialect: 'filter', input: 'a = -7', output: { a: -7 } },
  {
    name: 'hex integer',
    dialect: 'filter',
    input: 'a = 0x80000001 b = 0XfF',
    output: { a: 0x80000001, b: 255 },
  },
  {
    name: 'floats',
    dialect: 'filter',
    input: 'a = 1.5 b = 2. c = 1e3 d = -2.5E-1',
    output: { a: 1.5, b: 2, c: 1000, d: -0.25 },
  },
  {
    name: 'identifier is a string',
    dialect: 'filter',
    input: 'a = CKM_RSA_PKCS',
    output: { a: 'CKM_RSA_PKCS' },
  },
  { name: 'identifier with quote char', dialect: 'filter', input: "a = x'", output: { a: "x'" } },
  {
    name: 'yes/no/true/false stay words',
    dialect: 'filter',
    input: 'a = [yes, no, true, false]',
    output: { a: ['yes', 'no', 'true', 'false'] },
  },
  {
    name: 'string escapes',
    dialect: 'filter',
    input: String.raw`a = "q\"b\\n\n\t\065\z"`,
    output: { a: 'q"b\\n\n\tAz' },
  },
  { name: 'string spanning lines', dialect: 'filter', input: 'a = "x\ny"', output: { a: 'x\ny' } },
  { name: 'quoted key', dialect: 'filter', input: '"the key" = 1', output: { 'the key': 1 } },
  { name: 'empty list', dialect: 'filter', input: 'a = []', output: { a: [] } },
  {
    name: 'nested lists and tuples',
    dialect: 'filter',
    input: 'a = [("x", [1, (2, [3])]), ()]',
    output: { a: [['x', [1, [2, [3]]]], []] },
  },
  {
    name: 'separators optional and repeatable',
    dialect: 'filter',
    input: 'a = [1 2;3,,4;,]',
    output: { a: [1, 2, 3, 4] },
  },
  {
    name: 'entries need no separator',
    dialect: 'filter',
    input: 'a = 1 b = "2"\nc = x',
    output: { a: 1, b: '2', c: 'x' },
  },
  { name: 'block value', dialect: 'filter', input: 'a = { b = 1 c = [2] }', output: { a: { b: 1, c: [2] } } },
  { name: 'empty file', dialect: 'filter', input: '(* nothing *)\n', output: {} },
  {
    name: 'nested comments',
    dialect: 'filter',
    input: '(* a (* b (* c *) *) still comment *) x = 1 (* (* *) *)',
    output: { x: 1 },
  },
  {
    name: 'comments between tokens',
    dialect: 'filter',
    input: 'x(*1*)=(*2*)[(*3*)1(*4*)]',
    output: { x: [1] },
  },
  {
    name: 'string text inside a comment is not special',
    dialect: 'filter',
    input: '(* "*) x = 1',
    output: { x: 1 },
  },
  {
    name: 'comment markers inside a string',
    dialect: 'filter',
    input: 'x = "(* not a comment *)"',
    output: { x: '(* not a comment *)' },
  },
  {
    name: 'starred comment banner',
    dialect: 'filter',
    input: '(******** banner *****)\nx = 1',
    output: { x: 1 },
  },
  { name: 'CRLF line endings', dialect: 'filter', input: 'a = 1\r\nb = 2\r\n', output: { a: 1, b: 2 } },
  {
    name: 'netplex scalars',
    dialect: 'netplex',
    input: 'r { s = "x"; i = 3; n = -4; f = 0.5; t = true; u = false }',
    output: { r: { s: 'x', i: 3, n: -4, f: 0.5, t: true, u: false } },
  },
  { name: 'netplex empty block', dialect: 'netplex', input: 'r { }', output: { r: {} } },
  {
    name: 'netplex trailing semicolons after root',
    dialect: 'netplex',
    input: 'r { a = 1; };;',
    output: { r: { a: 1 } },
  },
  {
    name: 'netplex optional ; after last entry and after blocks',
    dialect: 'netplex',
    input: 'r { b { c = 1 }; d { e = 2; } }',
    output: { r: { b: { c: 1 }, d: { e: 2 } } },
  },
  {
    name: 'netplex repeated blocks become an array',
    dialect: 'netplex',
    input: 'r { s { n = 1; }; s { n = 2; }; t { }; }',
    output: { r: { s: [{ n: 1 }, { n: 2 }], t: {} } },
  },
  { name: 'netplex root parameter', dialect: 'netplex', input: 'x = 1', output: { x: 1 } },
];

const errorCases: Case[] = [
  {
    name: 'unterminated string',
    dialect: 'filter',
    input: 'a = 1\nb = "abc\n',
    error: /^t\.conf:2:5: unterminated string$/,
    code: 'CONFIG_SYNTAX',
  },
  {
    name: 'unterminated string after backslash',
    dialect: 'filter',
    input: 'b = "abc\\',
    error: /^t\.conf:1:5: unterminated string$/,
    code: 'CONFIG_SYNTAX',
  },
  {
    name: 'unterminated nested comment',
    dialect: 'filter',
    input: 'a = 1\n  (* outer (* inner *) still open\n',
    error: /^t\.conf:2:3: unterminated comment$/,
    code: 'CONFIG_SYNTAX',
  },
  {
    name: 'bad hex: no digits',
    dialect: 'filter',
    input: 'a = [0x]',
    error: /^t\.conf:1:6: bad hex integer '0x'$/,
    code: 'CONFIG_SYNTAX',
  },
  {
    name: 'bad hex: letters',
    dialect: 'filter',
    input: 'a = 0x12G4',
    error: /^t\.conf:1:5: bad hex integer '0x12G4'$/,
    code: 'CONFIG_SYNTAX',
  },
  {
    name: 'bad number',
    dialect: 'filter',
    input: 'a = 12ab',
    error: /^t\.conf:1:5: bad number '12ab'$/,
    code: 'CONFIG_SYNTAX',
  },
  {
    name: 'integer out of range',
    dialect: 'filter',
    input: 'a = 99999999999999999999',
    error: /^t\.conf:1:5: integer out of range/,
    code: 'CONFIG_SYNTAX',
  },
  {
    name: 'bad decimal escape',
    dialect: 'filter',
    input: 'a = "x\\999"',
    error: /^t\.conf:1:7: bad escape '\\999'/,
    code: 'CONFIG_SYNTAX',
  },
  {
    name: 'unexpected character',
    dialect: 'filter',
    input: 'a = /usr/lib',
    error: /^t\.conf:1:5: unexpected character "\/"$/,
    code: 'CONFIG_SYNTAX',
  },
  {
    name: 'missing =',
    dialect: 'filter',
    input: 'modules [("a", "b")]',
    error: /^t\.conf:1:9: expected '=' after key 'modules' but found '\['$/,
    code: 'CONFIG_SYNTAX',
  },
  {
    name: 'mismatched bracket',
    dialect: 'filter',
    input: 'a = [(1, 2]',
    error: /^t\.conf:1:11: expected '\)' to close '\(' at 1:6 but found '\]'$/,
    code: 'CONFIG_SYNTAX',
  },
  {
    name: 'unclosed list at end of file',
    dialect: 'filter',
    input: 'a = [1,\n',
    error: /^t\.conf:2:1: expected '\]' to close '\[' at 1:5 but found end of file$/,
    code: 'CONFIG_SYNTAX',
  },
  {
    name: 'separator between filter entries',
    dialect: 'filter',
    input: 'a = 1;\nb = 2',
    error: /^t\.conf:1:6: expected a key or end of file but found ';'$/,
    code: 'CONFIG_SYNTAX',
  },
  {
    name: 'value missing',
    dialect: 'filter',
    input: 'a = \n',
    error: /^t\.conf:2:1: expected a value but found end of file$/,
    code: 'CONFIG_SYNTAX',
  },
  {
    name: 'netplex missing ;',
    dialect: 'netplex',
    input: 'netplex {\n  a = 1\n  b = 2;\n}',
    error: /^t\.conf:3:3: expected ';' or '}' after 'a' but found identifier 'b'$/,
    code: 'CONFIG_SYNTAX',
  },
  {
    name: 'netplex double ;',
    dialect: 'netplex',
    input: 'r { a = 1;; }',
    error: /^t\.conf:1:11: expected a key or '}' to close 'r' but found ';'$/,
    code: 'CONFIG_SYNTAX',
  },
  {
    name: 'netplex bare identifier value',
    dialect: 'netplex',
    input: 'r { type = local; }',
    error:
      /^t\.conf:1:12: expected a value \(string, integer, float, true or false\) but found identifier 'local'$/,
    code: 'CONFIG_SYNTAX',
  },
  {
    name: 'netplex list value',
    dialect: 'netplex',
    input: 'r { a = [1]; }',
    error: /^t\.conf:1:9: expected a value .* but found '\['$/,
    code: 'CONFIG_SYNTAX',
  },
  {
    name: 'netplex two roots',
    dialect: 'netplex',
    input: 'a { }\nb { }',
    error: /^t\.conf:2:1: expected end of file but found identifier 'b'$/,
    code: 'CONFIG_SYNTAX',
  },
  {
    name: 'netplex unclosed block',
    dialect: 'netplex',
    input: 'a { b = 1;',
    error: /^t\.conf:1:11: expected a key or '}' to close 'a' but found end of file$/,
    code: 'CONFIG_SYNTAX',
  },
  {
    name: 'netplex empty file',
    dialect: 'netplex',
    input: '(* *)',
    error: /^t\.conf:1:6: expected a key but found end of file$/,
    code: 'CONFIG_SYNTAX',
  },
  {
    name: 'nesting too deep',
    dialect: 'filter',
    input: `a = ${'['.repeat(MAX_NESTING + 1)}${']'.repeat(MAX_NESTING + 1)}`,
    error: new RegExp(`^t\\.conf:1:${5 + MAX_NESTING}: nesting deeper than ${MAX_NESTING} levels$`),
    code: 'CONFIG_SYNTAX',
  },
  {
    name: 'filter duplicate key',
    dialect: 'filter',
    input: 'a = 1\n a = 2',
    error: /^t\.conf:2:2: key 'a': defined more than once \(first at 1:1\)$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'netplex duplicate parameter',
    dialect: 'netplex',
    input: 'r { s { n = 1; n = 2; }; }',
    error: /^t\.conf:1:16: key 'r\.s\.n': defined more than once \(first at 1:9\)$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'netplex key both value and block',
    dialect: 'netplex',
    input: 'r { f = "x"; f { }; }',
    error: /^t\.conf:1:14: key 'r\.f': used both as a value and as a block$/,
    code: 'CONFIG_INVALID',
  },
];

describe('config syntax: value forms', () => {
  it.each(valueCases)('$name', ({ input, dialect, output }) => {
    expect(plain(input, dialect)).toEqual(output);
  });
});

describe('config syntax: errors', () => {
  it.each(errorCases)('$name', ({ input, dialect, error, code }) => {
    let caught: unknown;
    try {
      plain(input, dialect);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as ConfigError).code).toBe(code);
    expect((caught as ConfigError).message).toMatch(error as RegExp);
  });
});

describe('config syntax: positions', () => {
  it('maps JSON pointers to key and value positions', () => {
    const text = 'netplex {\n  service {\n    name = "x";\n  };\n  service {\n\tname = "y" };\n}\n';
    const { map } = toPlain(parseConfigText(text, 't.conf', 'netplex'), 't.conf', { repeatBlocks: true });
    expect(map.get('/netplex')).toEqual({ key: { line: 1, column: 1 }, value: { line: 1, column: 9 } });
    expect(map.get('/netplex/service/0')).toEqual({
      key: { line: 2, column: 3 },
      value: { line: 2, column: 11 },
    });
    expect(map.get('/netplex/service/0/name')).toEqual({
      key: { line: 3, column: 5 },
      value: { line: 3, column: 12 },
    });
    expect(map.get('/netplex/service/1/name')).toEqual({
      key: { line: 6, column: 2 },
      value: { line: 6, column: 9 },
    });
  });

  it('maps list items', () => {
    const { map } = toPlain(parseConfigText('m = [("a",\n  "b")]', 't.conf', 'filter'), 't.conf', {
      repeatBlocks: false,
    });
    expect(map.get('/m/0')).toEqual({ value: { line: 1, column: 6 } });
    expect(map.get('/m/0/1')).toEqual({ value: { line: 2, column: 3 } });
  });

  it('keeps listed single blocks as arrays', () => {
    const tree = parseConfigText('r { s { }; }', 't.conf', 'netplex');
    expect(toPlain(tree, 't.conf', { repeatBlocks: true, listPaths: new Set(['r.s']) }).data).toEqual({
      r: { s: [{}] },
    });
  });

  it('builds objects without a prototype, so __proto__ is an ordinary key', () => {
    const data = plain('__proto__ = 1', 'filter') as Record<string, unknown>;
    expect(Object.getPrototypeOf(data)).toBeNull();
    expect(Object.keys(data)).toEqual(['__proto__']);
  });
});
