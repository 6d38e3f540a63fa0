import {
  Declaration,
  Definition,
  EnumMember,
  NamedDeclaration,
  PrimitiveKind,
  Procedure,
  Specification,
  TypeSpec,
  UnionArm,
  Value,
  Version,
} from './ast';
import { SourcePos, XdrgenSyntaxError } from './errors';
import { Token, tokenize } from './lexer';

/** Reserved words of RFC 4506 section 6.4 plus the RFC 5531 program language. */
export const KEYWORDS: ReadonlySet<string> = new Set([
  'bool',
  'case',
  'const',
  'default',
  'double',
  'quadruple',
  'enum',
  'float',
  'hyper',
  'int',
  'opaque',
  'string',
  'struct',
  'switch',
  'typedef',
  'union',
  'unsigned',
  'void',
  'program',
  'version',
]);

/** Parses the text of a `.x` file. Throws `XdrgenSyntaxError` with file:line:column on the first error. */
export function parse(text: string, file: string): Specification {
  return new Parser(tokenize(text, file), file).specification();
}

function describe(t: Token): string {
  switch (t.kind) {
    case 'eof':
      return 'end of file';
    case 'ident':
      return KEYWORDS.has(t.text) ? `keyword '${t.text}'` : `identifier '${t.text}'`;
    default:
      return `'${t.text}'`;
  }
}

class Parser {
  private i = 0;

  constructor(
    private readonly tokens: Token[],
    private readonly file: string,
  ) {}

  specification(): Specification {
    const definitions: Definition[] = [];
    while (this.peek().kind !== 'eof') definitions.push(this.definition());
    return { file: this.file, definitions };
  }

  private peek(offset = 0): Token {
    return this.tokens[Math.min(this.i + offset, this.tokens.length - 1)];
  }

  private next(): Token {
    const t = this.peek();
    if (t.kind !== 'eof') this.i++;
    return t;
  }

  private fail(pos: SourcePos, detail: string): never {
    throw new XdrgenSyntaxError(this.file, pos, detail);
  }

  private isPunct(text: string, offset = 0): boolean {
    const t = this.peek(offset);
    return t.kind === 'punct' && t.text === text;
  }

  private isKeyword(word: string, offset = 0): boolean {
    const t = this.peek(offset);
    return t.kind === 'ident' && t.text === word;
  }

  private expectPunct(text: string, what?: string): Token {
    const t = this.peek();
    if (t.kind !== 'punct' || t.text !== text) {
      this.fail(t.pos, `expected '${text}'${what ? ' ' + what : ''}, found ${describe(t)}`);
    }
    return this.next();
  }

  private expectKeyword(word: string): Token {
    const t = this.peek();
    if (t.kind !== 'ident' || t.text !== word) this.fail(t.pos, `expected '${word}', found ${describe(t)}`);
    return this.next();
  }

  /** A user identifier: not a reserved word. */
  private identifier(what: string): Token {
    const t = this.peek();
    if (t.kind !== 'ident' || KEYWORDS.has(t.text)) this.fail(t.pos, `expected ${what}, found ${describe(t)}`);
    return this.next();
  }

  private definition(): Definition {
    const t = this.peek();
    if (t.kind === 'ident') {
      switch (t.text) {
        case 'const':
          return this.constDef();
        case 'typedef':
          return this.typedefDef();
        case 'enum':
          return this.enumDef();
        case 'struct':
          return this.structDef();
        case 'union':
          return this.unionDef();
        case 'program':
          return this.programDef();
      }
    }
    return this.fail(t.pos, `expected a definition (const, typedef, enum, struct, union or program), found ${describe(t)}`);
  }

  private constDef(): Definition {
    const pos = this.expectKeyword('const').pos;
    const name = this.identifier('a constant name').text;
    this.expectPunct('=');
    const value = this.value();
    this.expectPunct(';', `after constant ${name}`);
    return { kind: 'const', name, value, pos };
  }

  private typedefDef(): Definition {
    const pos = this.expectKeyword('typedef').pos;
    const decl = this.declaration();
    if (decl.kind === 'void') this.fail(decl.pos, "'typedef void' is not allowed");
    this.expectPunct(';', `after typedef ${decl.name}`);
    return { kind: 'typedef', decl, pos };
  }

