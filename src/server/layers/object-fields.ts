import type { CallName } from '../../generated/pkcs11_rpc';
import { ck } from '../../pkcs11/constants';

/**
 * Argument fields of rpc/pkcs11.x that name an object, with the CK_RV the
 * spec gives for an unusable handle in that position. 0 means "no key" where
 * allowed (C_SetOperationState).
 */
export const OBJECT_ARG_FIELDS: ReadonlyMap<string, { rv: number; zeroAllowed: boolean }> = new Map([
  ['object', { rv: ck.CKR_OBJECT_HANDLE_INVALID, zeroAllowed: false }],
  ['key', { rv: ck.CKR_KEY_HANDLE_INVALID, zeroAllowed: false }],
  ['baseKey', { rv: ck.CKR_KEY_HANDLE_INVALID, zeroAllowed: false }],
  ['wrappingKey', { rv: ck.CKR_WRAPPING_KEY_HANDLE_INVALID, zeroAllowed: false }],
  ['unwrappingKey', { rv: ck.CKR_UNWRAPPING_KEY_HANDLE_INVALID, zeroAllowed: false }],
  ['encryptionKey', { rv: ck.CKR_KEY_HANDLE_INVALID, zeroAllowed: true }],
  ['authenticationKey', { rv: ck.CKR_KEY_HANDLE_INVALID, zeroAllowed: true }],
]);

/** Result fields that carry a new object handle. */
export const OBJECT_RESULT_FIELDS = ['object', 'publicKey', 'privateKey'] as const;

/** Argument fields holding attribute templates. */
export const TEMPLATE_ARG_FIELDS = ['template', 'publicKeyTemplate', 'privateKeyTemplate'] as const;

/**
 * Typed-mechanism procedures (rpc/pkcs11.x 73..84) and the version 3 call
 * each mirrors: same fields, same effect, only the mechanism parameter is
 * encoded differently. Name-based rules (object creation, policy) apply to
 * both.
 */
export const V3_CALL_OF_TYPED: ReadonlyMap<CallName, CallName> = new Map<CallName, CallName>([
  ['px_DigestInitTyped', 'C_DigestInit'],
  ['px_SignInitTyped', 'C_SignInit'],
  ['px_VerifyInitTyped', 'C_VerifyInit'],
  ['px_EncryptInitTyped', 'C_EncryptInit'],
  ['px_DecryptInitTyped', 'C_DecryptInit'],
  ['px_SignRecoverInitTyped', 'C_SignRecoverInit'],
  ['px_VerifyRecoverInitTyped', 'C_VerifyRecoverInit'],
  ['px_GenerateKeyTyped', 'C_GenerateKey'],
  ['px_GenerateKeyPairTyped', 'C_GenerateKeyPair'],
  ['px_WrapKeyTyped', 'C_WrapKey'],
  ['px_UnwrapKeyTyped', 'C_UnwrapKey'],
  ['px_DeriveKeyTyped', 'C_DeriveKey'],
]);
