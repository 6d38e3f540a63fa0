/**
 * `prevent_sensitive_leak_patch` (Caml Crush patchset 1 and 2): the secret
 * part of a key never leaves through C_GetAttributeValue and is never
 * written through C_SetAttributeValue.
 *
 * Caml Crush withholds the secret-valued attributes of a key that is
 * CKA_SENSITIVE = TRUE or CKA_EXTRACTABLE = TRUE (its documentation: "sensitive
 * or extractable keys"); PKCS#11 withholds them when the key is sensitive or
 * CKA_EXTRACTABLE = FALSE. Both together cover every key that has a
 * CKA_EXTRACTABLE attribute, so here: the secret-valued attributes of secret,
 * private and OTP keys, and of any object marked CKA_SENSITIVE = TRUE, are
 * never returned.
 *
 *  - C_GetAttributeValue: those attributes come back with ulValueLen =
 *    CK_UNAVAILABLE_INFORMATION, the other attributes of the template are
 *    answered by the token, and the call answers CKR_ATTRIBUTE_SENSITIVE (as
 *    Caml Crush). Size queries are withheld the same way.
 *  - C_SetAttributeValue: writing a secret-valued attribute of such an
 *    object, or CKA_ALWAYS_SENSITIVE / CKA_NEVER_EXTRACTABLE of any object,
 *    is refused with CKR_ATTRIBUTE_READ_ONLY.
 *
 * A template that names no secret-valued attribute passes straight through
 * without a read: attribute reads pay one Set lookup per attribute.
 */
import { isPromise } from '../../generated/pkcs11_rpc';
import type { C_GetAttributeValue_args, C_GetAttributeValue_ret, CallName, MaybePromise, px_attribute } from '../../generated/pkcs11_rpc';
import { CK_UNAVAILABLE_INFORMATION_WIRE, CKR_OK, ck } from '../../pkcs11/constants';
import { Pkcs11Error } from '../../pkcs11/errors';
import { then } from '../../server/layers/generic';
import type { ActionDefinition, Hook, HookAnswer } from '../hooks';
import { boolOf, ulongOf } from '../object-attributes';
import type { AttributeValues } from '../object-attributes';
import { attributesOf, checkVisible, names, objectArgsOf, templateOf } from './key-checks';

const TRIGGERS: ReadonlySet<CallName> = new Set<CallName>(['C_GetAttributeValue', 'C_SetAttributeValue']);

/**
 * Attributes that hold key material. Caml Crush's list is CKA_VALUE (secret
 * keys, EC/DSA/DH/GOST private keys) and the RSA private components; added
 * here: CKA_SEED (PKCS#11 3.2, ML-DSA/ML-KEM private keys, 0x637) and the
 * PKCS#11 3.0 X2Ratchet state that is key material (bag of skipped message
 * keys, chain, header, next header and root keys, own DH private key;
 * 0x602..0x612), numbers from the OASIS headers since the installed one is
 * 2.40.
 */
export const SECRET_VALUED: ReadonlySet<number> = new Set<number>([
  ck.CKA_VALUE,
  ck.CKA_PRIVATE_EXPONENT,
  ck.CKA_PRIME_1,
  ck.CKA_PRIME_2,
  ck.CKA_EXPONENT_1,
  ck.CKA_EXPONENT_2,
  ck.CKA_COEFFICIENT,
  0x637, // CKA_SEED
  0x602, // CKA_X2RATCHET_BAG
  0x605, // CKA_X2RATCHET_CKR
  0x606, // CKA_X2RATCHET_CKS
  0x609, // CKA_X2RATCHET_DHS
  0x60a, // CKA_X2RATCHET_HKR
  0x60b, // CKA_X2RATCHET_HKS
  0x60d, // CKA_X2RATCHET_NHKR
  0x60e, // CKA_X2RATCHET_NHKS
  0x612, // CKA_X2RATCHET_RK
]);

/** Attributes only the token sets (PKCS#11: set at creation, never by C_SetAttributeValue). */
const TOKEN_SET: ReadonlySet<number> = new Set<number>([ck.CKA_ALWAYS_SENSITIVE, ck.CKA_NEVER_EXTRACTABLE]);