  private enumDef(): Definition {
    const pos = this.expectKeyword('enum').pos;
    const name = this.identifier('an enum name').text;
    const members = this.enumBody();
    this.expectPunct(';', `after enum ${name}`);
    return { kind: 'enum', name, members, pos };
  }

  private enumBody(): EnumMember[] {
    this.expectPunct('{', 'to open the enum body');
    const members: EnumMember[] = [];
    for (;;) {
      const t = this.identifier('an enum member name');
      let value: Value | null = null;
      if (this.isPunct('=')) {
        this.next();
        value = this.value();
      }
      members.push({ name: t.text, value, pos: t.pos });
      if (this.isPunct(',')) {
        this.next();
        continue;
      }
      this.expectPunct('}', 'or \',\' in enum body');
      return members;
    }
  }

  private structDef(): Definition {
    const pos = this.expectKeyword('struct').pos;
    const name = this.identifier('a struct name').text;
    const fields = this.structBody();
    this.expectPunct(';', `after struct ${name}`);
    return { kind: 'struct', name, fields, pos };
  }

  private structBody(): Declaration[] {
    this.expectPunct('{', 'to open the struct body');
    const fields: Declaration[] = [];
    do {
      fields.push(this.declaration());
      this.expectPunct(';', 'after struct member');
    } while (!this.isPunct('}'));
    this.next();
    return fields;
  }

  private unionDef(): Definition {
    const pos = this.expectKeyword('union').pos;
    const name = this.identifier('a union name').text;
    this.expectKeyword('switch');
    this.expectPunct('(');
    const discriminant = this.declaration();
    this.expectPunct(')', 'after the union discriminant');
    this.expectPunct('{', 'to open the union body');
    const arms: UnionArm[] = [];
    let defaultArm: Declaration | null = null;
    while (this.isKeyword('case')) {
      const armPos = this.peek().pos;
      const labels: Value[] = [];
      while (this.isKeyword('case')) {
        this.next();
        labels.push(this.value());
        this.expectPunct(':', 'after case value');
      }
      const decl = this.declaration();
      this.expectPunct(';', 'after union arm');
      arms.push({ labels, decl, pos: armPos });
    }
    if (arms.length === 0) this.fail(this.peek().pos, `expected 'case' in union ${name}, found ${describe(this.peek())}`);
    if (this.isKeyword('default')) {
      this.next();
      this.expectPunct(':', "after 'default'");
      defaultArm = this.declaration();
      this.expectPunct(';', 'after default arm');
    }
    this.expectPunct('}', `to close union ${name}`);
    this.expectPunct(';', `after union ${name}`);
    return { kind: 'union', name, discriminant, arms, defaultArm, pos };
  }

  private programDef(): Definition {
    const pos = this.expectKeyword('program').pos;
    const name = this.identifier('a program name').text;
    this.expectPunct('{', 'to open the program body');
    const versions: Version[] = [];
    do {
      versions.push(this.versionDef());
    } while (!this.isPunct('}'));
    this.next();
    this.expectPunct('=', `before the number of program ${name}`);
    const number = this.value();
    this.expectPunct(';', `after program ${name}`);
    return { kind: 'program', name, number, versions, pos };
  }

  private versionDef(): Version {
    const pos = this.expectKeyword('version').pos;
    const name = this.identifier('a version name').text;
    this.expectPunct('{', 'to open the version body');
    const procedures: Procedure[] = [];
    do {
      procedures.push(this.procedureDef());
    } while (!this.isPunct('}'));
    this.next();
    this.expectPunct('=', `before the number of version ${name}`);
    const number = this.value();
    this.expectPunct(';', `after version ${name}`);
    return { name, number, procedures, pos };
  }

  private procedureDef(): Procedure {
    const pos = this.peek().pos;
    const ret = this.isKeyword('void') ? (this.next(), null) : this.typeSpecifier();
    const name = this.identifier('a procedure name').text;
    this.expectPunct('(');
    const arg = this.isKeyword('void') ? (this.next(), null) : this.typeSpecifier();
    if (this.isPunct(',')) {
      this.fail(this.peek().pos, `procedure ${name} has more than one argument; declare one struct argument instead`);
    }
    this.expectPunct(')', `after the argument of procedure ${name}`);
    this.expectPunct('=', `before the number of procedure ${name}`);
    const number = this.value();
    this.expectPunct(';', `after procedure ${name}`);
    return { name, ret, arg, number, pos };
  }

