/*
 * PKCS#11 2.40 entry points. Each call validates its arguments, brackets
 * one round trip on the connection that owns the session (or the control
 * connection for slot-level calls) and maps the reply back.
 *
 * Output-producing calls carry no output length on the wire: the daemon
 * returns the whole output. A size query (NULL output buffer) therefore
 * runs the operation and keeps the output in the session's cache; the
 * next call of the same kind with the same input is answered from it.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "marshal.h"
#include "px.h"

/* One round trip; the connection is marked broken on a transport failure. */
#define PX_RPC(conn, what, stub_call) px_rpc_done((conn), (stub_call), (what))

#define BYTES(field, ptr, len)                                                 \
  do {                                                                         \
    (field).px_bytes_len = (u_int)(len);                                       \
    (field).px_bytes_val = (char *)(ptr);                                      \
  } while (0)

/* Caller buffers larger than this cannot be sent in one XDR opaque. */
#define PX_MAX_BYTES ((CK_ULONG)UINT32_MAX)

static bool bad_buf(const void *p, CK_ULONG len) {
  return (p == NULL && len != 0) || len > PX_MAX_BYTES;
}

/* ---- general purpose ---- */

PX_EXPORT CK_RV C_Initialize(CK_VOID_PTR pInitArgs) {
  return px_state_initialize((CK_C_INITIALIZE_ARGS *)pInitArgs);
}

PX_EXPORT CK_RV C_Finalize(CK_VOID_PTR pReserved) {
  if (pReserved != NULL)
    return CKR_ARGUMENTS_BAD;
  return px_state_finalize();
}

PX_EXPORT CK_RV C_GetInfo(CK_INFO_PTR pInfo) {
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  if (pInfo == NULL)
    return CKR_ARGUMENTS_BAD;
  struct px_call call;
  CK_RV rv = px_control_enter(&call, CKR_FUNCTION_FAILED);
  if (rv != CKR_OK)
    return rv;
  C_GetInfo_ret res;
  memset(&res, 0, sizeof res);
  rv = PX_RPC(call.c, "C_GetInfo", c_getinfo_3(&res, call.c->clnt));
  px_control_leave(&call);
  if (rv != CKR_OK)
    return CKR_FUNCTION_FAILED;
  rv = (CK_RV)res.rv;
  if (rv == CKR_OK) {
    const px_info *i = &res.info;
    pInfo->cryptokiVersion = px_version_in(&i->cryptokiVersion);
    px_pad_copy(pInfo->manufacturerID, sizeof pInfo->manufacturerID,
                i->manufacturerID.manufacturerID_val,
                i->manufacturerID.manufacturerID_len);
    pInfo->flags = (CK_FLAGS)i->flags;
    px_pad_copy(pInfo->libraryDescription, sizeof pInfo->libraryDescription,
                i->libraryDescription.libraryDescription_val,
                i->libraryDescription.libraryDescription_len);
    pInfo->libraryVersion = px_version_in(&i->libraryVersion);
  }
  xdr_free((xdrproc_t)xdr_C_GetInfo_ret, (char *)&res);
  return rv;
}

/* ---- slots and tokens ---- */

PX_EXPORT CK_RV C_GetSlotList(CK_BBOOL tokenPresent, CK_SLOT_ID_PTR pSlotList,
                              CK_ULONG_PTR pulCount) {
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  if (pulCount == NULL)
    return CKR_ARGUMENTS_BAD;
  struct px_call call;
  CK_RV rv = px_control_enter(&call, CKR_FUNCTION_FAILED);
  if (rv != CKR_OK)
    return rv;
  CK_ULONG capacity = pSlotList ? *pulCount : 0;
  C_GetSlotList_args a = {.tokenPresent = tokenPresent ? 1 : 0,
                          .count = (px_ulong)capacity};
  C_GetSlotList_ret res;
  memset(&res, 0, sizeof res);
  rv = PX_RPC(call.c, "C_GetSlotList", c_getslotlist_3(a, &res, call.c->clnt));
  px_control_leave(&call);
  if (rv != CKR_OK)
    return CKR_FUNCTION_FAILED;
  rv = (CK_RV)res.rv;
  CK_ULONG n = (CK_ULONG)res.count;
  if (rv == CKR_OK || rv == CKR_BUFFER_TOO_SMALL) {
    if (res.slotList.slotList_len > n)
      n = res.slotList.slotList_len;
    if (pSlotList == NULL) {
      rv = CKR_OK;
    } else if (rv == CKR_BUFFER_TOO_SMALL || n > capacity) {
      rv = CKR_BUFFER_TOO_SMALL;
    } else {
      for (u_int i = 0; i < res.slotList.slotList_len; i++)
        pSlotList[i] = (CK_SLOT_ID)res.slotList.slotList_val[i];
      n = res.slotList.slotList_len;
    }
    *pulCount = n;
  }
  xdr_free((xdrproc_t)xdr_C_GetSlotList_ret, (char *)&res);
  return rv;
}

