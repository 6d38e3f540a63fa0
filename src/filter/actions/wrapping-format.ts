/**
 * wrapping_format_patch (CryptokiX wrapping format, Caml Crush patchset 1):
 * a wrapped key carries the attributes that limit its use, authenticated
 * with AES-CMAC under filter.conf's `wrapping_format_key`, and C_UnwrapKey
 * refuses a template that contradicts them. The blob is byte-compatible with
 * Caml Crush's, so keys move between the two proxies:
 *
 *   blob = W || A || CMAC(wrapping_format_key, W || A)
 *
 *   W     the module's C_WrapKey output, unchanged (any wrapping mechanism,
 *         CKM_AES_KEY_WRAP and CKM_AES_KEY_WRAP_PAD included);
 *   A     the bound attributes of the wrapped key, in BOUND_ATTRIBUTES order:
 *         CKA_CLASS as 4 bytes big-endian (its low 32 bits), ff ff ff ff when
 *         the key has none; each boolean as one byte 01 (TRUE), 00 (FALSE),
 *         ff (the key has no such attribute). 14 bytes, 18 with
 *         do_segregate_usage (Caml Crush's critical attributes; the format
 *         follows that option, both sides must agree on it);
 *   CMAC  16 bytes, AES-128-CMAC (RFC 4493).
 *
 * C_WrapKey: the module wraps, then the key's bound attributes are read
 * fresh from the token (never from the cache: they are what the blob
 * vouches for); one that cannot be read (other than "no such attribute")
 * answers CKR_KEY_NOT_WRAPPABLE.
 *
 * C_UnwrapKey, in Caml Crush's order and with its CK_RVs:
 *   blob shorter than A + CMAC, or a CMAC that does not verify
 *                                        -> CKR_FUNCTION_FAILED;
 *   a template attribute that differs from the bound value (byte compare in
 *   native layout)                       -> CKR_TEMPLATE_INCONSISTENT;
 *   a template without CKA_CLASS         -> CKR_FUNCTION_FAILED;
 * then the module unwraps W with the template completed by Caml Crush's
 * sanitized defaults for the key's class (an omitted usage attribute is
 * FALSE, CKA_SENSITIVE and CKA_PRIVATE are TRUE, CKA_EXTRACTABLE is FALSE).
 * Attributes the template omits are not copied from the blob: the defaults
 * are at least as restrictive as any bound value.
 *
 * The action answers the call itself (Caml Crush's wrapping format is an end
 * point): attach it in filter_actions_post so the static checks
 * (forbidden_mechanisms, remove_padding_oracles, labels/ids) run first.
 */
import { PROCEDURES } from '../../generated/pkcs11_rpc';
import type { C_UnwrapKey_args, C_WrapKey_args, CallName, px_attribute, px_bytes_ret, px_object_ret } from '../../generated/pkcs11_rpc';
import { CK_UNAVAILABLE_INFORMATION_WIRE, CKR_OK, ck } from '../../pkcs11/constants';
import { pkcs11RvOf } from '../../pkcs11/errors';
import { ConfigInvalidError } from '../../config/errors';
import { invoke } from '../../server/layers/generic';
import type { ActionContext, ActionDefinition, Hook, HookAnswer, HookCall } from '../hooks';
import { aesCmac, cmacEqual } from './cmac';
import { attributeULong } from '../../pkcs11/arch';
import { SANITIZED_DEFAULTS } from './sanitize-templates';

const CMAC_BYTES = 16;
/** Bytes of CKA_CLASS in the blob. */
const CLASS_BYTES = 4;
const ABSENT_BOOL = 0xff;

/** Caml Crush's critical attributes, in blob order. */
const BOUND_ATTRIBUTES: readonly number[] = [
  ck.CKA_CLASS, ck.CKA_SENSITIVE, ck.CKA_EXTRACTABLE, ck.CKA_ALWAYS_SENSITIVE, ck.CKA_NEVER_EXTRACTABLE, ck.CKA_ENCRYPT,
  ck.CKA_DECRYPT, ck.CKA_WRAP, ck.CKA_UNWRAP, ck.CKA_PRIVATE, ck.CKA_DERIVE,
];
/** Appended to BOUND_ATTRIBUTES when do_segregate_usage is on for the alias. */
const SEGREGATION_ATTRIBUTES: readonly number[] = [ck.CKA_SIGN, ck.CKA_VERIFY, ck.CKA_SIGN_RECOVER, ck.CKA_VERIFY_RECOVER];

