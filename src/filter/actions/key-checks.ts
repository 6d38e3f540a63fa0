/**
 * What the key patches (non_local_objects_patch, prevent_sensitive_leak_patch,
 * dangerous_sensitive_keys_*) share: where a call's session, objects and
 * template are (CALL_FIELDS of the procedure actually called, so a typed
 * procedure px_*Typed is read like the version 3 call it mirrors), CK_BBOOL
 * tests on templates, and attribute reads whose handle errors carry the
 * CK_RV the call itself gives for that handle.
 */
import { CALL_FIELDS, isPromise } from '../../generated/pkcs11_rpc';
import type { MaybePromise, px_attribute } from '../../generated/pkcs11_rpc';
import { ck } from '../../pkcs11/constants';
import { Pkcs11Error } from '../../pkcs11/errors';
import type { HookCall } from '../hooks';
import { idAllowed, labelAllowed } from '../visibility';
import type { AttributeValues } from '../object-attributes';
import { isKeyClass, sessionOf } from './attributes';
import { attributeULong } from '../../pkcs11/arch';


const LABEL_AND_ID: readonly number[] = [ck.CKA_LABEL, ck.CKA_ID];


/**
 * True when `template` sets `type` to CK_TRUE. A CK_BBOOL is one byte; any
 * non-zero byte counts as TRUE here (Caml Crush compares with 0x01 only, so
 * 0x02, which tokens read as TRUE, would slip past it).
 */
export function setsTrue(template: readonly px_attribute[], type: number): boolean {
  for (const a of template) {
    if (a.type === type && a.value.some((byte) => byte !== 0)) return true;
  }
  return false;
}

/** True when `template` names `type` at all (a set, or a read of it). */
export function names(template: readonly px_attribute[], types: ReadonlySet<number>): boolean {
  for (const a of template) if (types.has(a.type)) return true;
  return false;
}

/** True when a creation template gives a key class (any CKA_CLASS entry: a duplicate cannot hide a key). */
export function templateIsKey(template: readonly px_attribute[]): boolean {
  for (const a of template) {
    if (a.type !== ck.CKA_CLASS) continue;
    const c = attributeULong(a.value);
    if (isKeyClass(c)) return true;
  }
  return false;
}

/** CKA_CLASS of an object read by the filter is a key class. */
export function valuesAreKey(v: AttributeValues): boolean {
  return isKeyClass(attributeULong(v.get(ck.CKA_CLASS)));
}

/** The call's (first) template; empty when it has none. */
export function templateOf(call: HookCall): readonly px_attribute[] {
  const f = CALL_FIELDS[call.procedure].args.template;
  return f.length > 0 ? (f[0].get(call.args as never) as px_attribute[]) : [];
}

/** One object handle argument and the CK_RV the call answers when the caller does not hold it. */
export interface ObjectArg {
  readonly handle: number;
  readonly invalidRv: number;
}

/** The object handle arguments of a call, in .x order (C_WrapKey: wrappingKey, key). */
export function objectArgsOf(call: HookCall): ObjectArg[] {
  const out: ObjectArg[] = [];
  for (const f of CALL_FIELDS[call.procedure].args.object) {
    const handle = f.get(call.args as never) as number;
    if (handle === 0 && f.zeroAllowed) continue;
    out.push({ handle, invalidRv: f.invalidRv });
  }
  return out;
}

/**
 * Attributes of one object named by the call: `cached` on use paths (the
 * *Init calls, C_FindObjects), fresh on modifying ones. The filter reads
 * through the layers below as C_GetAttributeValue, which answers an unknown
 * handle with CKR_OBJECT_HANDLE_INVALID; the client gets the CK_RV of the
 * call it made for that handle position instead (CKR_KEY_HANDLE_INVALID for
 * C_SignInit's key...), as it would without the filter.
 */
export function attributesOf(
  call: HookCall,
  fresh: boolean,
  object: ObjectArg,
  types: readonly number[],
): MaybePromise<AttributeValues> {
  const session = sessionOf(call);
  let r: MaybePromise<AttributeValues>;
  try {
    r = fresh
      ? call.objects.read(call.conn, session, object.handle, types)
      : call.objects.cached(call.conn, session, object.handle, types);
  } catch (e) {
    throw asCallError(e, call, object);
  }
  return isPromise(r) ? r.catch((e: unknown) => Promise.reject(asCallError(e, call, object))) : r;
}

function asCallError(e: unknown, call: HookCall, object: ObjectArg): unknown {
  if (e instanceof Pkcs11Error && e.rv === ck.CKR_OBJECT_HANDLE_INVALID && object.invalidRv !== e.rv) {
    return new Pkcs11Error(object.invalidRv, call.name);
  }
  return e;
}

/**
 * The label/id check the filter layer makes of a named object, for a hook
 * that answers a call itself: a hook in `filter_actions_pre` runs before
 * that check, and its answer must not reveal an object the policy hides
 * (answered CKR_OBJECT_HANDLE_INVALID, as the layer does).
 */
export function checkVisible(call: HookCall, object: ObjectArg): MaybePromise<void> {
  const policy = call.policy;
  if (policy.allowedLabels === null && policy.allowedIds === null) return undefined;
  const r = attributesOf(call, false, object, LABEL_AND_ID);
  const check = (v: AttributeValues): void => {
    if (!labelAllowed(policy, v.get(ck.CKA_LABEL)) || !idAllowed(policy, v.get(ck.CKA_ID))) throw new Pkcs11Error(object.invalidRv, call.name);
  };
  return isPromise(r) ? r.then(check) : check(r);
}