PX_EXPORT CK_RV C_GetSlotInfo(CK_SLOT_ID slotID, CK_SLOT_INFO_PTR pInfo) {
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  if (pInfo == NULL)
    return CKR_ARGUMENTS_BAD;
  struct px_call call;
  CK_RV rv = px_control_enter(&call, CKR_DEVICE_ERROR);
  if (rv != CKR_OK)
    return rv;
  C_GetSlotInfo_args a = {.slotID = (px_slot_id)slotID};
  C_GetSlotInfo_ret res;
  memset(&res, 0, sizeof res);
  rv = PX_RPC(call.c, "C_GetSlotInfo", c_getslotinfo_3(a, &res, call.c->clnt));
  px_control_leave(&call);
  if (rv != CKR_OK)
    return rv;
  rv = (CK_RV)res.rv;
  if (rv == CKR_OK) {
    const px_slot_info *i = &res.info;
    px_pad_copy(pInfo->slotDescription, sizeof pInfo->slotDescription,
                i->slotDescription.slotDescription_val,
                i->slotDescription.slotDescription_len);
    px_pad_copy(pInfo->manufacturerID, sizeof pInfo->manufacturerID,
                i->manufacturerID.manufacturerID_val,
                i->manufacturerID.manufacturerID_len);
    pInfo->flags = (CK_FLAGS)i->flags;
    pInfo->hardwareVersion = px_version_in(&i->hardwareVersion);
    pInfo->firmwareVersion = px_version_in(&i->firmwareVersion);
  }
  xdr_free((xdrproc_t)xdr_C_GetSlotInfo_ret, (char *)&res);
  return rv;
}

PX_EXPORT CK_RV C_GetTokenInfo(CK_SLOT_ID slotID, CK_TOKEN_INFO_PTR pInfo) {
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  if (pInfo == NULL)
    return CKR_ARGUMENTS_BAD;
  struct px_call call;
  CK_RV rv = px_control_enter(&call, CKR_DEVICE_ERROR);
  if (rv != CKR_OK)
    return rv;
  C_GetTokenInfo_args a = {.slotID = (px_slot_id)slotID};
  C_GetTokenInfo_ret res;
  memset(&res, 0, sizeof res);
  rv = PX_RPC(call.c, "C_GetTokenInfo",
              c_gettokeninfo_3(a, &res, call.c->clnt));
  px_control_leave(&call);
  if (rv != CKR_OK)
    return rv;
  rv = (CK_RV)res.rv;
  if (rv == CKR_OK) {
    const px_token_info *i = &res.info;
    px_pad_copy(pInfo->label, sizeof pInfo->label, i->label.label_val,
                i->label.label_len);
    px_pad_copy(pInfo->manufacturerID, sizeof pInfo->manufacturerID,
                i->manufacturerID.manufacturerID_val,
                i->manufacturerID.manufacturerID_len);
    px_pad_copy(pInfo->model, sizeof pInfo->model, i->model.model_val,
                i->model.model_len);
    px_pad_copy(pInfo->serialNumber, sizeof pInfo->serialNumber,
                i->serialNumber.serialNumber_val,
                i->serialNumber.serialNumber_len);
    pInfo->flags = (CK_FLAGS)i->flags;
    pInfo->ulMaxSessionCount = (CK_ULONG)i->maxSessionCount;
    pInfo->ulSessionCount = (CK_ULONG)i->sessionCount;
    pInfo->ulMaxRwSessionCount = (CK_ULONG)i->maxRwSessionCount;
    pInfo->ulRwSessionCount = (CK_ULONG)i->rwSessionCount;
    pInfo->ulMaxPinLen = (CK_ULONG)i->maxPinLen;
    pInfo->ulMinPinLen = (CK_ULONG)i->minPinLen;
    pInfo->ulTotalPublicMemory = (CK_ULONG)i->totalPublicMemory;
    pInfo->ulFreePublicMemory = (CK_ULONG)i->freePublicMemory;
    pInfo->ulTotalPrivateMemory = (CK_ULONG)i->totalPrivateMemory;
    pInfo->ulFreePrivateMemory = (CK_ULONG)i->freePrivateMemory;
    pInfo->hardwareVersion = px_version_in(&i->hardwareVersion);
    pInfo->firmwareVersion = px_version_in(&i->firmwareVersion);
    px_pad_copy(pInfo->utcTime, sizeof pInfo->utcTime, i->utcTime.utcTime_val,
                i->utcTime.utcTime_len);
  }
  xdr_free((xdrproc_t)xdr_C_GetTokenInfo_ret, (char *)&res);
  return rv;
}

/* Blocking waits would hold the control connection for an unbounded time;
 * only the CKF_DONT_BLOCK poll is forwarded. */
