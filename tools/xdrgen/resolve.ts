import { Declaration, Definition, EnumMember, Specification, TypeSpec, Value } from './ast';
import { SourcePos, XdrgenSemanticError } from './errors';
import {
  Model,
  RConst,
  RDecl,
  RDefinition,
  REnumMember,
  RNamedDecl,
  RProgram,
  RType,
  RTypeDef,
  TypeDefKind,
  UNBOUNDED,
} from './model';

const INT32_MIN = -0x80000000;
const INT32_MAX = 0x7fffffff;

/** RFC 4506 section 4.4 defines bool as `enum { FALSE = 0, TRUE = 1 }`, so these names are usable as values. */
const BUILTIN_CONSTANTS: ReadonlyMap<string, number> = new Map([
  ['FALSE', 0],
  ['TRUE', 1],
]);

type ConstSymbol =
  | { kind: 'const'; value: Value; pos: SourcePos; state: 'new' | 'busy' | 'done'; result: number }
  | {
      kind: 'member';
      members: readonly EnumMember[];
      index: number;
      pos: SourcePos;
      state: 'new' | 'busy' | 'done';
      result: number;
    };

/**
 * Checks a parsed specification and evaluates its constants.
 *
 * Names share one namespace (constants, enum members, types, programs, versions), as they do in the C
 * that rpcgen emits. Forward references are allowed. Rejected: unknown or duplicate names, sizes outside
 * 0..2^32-1, `void` outside union arms, `quadruple`, union discriminants that are not int, unsigned int,
 * bool or an enum, duplicate case labels, types that contain themselves without `*` or `<>`, and
 * duplicate version or procedure numbers.
 */
export function resolve(spec: Specification): Model {
  return new Resolver(spec).run();
}

class Resolver {
  private readonly names = new Map<string, SourcePos>();
  private readonly consts = new Map<string, ConstSymbol>();
  private readonly typeDefs = new Map<string, Definition & { kind: TypeDefKind }>();

  constructor(private readonly spec: Specification) {}

  private fail(pos: SourcePos, detail: string): never {
    throw new XdrgenSemanticError(this.spec.file, pos, detail);
  }

  private declare(name: string, pos: SourcePos): void {
    const prev = this.names.get(name);
    if (prev) this.fail(pos, `'${name}' is already defined at ${prev.line}:${prev.column}`);
    if (BUILTIN_CONSTANTS.has(name)) this.fail(pos, `'${name}' is a predefined XDR constant`);
    this.names.set(name, pos);
  }

  run(): Model {
    for (const def of this.spec.definitions) {
      switch (def.kind) {
        case 'const':
          this.declare(def.name, def.pos);
          this.consts.set(def.name, { kind: 'const', value: def.value, pos: def.pos, state: 'new', result: 0 });
          break;
        case 'typedef':
          this.declare(def.decl.name, def.decl.pos);
          this.typeDefs.set(def.decl.name, def);
          break;
        case 'enum':
          this.declare(def.name, def.pos);
          this.typeDefs.set(def.name, def);
          def.members.forEach((m, index) => {
            this.declare(m.name, m.pos);
            this.consts.set(m.name, { kind: 'member', members: def.members, index, pos: m.pos, state: 'new', result: 0 });
          });
          break;
        case 'struct':
        case 'union':
          this.declare(def.name, def.pos);
          this.typeDefs.set(def.name, def);
          break;
        case 'program':
          this.declare(def.name, def.pos);
          for (const v of def.versions) this.declare(v.name, v.pos);
          break;
      }
    }

    const definitions: RDefinition[] = [];
    const types = new Map<string, RTypeDef>();
    for (const def of this.spec.definitions) {
      const r = this.resolveDefinition(def);
      definitions.push(r);
      if (r.kind !== 'const' && r.kind !== 'program') types.set(r.name, r);
    }
    const recursive = this.checkCycles(types);
    const marked = definitions.map((d): RDefinition => {
      if ((d.kind === 'struct' || d.kind === 'union') && recursive.has(d.name)) {
        const m = { ...d, recursive: true };
        types.set(d.name, m);
        return m;
      }
      return d;
    });
    return { file: this.spec.file, definitions: marked, types };
  }

