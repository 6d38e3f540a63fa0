/*
 * PKCS#11 3.0 declarations missing from the 2.40 header of libp11-kit-dev
 * (Debian 12 ships p11-kit 0.24). Layouts follow the OASIS PKCS#11 3.0
 * specification: CK_INTERFACE is {name, function list, flags} and
 * CK_FUNCTION_LIST_3_0 is the 2.40 list followed by 24 new entries.
 */
#ifndef PX_PKCS11_V3_TYPES_H
#define PX_PKCS11_V3_TYPES_H

#include <p11-kit/pkcs11.h>

#ifndef CKF_INTERFACE_FORK_SAFE
#define CKF_INTERFACE_FORK_SAFE 0x00000001UL

typedef struct CK_INTERFACE {
  CK_UTF8CHAR *pInterfaceName;
  CK_VOID_PTR pFunctionList;
  CK_FLAGS flags;
} CK_INTERFACE;
typedef CK_INTERFACE *CK_INTERFACE_PTR;
typedef CK_INTERFACE_PTR *CK_INTERFACE_PTR_PTR;
#endif

typedef CK_RV (*px_fn_GetInterfaceList)(CK_INTERFACE_PTR, CK_ULONG_PTR);
typedef CK_RV (*px_fn_GetInterface)(CK_UTF8CHAR_PTR, CK_VERSION_PTR,
                                    CK_INTERFACE_PTR_PTR, CK_FLAGS);
typedef CK_RV (*px_fn_LoginUser)(CK_SESSION_HANDLE, CK_USER_TYPE,
                                 CK_UTF8CHAR_PTR, CK_ULONG, CK_UTF8CHAR_PTR,
                                 CK_ULONG);
typedef CK_RV (*px_fn_SessionCancel)(CK_SESSION_HANDLE, CK_FLAGS);
typedef CK_RV (*px_fn_MessageInit)(CK_SESSION_HANDLE, CK_MECHANISM_PTR,
                                   CK_OBJECT_HANDLE);
typedef CK_RV (*px_fn_MessageFinal)(CK_SESSION_HANDLE);
typedef CK_RV (*px_fn_CryptMessage)(CK_SESSION_HANDLE, CK_VOID_PTR, CK_ULONG,
                                    CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR,
                                    CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR);
typedef CK_RV (*px_fn_CryptMessageBegin)(CK_SESSION_HANDLE, CK_VOID_PTR,
                                         CK_ULONG, CK_BYTE_PTR, CK_ULONG);
typedef CK_RV (*px_fn_CryptMessageNext)(CK_SESSION_HANDLE, CK_VOID_PTR,
                                        CK_ULONG, CK_BYTE_PTR, CK_ULONG,
                                        CK_BYTE_PTR, CK_ULONG_PTR, CK_FLAGS);
typedef CK_RV (*px_fn_SignMessage)(CK_SESSION_HANDLE, CK_VOID_PTR, CK_ULONG,
                                   CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR,
                                   CK_ULONG_PTR);
typedef CK_RV (*px_fn_SignMessageBegin)(CK_SESSION_HANDLE, CK_VOID_PTR,
                                        CK_ULONG);
typedef CK_RV (*px_fn_SignMessageNext)(CK_SESSION_HANDLE, CK_VOID_PTR,
                                       CK_ULONG, CK_BYTE_PTR, CK_ULONG,
                                       CK_BYTE_PTR, CK_ULONG_PTR);
typedef CK_RV (*px_fn_VerifyMessage)(CK_SESSION_HANDLE, CK_VOID_PTR, CK_ULONG,
                                     CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR,
                                     CK_ULONG);