PX_EXPORT CK_RV C_WaitForSlotEvent(CK_FLAGS flags, CK_SLOT_ID_PTR pSlot,
                                   CK_VOID_PTR pReserved) {
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  if (pSlot == NULL || pReserved != NULL)
    return CKR_ARGUMENTS_BAD;
  if (!(flags & CKF_DONT_BLOCK))
    return CKR_FUNCTION_NOT_SUPPORTED;
  struct px_call call;
  CK_RV rv = px_control_enter(&call, CKR_FUNCTION_FAILED);
  if (rv != CKR_OK)
    return rv;
  C_WaitForSlotEvent_args a = {.flags = (px_flags)flags};
  C_WaitForSlotEvent_ret res;
  memset(&res, 0, sizeof res);
  rv = PX_RPC(call.c, "C_WaitForSlotEvent",
              c_waitforslotevent_3(a, &res, call.c->clnt));
  px_control_leave(&call);
  if (rv != CKR_OK)
    return CKR_FUNCTION_FAILED;
  rv = (CK_RV)res.rv;
  if (rv == CKR_OK)
    *pSlot = (CK_SLOT_ID)res.slotID;
  return rv;
}

PX_EXPORT CK_RV C_GetMechanismList(CK_SLOT_ID slotID,
                                   CK_MECHANISM_TYPE_PTR pMechanismList,
                                   CK_ULONG_PTR pulCount) {
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  if (pulCount == NULL)
    return CKR_ARGUMENTS_BAD;
  struct px_call call;
  CK_RV rv = px_control_enter(&call, CKR_DEVICE_ERROR);
  if (rv != CKR_OK)
    return rv;
  CK_ULONG capacity = pMechanismList ? *pulCount : 0;
  C_GetMechanismList_args a = {.slotID = (px_slot_id)slotID,
                               .count = (px_ulong)capacity};
  C_GetMechanismList_ret res;
  memset(&res, 0, sizeof res);
  rv = PX_RPC(call.c, "C_GetMechanismList",
              c_getmechanismlist_3(a, &res, call.c->clnt));
  px_control_leave(&call);
  if (rv != CKR_OK)
    return rv;
  rv = (CK_RV)res.rv;
  CK_ULONG n = (CK_ULONG)res.count;
  if (rv == CKR_OK || rv == CKR_BUFFER_TOO_SMALL) {
    if (res.mechanismList.mechanismList_len > n)
      n = res.mechanismList.mechanismList_len;
    if (pMechanismList == NULL) {
      rv = CKR_OK;
    } else if (rv == CKR_BUFFER_TOO_SMALL || n > capacity) {
      rv = CKR_BUFFER_TOO_SMALL;
    } else {
      for (u_int i = 0; i < res.mechanismList.mechanismList_len; i++)
        pMechanismList[i] =
            (CK_MECHANISM_TYPE)res.mechanismList.mechanismList_val[i];
      n = res.mechanismList.mechanismList_len;
    }
    *pulCount = n;
  }
  xdr_free((xdrproc_t)xdr_C_GetMechanismList_ret, (char *)&res);
  return rv;
}

PX_EXPORT CK_RV C_GetMechanismInfo(CK_SLOT_ID slotID, CK_MECHANISM_TYPE type,
                                   CK_MECHANISM_INFO_PTR pInfo) {
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  if (pInfo == NULL)
    return CKR_ARGUMENTS_BAD;
  struct px_call call;
  CK_RV rv = px_control_enter(&call, CKR_DEVICE_ERROR);
  if (rv != CKR_OK)
    return rv;
  C_GetMechanismInfo_args a = {.slotID = (px_slot_id)slotID,
                               .type = (px_mechanism_type)type};
  C_GetMechanismInfo_ret res;
  memset(&res, 0, sizeof res);
  rv = PX_RPC(call.c, "C_GetMechanismInfo",
              c_getmechanisminfo_3(a, &res, call.c->clnt));
  px_control_leave(&call);
  if (rv != CKR_OK)
    return rv;
  rv = (CK_RV)res.rv;
  if (rv == CKR_OK) {
    pInfo->ulMinKeySize = (CK_ULONG)res.info.minKeySize;
    pInfo->ulMaxKeySize = (CK_ULONG)res.info.maxKeySize;
    pInfo->flags = (CK_FLAGS)res.info.flags;
  }
  return rv;
}

PX_EXPORT CK_RV C_InitToken(CK_SLOT_ID slotID, CK_UTF8CHAR_PTR pPin,
                            CK_ULONG ulPinLen, CK_UTF8CHAR_PTR pLabel) {
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  if (bad_buf(pPin, ulPinLen) || pLabel == NULL)
    return CKR_ARGUMENTS_BAD;
  struct px_call call;
  CK_RV rv = px_control_enter(&call, CKR_DEVICE_ERROR);
  if (rv != CKR_OK)
    return rv;
  C_InitToken_args a = {.slotID = (px_slot_id)slotID};
  BYTES(a.pin, pPin, ulPinLen);
  BYTES(a.label, pLabel, 32); /* CK_TOKEN_INFO label: 32 blank-padded */
  px_rv res = 0;
  rv = PX_RPC(call.c, "C_InitToken", c_inittoken_3(a, &res, call.c->clnt));
  px_control_leave(&call);
  return rv == CKR_OK ? (CK_RV)res : rv;
}

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

