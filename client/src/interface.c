/*
 * Function lists: the 2.40 CK_FUNCTION_LIST, and two PKCS#11 3.0
 * interfaces named "PKCS 11" (3.0 list, then the 2.40 list). The 3.0-only
 * functions have no procedure in protocol version 3 and answer
 * CKR_FUNCTION_NOT_SUPPORTED.
 */
#include <string.h>

#include "px.h"

PX_EXPORT CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ppFunctionList);
PX_EXPORT CK_RV C_GetInterfaceList(CK_INTERFACE_PTR pInterfacesList,
                                   CK_ULONG_PTR pulCount);
PX_EXPORT CK_RV C_GetInterface(CK_UTF8CHAR_PTR pInterfaceName,
                               CK_VERSION_PTR pVersion,
                               CK_INTERFACE_PTR_PTR ppInterface,
                               CK_FLAGS flags);

/* ---- 3.0-only functions ---- */

PX_EXPORT CK_RV C_LoginUser(CK_SESSION_HANDLE hSession, CK_USER_TYPE userType,
                            CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen,
                            CK_UTF8CHAR_PTR pUsername, CK_ULONG ulUsernameLen);
PX_EXPORT CK_RV C_LoginUser(CK_SESSION_HANDLE hSession, CK_USER_TYPE userType,
                            CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen,
                            CK_UTF8CHAR_PTR pUsername, CK_ULONG ulUsernameLen) {
  (void)hSession, (void)userType, (void)pPin, (void)ulPinLen, (void)pUsername,
      (void)ulUsernameLen;
  return px_state_is_initialized() ? CKR_FUNCTION_NOT_SUPPORTED
                                   : CKR_CRYPTOKI_NOT_INITIALIZED;
}

PX_EXPORT CK_RV C_SessionCancel(CK_SESSION_HANDLE hSession, CK_FLAGS flags);
PX_EXPORT CK_RV C_SessionCancel(CK_SESSION_HANDLE hSession, CK_FLAGS flags) {
  (void)hSession, (void)flags;
  return px_state_is_initialized() ? CKR_FUNCTION_NOT_SUPPORTED
                                   : CKR_CRYPTOKI_NOT_INITIALIZED;
}

#define UNSUPPORTED_INIT(name)                                                 \
  PX_EXPORT CK_RV name(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m,                \
                       CK_OBJECT_HANDLE k);                                    \
  PX_EXPORT CK_RV name(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m,                \
                       CK_OBJECT_HANDLE k) {                                   \
    (void)h, (void)m, (void)k;                                                 \
    return px_state_is_initialized() ? CKR_FUNCTION_NOT_SUPPORTED              \
                                     : CKR_CRYPTOKI_NOT_INITIALIZED;           \
  }
#define UNSUPPORTED_FINAL(name)                                                \
  PX_EXPORT CK_RV name(CK_SESSION_HANDLE h);                                   \
  PX_EXPORT CK_RV name(CK_SESSION_HANDLE h) {                                  \
    (void)h;                                                                   \
    return px_state_is_initialized() ? CKR_FUNCTION_NOT_SUPPORTED              \
                                     : CKR_CRYPTOKI_NOT_INITIALIZED;           \
  }
#define UNSUPPORTED_CRYPT(name)                                                \
  PX_EXPORT CK_RV name(CK_SESSION_HANDLE h, CK_VOID_PTR p, CK_ULONG pl,        \
                       CK_BYTE_PTR a, CK_ULONG al, CK_BYTE_PTR i, CK_ULONG il, \
                       CK_BYTE_PTR o, CK_ULONG_PTR ol);                        \
  PX_EXPORT CK_RV name(CK_SESSION_HANDLE h, CK_VOID_PTR p, CK_ULONG pl,        \
                       CK_BYTE_PTR a, CK_ULONG al, CK_BYTE_PTR i, CK_ULONG il, \
                       CK_BYTE_PTR o, CK_ULONG_PTR ol) {                       \
    (void)h, (void)p, (void)pl, (void)a, (void)al, (void)i, (void)il, (void)o, \
        (void)ol;                                                              \
    return px_state_is_initialized() ? CKR_FUNCTION_NOT_SUPPORTED              \
                                     : CKR_CRYPTOKI_NOT_INITIALIZED;           \
  }
