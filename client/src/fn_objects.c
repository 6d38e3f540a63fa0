/*
 * PKCS#11 object management functions.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "calls.h"

/* ---- objects ---- */

static CK_RV create_rpc(struct px_call *call, const px_template *t,
                        void *ctx) {
  C_CreateObject_args a = {.session = (px_session_handle)call->s->remote,
                           .template = *t};
  px_object_ret res = {0, 0};
  CK_RV rv = PX_RPC(call->c, "C_CreateObject",
                    c_createobject_3(a, &res, call->c->clnt));
  if (rv == CKR_OK)
    rv = (CK_RV)res.rv;
  if (rv == CKR_OK)
    *(CK_OBJECT_HANDLE_PTR)ctx = (CK_OBJECT_HANDLE)res.object;
  return rv;
}

PX_EXPORT CK_RV C_CreateObject(CK_SESSION_HANDLE hSession,
                               CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount,
                               CK_OBJECT_HANDLE_PTR phObject) {
  if (phObject == NULL)
    return px_state_is_initialized() ? CKR_ARGUMENTS_BAD
                                     : CKR_CRYPTOKI_NOT_INITIALIZED;
  return px_template_call(hSession, pTemplate, ulCount, create_rpc, phObject);
}

struct copy_ctx {
  CK_OBJECT_HANDLE object;
  CK_OBJECT_HANDLE_PTR out;
};

static CK_RV copy_rpc(struct px_call *call, const px_template *t, void *ctx) {
  struct copy_ctx *cc = ctx;
  C_CopyObject_args a = {.session = (px_session_handle)call->s->remote,
                         .object = (px_object_handle)cc->object,
                         .template = *t};
  px_object_ret res = {0, 0};
  CK_RV rv =
      PX_RPC(call->c, "C_CopyObject", c_copyobject_3(a, &res, call->c->clnt));
  if (rv == CKR_OK)
    rv = (CK_RV)res.rv;
  if (rv == CKR_OK)
    *cc->out = (CK_OBJECT_HANDLE)res.object;
  return rv;
}

PX_EXPORT CK_RV C_CopyObject(CK_SESSION_HANDLE hSession,
                             CK_OBJECT_HANDLE hObject,
                             CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount,
                             CK_OBJECT_HANDLE_PTR phNewObject) {
  if (phNewObject == NULL)
    return px_state_is_initialized() ? CKR_ARGUMENTS_BAD
                                     : CKR_CRYPTOKI_NOT_INITIALIZED;
  struct copy_ctx cc = {hObject, phNewObject};
  return px_template_call(hSession, pTemplate, ulCount, copy_rpc, &cc);
}

PX_EXPORT CK_RV C_DestroyObject(CK_SESSION_HANDLE hSession,
                                CK_OBJECT_HANDLE hObject) {
  SIMPLE_SESSION_CALL("C_DestroyObject", c_destroyobject_3,
                      C_DestroyObject_args,
                      .object = (px_object_handle)hObject);
}

PX_EXPORT CK_RV C_GetObjectSize(CK_SESSION_HANDLE hSession,
                                CK_OBJECT_HANDLE hObject,
                                CK_ULONG_PTR pulSize) {
  if (pulSize == NULL)
    return px_state_is_initialized() ? CKR_ARGUMENTS_BAD
                                     : CKR_CRYPTOKI_NOT_INITIALIZED;
  struct px_call call;
  CK_RV rv = px_session_enter(hSession, &call);
  if (rv != CKR_OK)
    return rv;
  C_GetObjectSize_args a = {.session = (px_session_handle)call.s->remote,
                            .object = (px_object_handle)hObject};
  C_GetObjectSize_ret res = {0, 0};
  rv = PX_RPC(call.c, "C_GetObjectSize",
              c_getobjectsize_3(a, &res, call.c->clnt));
  px_session_leave(&call);
  if (rv == CKR_OK)
    rv = (CK_RV)res.rv;
  if (rv == CKR_OK)
    *pulSize = (CK_ULONG)res.size;
  return rv;
}

