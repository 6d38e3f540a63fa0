import { SourcePos } from './errors';

/** Built-in XDR type specifiers. `uint` is `unsigned int`, `uhyper` is `unsigned hyper`. */
export type PrimitiveKind = 'int' | 'uint' | 'hyper' | 'uhyper' | 'float' | 'double' | 'quadruple' | 'bool';

export type TypeSpec =
  | { readonly kind: 'primitive'; readonly prim: PrimitiveKind; readonly pos: SourcePos }
  /** A named type; `keyword` is set for rpcgen's `struct foo` / `union foo` / `enum foo` reference form. */
  | {
      readonly kind: 'ref';
      readonly name: string;
      readonly keyword: 'struct' | 'union' | 'enum' | null;
      readonly pos: SourcePos;
    };

/** A constant operand: a literal number or the name of a `const` or enum member. */
export type Value =
  | { readonly kind: 'number'; readonly value: number; readonly hex: boolean; readonly pos: SourcePos }
  | { readonly kind: 'ident'; readonly name: string; readonly pos: SourcePos };

/** `max === null` is the unbounded form `<>`. */
export type Declaration =
  | { readonly kind: 'void'; readonly pos: SourcePos }
  | { readonly kind: 'plain'; readonly name: string; readonly type: TypeSpec; readonly pos: SourcePos }
  | {
      readonly kind: 'fixedArray';
      readonly name: string;
      readonly type: TypeSpec;
      readonly size: Value;
      readonly pos: SourcePos;
    }
  | {
      readonly kind: 'varArray';
      readonly name: string;
      readonly type: TypeSpec;
      readonly max: Value | null;
      readonly pos: SourcePos;
    }
  | { readonly kind: 'fixedOpaque'; readonly name: string; readonly size: Value; readonly pos: SourcePos }
  | { readonly kind: 'varOpaque'; readonly name: string; readonly max: Value | null; readonly pos: SourcePos }
  | { readonly kind: 'string'; readonly name: string; readonly max: Value | null; readonly pos: SourcePos }
  | { readonly kind: 'optional'; readonly name: string; readonly type: TypeSpec; readonly pos: SourcePos };

export type NamedDeclaration = Exclude<Declaration, { kind: 'void' }>;

export interface EnumMember {
  readonly name: string;
  /** null: C-style implicit value, previous member + 1 (first member 0), as rpcgen accepts. */
  readonly value: Value | null;
  readonly pos: SourcePos;
}

export interface UnionArm {
  readonly labels: readonly Value[];
  readonly decl: Declaration;
  readonly pos: SourcePos;
}

export interface Procedure {
  readonly name: string;
  /** null is `void`. */
  readonly ret: TypeSpec | null;
  /** null is `void`. */
  readonly arg: TypeSpec | null;
  readonly number: Value;
  readonly pos: SourcePos;
}

export interface Version {
  readonly name: string;
  readonly number: Value;
  readonly procedures: readonly Procedure[];
  readonly pos: SourcePos;
}

export type Definition =
  | { readonly kind: 'const'; readonly name: string; readonly value: Value; readonly pos: SourcePos }
  | { readonly kind: 'typedef'; readonly decl: NamedDeclaration; readonly pos: SourcePos }
  | {
      readonly kind: 'enum';
      readonly name: string;
      readonly members: readonly EnumMember[];
      readonly pos: SourcePos;
    }
  | {
      readonly kind: 'struct';
      readonly name: string;
      readonly fields: readonly Declaration[];
      readonly pos: SourcePos;
    }
  | {
      readonly kind: 'union';
      readonly name: string;
      readonly discriminant: Declaration;
      readonly arms: readonly UnionArm[];
      readonly defaultArm: Declaration | null;
      readonly pos: SourcePos;
    }
  | {
      readonly kind: 'program';
      readonly name: string;
      readonly number: Value;
      readonly versions: readonly Version[];
      readonly pos: SourcePos;
    };

export interface Specification {
  readonly file: string;
  readonly definitions: readonly Definition[];
}