  private resolveDefinition(def: Definition): RDefinition {
    switch (def.kind) {
      case 'const': {
        const value = this.evalConst(def.name);
        return {
          kind: 'const',
          name: def.name,
          value,
          hex: def.value.kind === 'number' && def.value.hex,
          pos: def.pos,
        } satisfies RConst;
      }
      case 'typedef':
        return { kind: 'typedef', name: def.decl.name, decl: this.namedDecl(def.decl, 'typedef'), pos: def.pos };
      case 'enum': {
        const members: REnumMember[] = def.members.map((m) => ({
          name: m.name,
          value: this.evalConst(m.name),
          pos: m.pos,
        }));
        return { kind: 'enum', name: def.name, members, pos: def.pos };
      }
      case 'struct': {
        const seen = new Map<string, SourcePos>();
        const fields = def.fields.map((f) => {
          if (f.kind === 'void') return this.fail(f.pos, `'void' is not allowed as a member of struct ${def.name}`);
          this.uniqueMember(seen, f.name, f.pos, `struct ${def.name}`);
          return this.namedDecl(f, `struct ${def.name}`);
        });
        return { kind: 'struct', name: def.name, fields, recursive: false, pos: def.pos };
      }
      case 'union':
        return this.resolveUnion(def);
      case 'program':
        return this.resolveProgram(def);
    }
  }

  private resolveUnion(def: Definition & { kind: 'union' }): RTypeDef {
    const d = def.discriminant;
    if (d.kind !== 'plain') {
      return this.fail(d.pos, `the discriminant of union ${def.name} must be a plain int, unsigned int, bool or enum`);
    }
    const type = this.typeSpec(d.type);
    const base = this.baseOf(type, d.pos);
    let discKind: 'int' | 'uint' | 'bool' | 'enum';
    let discEnum: string | null = null;
    let allowed: ((v: number) => boolean) | null = null;
    if (base.kind === 'enum') {
      discKind = 'enum';
      discEnum = base.name;
      const values = new Set((this.typeDefs.get(base.name) as Definition & { kind: 'enum' }).members.map((m) => this.evalConst(m.name)));
      allowed = (v) => values.has(v);
    } else if (base.kind === 'int' || base.kind === 'uint' || base.kind === 'bool') {
      discKind = base.kind;
    } else {
      return this.fail(d.pos, `the discriminant of union ${def.name} must be int, unsigned int, bool or an enum`);
    }
    const [min, max] = discKind === 'uint' ? [0, UNBOUNDED] : discKind === 'bool' ? [0, 1] : [INT32_MIN, INT32_MAX];
    const labelsSeen = new Map<number, SourcePos>();
    const armNames = new Map<string, SourcePos>([[d.name, d.pos]]);
    const arms = def.arms.map((arm) => {
      const labels = arm.labels.map((l) => {
        const v = this.evalValue(l);
        if (v < min || v > max || (allowed && !allowed(v))) {
          this.fail(l.pos, `case value ${v} is not a valid ${discEnum ? `${discEnum} value` : discKind} for union ${def.name}`);
        }
        const prev = labelsSeen.get(v);
        if (prev) this.fail(l.pos, `case value ${v} of union ${def.name} already used at ${prev.line}:${prev.column}`);
        labelsSeen.set(v, l.pos);
        return v;
      });
      return { labels, decl: this.armDecl(arm.decl, armNames, def.name) };
    });
    const defaultArm = def.defaultArm ? this.armDecl(def.defaultArm, armNames, def.name) : null;
    return {
      kind: 'union',
      name: def.name,
      discriminant: { name: d.name, type },
      discKind,
      discEnum,
      arms,
      defaultArm,
      recursive: false,
      pos: def.pos,
    };
  }

  private armDecl(decl: Declaration, names: Map<string, SourcePos>, union: string): RDecl {
    if (decl.kind === 'void') return decl;
    this.uniqueMember(names, decl.name, decl.pos, `union ${union}`);
    return this.namedDecl(decl, `union ${union}`);
  }

  private resolveProgram(def: Definition & { kind: 'program' }): RProgram {
    const number = this.evalSize(def.number, `number of program ${def.name}`);
    const versionNumbers = new Map<number, SourcePos>();
    const versions = def.versions.map((v) => {
      const vn = this.evalSize(v.number, `number of version ${v.name}`);
      const prev = versionNumbers.get(vn);
      if (prev) this.fail(v.number.pos, `version number ${vn} already used at ${prev.line}:${prev.column}`);
      versionNumbers.set(vn, v.number.pos);
      const procNumbers = new Map<number, SourcePos>();
      const procNames = new Map<string, SourcePos>();
      const procedures = v.procedures.map((p) => {
        const pn = this.evalSize(p.number, `number of procedure ${p.name}`);
        const prevNum = procNumbers.get(pn);
        if (prevNum) this.fail(p.number.pos, `procedure number ${pn} already used in version ${v.name} at ${prevNum.line}:${prevNum.column}`);
        procNumbers.set(pn, p.number.pos);
        this.uniqueMember(procNames, p.name, p.pos, `version ${v.name}`);
        return {
          name: p.name,
          number: pn,
          arg: p.arg ? this.typeSpec(p.arg) : null,
          ret: p.ret ? this.typeSpec(p.ret) : null,
          pos: p.pos,
        };
      });
      return { name: v.name, number: vn, procedures, pos: v.pos };
    });
    return { kind: 'program', name: def.name, number, versions, pos: def.pos };
  }