PX_EXPORT CK_RV C_GetAttributeValue(CK_SESSION_HANDLE hSession,
                                    CK_OBJECT_HANDLE hObject,
                                    CK_ATTRIBUTE_PTR pTemplate,
                                    CK_ULONG ulCount) {
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  if (pTemplate == NULL && ulCount != 0)
    return CKR_ARGUMENTS_BAD;
  px_template t;
  CK_RV rv = px_template_query(pTemplate, ulCount, &t);
  if (rv != CKR_OK)
    return rv;
  struct px_call call;
  rv = px_session_enter(hSession, &call);
  if (rv == CKR_OK) {
    C_GetAttributeValue_args a = {
        .session = (px_session_handle)call.s->remote,
        .object = (px_object_handle)hObject,
        .template = t};
    C_GetAttributeValue_ret res;
    memset(&res, 0, sizeof res);
    rv = PX_RPC(call.c, "C_GetAttributeValue",
                c_getattributevalue_3(a, &res, call.c->clnt));
    px_session_leave(&call);
    if (rv == CKR_OK)
      rv = px_template_out(pTemplate, ulCount, &res.template, (CK_RV)res.rv);
    /* Values may be secret: wipe the reply before freeing it. */
    for (u_int i = 0; i < res.template.px_template_len; i++) {
      px_attribute *ra = &res.template.px_template_val[i];
      if (ra->value.value_val != NULL)
        explicit_bzero(ra->value.value_val, ra->value.value_len);
    }
    xdr_free((xdrproc_t)xdr_C_GetAttributeValue_ret, (char *)&res);
  }
  px_template_free(&t);
  return rv;
}

static CK_RV set_attribute_rpc(struct px_call *call, const px_template *t,
                               void *ctx) {
  C_SetAttributeValue_args a = {
      .session = (px_session_handle)call->s->remote,
      .object = (px_object_handle) * (const CK_OBJECT_HANDLE *)ctx,
      .template = *t};
  px_rv res = 0;
  CK_RV rv = PX_RPC(call->c, "C_SetAttributeValue",
                    c_setattributevalue_3(a, &res, call->c->clnt));
  return rv == CKR_OK ? (CK_RV)res : rv;
}

PX_EXPORT CK_RV C_SetAttributeValue(CK_SESSION_HANDLE hSession,
                                    CK_OBJECT_HANDLE hObject,
                                    CK_ATTRIBUTE_PTR pTemplate,
                                    CK_ULONG ulCount) {
  return px_template_call(hSession, pTemplate, ulCount, set_attribute_rpc,
                          &hObject);
}

static CK_RV find_init_rpc(struct px_call *call, const px_template *t,
                           void *ctx) {
  (void)ctx;
  C_FindObjectsInit_args a = {.session = (px_session_handle)call->s->remote,
                              .template = *t};
  px_rv res = 0;
  CK_RV rv = PX_RPC(call->c, "C_FindObjectsInit",
                    c_findobjectsinit_3(a, &res, call->c->clnt));
  return rv == CKR_OK ? (CK_RV)res : rv;
}

PX_EXPORT CK_RV C_FindObjectsInit(CK_SESSION_HANDLE hSession,
                                  CK_ATTRIBUTE_PTR pTemplate,
                                  CK_ULONG ulCount) {
  return px_template_call(hSession, pTemplate, ulCount, find_init_rpc, NULL);
}

PX_EXPORT CK_RV C_FindObjects(CK_SESSION_HANDLE hSession,
                              CK_OBJECT_HANDLE_PTR phObject,
                              CK_ULONG ulMaxObjectCount,
                              CK_ULONG_PTR pulObjectCount) {
  if (pulObjectCount == NULL || (phObject == NULL && ulMaxObjectCount != 0))
    return px_state_is_initialized() ? CKR_ARGUMENTS_BAD
                                     : CKR_CRYPTOKI_NOT_INITIALIZED;
  struct px_call call;
  CK_RV rv = px_session_enter(hSession, &call);
  if (rv != CKR_OK)
    return rv;
  C_FindObjects_args a = {.session = (px_session_handle)call.s->remote,
                          .maxObjectCount = (px_ulong)ulMaxObjectCount};
  C_FindObjects_ret res;
  memset(&res, 0, sizeof res);
  rv = PX_RPC(call.c, "C_FindObjects", c_findobjects_3(a, &res, call.c->clnt));
  px_session_leave(&call);
  if (rv != CKR_OK)
    return rv;
  rv = (CK_RV)res.rv;
  if (rv == CKR_OK) {
    u_int n = res.objects.objects_len;
    if (n > ulMaxObjectCount) {
      px_debug("C_FindObjects: %u handles for a capacity of %lu", n,
               (unsigned long)ulMaxObjectCount);
      rv = CKR_DEVICE_ERROR;
    } else {
      for (u_int i = 0; i < n; i++)
        phObject[i] = (CK_OBJECT_HANDLE)res.objects.objects_val[i];
      *pulObjectCount = n;
    }
  }
  xdr_free((xdrproc_t)xdr_C_FindObjects_ret, (char *)&res);
  return rv;
}

PX_EXPORT CK_RV C_FindObjectsFinal(CK_SESSION_HANDLE hSession) {
  SIMPLE_SESSION_CALL("C_FindObjectsFinal", c_findobjectsfinal_3,
                      C_FindObjectsFinal_args, );
}