/* Field order is the 3.0 specification's; it must not be changed. */
typedef struct px_function_list_3_0 {
  CK_VERSION version;
  /* The 2.40 entries, same order as struct ck_function_list. */
  CK_C_Initialize C_Initialize;
  CK_C_Finalize C_Finalize;
  CK_C_GetInfo C_GetInfo;
  CK_C_GetFunctionList C_GetFunctionList;
  CK_C_GetSlotList C_GetSlotList;
  CK_C_GetSlotInfo C_GetSlotInfo;
  CK_C_GetTokenInfo C_GetTokenInfo;
  CK_C_GetMechanismList C_GetMechanismList;
  CK_C_GetMechanismInfo C_GetMechanismInfo;
  CK_C_InitToken C_InitToken;
  CK_C_InitPIN C_InitPIN;
  CK_C_SetPIN C_SetPIN;
  CK_C_OpenSession C_OpenSession;
  CK_C_CloseSession C_CloseSession;
  CK_C_CloseAllSessions C_CloseAllSessions;
  CK_C_GetSessionInfo C_GetSessionInfo;
  CK_C_GetOperationState C_GetOperationState;
  CK_C_SetOperationState C_SetOperationState;
  CK_C_Login C_Login;
  CK_C_Logout C_Logout;
  CK_C_CreateObject C_CreateObject;
  CK_C_CopyObject C_CopyObject;
  CK_C_DestroyObject C_DestroyObject;
  CK_C_GetObjectSize C_GetObjectSize;
  CK_C_GetAttributeValue C_GetAttributeValue;
  CK_C_SetAttributeValue C_SetAttributeValue;
  CK_C_FindObjectsInit C_FindObjectsInit;
  CK_C_FindObjects C_FindObjects;
  CK_C_FindObjectsFinal C_FindObjectsFinal;
  CK_C_EncryptInit C_EncryptInit;
  CK_C_Encrypt C_Encrypt;
  CK_C_EncryptUpdate C_EncryptUpdate;
  CK_C_EncryptFinal C_EncryptFinal;
  CK_C_DecryptInit C_DecryptInit;
  CK_C_Decrypt C_Decrypt;
  CK_C_DecryptUpdate C_DecryptUpdate;
  CK_C_DecryptFinal C_DecryptFinal;
  CK_C_DigestInit C_DigestInit;
  CK_C_Digest C_Digest;
  CK_C_DigestUpdate C_DigestUpdate;
  CK_C_DigestKey C_DigestKey;
  CK_C_DigestFinal C_DigestFinal;
  CK_C_SignInit C_SignInit;
  CK_C_Sign C_Sign;
  CK_C_SignUpdate C_SignUpdate;
  CK_C_SignFinal C_SignFinal;
  CK_C_SignRecoverInit C_SignRecoverInit;
  CK_C_SignRecover C_SignRecover;
  CK_C_VerifyInit C_VerifyInit;
  CK_C_Verify C_Verify;
  CK_C_VerifyUpdate C_VerifyUpdate;
  CK_C_VerifyFinal C_VerifyFinal;
  CK_C_VerifyRecoverInit C_VerifyRecoverInit;
  CK_C_VerifyRecover C_VerifyRecover;
  CK_C_DigestEncryptUpdate C_DigestEncryptUpdate;
  CK_C_DecryptDigestUpdate C_DecryptDigestUpdate;
  CK_C_SignEncryptUpdate C_SignEncryptUpdate;
  CK_C_DecryptVerifyUpdate C_DecryptVerifyUpdate;
  CK_C_GenerateKey C_GenerateKey;
  CK_C_GenerateKeyPair C_GenerateKeyPair;
  CK_C_WrapKey C_WrapKey;
  CK_C_UnwrapKey C_UnwrapKey;
  CK_C_DeriveKey C_DeriveKey;
  CK_C_SeedRandom C_SeedRandom;
  CK_C_GenerateRandom C_GenerateRandom;
  CK_C_GetFunctionStatus C_GetFunctionStatus;
  CK_C_CancelFunction C_CancelFunction;
  CK_C_WaitForSlotEvent C_WaitForSlotEvent;
  /* 3.0 additions. */
  px_fn_GetInterfaceList C_GetInterfaceList;
  px_fn_GetInterface C_GetInterface;
  px_fn_LoginUser C_LoginUser;
  px_fn_SessionCancel C_SessionCancel;
  px_fn_MessageInit C_MessageEncryptInit;
  px_fn_CryptMessage C_EncryptMessage;
  px_fn_CryptMessageBegin C_EncryptMessageBegin;
  px_fn_CryptMessageNext C_EncryptMessageNext;
  px_fn_MessageFinal C_MessageEncryptFinal;
  px_fn_MessageInit C_MessageDecryptInit;
  px_fn_CryptMessage C_DecryptMessage;
  px_fn_CryptMessageBegin C_DecryptMessageBegin;
  px_fn_CryptMessageNext C_DecryptMessageNext;
  px_fn_MessageFinal C_MessageDecryptFinal;
  px_fn_MessageInit C_MessageSignInit;
  px_fn_SignMessage C_SignMessage;
  px_fn_SignMessageBegin C_SignMessageBegin;
  px_fn_SignMessageNext C_SignMessageNext;
  px_fn_MessageFinal C_MessageSignFinal;
  px_fn_MessageInit C_MessageVerifyInit;
  px_fn_VerifyMessage C_VerifyMessage;
  px_fn_SignMessageBegin C_VerifyMessageBegin;
  px_fn_VerifyMessage C_VerifyMessageNext;
  px_fn_MessageFinal C_MessageVerifyFinal;
} px_function_list_3_0;

#endif