  private uniqueMember(seen: Map<string, SourcePos>, name: string, pos: SourcePos, where: string): void {
    const prev = seen.get(name);
    if (prev) this.fail(pos, `'${name}' is declared twice in ${where} (first at ${prev.line}:${prev.column})`);
    seen.set(name, pos);
  }

  private namedDecl(decl: Exclude<Declaration, { kind: 'void' }>, where: string): RNamedDecl {
    const bound = (v: Value | null): number => (v === null ? UNBOUNDED : this.evalSize(v, `bound of ${decl.name} in ${where}`));
    switch (decl.kind) {
      case 'plain':
        return { kind: 'plain', name: decl.name, type: this.typeSpec(decl.type), pos: decl.pos };
      case 'optional':
        return { kind: 'optional', name: decl.name, type: this.typeSpec(decl.type), pos: decl.pos };
      case 'fixedArray':
        return {
          kind: 'fixedArray',
          name: decl.name,
          type: this.typeSpec(decl.type),
          size: this.evalSize(decl.size, `size of ${decl.name} in ${where}`),
          pos: decl.pos,
        };
      case 'varArray':
        return { kind: 'varArray', name: decl.name, type: this.typeSpec(decl.type), max: bound(decl.max), pos: decl.pos };
      case 'fixedOpaque':
        return { kind: 'fixedOpaque', name: decl.name, size: this.evalSize(decl.size, `size of ${decl.name} in ${where}`), pos: decl.pos };
      case 'varOpaque':
        return { kind: 'varOpaque', name: decl.name, max: bound(decl.max), pos: decl.pos };
      case 'string':
        return { kind: 'string', name: decl.name, max: bound(decl.max), pos: decl.pos };
    }
  }

  private typeSpec(t: TypeSpec): RType {
    if (t.kind === 'primitive') {
      if (t.prim === 'quadruple') return this.fail(t.pos, "'quadruple' is not supported");
      return { kind: 'primitive', prim: t.prim };
    }
    const def = this.typeDefs.get(t.name);
    if (!def) {
      if (this.names.has(t.name) || BUILTIN_CONSTANTS.has(t.name)) this.fail(t.pos, `'${t.name}' is not a type`);
      return this.fail(t.pos, `unknown type '${t.name}'`);
    }
    if (t.keyword && def.kind !== t.keyword) this.fail(t.pos, `'${t.keyword} ${t.name}' names a ${def.kind}, not a ${t.keyword}`);
    return { kind: 'ref', name: t.name, target: def.kind };
  }

  /** Follows plain typedefs down to a primitive or an enum/struct/union. */
  private baseOf(type: RType, pos: SourcePos): { kind: 'int' | 'uint' | 'hyper' | 'uhyper' | 'float' | 'double' | 'bool' } | { kind: 'enum' | 'struct' | 'union' | 'other'; name: string } {
    const seen = new Set<string>();
    let t = type;
    for (;;) {
      if (t.kind === 'primitive') return { kind: t.prim };
      if (t.target !== 'typedef') return { kind: t.target, name: t.name };
      if (seen.has(t.name)) return this.fail(pos, `typedef ${t.name} is defined in terms of itself`);
      seen.add(t.name);
      const def = this.typeDefs.get(t.name) as Definition & { kind: 'typedef' };
      if (def.decl.kind !== 'plain') return { kind: 'other', name: t.name };
      t = this.typeSpec(def.decl.type);
    }
  }

  private evalSize(v: Value, what: string): number {
    const n = this.evalValue(v);
    if (n < 0 || n > UNBOUNDED) this.fail(v.pos, `${what} must be in 0..4294967295, got ${n}`);
    return n;
  }

  private evalValue(v: Value): number {
    if (v.kind === 'number') return v.value;
    const builtin = BUILTIN_CONSTANTS.get(v.name);
    if (builtin !== undefined) return builtin;
    if (!this.consts.has(v.name)) {
      if (this.names.has(v.name)) this.fail(v.pos, `'${v.name}' is not a constant`);
      this.fail(v.pos, `unknown constant '${v.name}'`);
    }
    return this.evalConst(v.name, v.pos);
  }

