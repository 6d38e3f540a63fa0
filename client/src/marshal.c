#include <stdlib.h>
#include <string.h>

#include "attribute_shapes.gen.h"
#include "marshal.h"

/* Largest output buffer announced per attribute in C_GetAttributeValue. */
#define PX_MAX_ATTR_BUFFER (16UL * 1024 * 1024)

/* Nested templates (CKA_WRAP_TEMPLATE, CKA_UNWRAP_TEMPLATE,
 * CKA_DERIVE_TEMPLATE: CK_ATTRIBUTE arrays) hold pointers, which raw bytes
 * cannot carry. Every other shape, CK_ULONG arrays such as
 * CKA_ALLOWED_MECHANISMS included, is plain bytes in this process's layout
 * (rpc/attributes.table). */
static bool attr_has_pointers(CK_ATTRIBUTE_TYPE type) {
  return px_attr_shape_of(type) == PX_ATTR_TEMPLATE;
}

CK_RV px_template_in(const CK_ATTRIBUTE *t, CK_ULONG n, px_template *out) {
  memset(out, 0, sizeof *out);
  if (n == 0)
    return CKR_OK;
  if (t == NULL)
    return CKR_ARGUMENTS_BAD;
  if (n > 65536)
    return CKR_TEMPLATE_INCONSISTENT;
  px_attribute *a = calloc(n, sizeof *a);
  if (a == NULL)
    return CKR_HOST_MEMORY;
  for (CK_ULONG i = 0; i < n; i++) {
    if (t[i].pValue == NULL && t[i].ulValueLen != 0) {
      free(a);
      return CKR_ARGUMENTS_BAD;
    }
    if (t[i].ulValueLen > UINT32_MAX) {
      free(a);
      return CKR_ATTRIBUTE_VALUE_INVALID;
    }
    if (attr_has_pointers(t[i].type) && t[i].ulValueLen != 0) {
      px_debug("template: attribute 0x%lx holds pointers; not supported",
               (unsigned long)t[i].type);
      free(a);
      return CKR_ATTRIBUTE_VALUE_INVALID;
    }
    a[i].type = (px_attribute_type)t[i].type;
    a[i].value.value_len = (u_int)t[i].ulValueLen;
    a[i].value.value_val = t[i].pValue;
    a[i].valueLen = (px_ulong)t[i].ulValueLen;
  }
  out->px_template_len = (u_int)n;
  out->px_template_val = a;
  return CKR_OK;
}

/* A size query is an empty value; an output buffer is sent as a zeroed
 * value of the buffer's size (servers size the backend buffer from it). */
CK_RV px_template_query(const CK_ATTRIBUTE *t, CK_ULONG n, px_template *out) {
  memset(out, 0, sizeof *out);
  if (n == 0)
    return CKR_OK;
  if (t == NULL)
    return CKR_ARGUMENTS_BAD;
  if (n > 65536)
    return CKR_TEMPLATE_INCONSISTENT;
  size_t total = 0;
  for (CK_ULONG i = 0; i < n; i++) {
    if (t[i].pValue != NULL && !attr_has_pointers(t[i].type))
      total += t[i].ulValueLen > PX_MAX_ATTR_BUFFER ? PX_MAX_ATTR_BUFFER
                                                     : t[i].ulValueLen;
  }
  /* One block: the attribute array followed by the zeroed buffers. */
  px_attribute *a = calloc(1, n * sizeof *a + total);
  if (a == NULL)
    return CKR_HOST_MEMORY;
  char *buf = (char *)(a + n);
  for (CK_ULONG i = 0; i < n; i++) {
    a[i].type = (px_attribute_type)t[i].type;
    if (t[i].pValue == NULL || attr_has_pointers(t[i].type)) {
      a[i].valueLen = (px_ulong)t[i].ulValueLen;
      continue;
    }
    size_t len = t[i].ulValueLen > PX_MAX_ATTR_BUFFER ? PX_MAX_ATTR_BUFFER
                                                       : t[i].ulValueLen;
    a[i].value.value_len = (u_int)len;
    a[i].value.value_val = buf;
    a[i].valueLen = (px_ulong)len;
    buf += len;
  }
  out->px_template_len = (u_int)n;
  out->px_template_val = a;
  return CKR_OK;
}

