/**
 * Attribute facts shared by the CryptokiX actions (conflicting, sticky,
 * secure templates, sanitized templates): what a template or an object says
 * about CK_BBOOL attributes, the argument fields of the call a hook runs on,
 * and refusals in the shape of that call's result.
 */
import { CALL_FIELDS, PROCEDURES, isPromise } from '../../generated/pkcs11_rpc';
import type { CallName, MaybePromise, px_attribute } from '../../generated/pkcs11_rpc';
import { ck } from '../../pkcs11/constants';
import { Pkcs11Error } from '../../pkcs11/errors';
import type { HookAnswer, HookCall } from '../hooks';
import type { AttributeValues } from '../object-attributes';
import { attributeULong } from '../../pkcs11/arch';

/**
 * What is known of one CK_BBOOL attribute, as a bit set: SAYS_FALSE and/or
 * SAYS_TRUE. A template may name a type twice, and a value that is not one
 * byte may be read either way by the token: both count (SAYS_EITHER), so
 * every rule below fails closed on them.
 */
export const SAYS_FALSE = 1;
export const SAYS_TRUE = 2;
export const SAYS_EITHER = SAYS_FALSE | SAYS_TRUE;

/** Attribute type → SAYS_* bits; a type that is absent says nothing. */
export type BoolView = ReadonlyMap<number, number>;

/** One CK_BBOOL attribute with one value (`CKA_WRAP = TRUE`). */
export interface BoolAttr {
  readonly type: number;
  readonly value: boolean;
}

export const attr = (type: number, value: boolean): BoolAttr => Object.freeze({ type, value });

const bit = (value: boolean): number => (value ? SAYS_TRUE : SAYS_FALSE);

/** True when `view` says `a` (among possibly other values). */
export function says(view: BoolView, a: BoolAttr): boolean {
  return ((view.get(a.type) ?? 0) & bit(a.value)) !== 0;
}

/** True when `view` says a value other than `a`'s for `a.type`. */
export function saysOtherThan(view: BoolView, a: BoolAttr): boolean {
  return ((view.get(a.type) ?? 0) & bit(!a.value)) !== 0;
}

/** CK_BBOOL is one byte: 0 is FALSE, any other value TRUE (as tokens read it). */
function boolBits(value: Buffer | null | undefined, declared?: number): number {
  if (value === null || value === undefined) return 0;
  if (value.length !== 1 || (declared !== undefined && declared !== 1)) return SAYS_EITHER;
  return value[0] === 0 ? SAYS_FALSE : SAYS_TRUE;
}

/** What the templates (one call's, fused) say about the CK_BBOOL attributes in `types`. */
export function templateView(templates: readonly (readonly px_attribute[])[], types: ReadonlySet<number>): Map<number, number> {
  const out = new Map<number, number>();
  for (const t of templates) {
    for (const a of t) {
      if (!types.has(a.type)) continue;
      out.set(a.type, (out.get(a.type) ?? 0) | boolBits(a.value, a.valueLen));
    }
  }
  return out;
}

/** What an object's attribute values (read by the filter) say about the CK_BBOOL attributes in `types`; absent ones say nothing. */
export function objectView(values: AttributeValues, types: readonly number[]): Map<number, number> {
  const out = new Map<number, number>();
  for (const t of types) {
    const bits = boolBits(values.get(t));
    if (bits !== 0) out.set(t, bits);
  }
  return out;
}

/** An object's view after `changes` apply: the types `changes` names take its values, the others keep theirs. */
export function mergedView(current: BoolView, changes: BoolView): Map<number, number> {
  const out = new Map(current);
  for (const [t, bits] of changes) out.set(t, bits);
  return out;
}

/** Types named by a list of attributes (deduplicated, in first-seen order). */
export function typesOf(attrs: Iterable<BoolAttr>): number[] {
  return [...new Set([...attrs].map((a) => a.type))];
}

// ---- the call's arguments, through the generated field accessors (typed procedures have the same roles) ----

/** Every template argument of the call (C_GenerateKeyPair: public then private). */
export function templatesOf(call: HookCall): px_attribute[][] {
  return CALL_FIELDS[call.procedure].args.template.map((f) => f.get(call.args as never) as px_attribute[]);
}