/* Session calls whose reply is a bare CK_RV. */
#define SIMPLE_SESSION_CALL(what, stub, args_type, ...)                        \
  do {                                                                         \
    struct px_call call;                                                       \
    CK_RV rv_ = px_session_enter(hSession, &call);                             \
    if (rv_ != CKR_OK)                                                         \
      return rv_;                                                              \
    args_type a = {.session = (px_session_handle)call.s->remote, __VA_ARGS__}; \
    px_rv res_ = 0;                                                            \
    rv_ = PX_RPC(call.c, what, stub(a, &res_, call.c->clnt));                  \
    px_session_leave(&call);                                                   \
    return rv_ == CKR_OK ? (CK_RV)res_ : rv_;                                  \
  } while (0)

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

/* ---- output cache ---- */

/* Does the round trip of an output-producing call and fills res; returns
 * CKR_OK or the transport failure. */
typedef CK_RV (*px_out_rpc)(struct px_call *call, const char *what,
                            const void *ctx, px_bytes_ret *res);

static CK_RV out_call(CK_SESSION_HANDLE h, int proc, const char *what,
                      const void *in, size_t in_len, px_out_rpc rpc,
                      const void *ctx, CK_BYTE_PTR out, CK_ULONG_PTR out_len) {
  struct px_call call;
  CK_RV rv = px_session_enter(h, &call);
  if (rv != CKR_OK)
    return rv;
  struct px_out_cache *oc = &call.s->cache;
  bool hit = oc->valid && oc->proc == proc && oc->in_len == in_len &&
             (in_len == 0 || memcmp(oc->in, in, in_len) == 0);
  if (!hit) {
    px_out_cache_clear(oc);
    px_bytes_ret res;
    memset(&res, 0, sizeof res);
    rv = rpc(&call, what, ctx, &res);
    if (rv == CKR_OK)
      rv = (CK_RV)res.rv;
    if (rv != CKR_OK) {
      xdr_free((xdrproc_t)xdr_px_bytes_ret, (char *)&res);
      px_session_leave(&call);
      return rv;
    }
    unsigned char *in_copy = NULL;
    if (in_len > 0) {
      in_copy = malloc(in_len);
      if (in_copy == NULL) {
        xdr_free((xdrproc_t)xdr_px_bytes_ret, (char *)&res);
        px_session_leave(&call);
        return CKR_HOST_MEMORY;
      }
      memcpy(in_copy, in, in_len);
    }
    /* xdr_bytes allocates with malloc: the cache takes the buffer. */
    oc->out = (unsigned char *)res.data.px_bytes_val;
    oc->out_len = res.data.px_bytes_len;
    oc->in = in_copy;
    oc->in_len = in_len;
    oc->proc = proc;
    oc->valid = true;
  }
  if (out == NULL) {
    *out_len = (CK_ULONG)oc->out_len;
    rv = CKR_OK;
  } else if (*out_len < oc->out_len) {
    *out_len = (CK_ULONG)oc->out_len;
    rv = CKR_BUFFER_TOO_SMALL;
  } else {
    if (oc->out_len > 0)
      memcpy(out, oc->out, oc->out_len);
    *out_len = (CK_ULONG)oc->out_len;
    px_out_cache_clear(oc);
    rv = CKR_OK;
  }
  px_session_leave(&call);
  return rv;
}

typedef enum clnt_stat (*px_data_stub)(px_session_data_args, px_bytes_ret *,
                                       CLIENT *);
typedef enum clnt_stat (*px_final_stub)(px_session_args, px_bytes_ret *,
                                        CLIENT *);

struct data_ctx {
  px_data_stub stub;
  const void *data;
  CK_ULONG len;
};

static CK_RV data_rpc(struct px_call *call, const char *what, const void *ctx,
                      px_bytes_ret *res) {
  const struct data_ctx *d = ctx;
  px_session_data_args a = {.session = (px_session_handle)call->s->remote};
  BYTES(a.data, d->data, d->len);
  return PX_RPC(call->c, what, d->stub(a, res, call->c->clnt));
}

static CK_RV final_rpc(struct px_call *call, const char *what, const void *ctx,
                       px_bytes_ret *res) {
  px_final_stub stub = *(const px_final_stub *)ctx;
  px_session_args a = {.session = (px_session_handle)call->s->remote};
  return PX_RPC(call->c, what, stub(a, res, call->c->clnt));
}

static CK_RV data_out(CK_SESSION_HANDLE h, int proc, const char *what,
                      px_data_stub stub, CK_BYTE_PTR in, CK_ULONG in_len,
                      CK_BYTE_PTR out, CK_ULONG_PTR out_len) {
  if (bad_buf(in, in_len) || out_len == NULL)
    return px_state_is_initialized() ? CKR_ARGUMENTS_BAD
                                     : CKR_CRYPTOKI_NOT_INITIALIZED;
  struct data_ctx d = {stub, in, in_len};
  return out_call(h, proc, what, in, in_len, data_rpc, &d, out, out_len);
}

