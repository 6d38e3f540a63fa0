/*
 * PKCS#11 key management, random number and legacy parallel functions.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "calls.h"

/* ---- keys ---- */

static enum clnt_stat generate_key_send(struct px_call *call, const void *ctx,
                                        const struct px_mech_arg *ma,
                                        bool typed, void *res) {
  const px_template *t = ctx;
  px_session_handle session = (px_session_handle)call->s->remote;
  if (typed) {
    px_GenerateKeyTyped_args a = {
        .session = session, .mechanism = ma->typed, .template = *t};
    return px_generatekeytyped_3(a, res, call->c->clnt);
  }
  C_GenerateKey_args a = {
      .session = session, .mechanism = ma->raw, .template = *t};
  return c_generatekey_3(a, res, call->c->clnt);
}

PX_EXPORT CK_RV C_GenerateKey(CK_SESSION_HANDLE hSession,
                              CK_MECHANISM_PTR pMechanism,
                              CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount,
                              CK_OBJECT_HANDLE_PTR phKey) {
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  if (phKey == NULL)
    return CKR_ARGUMENTS_BAD;
  struct px_mech_arg ma;
  CK_RV rv = px_mech_arg_in(pMechanism, &ma);
  if (rv != CKR_OK)
    return rv;
  px_template t;
  rv = px_template_in(pTemplate, ulCount, &t);
  if (rv != CKR_OK)
    return rv;
  struct px_call call;
  rv = px_session_enter(hSession, &call);
  if (rv == CKR_OK) {
    px_object_ret res = {0, 0};
    rv = px_mech_round_trip(&call, "C_GenerateKey", &ma, generate_key_send, &t,
                            &res);
    px_session_leave(&call);
    if (rv == CKR_OK)
      rv = (CK_RV)res.rv;
    if (rv == CKR_OK)
      *phKey = (CK_OBJECT_HANDLE)res.object;
  }
  px_template_free(&t);
  return rv;
}

static enum clnt_stat generate_key_pair_send(struct px_call *call,
                                             const void *ctx,
                                             const struct px_mech_arg *ma,
                                             bool typed, void *res) {
  const px_template *t = ctx; /* public, private */
  px_session_handle session = (px_session_handle)call->s->remote;
  if (typed) {
    px_GenerateKeyPairTyped_args a = {.session = session,
                                      .mechanism = ma->typed,
                                      .publicKeyTemplate = t[0],
                                      .privateKeyTemplate = t[1]};
    return px_generatekeypairtyped_3(a, res, call->c->clnt);
  }
  C_GenerateKeyPair_args a = {.session = session,
                              .mechanism = ma->raw,
                              .publicKeyTemplate = t[0],
                              .privateKeyTemplate = t[1]};
  return c_generatekeypair_3(a, res, call->c->clnt);
}

PX_EXPORT CK_RV C_GenerateKeyPair(
    CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism,
    CK_ATTRIBUTE_PTR pPublicKeyTemplate, CK_ULONG ulPublicKeyAttributeCount,
    CK_ATTRIBUTE_PTR pPrivateKeyTemplate, CK_ULONG ulPrivateKeyAttributeCount,
    CK_OBJECT_HANDLE_PTR phPublicKey, CK_OBJECT_HANDLE_PTR phPrivateKey) {
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  if (phPublicKey == NULL || phPrivateKey == NULL)
    return CKR_ARGUMENTS_BAD;
  struct px_mech_arg ma;
  CK_RV rv = px_mech_arg_in(pMechanism, &ma);
  if (rv != CKR_OK)
    return rv;
  px_template pub, priv;
  rv = px_template_in(pPublicKeyTemplate, ulPublicKeyAttributeCount, &pub);
  if (rv != CKR_OK)
    return rv;
  rv = px_template_in(pPrivateKeyTemplate, ulPrivateKeyAttributeCount, &priv);
  if (rv != CKR_OK) {
    px_template_free(&pub);
    return rv;
  }
  struct px_call call;
  rv = px_session_enter(hSession, &call);
  if (rv == CKR_OK) {
    const px_template both[2] = {pub, priv};
    C_GenerateKeyPair_ret res = {0, 0, 0};
    rv = px_mech_round_trip(&call, "C_GenerateKeyPair", &ma,
                            generate_key_pair_send, both, &res);
    px_session_leave(&call);
    if (rv == CKR_OK)
      rv = (CK_RV)res.rv;
    if (rv == CKR_OK) {
      *phPublicKey = (CK_OBJECT_HANDLE)res.publicKey;
      *phPrivateKey = (CK_OBJECT_HANDLE)res.privateKey;
    }
  }
  px_template_free(&pub);
  px_template_free(&priv);
  return rv;
}

struct wrap_ctx {
  struct px_mech_arg mech;
  CK_OBJECT_HANDLE wrapping;
  CK_OBJECT_HANDLE key;
};