#define UNSUPPORTED_BEGIN(name)                                                \
  PX_EXPORT CK_RV name(CK_SESSION_HANDLE h, CK_VOID_PTR p, CK_ULONG pl,        \
                       CK_BYTE_PTR a, CK_ULONG al);                            \
  PX_EXPORT CK_RV name(CK_SESSION_HANDLE h, CK_VOID_PTR p, CK_ULONG pl,        \
                       CK_BYTE_PTR a, CK_ULONG al) {                           \
    (void)h, (void)p, (void)pl, (void)a, (void)al;                             \
    return px_state_is_initialized() ? CKR_FUNCTION_NOT_SUPPORTED              \
                                     : CKR_CRYPTOKI_NOT_INITIALIZED;           \
  }
#define UNSUPPORTED_NEXT(name)                                                 \
  PX_EXPORT CK_RV name(CK_SESSION_HANDLE h, CK_VOID_PTR p, CK_ULONG pl,        \
                       CK_BYTE_PTR i, CK_ULONG il, CK_BYTE_PTR o,              \
                       CK_ULONG_PTR ol, CK_FLAGS f);                           \
  PX_EXPORT CK_RV name(CK_SESSION_HANDLE h, CK_VOID_PTR p, CK_ULONG pl,        \
                       CK_BYTE_PTR i, CK_ULONG il, CK_BYTE_PTR o,              \
                       CK_ULONG_PTR ol, CK_FLAGS f) {                          \
    (void)h, (void)p, (void)pl, (void)i, (void)il, (void)o, (void)ol, (void)f; \
    return px_state_is_initialized() ? CKR_FUNCTION_NOT_SUPPORTED              \
                                     : CKR_CRYPTOKI_NOT_INITIALIZED;           \
  }
#define UNSUPPORTED_SIGN(name)                                                 \
  PX_EXPORT CK_RV name(CK_SESSION_HANDLE h, CK_VOID_PTR p, CK_ULONG pl,        \
                       CK_BYTE_PTR d, CK_ULONG dl, CK_BYTE_PTR s,              \
                       CK_ULONG_PTR sl);                                       \
  PX_EXPORT CK_RV name(CK_SESSION_HANDLE h, CK_VOID_PTR p, CK_ULONG pl,        \
                       CK_BYTE_PTR d, CK_ULONG dl, CK_BYTE_PTR s,              \
                       CK_ULONG_PTR sl) {                                      \
    (void)h, (void)p, (void)pl, (void)d, (void)dl, (void)s, (void)sl;          \
    return px_state_is_initialized() ? CKR_FUNCTION_NOT_SUPPORTED              \
                                     : CKR_CRYPTOKI_NOT_INITIALIZED;           \
  }
#define UNSUPPORTED_SIGN_BEGIN(name)                                           \
  PX_EXPORT CK_RV name(CK_SESSION_HANDLE h, CK_VOID_PTR p, CK_ULONG pl);       \
  PX_EXPORT CK_RV name(CK_SESSION_HANDLE h, CK_VOID_PTR p, CK_ULONG pl) {      \
    (void)h, (void)p, (void)pl;                                                \
    return px_state_is_initialized() ? CKR_FUNCTION_NOT_SUPPORTED              \
                                     : CKR_CRYPTOKI_NOT_INITIALIZED;           \
  }
#define UNSUPPORTED_VERIFY(name)                                               \
  PX_EXPORT CK_RV name(CK_SESSION_HANDLE h, CK_VOID_PTR p, CK_ULONG pl,        \
                       CK_BYTE_PTR d, CK_ULONG dl, CK_BYTE_PTR s,              \
                       CK_ULONG sl);                                           \
  PX_EXPORT CK_RV name(CK_SESSION_HANDLE h, CK_VOID_PTR p, CK_ULONG pl,        \
                       CK_BYTE_PTR d, CK_ULONG dl, CK_BYTE_PTR s,              \
                       CK_ULONG sl) {                                          \
    (void)h, (void)p, (void)pl, (void)d, (void)dl, (void)s, (void)sl;          \
    return px_state_is_initialized() ? CKR_FUNCTION_NOT_SUPPORTED              \
                                     : CKR_CRYPTOKI_NOT_INITIALIZED;           \
  }