  private typeSpecifier(): TypeSpec {
    const t = this.peek();
    const prim = (p: PrimitiveKind): TypeSpec => ({ kind: 'primitive', prim: p, pos: t.pos });
    if (t.kind !== 'ident') return this.fail(t.pos, `expected a type, found ${describe(t)}`);
    switch (t.text) {
      case 'unsigned':
        this.next();
        if (this.isKeyword('int')) {
          this.next();
          return prim('uint');
        }
        if (this.isKeyword('hyper')) {
          this.next();
          return prim('uhyper');
        }
        return prim('uint');
      case 'int':
      case 'hyper':
      case 'float':
      case 'double':
      case 'quadruple':
      case 'bool':
        this.next();
        return prim(t.text);
      case 'struct':
      case 'union':
      case 'enum': {
        this.next();
        const name = this.identifier(`a ${t.text} name after '${t.text}'`);
        if (this.isPunct('{')) {
          this.fail(this.peek().pos, `inline ${t.text} definitions are not supported; define ${t.text} ${name.text} at top level`);
        }
        return { kind: 'ref', name: name.text, keyword: t.text, pos: t.pos };
      }
      case 'opaque':
      case 'string':
      case 'void':
        return this.fail(t.pos, `'${t.text}' cannot be used here`);
      default:
        if (KEYWORDS.has(t.text)) return this.fail(t.pos, `expected a type, found ${describe(t)}`);
        this.next();
        return { kind: 'ref', name: t.text, keyword: null, pos: t.pos };
    }
  }

  /** RFC 4506 `declaration`, including `void`. */
  private declaration(): Declaration {
    const t = this.peek();
    if (t.kind === 'ident' && t.text === 'void') {
      this.next();
      return { kind: 'void', pos: t.pos };
    }
    if (t.kind === 'ident' && (t.text === 'opaque' || t.text === 'string')) {
      this.next();
      const name = this.identifier(`a name after '${t.text}'`).text;
      if (t.text === 'opaque' && this.isPunct('[')) {
        return { kind: 'fixedOpaque', name, size: this.fixedSize(), pos: t.pos };
      }
      if (this.isPunct('<')) {
        const max = this.maxSize();
        return t.text === 'opaque' ? { kind: 'varOpaque', name, max, pos: t.pos } : { kind: 'string', name, max, pos: t.pos };
      }
      return this.fail(
        this.peek().pos,
        t.text === 'opaque'
          ? `opaque ${name} needs a size: '[N]', '<N>' or '<>'`
          : `string ${name} needs a maximum size: '<N>' or '<>'`,
      );
    }
    const type = this.typeSpecifier();
    if (this.isPunct('*')) {
      this.next();
      const name = this.identifier('a name after \'*\'').text;
      return { kind: 'optional', name, type, pos: t.pos };
    }
    const name = this.identifier('a name in declaration').text;
    if (this.isPunct('[')) return { kind: 'fixedArray', name, type, size: this.fixedSize(), pos: t.pos };
    if (this.isPunct('<')) return { kind: 'varArray', name, type, max: this.maxSize(), pos: t.pos };
    return { kind: 'plain', name, type, pos: t.pos } satisfies NamedDeclaration;
  }

  private fixedSize(): Value {
    this.expectPunct('[');
    const v = this.value();
    this.expectPunct(']', 'after array size');
    return v;
  }

  private maxSize(): Value | null {
    this.expectPunct('<');
    if (this.isPunct('>')) {
      this.next();
      return null;
    }
    const v = this.value();
    this.expectPunct('>', 'after maximum size');
    return v;
  }

  private value(): Value {
    const t = this.peek();
    if (t.kind === 'punct' && t.text === '-') {
      this.next();
      const num = this.peek();
      if (num.kind !== 'number') return this.fail(num.pos, `expected a number after '-', found ${describe(num)}`);
      this.next();
      return { kind: 'number', value: -num.value, hex: num.hex, pos: t.pos };
    }
    if (t.kind === 'number') {
      this.next();
      return { kind: 'number', value: t.value, hex: t.hex, pos: t.pos };
    }
    if (t.kind === 'ident' && !KEYWORDS.has(t.text)) {
      this.next();
      return { kind: 'ident', name: t.text, pos: t.pos };
    }
    return this.fail(t.pos, `expected a number or constant name, found ${describe(t)}`);
  }
}