static enum clnt_stat wrap_send(struct px_call *call, const void *ctx,
                                const struct px_mech_arg *ma, bool typed,
                                void *res) {
  const struct wrap_ctx *w = ctx;
  px_session_handle session = (px_session_handle)call->s->remote;
  if (typed) {
    px_WrapKeyTyped_args a = {.session = session,
                              .mechanism = ma->typed,
                              .wrappingKey = (px_object_handle)w->wrapping,
                              .key = (px_object_handle)w->key};
    return px_wrapkeytyped_3(a, res, call->c->clnt);
  }
  C_WrapKey_args a = {.session = session,
                      .mechanism = ma->raw,
                      .wrappingKey = (px_object_handle)w->wrapping,
                      .key = (px_object_handle)w->key};
  return c_wrapkey_3(a, res, call->c->clnt);
}

static CK_RV wrap_rpc(struct px_call *call, const char *what, const void *ctx,
                      px_bytes_ret *res) {
  const struct wrap_ctx *w = ctx;
  return px_mech_round_trip(call, what, &w->mech, wrap_send, w, res);
}

PX_EXPORT CK_RV C_WrapKey(CK_SESSION_HANDLE hSession,
                          CK_MECHANISM_PTR pMechanism,
                          CK_OBJECT_HANDLE hWrappingKey, CK_OBJECT_HANDLE hKey,
                          CK_BYTE_PTR pWrappedKey,
                          CK_ULONG_PTR pulWrappedKeyLen) {
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  if (pulWrappedKeyLen == NULL)
    return CKR_ARGUMENTS_BAD;
  struct wrap_ctx w = {.wrapping = hWrappingKey, .key = hKey};
  CK_RV rv = px_mech_arg_in(pMechanism, &w.mech);
  if (rv != CKR_OK)
    return rv;
  /* Cache key: both handles and the mechanism with its parameter contents. */
  unsigned char *mkey;
  size_t mlen;
  if (!px_mech_arg_key(&w.mech, &mkey, &mlen))
    return CKR_HOST_MEMORY;
  CK_ULONG hdr[2] = {hWrappingKey, hKey};
  size_t klen = sizeof hdr + mlen;
  unsigned char *key = malloc(klen);
  if (key == NULL) {
    px_secure_free(mkey, mlen);
    return CKR_HOST_MEMORY;
  }
  memcpy(key, hdr, sizeof hdr);
  memcpy(key + sizeof hdr, mkey, mlen);
  px_secure_free(mkey, mlen);
  rv = px_out_call(hSession, c_WrapKey, "C_WrapKey", key, klen, wrap_rpc, &w,
                   pWrappedKey, pulWrappedKeyLen);
  px_secure_free(key, klen);
  return rv;
}

struct unwrap_ctx {
  CK_OBJECT_HANDLE unwrapping;
  const void *wrapped;
  CK_ULONG wrapped_len;
  px_template template;
};

static enum clnt_stat unwrap_send(struct px_call *call, const void *ctx,
                                  const struct px_mech_arg *ma, bool typed,
                                  void *res) {
  const struct unwrap_ctx *u = ctx;
  px_session_handle session = (px_session_handle)call->s->remote;
  if (typed) {
    px_UnwrapKeyTyped_args a = {
        .session = session,
        .mechanism = ma->typed,
        .unwrappingKey = (px_object_handle)u->unwrapping,
        .template = u->template};
    BYTES(a.wrappedKey, u->wrapped, u->wrapped_len);
    return px_unwrapkeytyped_3(a, res, call->c->clnt);
  }
  C_UnwrapKey_args a = {.session = session,
                        .mechanism = ma->raw,
                        .unwrappingKey = (px_object_handle)u->unwrapping,
                        .template = u->template};
  BYTES(a.wrappedKey, u->wrapped, u->wrapped_len);
  return c_unwrapkey_3(a, res, call->c->clnt);
}

PX_EXPORT CK_RV C_UnwrapKey(CK_SESSION_HANDLE hSession,
                            CK_MECHANISM_PTR pMechanism,
                            CK_OBJECT_HANDLE hUnwrappingKey,
                            CK_BYTE_PTR pWrappedKey, CK_ULONG ulWrappedKeyLen,
                            CK_ATTRIBUTE_PTR pTemplate,
                            CK_ULONG ulAttributeCount,
                            CK_OBJECT_HANDLE_PTR phKey) {
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  if (phKey == NULL || bad_buf(pWrappedKey, ulWrappedKeyLen))
    return CKR_ARGUMENTS_BAD;
  struct px_mech_arg ma;
  CK_RV rv = px_mech_arg_in(pMechanism, &ma);
  if (rv != CKR_OK)
    return rv;
  px_template t;
  rv = px_template_in(pTemplate, ulAttributeCount, &t);
  if (rv != CKR_OK)
    return rv;
  struct px_call call;
  rv = px_session_enter(hSession, &call);
  if (rv == CKR_OK) {
    struct unwrap_ctx u = {hUnwrappingKey, pWrappedKey, ulWrappedKeyLen, t};
    px_object_ret res = {0, 0};
    rv = px_mech_round_trip(&call, "C_UnwrapKey", &ma, unwrap_send, &u, &res);
    px_session_leave(&call);
    if (rv == CKR_OK)
      rv = (CK_RV)res.rv;
    if (rv == CKR_OK)
      *phKey = (CK_OBJECT_HANDLE)res.object;
  }
  px_template_free(&t);
  return rv;
}

