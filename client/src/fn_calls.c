/*
 * Helpers for the call shapes the entry points share (see calls.h).
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "calls.h"

/* ---- output cache ---- */

CK_RV px_out_call(CK_SESSION_HANDLE h, int proc, const char *what,
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

CK_RV px_data_out(CK_SESSION_HANDLE h, int proc, const char *what,
                  px_data_stub stub, CK_BYTE_PTR in, CK_ULONG in_len,
                  CK_BYTE_PTR out, CK_ULONG_PTR out_len) {
  if (bad_buf(in, in_len) || out_len == NULL)
    return px_state_is_initialized() ? CKR_ARGUMENTS_BAD
                                     : CKR_CRYPTOKI_NOT_INITIALIZED;
  struct data_ctx d = {stub, in, in_len};
  return px_out_call(h, proc, what, in, in_len, data_rpc, &d, out, out_len);
}

CK_RV px_final_out(CK_SESSION_HANDLE h, int proc, const char *what,
                   px_final_stub stub, CK_BYTE_PTR out, CK_ULONG_PTR out_len) {
  if (out_len == NULL)
    return px_state_is_initialized() ? CKR_ARGUMENTS_BAD
                                     : CKR_CRYPTOKI_NOT_INITIALIZED;
  return px_out_call(h, proc, what, NULL, 0, final_rpc, &stub, out, out_len);
}

/* ---- calls that take a mechanism ---- */

/* One round trip of a call that takes a mechanism. The typed procedure is
 * used unless this connection's daemon answered PROC_UNAVAIL to one before
 * (Caml Crush); then the version 3 procedure is used, which cannot carry a
 * parameter struct holding pointers (CKR_MECHANISM_PARAM_INVALID, no round
 * trip). */
CK_RV px_mech_round_trip(struct px_call *call, const char *what,
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

CK_RV px_mech_key_init(CK_SESSION_HANDLE h, const char *what,
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
  rv = px_mech_round_trip(&call, what, &ma, key_init_send, &k, &res);
  px_session_leave(&call);
  return rv == CKR_OK ? (CK_RV)res : rv;
}

CK_RV px_data_in(CK_SESSION_HANDLE h, const char *what, px_data_rv_stub stub,
                 CK_BYTE_PTR in, CK_ULONG in_len) {
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

/* ---- template calls ---- */

CK_RV px_template_call(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR tmpl,
                       CK_ULONG count, px_template_rpc rpc, void *ctx) {
  if (!px_state_is_initialized())
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  px_template t;
  CK_RV rv = px_template_in(tmpl, count, &t);
  if (rv != CKR_OK)
    return rv;
  struct px_call call;
  rv = px_session_enter(h, &call);
  if (rv == CKR_OK) {
    rv = rpc(&call, &t, ctx);
    px_session_leave(&call);
  }
  px_template_free(&t);
  return rv;
}

/* ---- list replies ---- */

CK_RV px_list_out(CK_RV rv, px_ulong count, const px_ulong *vals, u_int len,
                  CK_ULONG *list, CK_ULONG capacity, CK_ULONG_PTR pulCount) {
  if (rv != CKR_OK && rv != CKR_BUFFER_TOO_SMALL)
    return rv;
  CK_ULONG n = (CK_ULONG)count;
  if (len > n)
    n = len;
  if (list == NULL) {
    rv = CKR_OK;
  } else if (rv == CKR_BUFFER_TOO_SMALL || n > capacity) {
    rv = CKR_BUFFER_TOO_SMALL;
  } else {
    for (u_int i = 0; i < len; i++)
      list[i] = (CK_ULONG)vals[i];
    n = len;
  }
  *pulCount = n;
  return rv;
}
