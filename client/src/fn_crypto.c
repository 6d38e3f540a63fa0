/*
 * PKCS#11 encryption, decryption, digest, signature, verification and
 * dual-function calls.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "calls.h"

/* ---- encryption ---- */

PX_EXPORT CK_RV C_EncryptInit(CK_SESSION_HANDLE hSession,
                              CK_MECHANISM_PTR pMechanism,
                              CK_OBJECT_HANDLE hKey) {
  return px_mech_key_init(hSession, "C_EncryptInit", c_encryptinit_3,
                          px_encryptinittyped_3, pMechanism, hKey);
}

PX_EXPORT CK_RV C_Encrypt(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData,
                          CK_ULONG ulDataLen, CK_BYTE_PTR pEncryptedData,
                          CK_ULONG_PTR pulEncryptedDataLen) {
  return px_data_out(hSession, c_Encrypt, "C_Encrypt", c_encrypt_3, pData,
                     ulDataLen, pEncryptedData, pulEncryptedDataLen);
}

PX_EXPORT CK_RV C_EncryptUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart,
                                CK_ULONG ulPartLen, CK_BYTE_PTR pEncryptedPart,
                                CK_ULONG_PTR pulEncryptedPartLen) {
  return px_data_out(hSession, c_EncryptUpdate, "C_EncryptUpdate",
                     c_encryptupdate_3, pPart, ulPartLen, pEncryptedPart,
                     pulEncryptedPartLen);
}

PX_EXPORT CK_RV C_EncryptFinal(CK_SESSION_HANDLE hSession,
                               CK_BYTE_PTR pLastEncryptedPart,
                               CK_ULONG_PTR pulLastEncryptedPartLen) {
  return px_final_out(hSession, c_EncryptFinal, "C_EncryptFinal",
                      c_encryptfinal_3, pLastEncryptedPart,
                      pulLastEncryptedPartLen);
}

PX_EXPORT CK_RV C_DecryptInit(CK_SESSION_HANDLE hSession,
                              CK_MECHANISM_PTR pMechanism,
                              CK_OBJECT_HANDLE hKey) {
  return px_mech_key_init(hSession, "C_DecryptInit", c_decryptinit_3,
                          px_decryptinittyped_3, pMechanism, hKey);
}

PX_EXPORT CK_RV C_Decrypt(CK_SESSION_HANDLE hSession,
                          CK_BYTE_PTR pEncryptedData,
                          CK_ULONG ulEncryptedDataLen, CK_BYTE_PTR pData,
                          CK_ULONG_PTR pulDataLen) {
  return px_data_out(hSession, c_Decrypt, "C_Decrypt", c_decrypt_3,
                     pEncryptedData, ulEncryptedDataLen, pData, pulDataLen);
}

PX_EXPORT CK_RV C_DecryptUpdate(CK_SESSION_HANDLE hSession,
                                CK_BYTE_PTR pEncryptedPart,
                                CK_ULONG ulEncryptedPartLen, CK_BYTE_PTR pPart,
                                CK_ULONG_PTR pulPartLen) {
  return px_data_out(hSession, c_DecryptUpdate, "C_DecryptUpdate",
                     c_decryptupdate_3, pEncryptedPart, ulEncryptedPartLen,
                     pPart, pulPartLen);
}

PX_EXPORT CK_RV C_DecryptFinal(CK_SESSION_HANDLE hSession,
                               CK_BYTE_PTR pLastPart,
                               CK_ULONG_PTR pulLastPartLen) {
  return px_final_out(hSession, c_DecryptFinal, "C_DecryptFinal",
                      c_decryptfinal_3, pLastPart, pulLastPartLen);
}

/* ---- digests ---- */

static enum clnt_stat digest_init_send(struct px_call *call, const void *ctx,
                                       const struct px_mech_arg *ma,
                                       bool typed, void *res) {
  (void)ctx;
  px_session_handle session = (px_session_handle)call->s->remote;
  if (typed) {
    px_session_mechanism_typed_args a = {.session = session,
                                         .mechanism = ma->typed};
    return px_digestinittyped_3(a, res, call->c->clnt);
  }
  px_session_mechanism_args a = {.session = session, .mechanism = ma->raw};
  return c_digestinit_3(a, res, call->c->clnt);
}