  private evalConst(name: string, usePos?: SourcePos): number {
    const sym = this.consts.get(name) as ConstSymbol;
    if (sym.state === 'done') return sym.result;
    if (sym.state === 'busy') this.fail(usePos ?? sym.pos, `constant '${name}' is defined in terms of itself`);
    sym.state = 'busy';
    let value: number;
    if (sym.kind === 'const') {
      value = this.evalValue(sym.value);
    } else {
      const m = sym.members[sym.index];
      value = m.value ? this.evalValue(m.value) : sym.index === 0 ? 0 : this.evalConst(sym.members[sym.index - 1].name, m.pos) + 1;
      if (value < INT32_MIN || value > INT32_MAX) this.fail(m.value?.pos ?? m.pos, `enum value ${value} of '${name}' does not fit in an int`);
    }
    sym.state = 'done';
    sym.result = value;
    return value;
  }

  /**
   * Rejects typedef-only cycles and types that contain themselves by value, and returns the structs and
   * unions that are part of some reference cycle (through `*` or `<>`).
   */
  private checkCycles(types: ReadonlyMap<string, RTypeDef>): Set<string> {
    const edges = new Map<string, { to: string; direct: boolean; pos: SourcePos }[]>();
    const addDecl = (from: string, d: RDecl): void => {
      if (d.kind === 'void' || d.kind === 'fixedOpaque' || d.kind === 'varOpaque' || d.kind === 'string') return;
      if (d.type.kind !== 'ref') return;
      edges.get(from)!.push({ to: d.type.name, direct: d.kind === 'plain' || d.kind === 'fixedArray', pos: d.pos });
    };
    for (const t of types.values()) {
      edges.set(t.name, []);
      if (t.kind === 'typedef') addDecl(t.name, t.decl);
      if (t.kind === 'struct') t.fields.forEach((f) => addDecl(t.name, f));
      if (t.kind === 'union') {
        if (t.discriminant.type.kind === 'ref') edges.get(t.name)!.push({ to: t.discriminant.type.name, direct: true, pos: t.pos });
        t.arms.forEach((a) => addDecl(t.name, a.decl));
        if (t.defaultArm) addDecl(t.name, t.defaultArm);
      }
    }

    const direct = (name: string) => edges.get(name)!.filter((e) => e.direct);
    const state = new Map<string, 'busy' | 'done'>();
    const visitDirect = (name: string, stack: string[]): void => {
      state.set(name, 'busy');
      stack.push(name);
      for (const e of direct(name)) {
        const s = state.get(e.to);
        if (s === 'busy') {
          const cycle = [...stack.slice(stack.indexOf(e.to)), e.to].join(' -> ');
          this.fail(e.pos, `type ${e.to} contains itself (${cycle}); break the cycle with '*' or '<>'`);
        }
        if (s === undefined) visitDirect(e.to, stack);
      }
      stack.pop();
      state.set(name, 'done');
    };
    for (const name of types.keys()) if (!state.has(name)) visitDirect(name, []);

    // Tarjan's strongly connected components over all edges.
    const index = new Map<string, number>();
    const low = new Map<string, number>();
    const onStack = new Set<string>();
    const stack: string[] = [];
    const recursive = new Set<string>();
    let counter = 0;
    const strong = (v: string): void => {
      index.set(v, counter);
      low.set(v, counter);
      counter++;
      stack.push(v);
      onStack.add(v);
      for (const e of edges.get(v)!) {
        if (!index.has(e.to)) {
          strong(e.to);
          low.set(v, Math.min(low.get(v)!, low.get(e.to)!));
        } else if (onStack.has(e.to)) {
          low.set(v, Math.min(low.get(v)!, index.get(e.to)!));
        }
      }
      if (low.get(v) === index.get(v)) {
        const scc: string[] = [];
        let w: string;
        do {
          w = stack.pop()!;
          onStack.delete(w);
          scc.push(w);
        } while (w !== v);
        const cyclic = scc.length > 1 || edges.get(v)!.some((e) => e.to === v);
        if (cyclic) {
          if (scc.every((n) => types.get(n)!.kind === 'typedef')) {
            const t = types.get(v)!;
            this.fail(t.pos, `typedefs ${scc.sort().join(', ')} are defined in terms of each other`);
          }
          scc.forEach((n) => recursive.add(n));
        }
      }
    };
    for (const name of types.keys()) if (!index.has(name)) strong(name);
    return recursive;
  }
}
