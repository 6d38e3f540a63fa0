/*
 * ONC RPC calls (RFC 5531) over one stream socket, without libtirpc's
 * clnt_vc: the call is encoded with the rpcgen xdr_* routines into the
 * connection's buffer, written as one record with send(MSG_NOSIGNAL), and
 * the reply record is read with poll and recv (framing: record.c), then
 * decoded in memory.
 *
 * No global lock is taken and no signal mask is changed: the only state is
 * the connection's, which its caller serializes (px_conn.lock). A fork in
 * another thread therefore leaves nothing locked that the child needs.
 *
 * The rpcgen client stubs (generated/pkcs11_rpc_clnt.c) call clnt_call(),
 * i.e. CLIENT.cl_ops->cl_call: each connection carries a CLIENT whose ops
 * vector is this file's, so the stubs run over this transport unchanged.
 *
 * Wire facts kept from clnt_vc (what our daemon and Caml Crush's accept):
 * call header xid, CALL, RPC version 2, program, version, procedure,
 * credential and verifier AUTH_NONE with empty bodies; one record per call;
 * a reply's verifier is skipped.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "record.h"
#include "tls.h"

/* RFC 5531 constants. */
enum {
  W_MSG_CALL = 0,
  W_MSG_REPLY = 1,
  W_RPC_VERSION = 2,
  W_AUTH_FLAVOR_NONE = 0,
  W_REPLY_ACCEPTED = 0,
  W_REPLY_DENIED = 1,
  W_ACCEPT_SUCCESS = 0,
  W_ACCEPT_PROG_UNAVAIL = 1,
  W_ACCEPT_PROG_MISMATCH = 2,
  W_ACCEPT_PROC_UNAVAIL = 3,
  W_ACCEPT_GARBAGE_ARGS = 4,
  W_ACCEPT_SYSTEM_ERR = 5,
  W_REJECT_RPC_MISMATCH = 0,
  W_REJECT_AUTH_ERROR = 1,
  W_MAX_AUTH_BYTES = 400,
};

/* xid, CALL, rpcvers, prog, vers, proc, cred (flavor, length), verifier
 * (flavor, length). */
#define CALL_HEADER_WORDS 10

static struct px_wire *wire_of(CLIENT *cl) {
  return (struct px_wire *)((char *)cl - offsetof(struct px_wire, client));
}

static bool encode_into(struct px_wire *w, uint32_t xid, rpcproc_t proc,
                        xdrproc_t xargs, void *args, size_t *body_len) {
  XDR x;
  xdrmem_create(&x, (char *)w->buf + PX_RECORD_MARK_SIZE,
                (u_int)(w->cap - PX_RECORD_MARK_SIZE), XDR_ENCODE);
  u_int head[CALL_HEADER_WORDS] = {
      xid,     W_MSG_CALL,         W_RPC_VERSION, w->prog, w->vers,
      proc,    W_AUTH_FLAVOR_NONE, 0,             W_AUTH_FLAVOR_NONE, 0};
  bool ok = true;
  for (size_t i = 0; ok && i < CALL_HEADER_WORDS; i++)
    ok = xdr_u_int(&x, &head[i]);
  ok = ok && xargs(&x, args);
  *body_len = xdr_getpos(&x);
  xdr_destroy(&x);
  return ok;
}

/* Encodes header and arguments after the record mark. xdrmem fails both
 * when out of room and on a value the routine refuses: after a failure the
 * exact size (xdr_sizeof) tells which, and a large call is retried once in
 * a buffer of that size. Returns the record's body length. */
static enum clnt_stat encode_call(struct px_wire *w, uint32_t xid,
                                  rpcproc_t proc, xdrproc_t xargs, void *args,
                                  size_t *body_len) {
  if (!px_record_reserve(w, PX_RECORD_KEEP_SIZE))
    return RPC_CANTENCODEARGS;
  if (encode_into(w, xid, proc, xargs, args, body_len))
    return RPC_SUCCESS;
  size_t need = (size_t)xdr_sizeof(xargs, args);
  if (need == 0 || need > PX_RECORD_MAX)
    return RPC_CANTENCODEARGS;
  need += PX_RECORD_MARK_SIZE + CALL_HEADER_WORDS * 4;
  if (need <= w->cap || !px_record_reserve(w, need))
    return RPC_CANTENCODEARGS;
  return encode_into(w, xid, proc, xargs, args, body_len) ? RPC_SUCCESS
                                                          : RPC_CANTENCODEARGS;
}