PX_EXPORT CK_RV C_DigestInit(CK_SESSION_HANDLE hSession,
                             CK_MECHANISM_PTR pMechanism) {
  struct px_mech_arg ma;
  CK_RV rv = px_mech_arg_in(pMechanism, &ma);
  if (rv != CKR_OK)
    return px_state_is_initialized() ? rv : CKR_CRYPTOKI_NOT_INITIALIZED;
  struct px_call call;
  rv = px_session_enter(hSession, &call);
  if (rv != CKR_OK)
    return rv;
  px_out_cache_clear(&call.s->cache);
  px_rv res = 0;
  rv = px_mech_round_trip(&call, "C_DigestInit", &ma, digest_init_send, NULL,
                          &res);
  px_session_leave(&call);
  return rv == CKR_OK ? (CK_RV)res : rv;
}

PX_EXPORT CK_RV C_Digest(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData,
                         CK_ULONG ulDataLen, CK_BYTE_PTR pDigest,
                         CK_ULONG_PTR pulDigestLen) {
  return px_data_out(hSession, c_Digest, "C_Digest", c_digest_3, pData,
                     ulDataLen, pDigest, pulDigestLen);
}

PX_EXPORT CK_RV C_DigestUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart,
                               CK_ULONG ulPartLen) {
  return px_data_in(hSession, "C_DigestUpdate", c_digestupdate_3, pPart,
                    ulPartLen);
}

PX_EXPORT CK_RV C_DigestKey(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hKey) {
  SIMPLE_SESSION_CALL("C_DigestKey", c_digestkey_3, C_DigestKey_args,
                      .key = (px_object_handle)hKey);
}

PX_EXPORT CK_RV C_DigestFinal(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pDigest,
                              CK_ULONG_PTR pulDigestLen) {
  return px_final_out(hSession, c_DigestFinal, "C_DigestFinal", c_digestfinal_3,
                      pDigest, pulDigestLen);
}

/* ---- signatures ---- */

PX_EXPORT CK_RV C_SignInit(CK_SESSION_HANDLE hSession,
                           CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey) {
  return px_mech_key_init(hSession, "C_SignInit", c_signinit_3,
                          px_signinittyped_3, pMechanism, hKey);
}

PX_EXPORT CK_RV C_Sign(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData,
                       CK_ULONG ulDataLen, CK_BYTE_PTR pSignature,
                       CK_ULONG_PTR pulSignatureLen) {
  return px_data_out(hSession, c_Sign, "C_Sign", c_sign_3, pData, ulDataLen,
                     pSignature, pulSignatureLen);
}

PX_EXPORT CK_RV C_SignUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart,
                             CK_ULONG ulPartLen) {
  return px_data_in(hSession, "C_SignUpdate", c_signupdate_3, pPart, ulPartLen);
}

PX_EXPORT CK_RV C_SignFinal(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSignature,
                            CK_ULONG_PTR pulSignatureLen) {
  return px_final_out(hSession, c_SignFinal, "C_SignFinal", c_signfinal_3,
                      pSignature, pulSignatureLen);
}

PX_EXPORT CK_RV C_SignRecoverInit(CK_SESSION_HANDLE hSession,
                                  CK_MECHANISM_PTR pMechanism,
                                  CK_OBJECT_HANDLE hKey) {
  return px_mech_key_init(hSession, "C_SignRecoverInit", c_signrecoverinit_3,
                          px_signrecoverinittyped_3, pMechanism, hKey);
}

PX_EXPORT CK_RV C_SignRecover(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData,
                              CK_ULONG ulDataLen, CK_BYTE_PTR pSignature,
                              CK_ULONG_PTR pulSignatureLen) {
  return px_data_out(hSession, c_SignRecover, "C_SignRecover", c_signrecover_3,
                     pData, ulDataLen, pSignature, pulSignatureLen);
}

PX_EXPORT CK_RV C_VerifyInit(CK_SESSION_HANDLE hSession,
                             CK_MECHANISM_PTR pMechanism,
                             CK_OBJECT_HANDLE hKey) {
  return px_mech_key_init(hSession, "C_VerifyInit", c_verifyinit_3,
                          px_verifyinittyped_3, pMechanism, hKey);
}

PX_EXPORT CK_RV C_Verify(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData,
                         CK_ULONG ulDataLen, CK_BYTE_PTR pSignature,
                         CK_ULONG ulSignatureLen) {
  if (bad_buf(pData, ulDataLen) || bad_buf(pSignature, ulSignatureLen))
    return px_state_is_initialized() ? CKR_ARGUMENTS_BAD
                                     : CKR_CRYPTOKI_NOT_INITIALIZED;
  SIMPLE_SESSION_CALL("C_Verify", c_verify_3, C_Verify_args,
                      .data = {(u_int)ulDataLen, (char *)pData},
                      .signature = {(u_int)ulSignatureLen, (char *)pSignature});
}

