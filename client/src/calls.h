/*
 * Shared by the PKCS#11 entry point files (fn_*.c): the round-trip macro,
 * argument checks and the helpers for call shapes that recur (session
 * calls with a bare CK_RV reply, output-producing calls with the size-query
 * cache, calls taking a mechanism, template calls and list replies;
 * fn_calls.c).
 *
 * Output-producing calls carry no output length on the wire: the daemon
 * returns the whole output. A size query (NULL output buffer) therefore
 * runs the operation and keeps the output in the session's cache; the
 * next call of the same kind with the same input is answered from it.
 */
#ifndef PX_CALLS_H
#define PX_CALLS_H

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

static inline bool bad_buf(const void *p, CK_ULONG len) {
  return (p == NULL && len != 0) || len > PX_MAX_BYTES;
}

/* One round trip on the control connection (slot-level calls): stub(...,
 * clnt). Evaluates to CKR_OK when the reply is in the result argument, else
 * to px_control_enter's CK_RV, or to fail_rv when the round trip failed
 * (fail_rv is also what px_control_enter answers with no daemon reachable). */
#define CONTROL_RPC(what, fail_rv, stub, ...)                                  \
  __extension__({                                                              \
    struct px_call call_;                                                      \
    CK_RV rv_ = px_control_enter(&call_, (fail_rv));                           \
    if (rv_ == CKR_OK) {                                                       \
      if (PX_RPC(call_.c, (what), stub(__VA_ARGS__, call_.c->clnt)) != CKR_OK) \
        rv_ = (fail_rv);                                                       \
      px_control_leave(&call_);                                                \
    }                                                                          \
    rv_;                                                                       \
  })

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

/* Does the round trip of an output-producing call and fills res; returns
 * CKR_OK or the transport failure. */
typedef CK_RV (*px_out_rpc)(struct px_call *call, const char *what,
                            const void *ctx, px_bytes_ret *res);
/* One output-producing call on session h through the session's cache:
 * proc and the input identify the output cached by a size query. */
CK_RV px_out_call(CK_SESSION_HANDLE h, int proc, const char *what,
                  const void *in, size_t in_len, px_out_rpc rpc,
                  const void *ctx, CK_BYTE_PTR out, CK_ULONG_PTR out_len);

typedef enum clnt_stat (*px_data_stub)(px_session_data_args, px_bytes_ret *,
                                       CLIENT *);
typedef enum clnt_stat (*px_final_stub)(px_session_args, px_bytes_ret *,
                                        CLIENT *);
typedef enum clnt_stat (*px_data_rv_stub)(px_session_data_args, px_rv *,
                                          CLIENT *);
/* Data in, output out (C_Encrypt, C_SignUpdate's siblings...). */
CK_RV px_data_out(CK_SESSION_HANDLE h, int proc, const char *what,
                  px_data_stub stub, CK_BYTE_PTR in, CK_ULONG in_len,
                  CK_BYTE_PTR out, CK_ULONG_PTR out_len);
/* No input, output out (C_*Final, C_GetOperationState). */
CK_RV px_final_out(CK_SESSION_HANDLE h, int proc, const char *what,
                   px_final_stub stub, CK_BYTE_PTR out, CK_ULONG_PTR out_len);
/* Data in, bare CK_RV out (C_DigestUpdate, C_SignUpdate...). */
CK_RV px_data_in(CK_SESSION_HANDLE h, const char *what, px_data_rv_stub stub,
                 CK_BYTE_PTR in, CK_ULONG in_len);

/* Sends one request in the typed form (procedures 73..84) or the version 3
 * form of the same call. */
typedef enum clnt_stat (*px_mech_send)(struct px_call *call, const void *ctx,
                                       const struct px_mech_arg *ma,
                                       bool typed, void *res);
CK_RV px_mech_round_trip(struct px_call *call, const char *what,
                         const struct px_mech_arg *ma, px_mech_send send,
                         const void *ctx, void *res);

typedef enum clnt_stat (*px_mech_key_stub)(px_session_mechanism_key_args,
                                           px_rv *, CLIENT *);
typedef enum clnt_stat (*px_mech_key_typed_stub)(
    px_session_mechanism_typed_key_args, px_rv *, CLIENT *);
/* *Init calls with a key (C_EncryptInit...): drop any cached output. */
CK_RV px_mech_key_init(CK_SESSION_HANDLE h, const char *what,
                       px_mech_key_stub v3, px_mech_key_typed_stub typed,
                       CK_MECHANISM_PTR m, CK_OBJECT_HANDLE key);

/* Template calls: marshals the caller's template, enters the session and
 * hands both to rpc, which does the round trip and maps its reply. */
typedef CK_RV (*px_template_rpc)(struct px_call *call, const px_template *t,
                                 void *ctx);
CK_RV px_template_call(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR tmpl,
                       CK_ULONG count, px_template_rpc rpc, void *ctx);

/* List replies (C_GetSlotList, C_GetMechanismList): the PKCS#11 size
 * convention over the daemon's count and values. rv is the daemon's;
 * list NULL is a size query, capacity the caller's *pulCount. */
CK_RV px_list_out(CK_RV rv, px_ulong count, const px_ulong *vals, u_int len,
                  CK_ULONG *list, CK_ULONG capacity, CK_ULONG_PTR pulCount);

#endif