void px_template_free(px_template *t) {
  free(t->px_template_val);
  t->px_template_val = NULL;
  t->px_template_len = 0;
}

/* Order of precedence among the per-attribute errors (PKCS#11 lets any of
 * them be returned; keep the server's when it gave one). */
CK_RV px_template_out(CK_ATTRIBUTE *t, CK_ULONG n, const px_template *reply,
                      CK_RV server_rv) {
  if (server_rv != CKR_OK && server_rv != CKR_ATTRIBUTE_SENSITIVE &&
      server_rv != CKR_ATTRIBUTE_TYPE_INVALID &&
      server_rv != CKR_BUFFER_TOO_SMALL)
    return server_rv;
  if (reply->px_template_len != n) {
    px_debug("C_GetAttributeValue: reply has %u attributes, asked %lu",
             reply->px_template_len, (unsigned long)n);
    return CKR_DEVICE_ERROR;
  }
  CK_RV rv = server_rv;
  for (CK_ULONG i = 0; i < n; i++) {
    const px_attribute *r = &reply->px_template_val[i];
    u_int got = r->value.value_len;
    /* Caml Crush sends an unavailable attribute as an empty value with
     * valueLen 0 (not -1) beside a non-OK rv; an empty attribute in a
     * failed call is reported unavailable for that reason. */
    if (r->valueLen == -1 || (server_rv != CKR_OK && got == 0 && r->valueLen == 0)) {
      t[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
      continue;
    }
    /* A nested template's bytes from the wire cannot be a CK_ATTRIBUTE
     * array of this process: unavailable, in the size query too, so that
     * the query and the call agree. */
    if (attr_has_pointers(t[i].type) && (got > 0 || r->valueLen > 0)) {
      t[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
      if (rv == CKR_OK)
        rv = CKR_ATTRIBUTE_SENSITIVE;
      continue;
    }
    if (t[i].pValue == NULL) {
      t[i].ulValueLen = got > 0 ? (CK_ULONG)got : (CK_ULONG)r->valueLen;
      continue;
    }
    CK_ULONG need = got > 0 ? (CK_ULONG)got : (CK_ULONG)r->valueLen;
    if (need > t[i].ulValueLen) {
      t[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
      if (rv == CKR_OK)
        rv = CKR_BUFFER_TOO_SMALL;
      continue;
    }
    if (got > 0)
      memcpy(t[i].pValue, r->value.value_val, got);
    t[i].ulValueLen = got;
  }
  return rv;
}

/* Mechanisms whose parameter structures contain pointers. Their
 * parameters cannot travel as raw bytes in protocol version 3. */
bool px_mech_param_has_pointers(CK_MECHANISM_TYPE m) {
  switch (m) {
  case CKM_RSA_PKCS_OAEP:
  case CKM_RSA_AES_KEY_WRAP:
  case CKM_AES_GCM:
  case CKM_AES_CCM:
  case CKM_ECDH1_DERIVE:
  case CKM_ECDH1_COFACTOR_DERIVE:
  case CKM_ECMQV_DERIVE:
  case CKM_X9_42_DH_DERIVE:
  case CKM_X9_42_DH_HYBRID_DERIVE:
  case CKM_X9_42_MQV_DERIVE:
  case CKM_CONCATENATE_BASE_AND_DATA:
  case CKM_CONCATENATE_DATA_AND_BASE:
  case CKM_XOR_BASE_AND_DATA:
  case CKM_DES_ECB_ENCRYPT_DATA:
  case CKM_DES_CBC_ENCRYPT_DATA:
  case CKM_DES3_ECB_ENCRYPT_DATA:
  case CKM_DES3_CBC_ENCRYPT_DATA:
  case CKM_AES_ECB_ENCRYPT_DATA:
  case CKM_AES_CBC_ENCRYPT_DATA:
  case CKM_PKCS5_PBKD2:
  case CKM_PBA_SHA1_WITH_SHA1_HMAC:
  case CKM_KEY_WRAP_SET_OAEP:
  case CKM_SSL3_PRE_MASTER_KEY_GEN:
  case CKM_SSL3_MASTER_KEY_DERIVE:
  case CKM_SSL3_KEY_AND_MAC_DERIVE:
  case CKM_SSL3_MASTER_KEY_DERIVE_DH:
  case CKM_TLS_MASTER_KEY_DERIVE:
  case CKM_TLS_KEY_AND_MAC_DERIVE:
  case CKM_TLS_MASTER_KEY_DERIVE_DH:
  case CKM_TLS_PRF:
  case CKM_WTLS_MASTER_KEY_DERIVE:
  case CKM_WTLS_PRF:
  case CKM_ECDH_AES_KEY_WRAP:
  case 0x00004021UL: /* CKM_CHACHA20_POLY1305 */
  case 0x00004006UL: /* CKM_SALSA20_POLY1305 */
  case 0x0000402aUL: /* CKM_HKDF_DERIVE */
  case 0x0000402bUL: /* CKM_HKDF_DATA */
  case CKM_EDDSA: /* CK_EDDSA_PARAMS has pContextData */
    return true;
  default:
    return false;
  }
}

CK_RV px_mechanism_in(const CK_MECHANISM *m, px_mechanism *out) {
  memset(out, 0, sizeof *out);
  if (m == NULL)
    return CKR_ARGUMENTS_BAD;
  if (m->pParameter == NULL && m->ulParameterLen != 0)
    return CKR_ARGUMENTS_BAD;
  if (m->ulParameterLen > UINT32_MAX)
    return CKR_MECHANISM_PARAM_INVALID;
  if (m->ulParameterLen != 0 && px_mech_param_has_pointers(m->mechanism)) {
    px_debug("mechanism 0x%lx: parameters with pointers are not supported "
             "by protocol version 3",
             (unsigned long)m->mechanism);
    return CKR_MECHANISM_PARAM_INVALID;
  }
  out->mechanism = (px_mechanism_type)m->mechanism;
  out->parameter.parameter_len = (u_int)m->ulParameterLen;
  out->parameter.parameter_val = m->pParameter;
  return CKR_OK;
}

/* ---- typed mechanism parameters (procedures 73..84) ---- */

/* OASIS layouts of parameter structs p11-kit's header lacks. */
struct px_ccm_params {
  CK_ULONG ulDataLen;
  CK_BYTE_PTR pNonce;
  CK_ULONG ulNonceLen;
  CK_BYTE_PTR pAAD;
  CK_ULONG ulAADLen;
  CK_ULONG ulMACLen;
};
struct px_eddsa_params {
  CK_BBOOL phFlag;
  CK_ULONG ulContextDataLen;
  CK_BYTE_PTR pContextData;
};
struct px_x9_42_dh1_derive_params {
  CK_ULONG kdf;
  CK_ULONG ulOtherInfoLen;
  CK_BYTE_PTR pOtherInfo;
  CK_ULONG ulPublicDataLen;
  CK_BYTE_PTR pPublicData;
};
/* CK_GCM_PARAMS of PKCS#11 2.30 drafts (no ulIvBits), still passed by some
 * applications; told apart from the 2.40 struct by its size. */
struct px_gcm_params_v230 {
  CK_BYTE_PTR pIv;
  CK_ULONG ulIvLen;
  CK_BYTE_PTR pAAD;
  CK_ULONG ulAADLen;
  CK_ULONG ulTagBits;
};

/* A pointer/length pair as an XDR opaque; NULL with a length, or a length
 * XDR cannot carry, is CKR_MECHANISM_PARAM_INVALID. */
static CK_RV opaque_in(const void *ptr, CK_ULONG len, u_int *out_len,
                       char **out_val) {
  if ((ptr == NULL && len != 0) || len > UINT32_MAX)
    return CKR_MECHANISM_PARAM_INVALID;
  *out_len = (u_int)len;
  *out_val = len != 0 ? (char *)ptr : NULL;
  return CKR_OK;
}
#define OPAQUE_IN(ptr, len, field)                                             \
  opaque_in((ptr), (len), &(field##_len), &(field##_val))

static bool ulong_param_mech(CK_MECHANISM_TYPE m) {
  switch (m) {
  case CKM_MD5_HMAC_GENERAL:
  case CKM_SHA_1_HMAC_GENERAL:
  case CKM_SHA224_HMAC_GENERAL:
  case CKM_SHA256_HMAC_GENERAL:
  case CKM_SHA384_HMAC_GENERAL:
  case CKM_SHA512_HMAC_GENERAL:
  case CKM_SHA512_224_HMAC_GENERAL:
  case CKM_SHA512_256_HMAC_GENERAL:
  case CKM_AES_MAC_GENERAL:
  case CKM_AES_CMAC_GENERAL:
  case CKM_DES3_MAC_GENERAL:
  case CKM_DES3_CMAC_GENERAL:
  case CKM_EXTRACT_KEY_FROM_KEY:
    return true;
  default:
    return false;
  }
}

/* The typed form of a mechanism whose parameter struct this library
 * knows. Returns CKR_OK with kind PX_MP_RAW for the others. */
static CK_RV typed_in(const CK_MECHANISM *m, px_mech_param *p) {
  const void *pp = m->pParameter;
  CK_ULONG len = m->ulParameterLen;
  p->kind = PX_MP_RAW;
  p->px_mech_param_u.raw.raw_len = (u_int)len;
  p->px_mech_param_u.raw.raw_val = (char *)pp;
  if (pp == NULL && len == 0) {
    p->kind = PX_MP_NONE;
    return CKR_OK;
  }
  switch (m->mechanism) {
  case CKM_RSA_PKCS_OAEP: {
    if (len != sizeof(CK_RSA_PKCS_OAEP_PARAMS))
      return CKR_MECHANISM_PARAM_INVALID;
    const CK_RSA_PKCS_OAEP_PARAMS *o = pp;
    px_mp_rsa_pkcs_oaep *t = &p->px_mech_param_u.oaep;
    p->kind = PX_MP_RSA_PKCS_OAEP;
    t->hashAlg = (px_mechanism_type)o->hash_alg;
    t->mgf = (px_ulong)o->mgf;
    t->source = (px_ulong)o->source;
    return OPAQUE_IN(o->source_data, o->source_data_len,
                     t->sourceData.sourceData);
  }
  case CKM_RSA_PKCS_PSS:
  case CKM_SHA1_RSA_PKCS_PSS:
  case CKM_SHA224_RSA_PKCS_PSS:
  case CKM_SHA256_RSA_PKCS_PSS:
  case CKM_SHA384_RSA_PKCS_PSS:
  case CKM_SHA512_RSA_PKCS_PSS: {
    if (len != sizeof(CK_RSA_PKCS_PSS_PARAMS))
      return CKR_OK; /* pointer free: the module judges the raw bytes */
    const CK_RSA_PKCS_PSS_PARAMS *o = pp;
    p->kind = PX_MP_RSA_PKCS_PSS;
    p->px_mech_param_u.pss.hashAlg = (px_mechanism_type)o->hash_alg;
    p->px_mech_param_u.pss.mgf = (px_ulong)o->mgf;
    p->px_mech_param_u.pss.sLen = (px_ulong)o->s_len;
    return CKR_OK;
  }
  case CKM_AES_GCM: {
    px_mp_gcm *t = &p->px_mech_param_u.gcm;
    CK_RV rv;
    p->kind = PX_MP_GCM;
    if (len == sizeof(CK_GCM_PARAMS)) {
      const CK_GCM_PARAMS *o = pp;
      t->ivBits = (px_ulong)o->iv_bits;
      t->tagBits = (px_ulong)o->tag_bits;
      rv = OPAQUE_IN(o->iv_ptr, o->iv_len, t->iv.iv);
      if (rv == CKR_OK)
        rv = OPAQUE_IN(o->aad_ptr, o->aad_len, t->aad.aad);
      return rv;
    }
    if (len == sizeof(struct px_gcm_params_v230)) {
      const struct px_gcm_params_v230 *o = pp;
      t->ivBits = (px_ulong)o->ulIvLen * 8;
      t->tagBits = (px_ulong)o->ulTagBits;
      rv = OPAQUE_IN(o->pIv, o->ulIvLen, t->iv.iv);
      if (rv == CKR_OK)
        rv = OPAQUE_IN(o->pAAD, o->ulAADLen, t->aad.aad);
      return rv;
    }
    return CKR_MECHANISM_PARAM_INVALID;
  }
  case CKM_AES_CCM: {
    if (len != sizeof(struct px_ccm_params))
      return CKR_MECHANISM_PARAM_INVALID;
    const struct px_ccm_params *o = pp;
    px_mp_ccm *t = &p->px_mech_param_u.ccm;
    p->kind = PX_MP_CCM;
    t->dataLen = (px_ulong)o->ulDataLen;
    t->macLen = (px_ulong)o->ulMACLen;
    CK_RV rv = OPAQUE_IN(o->pNonce, o->ulNonceLen, t->nonce.nonce);
    if (rv == CKR_OK)
      rv = OPAQUE_IN(o->pAAD, o->ulAADLen, t->aad.aad);
    return rv;
  }
  case CKM_AES_CTR: {
    if (len != sizeof(CK_AES_CTR_PARAMS))
      return CKR_OK;
    const CK_AES_CTR_PARAMS *o = pp;
    p->kind = PX_MP_AES_CTR;
    p->px_mech_param_u.aesCtr.counterBits = (px_ulong)o->counter_bits;
    memcpy(p->px_mech_param_u.aesCtr.cb, o->cb, sizeof o->cb);
    return CKR_OK;
  }
  case CKM_ECDH1_DERIVE:
  case CKM_ECDH1_COFACTOR_DERIVE: {
    if (len != sizeof(CK_ECDH1_DERIVE_PARAMS))
      return CKR_MECHANISM_PARAM_INVALID;
    const CK_ECDH1_DERIVE_PARAMS *o = pp;
    px_mp_ecdh1_derive *t = &p->px_mech_param_u.ecdh1;
    p->kind = PX_MP_ECDH1_DERIVE;
    t->kdf = (px_ulong)o->kdf;
    CK_RV rv = OPAQUE_IN(o->shared_data, o->shared_data_len,
                         t->sharedData.sharedData);
    if (rv == CKR_OK)
      rv = OPAQUE_IN(o->public_data, o->public_data_len,
                     t->publicData.publicData);
    return rv;
  }
  case CKM_X9_42_DH_DERIVE: {
    if (len != sizeof(struct px_x9_42_dh1_derive_params))
      return CKR_MECHANISM_PARAM_INVALID;
    const struct px_x9_42_dh1_derive_params *o = pp;
    px_mp_x9_42_dh1_derive *t = &p->px_mech_param_u.x942dh1;
    p->kind = PX_MP_X9_42_DH1_DERIVE;
    t->kdf = (px_ulong)o->kdf;
    CK_RV rv = OPAQUE_IN(o->pOtherInfo, o->ulOtherInfoLen,
                         t->otherInfo.otherInfo);
    if (rv == CKR_OK)
      rv = OPAQUE_IN(o->pPublicData, o->ulPublicDataLen,
                     t->publicData.publicData);
    return rv;
  }
  case CKM_DES_ECB_ENCRYPT_DATA:
  case CKM_DES3_ECB_ENCRYPT_DATA:
  case CKM_AES_ECB_ENCRYPT_DATA:
  case CKM_CAMELLIA_ECB_ENCRYPT_DATA:
  case CKM_ARIA_ECB_ENCRYPT_DATA:
  case CKM_CONCATENATE_BASE_AND_DATA:
  case CKM_CONCATENATE_DATA_AND_BASE:
  case CKM_XOR_BASE_AND_DATA: {
    if (len != sizeof(CK_KEY_DERIVATION_STRING_DATA))
      return CKR_MECHANISM_PARAM_INVALID;
    const CK_KEY_DERIVATION_STRING_DATA *o = pp;
    p->kind = PX_MP_KEY_DERIVATION_STRING_DATA;
    return OPAQUE_IN(o->string_data, o->string_data_len,
                     p->px_mech_param_u.stringData.stringData);
  }
  case CKM_AES_CBC_ENCRYPT_DATA:
  case CKM_CAMELLIA_CBC_ENCRYPT_DATA:
  case CKM_ARIA_CBC_ENCRYPT_DATA: {
    if (len != sizeof(CK_AES_CBC_ENCRYPT_DATA_PARAMS))
      return CKR_MECHANISM_PARAM_INVALID;
    const CK_AES_CBC_ENCRYPT_DATA_PARAMS *o = pp;
    px_mp_aes_cbc_encrypt_data *t = &p->px_mech_param_u.aesCbcData;
    p->kind = PX_MP_AES_CBC_ENCRYPT_DATA;
    memcpy(t->iv, o->iv, sizeof o->iv);
    return OPAQUE_IN(o->data_params, o->length, t->data.data);
  }
  case CKM_DES_CBC_ENCRYPT_DATA:
  case CKM_DES3_CBC_ENCRYPT_DATA: {
    if (len != sizeof(CK_DES_CBC_ENCRYPT_DATA_PARAMS))
      return CKR_MECHANISM_PARAM_INVALID;
    const CK_DES_CBC_ENCRYPT_DATA_PARAMS *o = pp;
    px_mp_des_cbc_encrypt_data *t = &p->px_mech_param_u.desCbcData;
    p->kind = PX_MP_DES_CBC_ENCRYPT_DATA;
    memcpy(t->iv, o->iv, sizeof o->iv);
    return OPAQUE_IN(o->data_params, o->length, t->data.data);
  }
  case CKM_EDDSA: {
    if (len != sizeof(struct px_eddsa_params))
      return CKR_MECHANISM_PARAM_INVALID;
    const struct px_eddsa_params *o = pp;
    p->kind = PX_MP_EDDSA;
    p->px_mech_param_u.eddsa.phFlag = o->phFlag ? TRUE : FALSE;
    return OPAQUE_IN(o->pContextData, o->ulContextDataLen,
                     p->px_mech_param_u.eddsa.contextData.contextData);
  }
  default:
    if (ulong_param_mech(m->mechanism) && len == sizeof(CK_ULONG)) {
      CK_ULONG v;
      memcpy(&v, pp, sizeof v);
      p->kind = PX_MP_ULONG;
      p->px_mech_param_u.ulongValue = (px_ulong)v;
    }
    return CKR_OK;
  }
}

CK_RV px_mech_arg_in(const CK_MECHANISM *m, struct px_mech_arg *out) {
  memset(out, 0, sizeof *out);
  if (m == NULL || (m->pParameter == NULL && m->ulParameterLen != 0))
    return CKR_ARGUMENTS_BAD;
  if (m->ulParameterLen > UINT32_MAX)
    return CKR_MECHANISM_PARAM_INVALID;
  out->typed.mechanism = (px_mechanism_type)m->mechanism;
  CK_RV rv = typed_in(m, &out->typed.param);
  if (rv != CKR_OK) {
    px_debug("mechanism 0x%lx: malformed parameter structure",
             (unsigned long)m->mechanism);
    return rv;
  }
  /* Raw bytes of a struct holding pointers would carry this process's
   * addresses: such a mechanism has no RAW form. */
  if (out->typed.param.kind == PX_MP_RAW &&
      px_mech_param_has_pointers(m->mechanism)) {
    px_debug("mechanism 0x%lx: parameter structure not supported",
             (unsigned long)m->mechanism);
    return CKR_MECHANISM_PARAM_INVALID;
  }
  out->raw_rv = px_mechanism_in(m, &out->raw);
  return CKR_OK;
}

bool px_mech_arg_key(const struct px_mech_arg *ma, unsigned char **key,
                     size_t *key_len) {
  px_mechanism_typed copy = ma->typed;
  unsigned long n = xdr_sizeof((xdrproc_t)xdr_px_mechanism_typed, &copy);
  unsigned char *buf = malloc(n > 0 ? n : 1);
  if (buf == NULL)
    return false;
  XDR x;
  xdrmem_create(&x, (char *)buf, (u_int)n, XDR_ENCODE);
  bool ok = xdr_px_mechanism_typed(&x, &copy);
  xdr_destroy(&x);
  if (!ok) {
    free(buf);
    return false;
  }
  *key = buf;
  *key_len = n;
  return true;
}

void px_pad_copy(unsigned char *dst, size_t dst_len, const char *src,
                 u_int src_len) {
  size_t n = src_len < dst_len ? src_len : dst_len;
  if (n > 0)
    memcpy(dst, src, n);
  memset(dst + n, ' ', dst_len - n);
}

CK_VERSION px_version_in(const px_version *v) {
  CK_VERSION out;
  out.major = v->major.major_len == 1 ? (CK_BYTE)v->major.major_val[0] : 0;
  out.minor = v->minor.minor_len == 1 ? (CK_BYTE)v->minor.minor_val[0] : 0;
  return out;
}
