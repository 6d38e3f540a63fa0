/**
 * One lexer and two grammars for the two configuration syntaxes Caml Crush
 * reads, producing a position-carrying tree and, from it, plain JS data plus a
 * map from JSON pointers back to source positions.
 *
 * Shared lexical rules (both follow OCaml's Genlex):
 *  - `(* ... *)` comments nest; string literals are not recognised inside
 *    comments, so `(* "*)" *)` ends at the first `*)`.
 *  - strings are `"..."`, may span lines, escapes `\\ \" \' \n \t \r \b`,
 *    `\ddd` (three decimal digits) and `\c` = `c` for any other `c`.
 *  - integers are decimal with an optional leading `-`; `0x` hex is our
 *    extension (Genlex has none), for vendor-defined PKCS#11 numbers.
 *  - floats are `digits.digits*` with an optional exponent.
 *  - identifiers are `[A-Za-z_][A-Za-z0-9_']*`.
 *  - punctuation: `{ } = ; [ ] ( ) ,`.
 *  - not supported (no Caml Crush file uses them): Genlex character literals
 *    `'c'` and operator-symbol identifiers (`+`, `/usr`): unquoted paths are
 *    an error, not a run of identifiers.
 *
 * Netplex grammar (pkcs11proxyd.conf, as OCamlnet's Netplex_config):
 *   file    := tree ';'* EOF
 *   tree    := IDENT '=' scalar | IDENT '{' [tree (';' tree)* ';'?] '}'
 *   scalar  := STRING | INT | FLOAT | true | false
 * `;` separates entries of a block; after the last one it is optional, two in
 * a row are an error. Other identifiers and lists are not values here.
 *
 * Config-file grammar (filter.conf, as the OCaml config-file library):
 *   file    := (key '=' value)* EOF          -- no separator between entries
 *   key     := IDENT | STRING
 *   value   := IDENT | STRING | INT | FLOAT | '[' items ']' | '(' items ')' | '{' file '}'
 *   items   := (value | ',' | ';')*          -- separators optional and repeatable
 * Identifiers are plain words (`CKM_RSA_PKCS`, `yes`, `C_Login`), kept as
 * strings; `[`/`(` must be closed by the matching bracket (config-file lets
 * either close either; we reject the mix as a likely typo).
 */
import { ConfigInvalidError, ConfigSyntaxError } from './errors';

/** 1-based line and column (column counts UTF-16 units; a tab is one column). */
export interface Position {
  line: number;
  column: number;
}

interface NodeBase {
  pos: Position;
}
/** A quoted string, or a bare identifier in filter syntax (`quoted: false`). */
export interface StringNode extends NodeBase {
  kind: 'string';
  value: string;
  quoted: boolean;
}
export interface IntNode extends NodeBase {
  kind: 'int';
  value: number;
}
export interface FloatNode extends NodeBase {
  kind: 'float';
  value: number;
}
/** Netplex `true`/`false` only; filter syntax keeps them as identifiers. */
export interface BoolNode extends NodeBase {
  kind: 'bool';
  value: boolean;
}
/** `[...]` is a list, `(...)` a tuple; both become JS arrays in plain data. */
export interface ListNode extends NodeBase {
  kind: 'list' | 'tuple';
  items: Node[];
}
/** `name { ... }` (netplex), `key = { ... }` (filter) or the whole file; `pos` is the `{`. */
export interface SectionNode extends NodeBase {
  kind: 'section';
  entries: Entry[];
}
export type Node = StringNode | IntNode | FloatNode | BoolNode | ListNode | SectionNode;

export interface Entry {
  key: string;
  keyPos: Position;
  value: Node;
}

export type Dialect = 'netplex' | 'filter';

/** Blocks and lists nest at most this deep; deeper input is rejected, not recursed into. */
export const MAX_NESTING = 64;

type Punct = '{' | '}' | '=' | ';' | '[' | ']' | '(' | ')' | ',';
type Token =
  | { t: 'punct'; v: Punct; pos: Position }
  | { t: 'ident'; v: string; pos: Position }
  | { t: 'string'; v: string; pos: Position }
  | { t: 'int'; v: number; pos: Position; text: string }
  | { t: 'float'; v: number; pos: Position; text: string }
  | { t: 'eof'; pos: Position };