PX_EXPORT CK_RV C_VerifyUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart,
                               CK_ULONG ulPartLen) {
  return px_data_in(hSession, "C_VerifyUpdate", c_verifyupdate_3, pPart,
                    ulPartLen);
}

PX_EXPORT CK_RV C_VerifyFinal(CK_SESSION_HANDLE hSession,
                              CK_BYTE_PTR pSignature,
                              CK_ULONG ulSignatureLen) {
  if (bad_buf(pSignature, ulSignatureLen))
    return px_state_is_initialized() ? CKR_ARGUMENTS_BAD
                                     : CKR_CRYPTOKI_NOT_INITIALIZED;
  SIMPLE_SESSION_CALL("C_VerifyFinal", c_verifyfinal_3, C_VerifyFinal_args,
                      .signature = {(u_int)ulSignatureLen, (char *)pSignature});
}

PX_EXPORT CK_RV C_VerifyRecoverInit(CK_SESSION_HANDLE hSession,
                                    CK_MECHANISM_PTR pMechanism,
                                    CK_OBJECT_HANDLE hKey) {
  return px_mech_key_init(hSession, "C_VerifyRecoverInit",
                          c_verifyrecoverinit_3, px_verifyrecoverinittyped_3,
                          pMechanism, hKey);
}

PX_EXPORT CK_RV C_VerifyRecover(CK_SESSION_HANDLE hSession,
                                CK_BYTE_PTR pSignature,
                                CK_ULONG ulSignatureLen, CK_BYTE_PTR pData,
                                CK_ULONG_PTR pulDataLen) {
  return px_data_out(hSession, c_VerifyRecover, "C_VerifyRecover",
                     c_verifyrecover_3, pSignature, ulSignatureLen, pData,
                     pulDataLen);
}

/* ---- dual-function ---- */

PX_EXPORT CK_RV C_DigestEncryptUpdate(CK_SESSION_HANDLE hSession,
                                      CK_BYTE_PTR pPart, CK_ULONG ulPartLen,
                                      CK_BYTE_PTR pEncryptedPart,
                                      CK_ULONG_PTR pulEncryptedPartLen) {
  return px_data_out(hSession, c_DigestEncryptUpdate, "C_DigestEncryptUpdate",
                     c_digestencryptupdate_3, pPart, ulPartLen, pEncryptedPart,
                     pulEncryptedPartLen);
}

PX_EXPORT CK_RV C_DecryptDigestUpdate(CK_SESSION_HANDLE hSession,
                                      CK_BYTE_PTR pEncryptedPart,
                                      CK_ULONG ulEncryptedPartLen,
                                      CK_BYTE_PTR pPart,
                                      CK_ULONG_PTR pulPartLen) {
  return px_data_out(hSession, c_DecryptDigestUpdate, "C_DecryptDigestUpdate",
                     c_decryptdigestupdate_3, pEncryptedPart,
                     ulEncryptedPartLen, pPart, pulPartLen);
}

PX_EXPORT CK_RV C_SignEncryptUpdate(CK_SESSION_HANDLE hSession,
                                    CK_BYTE_PTR pPart, CK_ULONG ulPartLen,
                                    CK_BYTE_PTR pEncryptedPart,
                                    CK_ULONG_PTR pulEncryptedPartLen) {
  return px_data_out(hSession, c_SignEncryptUpdate, "C_SignEncryptUpdate",
                     c_signencryptupdate_3, pPart, ulPartLen, pEncryptedPart,
                     pulEncryptedPartLen);
}

PX_EXPORT CK_RV C_DecryptVerifyUpdate(CK_SESSION_HANDLE hSession,
                                      CK_BYTE_PTR pEncryptedPart,
                                      CK_ULONG ulEncryptedPartLen,
                                      CK_BYTE_PTR pPart,
                                      CK_ULONG_PTR pulPartLen) {
  return px_data_out(hSession, c_DecryptVerifyUpdate, "C_DecryptVerifyUpdate",
                     c_decryptverifyupdate_3, pEncryptedPart,
                     ulEncryptedPartLen, pPart, pulPartLen);
}