UNSUPPORTED_INIT(C_MessageEncryptInit)
UNSUPPORTED_CRYPT(C_EncryptMessage)
UNSUPPORTED_BEGIN(C_EncryptMessageBegin)
UNSUPPORTED_NEXT(C_EncryptMessageNext)
UNSUPPORTED_FINAL(C_MessageEncryptFinal)
UNSUPPORTED_INIT(C_MessageDecryptInit)
UNSUPPORTED_CRYPT(C_DecryptMessage)
UNSUPPORTED_BEGIN(C_DecryptMessageBegin)
UNSUPPORTED_NEXT(C_DecryptMessageNext)
UNSUPPORTED_FINAL(C_MessageDecryptFinal)
UNSUPPORTED_INIT(C_MessageSignInit)
UNSUPPORTED_SIGN(C_SignMessage)
UNSUPPORTED_SIGN_BEGIN(C_SignMessageBegin)
UNSUPPORTED_SIGN(C_SignMessageNext)
UNSUPPORTED_FINAL(C_MessageSignFinal)
UNSUPPORTED_INIT(C_MessageVerifyInit)
UNSUPPORTED_VERIFY(C_VerifyMessage)
UNSUPPORTED_SIGN_BEGIN(C_VerifyMessageBegin)
UNSUPPORTED_VERIFY(C_VerifyMessageNext)
UNSUPPORTED_FINAL(C_MessageVerifyFinal)

/* ---- lists ---- */

#define LIST_2_40_ENTRIES                                                      \
  .C_Initialize = C_Initialize, .C_Finalize = C_Finalize,                      \
  .C_GetInfo = C_GetInfo, .C_GetFunctionList = C_GetFunctionList,              \
  .C_GetSlotList = C_GetSlotList, .C_GetSlotInfo = C_GetSlotInfo,              \
  .C_GetTokenInfo = C_GetTokenInfo,                                            \
  .C_GetMechanismList = C_GetMechanismList,                                    \
  .C_GetMechanismInfo = C_GetMechanismInfo, .C_InitToken = C_InitToken,        \
  .C_InitPIN = C_InitPIN, .C_SetPIN = C_SetPIN,                                \
  .C_OpenSession = C_OpenSession, .C_CloseSession = C_CloseSession,            \
  .C_CloseAllSessions = C_CloseAllSessions,                                    \
  .C_GetSessionInfo = C_GetSessionInfo,                                        \
  .C_GetOperationState = C_GetOperationState,                                  \
  .C_SetOperationState = C_SetOperationState, .C_Login = C_Login,              \
  .C_Logout = C_Logout, .C_CreateObject = C_CreateObject,                      \
  .C_CopyObject = C_CopyObject, .C_DestroyObject = C_DestroyObject,            \
  .C_GetObjectSize = C_GetObjectSize,                                          \
  .C_GetAttributeValue = C_GetAttributeValue,                                  \
  .C_SetAttributeValue = C_SetAttributeValue,                                  \
  .C_FindObjectsInit = C_FindObjectsInit, .C_FindObjects = C_FindObjects,      \
  .C_FindObjectsFinal = C_FindObjectsFinal,                                    \
  .C_EncryptInit = C_EncryptInit, .C_Encrypt = C_Encrypt,                      \
  .C_EncryptUpdate = C_EncryptUpdate, .C_EncryptFinal = C_EncryptFinal,        \
  .C_DecryptInit = C_DecryptInit, .C_Decrypt = C_Decrypt,                      \
  .C_DecryptUpdate = C_DecryptUpdate, .C_DecryptFinal = C_DecryptFinal,        \
  .C_DigestInit = C_DigestInit, .C_Digest = C_Digest,                          \
  .C_DigestUpdate = C_DigestUpdate, .C_DigestKey = C_DigestKey,                \
  .C_DigestFinal = C_DigestFinal, .C_SignInit = C_SignInit,                    \
  .C_Sign = C_Sign, .C_SignUpdate = C_SignUpdate,                              \
  .C_SignFinal = C_SignFinal, .C_SignRecoverInit = C_SignRecoverInit,          \
  .C_SignRecover = C_SignRecover, .C_VerifyInit = C_VerifyInit,                \
  .C_Verify = C_Verify, .C_VerifyUpdate = C_VerifyUpdate,                      \
  .C_VerifyFinal = C_VerifyFinal,                                              \
  .C_VerifyRecoverInit = C_VerifyRecoverInit,                                  \
  .C_VerifyRecover = C_VerifyRecover,                                          \
  .C_DigestEncryptUpdate = C_DigestEncryptUpdate,                              \
  .C_DecryptDigestUpdate = C_DecryptDigestUpdate,                              \
  .C_SignEncryptUpdate = C_SignEncryptUpdate,                                  \
  .C_DecryptVerifyUpdate = C_DecryptVerifyUpdate,                              \
  .C_GenerateKey = C_GenerateKey, .C_GenerateKeyPair = C_GenerateKeyPair,      \
  .C_WrapKey = C_WrapKey, .C_UnwrapKey = C_UnwrapKey,                          \
  .C_DeriveKey = C_DeriveKey, .C_SeedRandom = C_SeedRandom,                    \
  .C_GenerateRandom = C_GenerateRandom,                                        \
  .C_GetFunctionStatus = C_GetFunctionStatus,                                  \
  .C_CancelFunction = C_CancelFunction,                                        \
  .C_WaitForSlotEvent = C_WaitForSlotEvent