/* Reply header up to the results (RFC 5531 rpc_msg, reply_body). */
static enum clnt_stat decode_reply_header(XDR *x, uint32_t xid) {
  u_int rxid, mtype, stat;
  if (!xdr_u_int(x, &rxid) || !xdr_u_int(x, &mtype) || !xdr_u_int(x, &stat))
    return RPC_CANTDECODERES;
  if (rxid != xid || mtype != W_MSG_REPLY)
    return RPC_CANTDECODERES;
  if (stat == W_REPLY_DENIED) {
    u_int why;
    if (!xdr_u_int(x, &why))
      return RPC_CANTDECODERES;
    return why == W_REJECT_RPC_MISMATCH ? RPC_VERSMISMATCH
           : why == W_REJECT_AUTH_ERROR ? RPC_AUTHERROR
                                      : RPC_CANTDECODERES;
  }
  if (stat != W_REPLY_ACCEPTED)
    return RPC_CANTDECODERES;
  u_int flavor, vlen, accept;
  if (!xdr_u_int(x, &flavor) || !xdr_u_int(x, &vlen) || vlen > W_MAX_AUTH_BYTES)
    return RPC_CANTDECODERES;
  if (!xdr_setpos(x, xdr_getpos(x) + ((vlen + 3) & ~3u)))
    return RPC_CANTDECODERES;
  if (!xdr_u_int(x, &accept))
    return RPC_CANTDECODERES;
  switch (accept) {
  case W_ACCEPT_SUCCESS:
    return RPC_SUCCESS;
  case W_ACCEPT_PROG_UNAVAIL:
    return RPC_PROGUNAVAIL;
  case W_ACCEPT_PROG_MISMATCH:
    return RPC_PROGVERSMISMATCH;
  case W_ACCEPT_PROC_UNAVAIL:
    return RPC_PROCUNAVAIL;
  case W_ACCEPT_GARBAGE_ARGS:
    return RPC_CANTDECODEARGS;
  case W_ACCEPT_SYSTEM_ERR:
    return RPC_SYSTEMERROR;
  default:
    return RPC_CANTDECODERES;
  }
}

/* Requests and replies may hold PINs and key bytes: the bytes a call used
 * are zeroed after it, and a grown buffer is given back. */
static void wire_scrub(struct px_wire *w, size_t used) {
  if (w->buf == NULL)
    return;
  explicit_bzero(w->buf, used < w->cap ? used : w->cap);
  if (w->cap <= PX_RECORD_KEEP_SIZE)
    return;
  free(w->buf);
  w->buf = NULL;
  w->cap = 0;
}

/* The per-call timeout of the rpcgen stubs is ignored: the connection's
 * (rpc_timeout) bounds each round trip, sending and receiving together. */
static enum clnt_stat wire_call(CLIENT *cl, rpcproc_t proc, xdrproc_t xargs,
                                void *args, xdrproc_t xres, void *res,
                                struct timeval unused) {
  (void)unused;
  struct px_wire *w = wire_of(cl);
  if (w->fd < 0)
    return RPC_CANTSEND;
  int64_t deadline = px_now_ms() + w->timeout_ms;
  uint32_t xid = ++w->xid;
  size_t len = 0, used = 0;
  enum clnt_stat s = encode_call(w, xid, proc, xargs, args, &len);
  used = s == RPC_SUCCESS ? PX_RECORD_MARK_SIZE + len : w->cap;
  if (s == RPC_SUCCESS && len > PX_RECORD_MAX)
    s = RPC_CANTENCODEARGS;
  if (s == RPC_SUCCESS)
    s = px_record_send(w, len, deadline);
  if (s == RPC_SUCCESS) {
    size_t raw = 0;
    s = px_record_recv(w, &len, &raw, deadline);
    if (raw > used)
      used = raw;
  }
  if (s == RPC_SUCCESS) {
    XDR x;
    xdrmem_create(&x, (char *)w->buf + PX_RECORD_MARK_SIZE, (u_int)len,
                  XDR_DECODE);
    s = decode_reply_header(&x, xid);
    if (s == RPC_SUCCESS && !xres(&x, res)) {
      s = RPC_CANTDECODERES;
      xdr_free(xres, res); /* what was decoded before the failure */
    }
    xdr_destroy(&x);
  }
  w->last = s;
  wire_scrub(w, used);
  return s;
}

