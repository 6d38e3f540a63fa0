#include <stdlib.h>
#include <string.h>

#include "marshal.h"

/* Largest output buffer announced per attribute in C_GetAttributeValue. */
#define PX_MAX_ATTR_BUFFER (16UL * 1024 * 1024)

/* Attribute types whose values hold pointers (CK_ATTRIBUTE arrays):
 * raw bytes cannot carry them. */
static bool attr_has_pointers(CK_ATTRIBUTE_TYPE type) {
  return (type & CKF_ARRAY_ATTRIBUTE) != 0;
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
    if (t[i].pValue == NULL) {
      t[i].ulValueLen = got > 0 ? (CK_ULONG)got : (CK_ULONG)r->valueLen;
      continue;
    }
    if (attr_has_pointers(t[i].type) && (got > 0 || r->valueLen > 0)) {
      t[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
      if (rv == CKR_OK)
        rv = CKR_ATTRIBUTE_SENSITIVE;
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
static bool mech_param_has_pointers(CK_MECHANISM_TYPE m) {
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
  if (m->ulParameterLen != 0 && mech_param_has_pointers(m->mechanism)) {
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
