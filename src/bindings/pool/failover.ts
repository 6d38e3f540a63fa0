import { ck } from '../../pkcs11/constants';

/**
 * CK_RVs that say the member, not the request, failed: the member is marked
 * down and replayable work moves to another member. CKR_SESSION_HANDLE_INVALID
 * and CKR_SESSION_CLOSED count because the pool only ever names module
 * sessions it opened and has not closed: if the module no longer knows one,
 * the module lost its sessions (a restarted helper process, a reset token).
 * CKR_CRYPTOKI_NOT_INITIALIZED likewise: a restarted module that was not
 * initialized again.
 */
export const MEMBER_FAILURE_RVS: ReadonlySet<number> = new Set([
  ck.CKR_DEVICE_ERROR,
  ck.CKR_DEVICE_REMOVED,
  ck.CKR_TOKEN_NOT_PRESENT,
  ck.CKR_TOKEN_NOT_RECOGNIZED,
  ck.CKR_SESSION_CLOSED,
  ck.CKR_SESSION_HANDLE_INVALID,
  ck.CKR_CRYPTOKI_NOT_INITIALIZED,
]);

export function isMemberFailure(rv: number): boolean {
  return MEMBER_FAILURE_RVS.has(rv);
}

/**
 * What a multi-part operation answers when the member running it fails
 * after it received data (C_*Update, C_DigestKey): the data fed so far
 * cannot be fed again elsewhere, so the operation ends. The call gets
 * CKR_DEVICE_ERROR; later calls of that operation get
 * CKR_OPERATION_NOT_INITIALIZED (it no longer exists); the session stays
 * usable and the next C_*Init runs on a healthy member.
 */
export const MULTIPART_LOST_RV = ck.CKR_DEVICE_ERROR;

/** What calls answer when no member is up (C_OpenSession, C_GetTokenInfo: CKR_TOKEN_NOT_PRESENT). */
export const NO_MEMBER_RV = ck.CKR_DEVICE_ERROR;

/**
 * What object creation and destruction answer when they would change token
 * objects (CKA_TOKEN = CK_TRUE in a creating call, C_DestroyObject or
 * C_SetAttributeValue of a token object): refused, since doing it on one
 * member makes the members differ and a key generated on each member would
 * be a different key. Provision token objects on every member directly.
 */
export const TOKEN_OBJECT_CHANGE_RV = ck.CKR_FUNCTION_NOT_SUPPORTED;
