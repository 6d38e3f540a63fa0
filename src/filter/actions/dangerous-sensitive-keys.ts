/**
 * `dangerous_sensitive_keys_paranoid`, `dangerous_sensitive_keys_escrow_encrypt`,
 * `dangerous_sensitive_keys_escrow_all` (Caml Crush patchset 1 and 2, its
 * addendum to CryptokiX): a key with CKA_SENSITIVE = TRUE but
 * CKA_ALWAYS_SENSITIVE = FALSE was readable once, so its value may be known
 * and it could be used to wrap or decrypt the token's other secrets.
 *
 *  - paranoid: such a key is never used;
 *  - escrow_encrypt: it is used only when it is not local (CKA_LOCAL = FALSE:
 *    imported, as an escrowed key is) and is an encryption key
 *    (CKA_ENCRYPT or CKA_DECRYPT TRUE);
 *  - escrow_all: it is used only when it is not local.
 *
 * "Used" is every call naming it as a key: C_EncryptInit, C_DecryptInit,
 * C_SignInit, C_SignRecoverInit, C_VerifyInit, C_VerifyRecoverInit (and
 * their typed procedures), C_DeriveKey (base key), C_DigestKey, C_WrapKey
 * (wrapping key and wrapped key), C_UnwrapKey (unwrapping key); refused
 * with CKR_OBJECT_HANDLE_INVALID, as Caml Crush. On C_FindObjects such keys
 * are left out of the answer.
 *
 * A key whose CKA_ALWAYS_SENSITIVE cannot be read is not known to have
 * always been sensitive, and one whose CKA_LOCAL cannot be read is taken as
 * local: both are refused (fail closed; Caml Crush stops on the latter).
 * These are use paths: values come from the application's cache. The
 * attributes that decide either never change (CKA_ALWAYS_SENSITIVE,
 * CKA_LOCAL) or only move a key towards a refusal the modifying call's own
 * checks see fresh (see object-attributes.ts).
 */
import { CALL_FIELDS, isPromise } from '../../generated/pkcs11_rpc';
import type { CallName, MaybePromise } from '../../generated/pkcs11_rpc';
import { ck } from '../../pkcs11/constants';
import { Pkcs11Error } from '../../pkcs11/errors';
import type { ActionDefinition, FoundFilter, Hook, HookCall } from '../hooks';
import { boolOf } from '../object-attributes';
import type { AttributeValues } from '../object-attributes';
import { attributesOf } from './key-checks';
import type { ObjectArg } from './key-checks';

type Mode = 'paranoid' | 'escrow_encrypt' | 'escrow_all';

const TRIGGERS: ReadonlySet<CallName> = new Set<CallName>([
  'C_EncryptInit', 'C_DecryptInit', 'C_SignInit', 'C_SignRecoverInit', 'C_VerifyInit', 'C_VerifyRecoverInit',
  'C_DeriveKey', 'C_DigestKey', 'C_WrapKey', 'C_UnwrapKey', 'C_FindObjects',
]);

/** Everything any mode looks at, in one read (one cache entry) per key. */
const TYPES: readonly number[] = [ck.CKA_SENSITIVE, ck.CKA_ALWAYS_SENSITIVE, ck.CKA_LOCAL, ck.CKA_ENCRYPT, ck.CKA_DECRYPT];

/** True when `mode` refuses the use of the object with these attributes. */
function refuses(mode: Mode, v: AttributeValues): boolean {
  if (!boolOf(v, ck.CKA_SENSITIVE, false) || boolOf(v, ck.CKA_ALWAYS_SENSITIVE, false)) return false;
  if (mode === 'paranoid') return true;
  const local = v.get(ck.CKA_LOCAL);
  // A local key that became sensitive later has no escrow reason to exist.
  if (local === undefined || local === null || boolOf(v, ck.CKA_LOCAL, true)) return true;
  if (mode === 'escrow_all') return false;
  return !(boolOf(v, ck.CKA_ENCRYPT, false) || boolOf(v, ck.CKA_DECRYPT, false));
}

function useHook(mode: Mode): Hook {
  return (call) => {
    const fields = CALL_FIELDS[call.procedure].args.object;
    const check = (i: number): MaybePromise<undefined> => {
      for (; i < fields.length; i++) {
        const f = fields[i];
        const handle = f.get(call.args as never) as number;
        if (handle === 0 && f.zeroAllowed) continue;
        const r = attributesOf(call, false, { handle, invalidRv: f.invalidRv }, TYPES);
        if (isPromise(r)) {
          const k = i;
          return r.then((v) => {
            refuseIf(call, mode, v);
            return check(k + 1);
          });
        }
        refuseIf(call, mode, r);
      }
      return undefined;
    };
    return check(0);
  };
}

function refuseIf(call: HookCall, mode: Mode, v: AttributeValues): void {
  if (refuses(mode, v)) throw new Pkcs11Error(ck.CKR_OBJECT_HANDLE_INVALID, call.name);
}

/** C_FindObjects: the refused keys are left out; an object whose attributes cannot be read is left out too. */
function foundFilter(mode: Mode): FoundFilter {
  return (call, found) => {
    const kept: number[] = [];
    const verdict = (handle: number): MaybePromise<boolean> => {
      const object: ObjectArg = { handle, invalidRv: ck.CKR_OBJECT_HANDLE_INVALID };
      let r: MaybePromise<AttributeValues>;
      try {
        r = attributesOf(call, false, object, TYPES);
      } catch {
        return false;
      }
      return isPromise(r) ? r.then((v) => !refuses(mode, v), () => false) : !refuses(mode, r);
    };
    const step = (i: number): MaybePromise<readonly number[]> => {
      for (; i < found.length; i++) {
        const ok = verdict(found[i]);
        if (isPromise(ok)) {
          const k = i;
          return ok.then((yes) => {
            if (yes) kept.push(found[k]);
            return step(k + 1);
          });
        }
        if (ok) kept.push(found[i]);
      }
      return kept;
    };
    return step(0);
  };
}

function definition(mode: Mode): ActionDefinition {
  return {
    triggers: TRIGGERS,
    compile: () => useHook(mode),
    compileFoundFilter: () => foundFilter(mode),
  };
}

export const dangerousSensitiveKeysParanoid = definition('paranoid');
export const dangerousSensitiveKeysEscrowEncrypt = definition('escrow_encrypt');
export const dangerousSensitiveKeysEscrowAll = definition('escrow_all');
