/*
 * Conversions between PKCS#11 structures and the px_* wire types of
 * rpc/pkcs11.x. Sent attribute values and mechanism parameters are raw
 * bytes in this process's layout (C_SetupArch declared it), never copied:
 * the px_* arrays built here point into caller memory and are released
 * with free(), not xdr_free().
 */
#ifndef PX_MARSHAL_H
#define PX_MARSHAL_H

#include "px.h"

/* Template whose values are sent (C_CreateObject, C_FindObjectsInit...). */
CK_RV px_template_in(const CK_ATTRIBUTE *t, CK_ULONG n, px_template *out);
/* C_GetAttributeValue request: size queries and zeroed output buffers. */
CK_RV px_template_query(const CK_ATTRIBUTE *t, CK_ULONG n, px_template *out);
void px_template_free(px_template *t);
/* Copies a C_GetAttributeValue reply back; returns the call's CK_RV. */
CK_RV px_template_out(CK_ATTRIBUTE *t, CK_ULONG n, const px_template *reply,
                      CK_RV server_rv);

CK_RV px_mechanism_in(const CK_MECHANISM *m, px_mechanism *out);

/* Blank-padded copy of a wire string into a fixed PKCS#11 field. */
void px_pad_copy(unsigned char *dst, size_t dst_len, const char *src,
                 u_int src_len);
CK_VERSION px_version_in(const px_version *v);

#endif