const PUNCT = new Set<string>(['{', '}', '=', ';', '[', ']', '(', ')', ',']);
const isDigit = (c: string): boolean => c >= '0' && c <= '9';
const isIdentStart = (c: string): boolean => (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c === '_';
const isIdentChar = (c: string): boolean => isIdentStart(c) || isDigit(c) || c === "'";
const isHexDigit = (c: string): boolean => /^[0-9a-fA-F]$/.test(c);

function describe(tok: Token): string {
  switch (tok.t) {
    case 'punct':
      return `'${tok.v}'`;
    case 'ident':
      return `identifier '${tok.v}'`;
    case 'string':
      return 'a string';
    case 'int':
    case 'float':
      return `number ${tok.text}`;
    case 'eof':
      return 'end of file';
  }
}

class Lexer {
  private i = 0;
  private line = 1;
  private col = 1;

  constructor(
    private readonly text: string,
    private readonly file: string,
  ) {}

  private fail(pos: Position, msg: string): never {
    throw new ConfigSyntaxError(this.file, pos.line, pos.column, msg);
  }

  private here(): Position {
    return { line: this.line, column: this.col };
  }

  private peek(k = 0): string {
    return this.text.charAt(this.i + k);
  }

  private advance(): string {
    const c = this.text.charAt(this.i++);
    if (c === '\n') {
      this.line++;
      this.col = 1;
    } else {
      this.col++;
    }
    return c;
  }

  tokenize(): Token[] {
    const out: Token[] = [];
    for (;;) {
      this.skipBlanks();
      const pos = this.here();
      if (this.i >= this.text.length) {
        out.push({ t: 'eof', pos });
        return out;
      }
      const c = this.peek();
      if (c === '"') out.push({ t: 'string', v: this.readString(pos), pos });
      else if (isDigit(c) || (c === '-' && isDigit(this.peek(1)))) out.push(this.readNumber(pos));
      else if (isIdentStart(c)) {
        let s = '';
        while (this.i < this.text.length && isIdentChar(this.peek())) s += this.advance();
        out.push({ t: 'ident', v: s, pos });
      } else if (PUNCT.has(c)) {
        this.advance();
        out.push({ t: 'punct', v: c as Punct, pos });
      } else {
        this.fail(pos, `unexpected character ${JSON.stringify(c)}`);
      }
    }
  }

  private skipBlanks(): void {
    while (this.i < this.text.length) {
      const c = this.peek();
      if (c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\f' || c === '\v') {
        this.advance();
      } else if (c === '(' && this.peek(1) === '*') {
        this.skipComment();
      } else {
        return;
      }
    }
  }

  private skipComment(): void {
    const start = this.here();
    this.advance();
    this.advance();
    let depth = 1;
    while (depth > 0) {
      if (this.i >= this.text.length) this.fail(start, 'unterminated comment');
      if (this.peek() === '(' && this.peek(1) === '*') {
        this.advance();
        this.advance();
        depth++;
      } else if (this.peek() === '*' && this.peek(1) === ')') {
        this.advance();
        this.advance();
        depth--;
      } else {
        this.advance();
      }
    }
  }

  private readString(start: Position): string {
    this.advance();
    let s = '';
    for (;;) {
      if (this.i >= this.text.length) this.fail(start, 'unterminated string');
      const c = this.advance();
      if (c === '"') return s;
      if (c !== '\\') {
        s += c;
        continue;
      }
      const escPos = this.here();
      if (this.i >= this.text.length) this.fail(start, 'unterminated string');
      const e = this.advance();
      if (isDigit(e)) {
        const d = e + this.advance() + this.advance();
        if (!/^[0-9]{3}$/.test(d) || Number(d) > 255) {
          this.fail(
            { line: escPos.line, column: escPos.column - 1 },
            `bad escape '\\${d}' (want \\000 to \\255)`,
          );
        }
        s += String.fromCharCode(Number(d));
      } else {
        s += e === 'n' ? '\n' : e === 't' ? '\t' : e === 'r' ? '\r' : e === 'b' ? '\b' : e;
      }
    }
  }

  private readNumber(pos: Position): Token {
    let text = '';
    if (this.peek() === '-') text += this.advance();
    const bad = (what: string): never => {
      while (this.i < this.text.length && (isIdentChar(this.peek()) || this.peek() === '.')) {
        text += this.advance();
      }
      return this.fail(pos, `bad ${what} '${text}'`);
    };
    if (this.peek() === '0' && (this.peek(1) === 'x' || this.peek(1) === 'X')) {
      text += this.advance() + this.advance();
      let digits = '';
      while (isHexDigit(this.peek())) digits += this.advance();
      text += digits;
      if (digits === '' || isIdentChar(this.peek()) || this.peek() === '.') bad('hex integer');
      const v = parseInt(digits, 16) * (text.startsWith('-') ? -1 : 1);
      if (!Number.isSafeInteger(v)) this.fail(pos, `integer out of range '${text}'`);
      return { t: 'int', v, pos, text };
    }
    while (isDigit(this.peek())) text += this.advance();
    let isFloat = false;
    if (this.peek() === '.') {
      isFloat = true;
      text += this.advance();
      while (isDigit(this.peek())) text += this.advance();
    }
    if (this.peek() === 'e' || this.peek() === 'E') {
      const sign = this.peek(1) === '+' || this.peek(1) === '-' ? 1 : 0;
      if (isDigit(this.peek(1 + sign))) {
        isFloat = true;
        text += this.advance();
        if (sign) text += this.advance();
        while (isDigit(this.peek())) text += this.advance();
      }
    }
    if (isIdentChar(this.peek()) || this.peek() === '.') bad('number');
    if (isFloat) return { t: 'float', v: Number(text), pos, text };
    const v = Number(text);
    if (!Number.isSafeInteger(v)) this.fail(pos, `integer out of range '${text}'`);
    return { t: 'int', v, pos, text };
  }
}

class Parser {
  private k = 0;

  constructor(
    private readonly toks: Token[],
    private readonly file: string,
  ) {}

  private get cur(): Token {
    return this.toks[this.k];
  }

  private next(): Token {
    const t = this.toks[this.k];
    if (t.t !== 'eof') this.k++;
    return t;
  }

  private isPunct(v: Punct): boolean {
    const t = this.cur;
    return t.t === 'punct' && t.v === v;
  }

  private fail(tok: Token, msg: string): never {
    throw new ConfigSyntaxError(this.file, tok.pos.line, tok.pos.column, msg);
  }

  private expect(v: Punct, context: string): Token {
    if (!this.isPunct(v)) this.fail(this.cur, `expected '${v}' ${context} but found ${describe(this.cur)}`);
    return this.next();
  }

  private checkDepth(depth: number, tok: Token): void {
    if (depth > MAX_NESTING) this.fail(tok, `nesting deeper than ${MAX_NESTING} levels`);
  }

  // ---- netplex ----

  netplexFile(): SectionNode {
    const root: SectionNode = { kind: 'section', entries: [], pos: this.cur.pos };
    root.entries.push(this.netplexTree(1));
    while (this.isPunct(';')) this.next();
    if (this.cur.t !== 'eof') this.fail(this.cur, `expected end of file but found ${describe(this.cur)}`);
    return root;
  }

  private netplexTree(depth: number): Entry {
    const name = this.cur;
    if (name.t !== 'ident') this.fail(name, `expected a key but found ${describe(name)}`);
    this.next();
    if (this.isPunct('=')) {
      this.next();
      return { key: name.v, keyPos: name.pos, value: this.netplexScalar() };
    }
    const open = this.expect('{', `or '=' after '${name.v}'`);
    this.checkDepth(depth, open);
    const sec: SectionNode = { kind: 'section', entries: [], pos: open.pos };
    if (!this.isPunct('}')) {
      for (;;) {
        sec.entries.push(this.netplexTree(depth + 1));
        if (this.isPunct('}')) break;
        const last = sec.entries[sec.entries.length - 1].key;
        if (!this.isPunct(';'))
          this.fail(this.cur, `expected ';' or '}' after '${last}' but found ${describe(this.cur)}`);
        this.next();
        if (this.isPunct('}')) break;
        if (this.cur.t !== 'ident') {
          this.fail(this.cur, `expected a key or '}' to close '${name.v}' but found ${describe(this.cur)}`);
        }
      }
    }
    this.expect('}', `to close '${name.v}'`);
    return { key: name.v, keyPos: name.pos, value: sec };
  }

  private netplexScalar(): Node {
    const t = this.next();
    switch (t.t) {
      case 'string':
        return { kind: 'string', value: t.v, quoted: true, pos: t.pos };
      case 'int':
        return { kind: 'int', value: t.v, pos: t.pos };
      case 'float':
        return { kind: 'float', value: t.v, pos: t.pos };
      case 'ident':
        if (t.v === 'true' || t.v === 'false') return { kind: 'bool', value: t.v === 'true', pos: t.pos };
        break;
      default:
        break;
    }
    return this.fail(t, `expected a value (string, integer, float, true or false) but found ${describe(t)}`);
  }

  // ---- config-file (filter) ----

  filterFile(): SectionNode {
    const root: SectionNode = { kind: 'section', entries: [], pos: this.cur.pos };
    this.filterEntries(root, 1);
    if (this.cur.t !== 'eof')
      this.fail(this.cur, `expected a key or end of file but found ${describe(this.cur)}`);
    return root;
  }

  private filterEntries(sec: SectionNode, depth: number): void {
    for (;;) {
      const key = this.cur;
      if (key.t !== 'ident' && key.t !== 'string') return;
      this.next();
      this.expect('=', `after key '${key.v}'`);
      sec.entries.push({ key: key.v, keyPos: key.pos, value: this.filterValue(depth) });
    }
  }

  private filterValue(depth: number): Node {
    const t = this.next();
    switch (t.t) {
      case 'ident':
        return { kind: 'string', value: t.v, quoted: false, pos: t.pos };
      case 'string':
        return { kind: 'string', value: t.v, quoted: true, pos: t.pos };
      case 'int':
        return { kind: 'int', value: t.v, pos: t.pos };
      case 'float':
        return { kind: 'float', value: t.v, pos: t.pos };
      case 'punct':
        if (t.v === '{') {
          this.checkDepth(depth, t);
          const sec: SectionNode = { kind: 'section', entries: [], pos: t.pos };
          this.filterEntries(sec, depth + 1);
          this.expect('}', 'to close the block');
          return sec;
        }
        if (t.v === '[' || t.v === '(') {
          this.checkDepth(depth, t);
          const close = t.v === '[' ? ']' : ')';
          const list: ListNode = { kind: t.v === '[' ? 'list' : 'tuple', items: [], pos: t.pos };
          for (;;) {
            if (this.isPunct(',') || this.isPunct(';')) {
              this.next();
            } else if (this.isPunct(close)) {
              this.next();
              return list;
            } else if (this.isPunct(']') || this.isPunct(')') || this.isPunct('}') || this.cur.t === 'eof') {
              this.fail(
                this.cur,
                `expected '${close}' to close '${t.v}' at ${t.pos.line}:${t.pos.column} but found ${describe(this.cur)}`,
              );
            } else {
              list.items.push(this.filterValue(depth + 1));
            }
          }
        }
        break;
      default:
        break;
    }
    return this.fail(t, `expected a value but found ${describe(t)}`);
  }
}

/** Parse text in either dialect. The result is a pseudo-section holding the file's top-level entries. */
export function parseConfigText(text: string, file: string, dialect: Dialect): SectionNode {
  const toks = new Lexer(text, file).tokenize();
  const p = new Parser(toks, file);
  return dialect === 'netplex' ? p.netplexFile() : p.filterFile();
}

// ---------------------------------------------------------------------------
// Plain data and source map

/** JSON-like value as seen by the schema validator. Objects have a null prototype. */
export type Plain = string | number | boolean | Plain[] | { [key: string]: Plain };

/** Where an entry's key and value start. `key` is absent for list items and the root. */
export interface SourceSpot {
  key?: Position;
  value: Position;
}

/** JSON pointer (RFC 6901, as in ajv's `instancePath`) to source positions. */
export type SourceMap = Map<string, SourceSpot>;

export function pointerEscape(segment: string): string {
  return segment.replace(/~/g, '~0').replace(/\//g, '~1');
}

export function pointerSegments(pointer: string): string[] {
  if (pointer === '') return [];
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

export interface PlainOptions {
  /**
   * Dotted key paths (no indices) of blocks that are always arrays, even when
   * they appear once (`netplex.service`). Other blocks become arrays only when
   * repeated, and only if `repeatBlocks` is set.
   */
  listPaths?: ReadonlySet<string>;
  /** Repeated `name { }` blocks form an array (netplex). Otherwise every repeated key is an error. */
  repeatBlocks: boolean;
}

/**
 * Convert a parsed tree to plain data. Repeated scalar keys are always an
 * error (netplex rejects them; Caml Crush's filter silently used the first).
 */
export function toPlain(
  root: SectionNode,
  file: string,
  opts: PlainOptions,
): { data: Plain; map: SourceMap } {
  const map: SourceMap = new Map();
  map.set('', { value: { line: 1, column: 1 } });

  const dup = (entry: Entry, first: Entry, path: string): never => {
    throw new ConfigInvalidError(
      file,
      entry.keyPos.line,
      entry.keyPos.column,
      path,
      `defined more than once (first at ${first.keyPos.line}:${first.keyPos.column})`,
    );
  };

  const convert = (node: Node, pointer: string, dotted: string, display: string): Plain => {
    switch (node.kind) {
      case 'string':
      case 'int':
      case 'float':
      case 'bool':
        return node.value;
      case 'list':
      case 'tuple':
        return node.items.map((item, i) => {
          const p = `${pointer}/${i}`;
          map.set(p, { value: item.pos });
          return convert(item, p, dotted, `${display}[${i}]`);
        });
      case 'section':
        return convertSection(node, pointer, dotted, display);
    }
  };

  const convertSection = (sec: SectionNode, pointer: string, dotted: string, display: string): Plain => {
    const obj = Object.create(null) as { [key: string]: Plain };
    const groups = new Map<string, Entry[]>();
    for (const e of sec.entries) {
      const g = groups.get(e.key);
      if (g) g.push(e);
      else groups.set(e.key, [e]);
    }
    for (const [key, entries] of groups) {
      const childDotted = dotted ? `${dotted}.${key}` : key;
      const childDisplay = display ? `${display}.${key}` : key;
      const childPointer = `${pointer}/${pointerEscape(key)}`;
      const isBlock = entries[0].value.kind === 'section';
      const other = entries.find((e) => (e.value.kind === 'section') !== isBlock);
      if (other) {
        throw new ConfigInvalidError(
          file,
          other.keyPos.line,
          other.keyPos.column,
          childDisplay,
          'used both as a value and as a block',
        );
      }
      const asList = isBlock && opts.repeatBlocks && (entries.length > 1 || opts.listPaths?.has(childDotted));
      if (!asList) {
        if (entries.length > 1) dup(entries[1], entries[0], childDisplay);
        map.set(childPointer, { key: entries[0].keyPos, value: entries[0].value.pos });
        obj[key] = convert(entries[0].value, childPointer, childDotted, childDisplay);
        continue;
      }
      map.set(childPointer, { key: entries[0].keyPos, value: entries[0].value.pos });
      obj[key] = entries.map((e, i) => {
        const p = `${childPointer}/${i}`;
        map.set(p, { key: e.keyPos, value: e.value.pos });
        return convert(e.value, p, childDotted, `${childDisplay}[${i}]`);
      });
    }
    return obj;
  };

  return { data: convertSection(root, '', '', ''), map };
}
