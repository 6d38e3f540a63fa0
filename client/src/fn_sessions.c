/*
 * PKCS#11 session management functions and the operation state.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "calls.h"

/* ---- sessions ---- */

PX_EXPORT CK_RV C_OpenSession(CK_SLOT_ID slotID, CK_FLAGS flags,
                              CK_VOID_PTR pApplication, CK_NOTIFY Notify,
                              CK_SESSION_HANDLE_PTR phSession) {
  (void)pApplication; /* notification callbacks do not cross the wire */
  (void)Notify;
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  if (phSession == NULL)
    return CKR_ARGUMENTS_BAD;
  if (!(flags & CKF_SERIAL_SESSION))
    return CKR_SESSION_PARALLEL_NOT_SUPPORTED;
  return px_session_open(slotID, flags, phSession);
}

PX_EXPORT CK_RV C_CloseSession(CK_SESSION_HANDLE hSession) {
  return px_session_close(hSession);
}

PX_EXPORT CK_RV C_CloseAllSessions(CK_SLOT_ID slotID) {
  return px_session_close_all(slotID);
}

PX_EXPORT CK_RV C_GetSessionInfo(CK_SESSION_HANDLE hSession,
                                 CK_SESSION_INFO_PTR pInfo) {
  struct px_call call;
  CK_RV rv = px_session_enter(hSession, &call);
  if (rv != CKR_OK)
    return rv;
  if (pInfo == NULL) {
    px_session_leave(&call);
    return CKR_ARGUMENTS_BAD;
  }
  C_GetSessionInfo_args a = {.session = (px_session_handle)call.s->remote};
  C_GetSessionInfo_ret res;
  memset(&res, 0, sizeof res);
  rv = PX_RPC(call.c, "C_GetSessionInfo",
              c_getsessioninfo_3(a, &res, call.c->clnt));
  px_session_leave(&call);
  if (rv != CKR_OK)
    return rv;
  rv = (CK_RV)res.rv;
  if (rv == CKR_OK) {
    pInfo->slotID = (CK_SLOT_ID)res.info.slotID;
    pInfo->state = (CK_STATE)res.info.state;
    pInfo->flags = (CK_FLAGS)res.info.flags;
    pInfo->ulDeviceError = (CK_ULONG)res.info.deviceError;
  }
  return rv;
}

PX_EXPORT CK_RV C_Login(CK_SESSION_HANDLE hSession, CK_USER_TYPE userType,
                        CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen) {
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  if (bad_buf(pPin, ulPinLen))
    return CKR_ARGUMENTS_BAD;
  return px_session_login(hSession, userType, pPin, ulPinLen);
}

PX_EXPORT CK_RV C_Logout(CK_SESSION_HANDLE hSession) {
  return px_session_logout(hSession);
}

PX_EXPORT CK_RV C_InitPIN(CK_SESSION_HANDLE hSession, CK_UTF8CHAR_PTR pPin,
                          CK_ULONG ulPinLen) {
  if (bad_buf(pPin, ulPinLen))
    return px_state_is_initialized() ? CKR_ARGUMENTS_BAD
                                     : CKR_CRYPTOKI_NOT_INITIALIZED;
  SIMPLE_SESSION_CALL("C_InitPIN", c_initpin_3, C_InitPIN_args,
                      .pin = {(u_int)ulPinLen, (char *)pPin});
}

PX_EXPORT CK_RV C_SetPIN(CK_SESSION_HANDLE hSession, CK_UTF8CHAR_PTR pOldPin,
                         CK_ULONG ulOldLen, CK_UTF8CHAR_PTR pNewPin,
                         CK_ULONG ulNewLen) {
  if (bad_buf(pOldPin, ulOldLen) || bad_buf(pNewPin, ulNewLen))
    return px_state_is_initialized() ? CKR_ARGUMENTS_BAD
                                     : CKR_CRYPTOKI_NOT_INITIALIZED;
  struct px_call call;
  CK_RV rv = px_session_enter(hSession, &call);
  if (rv != CKR_OK)
    return rv;
  C_SetPIN_args a = {.session = (px_session_handle)call.s->remote};
  BYTES(a.oldPin, pOldPin, ulOldLen);
  BYTES(a.newPin, pNewPin, ulNewLen);
  px_rv res = 0;
  rv = PX_RPC(call.c, "C_SetPIN", c_setpin_3(a, &res, call.c->clnt));
  px_session_leave(&call);
  if (rv == CKR_OK)
    rv = (CK_RV)res;
  if (rv == CKR_OK)
    px_login_pin_changed(hSession, pOldPin, ulOldLen, pNewPin, ulNewLen);
  return rv;
}

/* ---- operation state ---- */

PX_EXPORT CK_RV C_GetOperationState(CK_SESSION_HANDLE hSession,
                                    CK_BYTE_PTR pOperationState,
                                    CK_ULONG_PTR pulOperationStateLen) {
  return px_final_out(hSession, c_GetOperationState, "C_GetOperationState",
                      c_getoperationstate_3, pOperationState,
                      pulOperationStateLen);
}

PX_EXPORT CK_RV C_SetOperationState(CK_SESSION_HANDLE hSession,
                                    CK_BYTE_PTR pOperationState,
                                    CK_ULONG ulOperationStateLen,
                                    CK_OBJECT_HANDLE hEncryptionKey,
                                    CK_OBJECT_HANDLE hAuthenticationKey) {
  if (bad_buf(pOperationState, ulOperationStateLen))
    return px_state_is_initialized() ? CKR_ARGUMENTS_BAD
                                     : CKR_CRYPTOKI_NOT_INITIALIZED;
  SIMPLE_SESSION_CALL(
      "C_SetOperationState", c_setoperationstate_3, C_SetOperationState_args,
      .operationState = {(u_int)ulOperationStateLen, (char *)pOperationState},
      .encryptionKey = (px_object_handle)hEncryptionKey,
      .authenticationKey = (px_object_handle)hAuthenticationKey);
}
