import { PrimitiveKind } from './ast';
import { SourcePos } from './errors';

/** Bound used for `<>`: the largest XDR length (2^32 - 1). */
export const UNBOUNDED = 0xffffffff;

export type TypeDefKind = 'typedef' | 'enum' | 'struct' | 'union';

/** A type specifier after name resolution; `target` says what kind of definition a reference names. */
export type RType =
  | { readonly kind: 'primitive'; readonly prim: Exclude<PrimitiveKind, 'quadruple'> }
  | { readonly kind: 'ref'; readonly name: string; readonly target: TypeDefKind };

/** A declaration with every size evaluated. Unbounded `<>` has `max === UNBOUNDED`. */
export type RNamedDecl =
  | { readonly kind: 'plain'; readonly name: string; readonly type: RType; readonly pos: SourcePos }
  | { readonly kind: 'fixedArray'; readonly name: string; readonly type: RType; readonly size: number; readonly pos: SourcePos }
  | { readonly kind: 'varArray'; readonly name: string; readonly type: RType; readonly max: number; readonly pos: SourcePos }
  | { readonly kind: 'fixedOpaque'; readonly name: string; readonly size: number; readonly pos: SourcePos }
  | { readonly kind: 'varOpaque'; readonly name: string; readonly max: number; readonly pos: SourcePos }
  | { readonly kind: 'string'; readonly name: string; readonly max: number; readonly pos: SourcePos }
  | { readonly kind: 'optional'; readonly name: string; readonly type: RType; readonly pos: SourcePos };

export type RDecl = { readonly kind: 'void'; readonly pos: SourcePos } | RNamedDecl;

export interface REnumMember {
  readonly name: string;
  readonly value: number;
  readonly pos: SourcePos;
}

export interface RUnionArm {
  readonly labels: readonly number[];
  readonly decl: RDecl;
}

export type RTypeDef =
  | { readonly kind: 'typedef'; readonly name: string; readonly decl: RNamedDecl; readonly pos: SourcePos }
  | { readonly kind: 'enum'; readonly name: string; readonly members: readonly REnumMember[]; readonly pos: SourcePos }
  | {
      readonly kind: 'struct';
      readonly name: string;
      readonly fields: readonly RNamedDecl[];
      /** Part of a reference cycle: its codec counts nesting depth. */
      readonly recursive: boolean;
      readonly pos: SourcePos;
    }
  | {
      readonly kind: 'union';
      readonly name: string;
      readonly discriminant: { readonly name: string; readonly type: RType };
      /** What the discriminant resolves to through typedefs. */
      readonly discKind: 'int' | 'uint' | 'bool' | 'enum';
      /** Name of the enum when `discKind === 'enum'`. */
      readonly discEnum: string | null;
      readonly arms: readonly RUnionArm[];
      readonly defaultArm: RDecl | null;
      readonly recursive: boolean;
      readonly pos: SourcePos;
    };

export interface RProcedure {
  readonly name: string;
  readonly number: number;
  readonly arg: RType | null;
  readonly ret: RType | null;
  readonly pos: SourcePos;
}

export interface RVersion {
  readonly name: string;
  readonly number: number;
  readonly procedures: readonly RProcedure[];
  readonly pos: SourcePos;
}

export interface RProgram {
  readonly kind: 'program';
  readonly name: string;
  readonly number: number;
  readonly versions: readonly RVersion[];
  readonly pos: SourcePos;
}

export interface RConst {
  readonly kind: 'const';
  readonly name: string;
  readonly value: number;
  /** Written in hexadecimal in the source. */
  readonly hex: boolean;
  readonly pos: SourcePos;
}

export type RDefinition = RConst | RTypeDef | RProgram;

/** A checked specification: every name resolves, every size is a number, no infinite types. */
export interface Model {
  readonly file: string;
  /** In source order. */
  readonly definitions: readonly RDefinition[];
  readonly types: ReadonlyMap<string, RTypeDef>;
}