static CK_RV final_out(CK_SESSION_HANDLE h, int proc, const char *what,
                       px_final_stub stub, CK_BYTE_PTR out,
                       CK_ULONG_PTR out_len) {
  if (out_len == NULL)
    return px_state_is_initialized() ? CKR_ARGUMENTS_BAD
                                     : CKR_CRYPTOKI_NOT_INITIALIZED;
  return out_call(h, proc, what, NULL, 0, final_rpc, &stub, out, out_len);
}

/* ---- calls that take a mechanism ---- */

/* Sends one request in the typed form (procedures 73..84) or the version 3
 * form of the same call. */
typedef enum clnt_stat (*px_mech_send)(struct px_call *call, const void *ctx,
                                       const struct px_mech_arg *ma,
                                       bool typed, void *res);

/* One round trip of a call that takes a mechanism. The typed procedure is
 * used unless this connection's daemon answered PROC_UNAVAIL to one before
 * (Caml Crush); then the version 3 procedure is used, which cannot carry a
 * parameter struct holding pointers (CKR_MECHANISM_PARAM_INVALID, no round
 * trip). */
static CK_RV mech_round_trip(struct px_call *call, const char *what,
                             const struct px_mech_arg *ma, px_mech_send send,
                             const void *ctx, void *res) {
  if (call->c->typed_mech >= 0) {
    enum clnt_stat st = send(call, ctx, ma, true, res);
    if (st != RPC_PROCUNAVAIL) {
      CK_RV rv = px_rpc_done(call->c, st, what);
      if (rv == CKR_OK)
        call->c->typed_mech = 1;
      return rv;
    }
    /* An accepted reply without results: the stream stays in step. */
    px_rpc_done(call->c, RPC_SUCCESS, what);
    call->c->typed_mech = -1;
    px_debug("%s: daemon has no typed mechanism procedures; using version 3",
             what);
  }
  if (ma->raw_rv != CKR_OK)
    return ma->raw_rv;
  return PX_RPC(call->c, what, send(call, ctx, ma, false, res));
}

/* *Init calls: start an operation, dropping any cached output. */
typedef enum clnt_stat (*px_mech_key_stub)(px_session_mechanism_key_args,
                                           px_rv *, CLIENT *);
typedef enum clnt_stat (*px_mech_key_typed_stub)(
    px_session_mechanism_typed_key_args, px_rv *, CLIENT *);

struct key_init_ctx {
  px_mech_key_stub v3;
  px_mech_key_typed_stub typed;
  CK_OBJECT_HANDLE key;
};

static enum clnt_stat key_init_send(struct px_call *call, const void *ctx,
                                    const struct px_mech_arg *ma, bool typed,
                                    void *res) {
  const struct key_init_ctx *k = ctx;
  px_session_handle session = (px_session_handle)call->s->remote;
  if (typed) {
    px_session_mechanism_typed_key_args a = {
        .session = session,
        .mechanism = ma->typed,
        .key = (px_object_handle)k->key};
    return k->typed(a, res, call->c->clnt);
  }
  px_session_mechanism_key_args a = {
      .session = session,
      .mechanism = ma->raw,
      .key = (px_object_handle)k->key};
  return k->v3(a, res, call->c->clnt);
}

static CK_RV mech_key_init(CK_SESSION_HANDLE h, const char *what,
                           px_mech_key_stub v3, px_mech_key_typed_stub typed,
                           CK_MECHANISM_PTR m, CK_OBJECT_HANDLE key) {
  struct px_mech_arg ma;
  CK_RV rv = px_mech_arg_in(m, &ma);
  if (rv != CKR_OK)
    return px_state_is_initialized() ? rv : CKR_CRYPTOKI_NOT_INITIALIZED;
  struct px_call call;
  rv = px_session_enter(h, &call);
  if (rv != CKR_OK)
    return rv;
  px_out_cache_clear(&call.s->cache);
  struct key_init_ctx k = {v3, typed, key};
  px_rv res = 0;
  rv = mech_round_trip(&call, what, &ma, key_init_send, &k, &res);
  px_session_leave(&call);
  return rv == CKR_OK ? (CK_RV)res : rv;
}

typedef enum clnt_stat (*px_data_rv_stub)(px_session_data_args, px_rv *,
                                          CLIENT *);

static CK_RV data_in(CK_SESSION_HANDLE h, const char *what,
                     px_data_rv_stub stub, CK_BYTE_PTR in, CK_ULONG in_len) {
  if (bad_buf(in, in_len))
    return px_state_is_initialized() ? CKR_ARGUMENTS_BAD
                                     : CKR_CRYPTOKI_NOT_INITIALIZED;
  struct px_call call;
  CK_RV rv = px_session_enter(h, &call);
  if (rv != CKR_OK)
    return rv;
  px_session_data_args a = {.session = (px_session_handle)call.s->remote};
  BYTES(a.data, in, in_len);
  px_rv res = 0;
  rv = PX_RPC(call.c, what, stub(a, &res, call.c->clnt));
  px_session_leave(&call);
  return rv == CKR_OK ? (CK_RV)res : rv;
}