struct derive_ctx {
  CK_OBJECT_HANDLE base;
  px_template template;
};

static enum clnt_stat derive_send(struct px_call *call, const void *ctx,
                                  const struct px_mech_arg *ma, bool typed,
                                  void *res) {
  const struct derive_ctx *dc = ctx;
  px_session_handle session = (px_session_handle)call->s->remote;
  if (typed) {
    px_DeriveKeyTyped_args a = {.session = session,
                                .mechanism = ma->typed,
                                .baseKey = (px_object_handle)dc->base,
                                .template = dc->template};
    return px_derivekeytyped_3(a, res, call->c->clnt);
  }
  C_DeriveKey_args a = {.session = session,
                        .mechanism = ma->raw,
                        .baseKey = (px_object_handle)dc->base,
                        .template = dc->template};
  return c_derivekey_3(a, res, call->c->clnt);
}

PX_EXPORT CK_RV C_DeriveKey(CK_SESSION_HANDLE hSession,
                            CK_MECHANISM_PTR pMechanism,
                            CK_OBJECT_HANDLE hBaseKey,
                            CK_ATTRIBUTE_PTR pTemplate,
                            CK_ULONG ulAttributeCount,
                            CK_OBJECT_HANDLE_PTR phKey) {
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  if (phKey == NULL)
    return CKR_ARGUMENTS_BAD;
  struct px_mech_arg ma;
  CK_RV rv = px_mech_arg_in(pMechanism, &ma);
  if (rv != CKR_OK)
    return rv;
  px_template t;
  rv = px_template_in(pTemplate, ulAttributeCount, &t);
  if (rv != CKR_OK)
    return rv;
  struct px_call call;
  rv = px_session_enter(hSession, &call);
  if (rv == CKR_OK) {
    struct derive_ctx dc = {hBaseKey, t};
    px_object_ret res = {0, 0};
    rv = px_mech_round_trip(&call, "C_DeriveKey", &ma, derive_send, &dc, &res);
    px_session_leave(&call);
    if (rv == CKR_OK)
      rv = (CK_RV)res.rv;
    if (rv == CKR_OK)
      *phKey = (CK_OBJECT_HANDLE)res.object;
  }
  px_template_free(&t);
  return rv;
}

/* ---- random ---- */

PX_EXPORT CK_RV C_SeedRandom(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSeed,
                             CK_ULONG ulSeedLen) {
  if (bad_buf(pSeed, ulSeedLen))
    return px_state_is_initialized() ? CKR_ARGUMENTS_BAD
                                     : CKR_CRYPTOKI_NOT_INITIALIZED;
  SIMPLE_SESSION_CALL("C_SeedRandom", c_seedrandom_3, C_SeedRandom_args,
                      .seed = {(u_int)ulSeedLen, (char *)pSeed});
}

PX_EXPORT CK_RV C_GenerateRandom(CK_SESSION_HANDLE hSession,
                                 CK_BYTE_PTR RandomData, CK_ULONG ulRandomLen) {
  if (bad_buf(RandomData, ulRandomLen))
    return px_state_is_initialized() ? CKR_ARGUMENTS_BAD
                                     : CKR_CRYPTOKI_NOT_INITIALIZED;
  struct px_call call;
  CK_RV rv = px_session_enter(hSession, &call);
  if (rv != CKR_OK)
    return rv;
  C_GenerateRandom_args a = {.session = (px_session_handle)call.s->remote,
                             .length = (px_ulong)ulRandomLen};
  px_bytes_ret res;
  memset(&res, 0, sizeof res);
  rv = PX_RPC(call.c, "C_GenerateRandom",
              c_generaterandom_3(a, &res, call.c->clnt));
  px_session_leave(&call);
  if (rv == CKR_OK)
    rv = (CK_RV)res.rv;
  if (rv == CKR_OK) {
    if (res.data.px_bytes_len != ulRandomLen) {
      px_debug("C_GenerateRandom: got %u bytes, asked %lu",
               res.data.px_bytes_len, (unsigned long)ulRandomLen);
      rv = CKR_DEVICE_ERROR;
    } else if (ulRandomLen > 0) {
      memcpy(RandomData, res.data.px_bytes_val, ulRandomLen);
    }
  }
  if (res.data.px_bytes_val != NULL)
    explicit_bzero(res.data.px_bytes_val, res.data.px_bytes_len);
  xdr_free((xdrproc_t)xdr_px_bytes_ret, (char *)&res);
  return rv;
}

/* ---- legacy parallel functions ---- */

PX_EXPORT CK_RV C_GetFunctionStatus(CK_SESSION_HANDLE hSession) {
  SIMPLE_SESSION_CALL("C_GetFunctionStatus", c_getfunctionstatus_3,
                      px_session_args, );
}

PX_EXPORT CK_RV C_CancelFunction(CK_SESSION_HANDLE hSession) {
  SIMPLE_SESSION_CALL("C_CancelFunction", c_cancelfunction_3,
                      px_session_args, );
}