const SECRET_CLASSES: ReadonlySet<number> = new Set<number>([ck.CKO_SECRET_KEY, ck.CKO_PRIVATE_KEY, ck.CKO_OTP_KEY]);

/**
 * What decides. CKA_CLASS and whether the object has a CKA_EXTRACTABLE at
 * all never change, so a cached (possibly stale) copy gives the same answer
 * as the token for every key; only CKA_SENSITIVE of other classes can change.
 */
const PROTECTION: readonly number[] = [ck.CKA_CLASS, ck.CKA_SENSITIVE, ck.CKA_EXTRACTABLE];

function withholds(v: AttributeValues): boolean {
  const cls = ulongOf(v, ck.CKA_CLASS);
  if (cls !== undefined && SECRET_CLASSES.has(cls)) return true;
  const extractable = v.get(ck.CKA_EXTRACTABLE);
  return boolOf(v, ck.CKA_SENSITIVE, false) || (extractable !== undefined && extractable !== null);
}

const EMPTY = Buffer.alloc(0);

const onGet: Hook = (call) => {
  const a = call.args as C_GetAttributeValue_args;
  if (!names(a.template, SECRET_VALUED)) return undefined;
  const [object] = objectArgsOf(call);
  return then(attributesOf(call, false, object, PROTECTION), (v): MaybePromise<HookAnswer> => {
    if (!withholds(v)) return undefined;
    return then(checkVisible(call, object), () => answerWithout(call.next.C_GetAttributeValue.bind(call.next, call.conn), a));
  });
};

/**
 * The token answers the template without the secret-valued attributes;
 * those are put back, in their places, as unavailable.
 */
function answerWithout(
  get: (a: C_GetAttributeValue_args) => MaybePromise<C_GetAttributeValue_ret>,
  a: C_GetAttributeValue_args,
): MaybePromise<HookAnswer> {
  const rest: px_attribute[] = a.template.filter((t) => !SECRET_VALUED.has(t.type));
  const answered: MaybePromise<C_GetAttributeValue_ret> =
    rest.length > 0 ? get({ session: a.session, object: a.object, template: rest }) : { rv: CKR_OK, template: [] };
  const merge = (r: C_GetAttributeValue_ret): HookAnswer => {
    const perAttribute =
      r.rv === CKR_OK || r.rv === ck.CKR_ATTRIBUTE_SENSITIVE || r.rv === ck.CKR_ATTRIBUTE_TYPE_INVALID || r.rv === ck.CKR_BUFFER_TOO_SMALL;
    if (!perAttribute || r.template.length !== rest.length) {
      return { ret: { rv: perAttribute ? ck.CKR_GENERAL_ERROR : r.rv, template: [] } satisfies C_GetAttributeValue_ret };
    }
    let i = 0;
    const template = a.template.map((t) =>
      SECRET_VALUED.has(t.type) ? { type: t.type, value: EMPTY, valueLen: CK_UNAVAILABLE_INFORMATION_WIRE } : r.template[i++],
    );
    // One withheld attribute decides the CK_RV, whatever the token said of the others (PKCS#11 lets it pick any of them).
    return { ret: { rv: ck.CKR_ATTRIBUTE_SENSITIVE, template } satisfies C_GetAttributeValue_ret };
  };
  return isPromise(answered) ? answered.then(merge) : merge(answered);
}

const onSet: Hook = (call) => {
  const template = templateOf(call);
  if (names(template, TOKEN_SET)) throw new Pkcs11Error(ck.CKR_ATTRIBUTE_READ_ONLY, call.name);
  if (!names(template, SECRET_VALUED)) return undefined;
  const [object] = objectArgsOf(call);
  // A modifying call: the token's current view, not the cache.
  return then(attributesOf(call, true, object, PROTECTION), (v) => {
    if (withholds(v)) throw new Pkcs11Error(ck.CKR_ATTRIBUTE_READ_ONLY, call.name);
    return undefined;
  });
};

export const preventSensitiveLeakPatch: ActionDefinition = {
  triggers: TRIGGERS,
  compile: (ctx) => (ctx.trigger === 'C_GetAttributeValue' ? onGet : onSet),
};
