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

/* Version 3 form: raw parameter bytes; CKR_MECHANISM_PARAM_INVALID for a
 * parameter struct that holds pointers. */
CK_RV px_mechanism_in(const CK_MECHANISM *m, px_mechanism *out);
/* True when a mechanism's parameter struct holds pointers. */
bool px_mech_param_has_pointers(CK_MECHANISM_TYPE m);

/* A mechanism in both wire forms: the typed px_mechanism_typed of
 * procedures 73..84 (pointer/length pairs as opaques, numbers as hypers;
 * PX_MP_RAW for mechanisms without a known struct) and the version 3
 * px_mechanism, usable only when raw_rv is CKR_OK. Both point into caller
 * memory (fixed arrays are copied) and need no release. */
struct px_mech_arg {
  px_mechanism_typed typed;
  px_mechanism raw;
  CK_RV raw_rv;
};
/* CKR_ARGUMENTS_BAD for a NULL mechanism or parameter with a length;
 * CKR_MECHANISM_PARAM_INVALID for a known struct of the wrong size, a NULL
 * pointer with a length inside it, or a pointer-holding struct this
 * library cannot encode. */
CK_RV px_mech_arg_in(const CK_MECHANISM *m, struct px_mech_arg *out);
/* XDR encoding of the typed form (a cache key that compares parameter
 * contents, not addresses); malloc'd. False on allocation failure. */
bool px_mech_arg_key(const struct px_mech_arg *ma, unsigned char **key,
                     size_t *key_len);

/* Blank-padded copy of a wire string into a fixed PKCS#11 field. */
void px_pad_copy(unsigned char *dst, size_t dst_len, const char *src,
                 u_int src_len);
CK_VERSION px_version_in(const px_version *v);

#endif
