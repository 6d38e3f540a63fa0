/**
 * `non_local_objects_patch` (Caml Crush patchset 1, after CryptokiX): a key
 * whose value may be known outside the token, because it was imported
 * (CKA_LOCAL = FALSE), must not become a wrapping or unwrapping key, or
 * else it could wrap the token's other keys out in the clear. CKA_LOCAL
 * itself is the token's to set, never the client's.
 *
 *  - C_CreateObject of a key (secret, private or public) whose template
 *    sets CKA_WRAP, CKA_UNWRAP or CKA_LOCAL to TRUE;
 *  - C_CopyObject / C_SetAttributeValue setting one of them to TRUE on an
 *    existing key with CKA_LOCAL = FALSE
 *
 * are refused with CKR_TEMPLATE_INCONSISTENT. Keys created by
 * C_GenerateKey(Pair) are local and not restricted.
 */
import type { CallName } from '../../generated/pkcs11_rpc';
import { ck } from '../../pkcs11/constants';
import { Pkcs11Error } from '../../pkcs11/errors';
import { then } from '../../server/layers/generic';
import type { ActionDefinition, Hook, HookCall } from '../hooks';
import { boolOf } from '../object-attributes';
import { attributesOf, objectArgsOf, setsTrue, templateIsKey, templateOf, valuesAreKey } from './key-checks';
import type { px_attribute } from '../../generated/pkcs11_rpc';

const TRIGGERS: ReadonlySet<CallName> = new Set<CallName>(['C_CreateObject', 'C_CopyObject', 'C_SetAttributeValue']);

/** Attributes a non-local key may not get as TRUE. */
const DANGEROUS: readonly number[] = [ck.CKA_WRAP, ck.CKA_UNWRAP, ck.CKA_LOCAL];

const CLASS_AND_LOCAL: readonly number[] = [ck.CKA_CLASS, ck.CKA_LOCAL];

function setsDangerous(template: readonly px_attribute[]): boolean {
  for (const t of DANGEROUS) if (setsTrue(template, t)) return true;
  return false;
}

function refuse(call: HookCall): never {
  throw new Pkcs11Error(ck.CKR_TEMPLATE_INCONSISTENT, call.name);
}

const onCreate: Hook = (call) => {
  const template = templateOf(call);
  if (templateIsKey(template) && setsDangerous(template)) refuse(call);
  return undefined;
};

/**
 * The existing object's class and origin are read fresh from the token
 * (a modifying call: see object-attributes.ts). An object whose class
 * cannot be read, and a key whose CKA_LOCAL cannot be read, are taken as
 * non-local keys (Caml Crush lets the latter pass).
 */
const onModify: Hook = (call) => {
  if (!setsDangerous(templateOf(call))) return undefined;
  const [object] = objectArgsOf(call);
  return then(attributesOf(call, true, object, CLASS_AND_LOCAL), (v) => {
    const unknownClass = v.get(ck.CKA_CLASS) === null;
    if (!unknownClass && !valuesAreKey(v)) return undefined;
    if (boolOf(v, ck.CKA_LOCAL, false)) return undefined;
    return refuse(call);
  });
};

export const nonLocalObjectsPatch: ActionDefinition = {
  triggers: TRIGGERS,
  compile: (ctx) => (ctx.trigger === 'C_CreateObject' ? onCreate : onModify),
};