static void wire_abort(CLIENT *cl) { (void)cl; }

static void wire_geterr(CLIENT *cl, struct rpc_err *e) {
  memset(e, 0, sizeof *e);
  e->re_status = wire_of(cl)->last;
}

static bool_t wire_freeres(CLIENT *cl, xdrproc_t xres, void *res) {
  (void)cl;
  xdr_free(xres, res);
  return TRUE;
}

static void wire_destroy(CLIENT *cl) { px_wire_close(wire_of(cl)); }

static bool_t wire_control(CLIENT *cl, u_int what, void *arg) {
  (void)cl;
  (void)what;
  (void)arg;
  return FALSE;
}

static struct clnt_ops wire_ops = {
    .cl_call = wire_call,
    .cl_abort = wire_abort,
    .cl_geterr = wire_geterr,
    .cl_freeres = wire_freeres,
    .cl_destroy = wire_destroy,
    .cl_control = wire_control,
};

const char *px_wire_strerror(enum clnt_stat st) {
  switch (st) {
  case RPC_SUCCESS:
    return "success";
  case RPC_CANTENCODEARGS:
    return "cannot encode the arguments";
  case RPC_CANTSEND:
    return "cannot send";
  case RPC_CANTRECV:
    return "cannot receive (closed, or a malformed record)";
  case RPC_TIMEDOUT:
    return "timed out";
  case RPC_CANTDECODERES:
    return "cannot decode the reply";
  case RPC_VERSMISMATCH:
    return "RPC version mismatch";
  case RPC_AUTHERROR:
    return "authentication refused";
  case RPC_PROGUNAVAIL:
    return "program unavailable";
  case RPC_PROGVERSMISMATCH:
    return "program version mismatch";
  case RPC_PROCUNAVAIL:
    return "procedure unavailable";
  case RPC_CANTDECODEARGS:
    return "the server cannot decode the arguments";
  case RPC_SYSTEMERROR:
    return "server system error";
  default:
    return "RPC failure";
  }
}

void px_wire_init(struct px_wire *w, int fd, u_int prog, u_int vers,
                  unsigned long timeout_s) {
  memset(w, 0, sizeof *w);
  w->client.cl_ops = &wire_ops;
  w->fd = fd;
  w->prog = prog;
  w->vers = vers;
  w->timeout_ms = timeout_s > INT64_MAX / 2000 ? INT64_MAX / 2
                                                : (int64_t)timeout_s * 1000;
  /* Any start value works: replies are matched to the one call in
   * flight. Distinct per connection and process for reading traces. */
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  w->xid = (uint32_t)ts.tv_nsec ^ (uint32_t)((uintptr_t)w >> 4);
  w->last = RPC_SUCCESS;
}

static void wire_release(struct px_wire *w, bool say_goodbye) {
  px_tls_close(w->ssl, say_goodbye);
  w->ssl = NULL;
  if (w->fd >= 0)
    close(w->fd);
  w->fd = -1;
  if (w->buf != NULL)
    explicit_bzero(w->buf, w->cap);
  free(w->buf);
  w->buf = NULL;
  w->cap = 0;
}

void px_wire_close(struct px_wire *w) { wire_release(w, true); }

void px_wire_abandon(struct px_wire *w) { wire_release(w, false); }