static CK_FUNCTION_LIST list_2_40 = {
    .version = {2, 40},
    LIST_2_40_ENTRIES,
};

static px_function_list_3_0 list_3_0 = {
    .version = {3, 0},
    LIST_2_40_ENTRIES,
    .C_GetInterfaceList = C_GetInterfaceList,
    .C_GetInterface = C_GetInterface,
    .C_LoginUser = C_LoginUser,
    .C_SessionCancel = C_SessionCancel,
    .C_MessageEncryptInit = C_MessageEncryptInit,
    .C_EncryptMessage = C_EncryptMessage,
    .C_EncryptMessageBegin = C_EncryptMessageBegin,
    .C_EncryptMessageNext = C_EncryptMessageNext,
    .C_MessageEncryptFinal = C_MessageEncryptFinal,
    .C_MessageDecryptInit = C_MessageDecryptInit,
    .C_DecryptMessage = C_DecryptMessage,
    .C_DecryptMessageBegin = C_DecryptMessageBegin,
    .C_DecryptMessageNext = C_DecryptMessageNext,
    .C_MessageDecryptFinal = C_MessageDecryptFinal,
    .C_MessageSignInit = C_MessageSignInit,
    .C_SignMessage = C_SignMessage,
    .C_SignMessageBegin = C_SignMessageBegin,
    .C_SignMessageNext = C_SignMessageNext,
    .C_MessageSignFinal = C_MessageSignFinal,
    .C_MessageVerifyInit = C_MessageVerifyInit,
    .C_VerifyMessage = C_VerifyMessage,
    .C_VerifyMessageBegin = C_VerifyMessageBegin,
    .C_VerifyMessageNext = C_VerifyMessageNext,
    .C_MessageVerifyFinal = C_MessageVerifyFinal,
};

static CK_UTF8CHAR interface_name[] = "PKCS 11";

/* Most preferred first. Neither is fork-safe: a child must C_Initialize. */
static CK_INTERFACE interfaces[] = {
    {interface_name, &list_3_0, 0},
    {interface_name, &list_2_40, 0},
};
#define N_INTERFACES (sizeof interfaces / sizeof interfaces[0])

PX_EXPORT CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ppFunctionList) {
  if (ppFunctionList == NULL)
    return CKR_ARGUMENTS_BAD;
  *ppFunctionList = &list_2_40;
  return CKR_OK;
}

PX_EXPORT CK_RV C_GetInterfaceList(CK_INTERFACE_PTR pInterfacesList,
                                   CK_ULONG_PTR pulCount) {
  if (pulCount == NULL)
    return CKR_ARGUMENTS_BAD;
  if (pInterfacesList == NULL) {
    *pulCount = N_INTERFACES;
    return CKR_OK;
  }
  if (*pulCount < N_INTERFACES) {
    *pulCount = N_INTERFACES;
    return CKR_BUFFER_TOO_SMALL;
  }
  memcpy(pInterfacesList, interfaces, sizeof interfaces);
  *pulCount = N_INTERFACES;
  return CKR_OK;
}

PX_EXPORT CK_RV C_GetInterface(CK_UTF8CHAR_PTR pInterfaceName,
                               CK_VERSION_PTR pVersion,
                               CK_INTERFACE_PTR_PTR ppInterface,
                               CK_FLAGS flags) {
  if (ppInterface == NULL)
    return CKR_ARGUMENTS_BAD;
  for (size_t i = 0; i < N_INTERFACES; i++) {
    CK_INTERFACE *it = &interfaces[i];
    if (pInterfaceName != NULL &&
        strcmp((const char *)pInterfaceName, (const char *)it->pInterfaceName))
      continue;
    const CK_VERSION *v = it->pFunctionList; /* first member of both lists */
    if (pVersion != NULL &&
        (pVersion->major != v->major || pVersion->minor != v->minor))
      continue;
    if ((it->flags & flags) != flags)
      continue;
    *ppInterface = it;
    return CKR_OK;
  }
  return CKR_FUNCTION_FAILED;
}