export function sessionOf(call: HookCall): number {
  const f = CALL_FIELDS[call.procedure].args.session;
  return f.length > 0 ? (f[0].get(call.args as never) as number) : 0;
}

/** The object handles the call names (C_WrapKey: wrapping key then key). */
export function objectsOf(call: HookCall): number[] {
  return CALL_FIELDS[call.procedure].args.object.map((f) => f.get(call.args as never) as number);
}

/** The call's arguments with its template fields replaced, on a copy (the caller keeps its object). */
export function withTemplates(call: HookCall, templates: readonly px_attribute[][]): unknown {
  const f = CALL_FIELDS[call.procedure];
  const copy = f.copyArgs(call.args as never);
  f.args.template.forEach((field, i) => field.set(copy as never, templates[i] as never));
  return copy;
}

/** CK_ULONG value (native layout) of the last `type` attribute of a template; undefined if absent, NaN if malformed. */
export function templateUlong(template: readonly px_attribute[], type: number): number | undefined {
  let out: number | undefined;
  for (const a of template) {
    if (a.type !== type) continue;
    out = attributeULong(a.value) ?? NaN;
  }
  return out;
}

const KEY_CLASSES: ReadonlySet<number> = new Set([ck.CKO_SECRET_KEY, ck.CKO_PRIVATE_KEY, ck.CKO_PUBLIC_KEY]);

export function isKeyClass(cls: number | undefined): boolean {
  return cls !== undefined && KEY_CLASSES.has(cls);
}

// ---- answers ----

const ERROR_RET = new Map<CallName, (rv: number) => unknown>();
for (const p of PROCEDURES) if (!ERROR_RET.has(p.name)) ERROR_RET.set(p.name, p.errorRet);

/**
 * The call answered with `rv` without reaching the module. Answering (rather
 * than throwing) lets the filter layer log the refusal with the action and
 * its filter.conf position.
 */
export function refusal(call: HookCall, rv: number): HookAnswer {
  const f = ERROR_RET.get(call.procedure);
  return { ret: f ? f(rv) : rv };
}

/**
 * `f()`, with a PKCS#11 error (thrown at once or as a rejection) turned into
 * `onError(rv)`. Other errors propagate: they are bugs, and the layer answers
 * them with an error anyway.
 */
export function recover<T>(f: () => MaybePromise<T>, onError: (rv: number) => T): MaybePromise<T> {
  const fail = (e: unknown): T => {
    if (e instanceof Pkcs11Error) return onError(e.rv);
    throw e;
  };
  try {
    const r = f();
    return isPromise(r) ? r.catch(fail) : r;
  } catch (e) {
    return fail(e);
  }
}

/**
 * `check(i)` for each i in [0, n) in order, stopping at the first that
 * answers; no promise is made while every check answers at once.
 */
export function firstAnswer(n: number, check: (i: number) => MaybePromise<HookAnswer>): MaybePromise<HookAnswer> {
  for (let i = 0; i < n; i++) {
    const r = check(i);
    if (isPromise(r)) {
      const k = i;
      return r.then((a) => (a !== undefined ? a : firstAnswer(n - k - 1, (j) => check(k + 1 + j))));
    }
    if (r !== undefined) return r;
  }
  return undefined;
}

// ---- the attribute sets of CryptokiX (Caml Crush helpers_patch.ml), plain and with key usage segregation ----

const A = ck;

/** CK_BBOOL attributes the patches read from objects (Caml Crush's "critical attributes" minus CKA_CLASS). */
export function criticalBools(segregate: boolean): readonly number[] {
  const base = [
    A.CKA_SENSITIVE, A.CKA_EXTRACTABLE, A.CKA_ALWAYS_SENSITIVE, A.CKA_NEVER_EXTRACTABLE, A.CKA_ENCRYPT, A.CKA_DECRYPT,
    A.CKA_WRAP, A.CKA_UNWRAP, A.CKA_PRIVATE, A.CKA_DERIVE,
  ];
  return segregate ? [...base, A.CKA_SIGN, A.CKA_VERIFY, A.CKA_SIGN_RECOVER, A.CKA_VERIFY_RECOVER] : base;
}