const TRUE = Buffer.from([1]);
const FALSE = Buffer.from([0]);

/**
 * Caml Crush's sanitized creation defaults by object class (its
 * sanitize_creation_templates): added to an unwrap template that lacks them.
 */
const DEFAULTS: ReadonlyMap<number, ReadonlyArray<readonly [number, Buffer]>> = new Map(
  [...SANITIZED_DEFAULTS].map(([cls, attrs]) => [cls, attrs.map((a) => [a.type, a.value ? TRUE : FALSE] as const)]),
);

/** Room offered for each bound attribute's value: a CK_ULONG or a CK_BBOOL. */
const VALUE_ROOM = Buffer.alloc(8);

/** The attribute list of the blob format for this alias. */
export function boundAttributes(segregateUsage: boolean): readonly number[] {
  return segregateUsage ? [...BOUND_ATTRIBUTES, ...SEGREGATION_ATTRIBUTES] : BOUND_ATTRIBUTES;
}

/** Length of A for a bound attribute list: CKA_CLASS takes 4 bytes, each boolean 1. */
export function attributeBytes(types: readonly number[]): number {
  return types.length - 1 + CLASS_BYTES;
}

/** A: the bound attribute values (native layout; null or empty = the key has none) encoded for the blob. */
export function encodeBoundAttributes(types: readonly number[], values: ReadonlyMap<number, Buffer | null>): Buffer {
  const out = Buffer.alloc(attributeBytes(types));
  let at = 0;
  for (const t of types) {
    const v = values.get(t);
    if (t === ck.CKA_CLASS) {
      // The low 32 bits of the little-endian CK_ULONG, big-endian.
      if (!v || v.length === 0) out.fill(0xff, at, at + CLASS_BYTES);
      else for (let i = 0; i < Math.min(v.length, CLASS_BYTES); i++) out[at + CLASS_BYTES - 1 - i] = v[i];
      at += CLASS_BYTES;
    } else {
      out[at++] = !v || v.length === 0 ? ABSENT_BOOL : v.some((b) => b !== 0) ? 1 : 0;
    }
  }
  return out;
}

/** A decoded: the bound values in native layout (CKA_CLASS as an 8-byte CK_ULONG); absent ones left out. */
export function decodeBoundAttributes(types: readonly number[], a: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  let at = 0;
  for (const t of types) {
    if (t === ck.CKA_CLASS) {
      const b = a.subarray(at, at + CLASS_BYTES);
      at += CLASS_BYTES;
      if (b.every((x) => x === 0xff)) continue;
      const v = Buffer.alloc(8);
      for (let i = 0; i < CLASS_BYTES; i++) v[i] = b[CLASS_BYTES - 1 - i];
      out.set(t, v);
    } else {
      const b = a[at++];
      if (b === 1) out.set(t, TRUE);
      else if (b === 0) out.set(t, FALSE);
    }
  }
  return out;
}

/** W || A || CMAC. */
export function sealBlob(key: Buffer, wrapped: Buffer, a: Buffer): Buffer {
  const body = Buffer.concat([wrapped, a]);
  return Buffer.concat([body, aesCmac(key, body)]);
}

/** W and A of an authentic blob; null when it is too short or its CMAC does not verify. */
export function openBlob(key: Buffer, blob: Buffer, aBytes: number): { wrapped: Buffer; a: Buffer } | null {
  if (blob.length < aBytes + CMAC_BYTES) return null;
  const body = blob.subarray(0, blob.length - CMAC_BYTES);
  if (!cmacEqual(aesCmac(key, body), blob.subarray(blob.length - CMAC_BYTES))) return null;
  return { wrapped: body.subarray(0, body.length - aBytes), a: body.subarray(body.length - aBytes) };
}

const ERROR_RET = new Map(PROCEDURES.map((p) => [p.name, p.errorRet]));

function refuse(call: HookCall, rv: number): HookAnswer {
  const f = ERROR_RET.get(call.procedure);
  return { ret: f ? f(rv) : rv };
}

/**
 * Values of the bound attributes, read from the token now. One read for all;
 * when some are unavailable, each of those again on its own to tell "no such
 * attribute" (left out of the blob, as Caml Crush does) from any other
 * refusal (null: the key cannot be wrapped in this format).
 */