/* ---- operation state ---- */

PX_EXPORT CK_RV C_GetOperationState(CK_SESSION_HANDLE hSession,
                                    CK_BYTE_PTR pOperationState,
                                    CK_ULONG_PTR pulOperationStateLen) {
  return final_out(hSession, c_GetOperationState, "C_GetOperationState",
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

/* ---- objects ---- */

PX_EXPORT CK_RV C_CreateObject(CK_SESSION_HANDLE hSession,
                               CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount,
                               CK_OBJECT_HANDLE_PTR phObject) {
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  if (phObject == NULL)
    return CKR_ARGUMENTS_BAD;
  px_template t;
  CK_RV rv = px_template_in(pTemplate, ulCount, &t);
  if (rv != CKR_OK)
    return rv;
  struct px_call call;
  rv = px_session_enter(hSession, &call);
  if (rv == CKR_OK) {
    C_CreateObject_args a = {.session = (px_session_handle)call.s->remote,
                             .template = t};
    px_object_ret res = {0, 0};
    rv = PX_RPC(call.c, "C_CreateObject",
                c_createobject_3(a, &res, call.c->clnt));
    px_session_leave(&call);
    if (rv == CKR_OK)
      rv = (CK_RV)res.rv;
    if (rv == CKR_OK)
      *phObject = (CK_OBJECT_HANDLE)res.object;
  }
  px_template_free(&t);
  return rv;
}

PX_EXPORT CK_RV C_CopyObject(CK_SESSION_HANDLE hSession,
                             CK_OBJECT_HANDLE hObject,
                             CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount,
                             CK_OBJECT_HANDLE_PTR phNewObject) {
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  if (phNewObject == NULL)
    return CKR_ARGUMENTS_BAD;
  px_template t;
  CK_RV rv = px_template_in(pTemplate, ulCount, &t);
  if (rv != CKR_OK)
    return rv;
  struct px_call call;
  rv = px_session_enter(hSession, &call);
  if (rv == CKR_OK) {
    C_CopyObject_args a = {.session = (px_session_handle)call.s->remote,
                           .object = (px_object_handle)hObject,
                           .template = t};
    px_object_ret res = {0, 0};
    rv = PX_RPC(call.c, "C_CopyObject", c_copyobject_3(a, &res, call.c->clnt));
    px_session_leave(&call);
    if (rv == CKR_OK)
      rv = (CK_RV)res.rv;
    if (rv == CKR_OK)
      *phNewObject = (CK_OBJECT_HANDLE)res.object;
  }
  px_template_free(&t);
  return rv;
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

PX_EXPORT CK_RV C_SetAttributeValue(CK_SESSION_HANDLE hSession,
                                    CK_OBJECT_HANDLE hObject,
                                    CK_ATTRIBUTE_PTR pTemplate,
                                    CK_ULONG ulCount) {
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  px_template t;
  CK_RV rv = px_template_in(pTemplate, ulCount, &t);
  if (rv != CKR_OK)
    return rv;
  struct px_call call;
  rv = px_session_enter(hSession, &call);
  if (rv == CKR_OK) {
    C_SetAttributeValue_args a = {
        .session = (px_session_handle)call.s->remote,
        .object = (px_object_handle)hObject,
        .template = t};
    px_rv res = 0;
    rv = PX_RPC(call.c, "C_SetAttributeValue",
                c_setattributevalue_3(a, &res, call.c->clnt));
    px_session_leave(&call);
    if (rv == CKR_OK)
      rv = (CK_RV)res;
  }
  px_template_free(&t);
  return rv;
}

PX_EXPORT CK_RV C_FindObjectsInit(CK_SESSION_HANDLE hSession,
                                  CK_ATTRIBUTE_PTR pTemplate,
                                  CK_ULONG ulCount) {
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  px_template t;
  CK_RV rv = px_template_in(pTemplate, ulCount, &t);
  if (rv != CKR_OK)
    return rv;
  struct px_call call;
  rv = px_session_enter(hSession, &call);
  if (rv == CKR_OK) {
    C_FindObjectsInit_args a = {.session = (px_session_handle)call.s->remote,
                                .template = t};
    px_rv res = 0;
    rv = PX_RPC(call.c, "C_FindObjectsInit",
                c_findobjectsinit_3(a, &res, call.c->clnt));
    px_session_leave(&call);
    if (rv == CKR_OK)
      rv = (CK_RV)res;
  }
  px_template_free(&t);
  return rv;
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

/* ---- encryption ---- */

PX_EXPORT CK_RV C_EncryptInit(CK_SESSION_HANDLE hSession,
                              CK_MECHANISM_PTR pMechanism,
                              CK_OBJECT_HANDLE hKey) {
  return mech_key_init(hSession, "C_EncryptInit", c_encryptinit_3,
                       px_encryptinittyped_3, pMechanism,
                       hKey);
}

PX_EXPORT CK_RV C_Encrypt(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData,
                          CK_ULONG ulDataLen, CK_BYTE_PTR pEncryptedData,
                          CK_ULONG_PTR pulEncryptedDataLen) {
  return data_out(hSession, c_Encrypt, "C_Encrypt", c_encrypt_3, pData,
                  ulDataLen, pEncryptedData, pulEncryptedDataLen);
}

PX_EXPORT CK_RV C_EncryptUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart,
                                CK_ULONG ulPartLen, CK_BYTE_PTR pEncryptedPart,
                                CK_ULONG_PTR pulEncryptedPartLen) {
  return data_out(hSession, c_EncryptUpdate, "C_EncryptUpdate",
                  c_encryptupdate_3, pPart, ulPartLen, pEncryptedPart,
                  pulEncryptedPartLen);
}

PX_EXPORT CK_RV C_EncryptFinal(CK_SESSION_HANDLE hSession,
                               CK_BYTE_PTR pLastEncryptedPart,
                               CK_ULONG_PTR pulLastEncryptedPartLen) {
  return final_out(hSession, c_EncryptFinal, "C_EncryptFinal",
                   c_encryptfinal_3, pLastEncryptedPart,
                   pulLastEncryptedPartLen);
}

PX_EXPORT CK_RV C_DecryptInit(CK_SESSION_HANDLE hSession,
                              CK_MECHANISM_PTR pMechanism,
                              CK_OBJECT_HANDLE hKey) {
  return mech_key_init(hSession, "C_DecryptInit", c_decryptinit_3,
                       px_decryptinittyped_3, pMechanism,
                       hKey);
}

PX_EXPORT CK_RV C_Decrypt(CK_SESSION_HANDLE hSession,
                          CK_BYTE_PTR pEncryptedData,
                          CK_ULONG ulEncryptedDataLen, CK_BYTE_PTR pData,
                          CK_ULONG_PTR pulDataLen) {
  return data_out(hSession, c_Decrypt, "C_Decrypt", c_decrypt_3,
                  pEncryptedData, ulEncryptedDataLen, pData, pulDataLen);
}

PX_EXPORT CK_RV C_DecryptUpdate(CK_SESSION_HANDLE hSession,
                                CK_BYTE_PTR pEncryptedPart,
                                CK_ULONG ulEncryptedPartLen, CK_BYTE_PTR pPart,
                                CK_ULONG_PTR pulPartLen) {
  return data_out(hSession, c_DecryptUpdate, "C_DecryptUpdate",
                  c_decryptupdate_3, pEncryptedPart, ulEncryptedPartLen, pPart,
                  pulPartLen);
}

PX_EXPORT CK_RV C_DecryptFinal(CK_SESSION_HANDLE hSession,
                               CK_BYTE_PTR pLastPart,
                               CK_ULONG_PTR pulLastPartLen) {
  return final_out(hSession, c_DecryptFinal, "C_DecryptFinal",
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
  rv = mech_round_trip(&call, "C_DigestInit", &ma, digest_init_send, NULL,
                       &res);
  px_session_leave(&call);
  return rv == CKR_OK ? (CK_RV)res : rv;
}

PX_EXPORT CK_RV C_Digest(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData,
                         CK_ULONG ulDataLen, CK_BYTE_PTR pDigest,
                         CK_ULONG_PTR pulDigestLen) {
  return data_out(hSession, c_Digest, "C_Digest", c_digest_3, pData, ulDataLen,
                  pDigest, pulDigestLen);
}

PX_EXPORT CK_RV C_DigestUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart,
                               CK_ULONG ulPartLen) {
  return data_in(hSession, "C_DigestUpdate", c_digestupdate_3, pPart,
                 ulPartLen);
}

PX_EXPORT CK_RV C_DigestKey(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hKey) {
  SIMPLE_SESSION_CALL("C_DigestKey", c_digestkey_3, C_DigestKey_args,
                      .key = (px_object_handle)hKey);
}

PX_EXPORT CK_RV C_DigestFinal(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pDigest,
                              CK_ULONG_PTR pulDigestLen) {
  return final_out(hSession, c_DigestFinal, "C_DigestFinal", c_digestfinal_3,
                   pDigest, pulDigestLen);
}

/* ---- signatures ---- */

PX_EXPORT CK_RV C_SignInit(CK_SESSION_HANDLE hSession,
                           CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey) {
  return mech_key_init(hSession, "C_SignInit", c_signinit_3,
                       px_signinittyped_3, pMechanism, hKey);
}

PX_EXPORT CK_RV C_Sign(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData,
                       CK_ULONG ulDataLen, CK_BYTE_PTR pSignature,
                       CK_ULONG_PTR pulSignatureLen) {
  return data_out(hSession, c_Sign, "C_Sign", c_sign_3, pData, ulDataLen,
                  pSignature, pulSignatureLen);
}

PX_EXPORT CK_RV C_SignUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart,
                             CK_ULONG ulPartLen) {
  return data_in(hSession, "C_SignUpdate", c_signupdate_3, pPart, ulPartLen);
}

PX_EXPORT CK_RV C_SignFinal(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSignature,
                            CK_ULONG_PTR pulSignatureLen) {
  return final_out(hSession, c_SignFinal, "C_SignFinal", c_signfinal_3,
                   pSignature, pulSignatureLen);
}

PX_EXPORT CK_RV C_SignRecoverInit(CK_SESSION_HANDLE hSession,
                                  CK_MECHANISM_PTR pMechanism,
                                  CK_OBJECT_HANDLE hKey) {
  return mech_key_init(hSession, "C_SignRecoverInit", c_signrecoverinit_3,
                       px_signrecoverinittyped_3,
                       pMechanism, hKey);
}

PX_EXPORT CK_RV C_SignRecover(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData,
                              CK_ULONG ulDataLen, CK_BYTE_PTR pSignature,
                              CK_ULONG_PTR pulSignatureLen) {
  return data_out(hSession, c_SignRecover, "C_SignRecover", c_signrecover_3,
                  pData, ulDataLen, pSignature, pulSignatureLen);
}

PX_EXPORT CK_RV C_VerifyInit(CK_SESSION_HANDLE hSession,
                             CK_MECHANISM_PTR pMechanism,
                             CK_OBJECT_HANDLE hKey) {
  return mech_key_init(hSession, "C_VerifyInit", c_verifyinit_3,
                       px_verifyinittyped_3, pMechanism,
                       hKey);
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
  return data_in(hSession, "C_VerifyUpdate", c_verifyupdate_3, pPart,
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
  return mech_key_init(hSession, "C_VerifyRecoverInit", c_verifyrecoverinit_3,
                       px_verifyrecoverinittyped_3,
                       pMechanism, hKey);
}

PX_EXPORT CK_RV C_VerifyRecover(CK_SESSION_HANDLE hSession,
                                CK_BYTE_PTR pSignature,
                                CK_ULONG ulSignatureLen, CK_BYTE_PTR pData,
                                CK_ULONG_PTR pulDataLen) {
  return data_out(hSession, c_VerifyRecover, "C_VerifyRecover",
                  c_verifyrecover_3, pSignature, ulSignatureLen, pData,
                  pulDataLen);
}

/* ---- dual-function ---- */

PX_EXPORT CK_RV C_DigestEncryptUpdate(CK_SESSION_HANDLE hSession,
                                      CK_BYTE_PTR pPart, CK_ULONG ulPartLen,
                                      CK_BYTE_PTR pEncryptedPart,
                                      CK_ULONG_PTR pulEncryptedPartLen) {
  return data_out(hSession, c_DigestEncryptUpdate, "C_DigestEncryptUpdate",
                  c_digestencryptupdate_3, pPart, ulPartLen, pEncryptedPart,
                  pulEncryptedPartLen);
}

PX_EXPORT CK_RV C_DecryptDigestUpdate(CK_SESSION_HANDLE hSession,
                                      CK_BYTE_PTR pEncryptedPart,
                                      CK_ULONG ulEncryptedPartLen,
                                      CK_BYTE_PTR pPart,
                                      CK_ULONG_PTR pulPartLen) {
  return data_out(hSession, c_DecryptDigestUpdate, "C_DecryptDigestUpdate",
                  c_decryptdigestupdate_3, pEncryptedPart, ulEncryptedPartLen,
                  pPart, pulPartLen);
}

PX_EXPORT CK_RV C_SignEncryptUpdate(CK_SESSION_HANDLE hSession,
                                    CK_BYTE_PTR pPart, CK_ULONG ulPartLen,
                                    CK_BYTE_PTR pEncryptedPart,
                                    CK_ULONG_PTR pulEncryptedPartLen) {
  return data_out(hSession, c_SignEncryptUpdate, "C_SignEncryptUpdate",
                  c_signencryptupdate_3, pPart, ulPartLen, pEncryptedPart,
                  pulEncryptedPartLen);
}

PX_EXPORT CK_RV C_DecryptVerifyUpdate(CK_SESSION_HANDLE hSession,
                                      CK_BYTE_PTR pEncryptedPart,
                                      CK_ULONG ulEncryptedPartLen,
                                      CK_BYTE_PTR pPart,
                                      CK_ULONG_PTR pulPartLen) {
  return data_out(hSession, c_DecryptVerifyUpdate, "C_DecryptVerifyUpdate",
                  c_decryptverifyupdate_3, pEncryptedPart, ulEncryptedPartLen,
                  pPart, pulPartLen);
}

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
    rv = mech_round_trip(&call, "C_GenerateKey", &ma, generate_key_send, &t,
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
    rv = mech_round_trip(&call, "C_GenerateKeyPair", &ma,
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
  return mech_round_trip(call, what, &w->mech, wrap_send, w, res);
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
  rv = out_call(hSession, c_WrapKey, "C_WrapKey", key, klen, wrap_rpc, &w,
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
    rv = mech_round_trip(&call, "C_UnwrapKey", &ma, unwrap_send, &u, &res);
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
    rv = mech_round_trip(&call, "C_DeriveKey", &ma, derive_send, &dc, &res);
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
