/**
 * Closed name sets that filter.conf values are checked against. They are the
 * sets Caml Crush's filter accepts, so a file valid there is valid here.
 */
import { constantByName } from '../pkcs11/constants';

/** CKM_* name -> number, from the generated constants. Caml Crush also spells many names `cKM_...`. */
export function mechanismByName(name: string): number | undefined {
  const n = name.replace(/^cKM_/, 'CKM_');
  return n.startsWith('CKM_') ? constantByName(n) : undefined;
}

/** PKCS#11 function names accepted in `forbidden_functions` and `filter_actions_*`. */
export const PKCS11_FUNCTION_NAMES = [
  'C_LoadModule',
  'C_Initialize',
  'C_Finalize',
  'C_GetSlotList',
  'C_GetInfo',
  'C_WaitForSlotEvent',
  'C_GetSlotInfo',
  'C_GetTokenInfo',
  'C_InitToken',
  'C_OpenSession',
  'C_CloseSession',
  'C_CloseAllSessions',
  'C_GetSessionInfo',
  'C_Login',
  'C_Logout',
  'C_GetMechanismList',
  'C_GetMechanismInfo',
  'C_InitPIN',
  'C_SetPIN',
  'C_SeedRandom',
  'C_GenerateRandom',
  'C_FindObjectsInit',
  'C_FindObjects',
  'C_FindObjectsFinal',
  'C_GenerateKey',
  'C_GenerateKeyPair',
  'C_CreateObject',
  'C_CopyObject',
  'C_DestroyObject',
  'C_GetAttributeValue',
  'C_SetAttributeValue',
  'C_GetObjectSize',
  'C_WrapKey',
  'C_UnwrapKey',
  'C_DeriveKey',
  'C_DigestInit',
  'C_Digest',
  'C_DigestUpdate',
  'C_DigestKey',
  'C_DigestFinal',
  'C_SignInit',
  'C_SignRecoverInit',
  'C_Sign',
  'C_SignRecover',
  'C_SignUpdate',
  'C_SignFinal',
  'C_VerifyInit',
  'C_VerifyRecoverInit',
  'C_Verify',
  'C_VerifyRecover',
  'C_VerifyUpdate',
  'C_VerifyFinal',
  'C_EncryptInit',
  'C_Encrypt',
  'C_EncryptUpdate',
  'C_EncryptFinal',
  'C_DigestEncryptUpdate',
  'C_SignEncryptUpdate',
  'C_DecryptInit',
  'C_Decrypt',
  'C_DecryptUpdate',
  'C_DecryptFinal',
  'C_DecryptDigestUpdate',
  'C_DecryptVerifyUpdate',
  'C_GetOperationState',
  'C_SetOperationState',
  'C_GetFunctionStatus',
  'C_CancelFunction',
] as const;
export type Pkcs11FunctionName = (typeof PKCS11_FUNCTION_NAMES)[number];

/**
 * Hook names accepted in `filter_actions_pre`/`filter_actions_post`: Caml
 * Crush's "patchset" fixes plus its three example hooks. Whether each one is
 * implemented is the filter engine's business; the loader only checks the name.
 */
export const FILTER_ACTION_NAMES = [
  'c_Initialize_hook',
  'c_Login_hook',
  'identity',
  'conflicting_attributes_patch',
  'conflicting_attributes_patch_on_existing_objects',
  'sticky_attributes_patch',
  'sanitize_creation_templates_patch',
  'prevent_sensitive_leak_patch',
  'wrapping_format_patch',
  'non_local_objects_patch',
  'do_segregate_usage',
  'secure_templates_patch',
  'dangerous_sensitive_keys_paranoid',
  'dangerous_sensitive_keys_escrow_encrypt',
  'dangerous_sensitive_keys_escrow_all',
] as const;
export type FilterActionName = (typeof FILTER_ACTION_NAMES)[number];

/** Operation kinds for `remove_padding_oracles`; `all` stands for the other four. */
export const PADDING_OPERATIONS = ['wrap', 'unwrap', 'encrypt', 'sign', 'all'] as const;
export type PaddingOperation = (typeof PADDING_OPERATIONS)[number];

/** Boolean spellings accepted by Caml Crush's config-file reader. */
export const BOOLEAN_WORDS = ['yes', 'no', 'true', 'false'] as const;