async function readBound(call: HookCall, session: number, key: number, types: readonly number[]): Promise<Map<number, Buffer | null> | null> {
  const one = async (ts: readonly number[]) =>
    call.next.C_GetAttributeValue(call.conn, {
      session,
      object: key,
      template: ts.map((type) => ({ type, value: VALUE_ROOM, valueLen: VALUE_ROOM.length })),
    });
  const available = (a: px_attribute): boolean => a.valueLen !== CK_UNAVAILABLE_INFORMATION_WIRE && a.value.length === a.valueLen;
  const out = new Map<number, Buffer | null>();
  const all = await one(types);
  if (all.rv !== CKR_OK && all.rv !== ck.CKR_ATTRIBUTE_TYPE_INVALID && all.rv !== ck.CKR_ATTRIBUTE_SENSITIVE) return null;
  const again: number[] = [];
  for (const a of all.template) {
    if (all.rv === CKR_OK || available(a)) out.set(a.type, Buffer.from(a.value));
    else again.push(a.type);
  }
  for (const t of again) {
    const r = await one([t]);
    if (r.rv === ck.CKR_ATTRIBUTE_TYPE_INVALID) out.set(t, null);
    else if (r.rv === CKR_OK && available(r.template[0])) out.set(t, Buffer.from(r.template[0].value));
    else return null;
  }
  return out;
}

function wrapHook(key: Buffer, types: readonly number[]): Hook {
  return async (call) => {
    const args = call.args as C_WrapKey_args;
    const r = (await invoke(call.next, call.procedure, call.conn, args)) as px_bytes_ret;
    if (r.rv !== CKR_OK) return { ret: r };
    let values: Map<number, Buffer | null> | null;
    try {
      values = await readBound(call, args.session, args.key, types);
    } catch (err) {
      if (pkcs11RvOf(err) === undefined) throw err;
      values = null;
    }
    if (values === null) return refuse(call, ck.CKR_KEY_NOT_WRAPPABLE);
    const ret: px_bytes_ret = { rv: CKR_OK, data: sealBlob(key, r.data, encodeBoundAttributes(types, values)) };
    return { ret };
  };
}

function unwrapHook(key: Buffer, types: readonly number[]): Hook {
  const aBytes = attributeBytes(types);
  return async (call) => {
    const args = call.args as C_UnwrapKey_args;
    const opened = openBlob(key, args.wrappedKey, aBytes);
    if (opened === null) return refuse(call, ck.CKR_FUNCTION_FAILED);
    const bound = decodeBoundAttributes(types, opened.a);
    for (const a of args.template) {
      const v = bound.get(a.type);
      if (v !== undefined && !v.equals(a.value)) return refuse(call, ck.CKR_TEMPLATE_INCONSISTENT);
    }
    // The last CKA_CLASS of the template is the one that counts (as in Caml Crush); an empty one is none.
    let cls: Buffer | null = null;
    for (const a of args.template) if (a.type === ck.CKA_CLASS) cls = a.value.length > 0 ? a.value : null;
    if (cls === null) return refuse(call, ck.CKR_FUNCTION_FAILED);
    const template = [...args.template];
    const defaults = DEFAULTS.get(classOf(cls));
    if (defaults) {
      for (const [type, value] of defaults) {
        if (!template.some((a) => a.type === type)) template.push({ type, value, valueLen: value.length });
      }
    }
    const r = (await invoke(call.next, call.procedure, call.conn, { ...args, wrappedKey: opened.wrapped, template })) as px_object_ret;
    return { ret: r };
  };
}

/** A template's CKA_CLASS (native layout); -1 when the value is not a CK_ULONG. */
function classOf(v: Buffer): number {
  return attributeULong(v) ?? -1;
}

/** `file:line:col` of ActionContext.where, for a configuration error. */
function configError(ctx: ActionContext, rule: string): ConfigInvalidError {
  const m = /^(.*):(\d+):(\d+)$/.exec(ctx.where);
  return m ? new ConfigInvalidError(m[1], Number(m[2]), Number(m[3]), undefined, rule) : new ConfigInvalidError(ctx.where, 0, 0, undefined, rule);
}

export const wrappingFormatPatch: ActionDefinition = {
  triggers: new Set<CallName>(['C_WrapKey', 'C_UnwrapKey']),
  compile(ctx) {
    // The loader refuses the action without a key already (naming its line); this keeps compile honest on its own.
    const key = ctx.wrappingFormatKey;
    if (key === null || key.length !== 16) throw configError(ctx, 'wrapping_format_patch needs wrapping_format_key (32 hex digits)');
    const types = boundAttributes(ctx.segregateUsage);
    const secret = Buffer.from(key);
    return ctx.trigger === 'C_WrapKey' ? wrapHook(secret, types) : unwrapHook(secret, types);
  },
};
