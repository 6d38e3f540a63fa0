/*
 * Direct calls into a PKCS#11 module that pkcs11js already loaded and
 * initialized, for the calls whose pkcs11js binding costs extra module calls.
 *
 *   open(path) -> handle      dlopen(path) (the loader returns the same,
 *                             already initialized, instance pkcs11js holds)
 *                             and C_GetFunctionList.
 *   getAttributeValue(handle, session, object, types[], caps[]) -> [rv, v0, v1, ...]
 *                             ONE C_GetAttributeValue. caps[i] < 0 asks for
 *                             the length only (pValue NULL); otherwise a
 *                             buffer of caps[i] bytes is offered. vi is a
 *                             Buffer with the value, the length (a number)
 *                             for a length-only ask, or -1 where the module
 *                             set CK_UNAVAILABLE_INFORMATION.
 *
 * and the hot calls of the benchmarked workloads, with handles as numbers
 * (pkcs11js wraps each in a Buffer) and results written into a caller's
 * Float64Array instead of objects built property by property:
 *
 *   getSessionInfo(handle, session, out) -> rv      out[0..3] = slotID, state,
 *                                                   flags, ulDeviceError
 *   findObjectsInit(handle, session, types[], values[]) -> rv
 *                                                   values[i]: Buffer, the
 *                                                   value in module layout
 *   findObjects(handle, session, max, out) -> rv    out[0] = count, then the
 *                                                   handles; max < out.length
 *   findObjectsFinal(handle, session) -> rv
 *   init(handle, which, session, mechanism, parameter|null, key) -> rv
 *                                                   which: INIT_* below
 *   data(handle, which, session, input, output, out) -> rv
 *                                                   which: DATA_* below; out[0]
 *                                                   = output length (the
 *                                                   length needed on
 *                                                   CKR_BUFFER_TOO_SMALL)
 *   verify(handle, session, data, signature) -> rv
 *
 * and, for the backend's call cost model (src/bindings/call-cost.ts):
 *
 *   threadUsage(out)                                out[0] = the calling
 *                                                   thread's CPU clock (µs),
 *                                                   out[1] = its voluntary
 *                                                   context switches (times
 *                                                   it blocked); both -1 if
 *                                                   unavailable
 *
 * A CK_ULONG that is not a safe integer (CK_UNAVAILABLE_INFORMATION) is
 * written as -1. Empty inputs go down as a valid pointer with length 0
 * (SoftHSM2 answers CKR_ARGUMENTS_BAD for NULL data even at length 0).
 *
 * pkcs11js's C_GetAttributeValue always asks for the lengths, then calls
 * again for the values; SoftHSM2 re-reads a token object on each call, so
 * one call instead of two halves the module's cost of an attribute read.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <node_api.h>
#include <p11-kit/pkcs11.h>

/* One call offers at most this many attributes and bytes; the caller falls back above it. */
#define MAX_ATTRS 256
#define MAX_BYTES (16u << 20)

typedef struct {
  void *dl;
  CK_FUNCTION_LIST_PTR f;
} module_t;

#define CHECK(call)                                                                                          \
  do {                                                                                                       \
    if ((call) != napi_ok) return NULL;                                                                      \
  } while (0)

static napi_value fail(napi_env env, const char *code, const char *msg) {
  napi_throw_error(env, code, msg);
  return NULL;
}

static napi_value open_module(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  char path[4096];
  size_t len;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], path, sizeof path, &len) != napi_ok || len == 0 ||
      len >= sizeof path - 1)
    return fail(env, "EINVAL", "open(path) needs a module path");
  void *dl = dlopen(path, RTLD_NOW);
  if (dl == NULL) return fail(env, "ELOAD", dlerror());
  CK_C_GetFunctionList gfl;
  *(void **)&gfl = dlsym(dl, "C_GetFunctionList");
  module_t *m = calloc(1, sizeof *m);
  if (gfl == NULL || m == NULL || gfl(&m->f) != CKR_OK || m->f == NULL) {
    free(m);
    dlclose(dl);
    return fail(env, "ELOAD", "C_GetFunctionList failed");
  }
  m->dl = dl;
  napi_value out;
  /* No finalizer: the module stays loaded for the life of the process, as pkcs11js's does. */
  CHECK(napi_create_external(env, m, NULL, NULL, &out));
  return out;
}

static int get_ulong(napi_env env, napi_value v, CK_ULONG *out) {
  int64_t x;
  if (napi_get_value_int64(env, v, &x) != napi_ok || x < 0) return 0;
  *out = (CK_ULONG)x;
  return 1;
}

static napi_value bad_args(napi_env env, const char *what) {
  return fail(env, "EINVAL", what);
}

/* Declares argv[N] and fills it from the call; fewer arguments, or arguments
 * of the wrong kind (bad_args(env, usage_)), throw `usage`. */
#define ARGS(N, usage)                                                                                       \
  static const char usage_[] = usage;                                                                        \
  size_t argc = N;                                                                                           \
  napi_value argv[N];                                                                                        \
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));                                               \
  if (argc < N) return bad_args(env, usage_)

static int get_module(napi_env env, napi_value v, module_t **m) {
  return napi_get_value_external(env, v, (void **)m) == napi_ok && *m != NULL;
}

/* ---- the hot calls ---- */

enum { INIT_SIGN, INIT_VERIFY, INIT_ENCRYPT, INIT_DECRYPT, INIT_DIGEST, INIT_COUNT };
enum { DATA_SIGN, DATA_ENCRYPT, DATA_DECRYPT, DATA_DIGEST, DATA_COUNT };

/* Largest template findObjectsInit carries (the caller falls back above it). */
#define MAX_FIND_ATTRS 64

static unsigned char empty_input[1];

static double ulong_out(CK_ULONG v) {
  return v > (CK_ULONG)9007199254740991ULL ? -1.0 : (double)v;
}

static napi_value rv_value(napi_env env, CK_RV rv) {
  napi_value x;
  if (napi_create_double(env, (double)rv, &x) != napi_ok) return NULL;
  return x;
}

/* A Float64Array argument: its elements and count. */
static int get_f64(napi_env env, napi_value v, double **data, size_t *n) {
  napi_typedarray_type type;
  void *p;
  if (napi_get_typedarray_info(env, v, &type, n, &p, NULL, NULL) != napi_ok || type != napi_float64_array) return 0;
  *data = p;
  return 1;
}

/* A Buffer (or any Uint8Array) argument; a zero-length one gets a valid pointer. */
static int get_bytes(napi_env env, napi_value v, unsigned char **data, size_t *n) {
  void *p;
  if (napi_get_buffer_info(env, v, &p, n) != napi_ok) return 0;
  *data = *n > 0 && p != NULL ? p : empty_input;
  return 1;
}

/*
 * getAttributeValueInto(handle, session, object, spec, n, out): spec holds n
 * pairs (type, capacity); capacity -1 asks for the length only, as a NULL
 * pValue does. Values go into out one after another, each at the sum of the
 * capacities before it; out is zeroed over them first, so bytes a module
 * claims but does not write read as zeros, never as an earlier call's value.
 * On return each pair's capacity holds the attribute's ulValueLen (-1 for
 * CK_UNAVAILABLE_INFORMATION, and for a length above what was offered).
 * Returns the CK_RV. No JS arrays or Buffers are made: the caller copies out.
 */
static napi_value get_attribute_value_into(napi_env env, napi_callback_info info) {
  ARGS(6, "getAttributeValueInto(handle, session, object, Float64Array spec, n, out) with at most 256 attributes");
  module_t *m;
  CK_ULONG session, object, n;
  double *spec;
  size_t nspec, outcap;
  unsigned char *out;
  if (!get_module(env, argv[0], &m) || !get_ulong(env, argv[1], &session) || !get_ulong(env, argv[2], &object) ||
      !get_f64(env, argv[3], &spec, &nspec) || !get_ulong(env, argv[4], &n) || n > MAX_ATTRS || 2 * n > nspec ||
      !get_bytes(env, argv[5], &out, &outcap))
    return bad_args(env, usage_);
  CK_ATTRIBUTE t[MAX_ATTRS];
  size_t at = 0;
  for (CK_ULONG i = 0; i < n; i++) {
    double type = spec[2 * i], cap = spec[2 * i + 1];
    if (!(type >= 0 && type <= 9007199254740991.0) || !(cap >= -1 && cap <= (double)MAX_BYTES))
      return bad_args(env, "attribute type must be a non-negative integer, capacity -1 or at most 16 MiB");
    t[i].type = (CK_ULONG)type;
    if (cap < 0) {
      t[i].pValue = NULL;
      t[i].ulValueLen = 0;
      continue;
    }
    if ((size_t)cap > outcap - at) return bad_args(env, "attribute capacities above the output buffer");
    /* A zero capacity still offers a (non-NULL) buffer: it asks for the value, as the caller's does. */
    t[i].pValue = out + at;
    t[i].ulValueLen = (CK_ULONG)cap;
    at += (size_t)cap;
  }
  memset(out, 0, at);
  CK_RV rv = m->f->C_GetAttributeValue(session, object, t, n);
  for (CK_ULONG i = 0; i < n; i++) {
    double cap = spec[2 * i + 1];
    CK_ULONG len = t[i].ulValueLen;
    spec[2 * i + 1] = len == CK_UNAVAILABLE_INFORMATION || (cap >= 0 && len > (CK_ULONG)cap) ? -1 : ulong_out(len);
  }
  return rv_value(env, rv);
}

static napi_value get_session_info(napi_env env, napi_callback_info info) {
  ARGS(3, "getSessionInfo(handle, session, Float64Array(4))");
  module_t *m;
  CK_ULONG session;
  double *out;
  size_t n;
  if (!get_module(env, argv[0], &m) || !get_ulong(env, argv[1], &session) || !get_f64(env, argv[2], &out, &n) ||
      n < 4)
    return bad_args(env, usage_);
  CK_SESSION_INFO si;
  memset(&si, 0, sizeof si);
  CK_RV rv = m->f->C_GetSessionInfo(session, &si);
  if (rv == CKR_OK) {
    out[0] = ulong_out(si.slotID);
    out[1] = ulong_out(si.state);
    out[2] = ulong_out(si.flags);
    out[3] = ulong_out(si.ulDeviceError);
  }
  return rv_value(env, rv);
}

static napi_value find_objects_init(napi_env env, napi_callback_info info) {
  ARGS(4, "findObjectsInit(handle, session, types[], values[]) with at most 64 attributes");
  module_t *m;
  CK_ULONG session;
  uint32_t n, nv;
  if (!get_module(env, argv[0], &m) || !get_ulong(env, argv[1], &session) ||
      napi_get_array_length(env, argv[2], &n) != napi_ok || napi_get_array_length(env, argv[3], &nv) != napi_ok || n != nv ||
      n > MAX_FIND_ATTRS)
    return bad_args(env, usage_);
  CK_ATTRIBUTE t[MAX_FIND_ATTRS];
  for (uint32_t i = 0; i < n; i++) {
    napi_value x;
    unsigned char *p;
    size_t len;
    CHECK(napi_get_element(env, argv[2], i, &x));
    if (!get_ulong(env, x, &t[i].type)) return bad_args(env, "attribute type must be a non-negative integer");
    CHECK(napi_get_element(env, argv[3], i, &x));
    if (!get_bytes(env, x, &p, &len)) return bad_args(env, "attribute value must be a Buffer");
    t[i].pValue = p;
    t[i].ulValueLen = len;
  }
  /* The Buffers stay referenced by the caller's arrays for the whole (synchronous) call. */
  return rv_value(env, m->f->C_FindObjectsInit(session, n > 0 ? t : NULL, n));
}

static napi_value find_objects(napi_env env, napi_callback_info info) {
  ARGS(4, "findObjects(handle, session, max, Float64Array(max + 1))");
  module_t *m;
  CK_ULONG session, max;
  double *out;
  size_t n;
  if (!get_module(env, argv[0], &m) || !get_ulong(env, argv[1], &session) || !get_ulong(env, argv[2], &max) ||
      !get_f64(env, argv[3], &out, &n) || max + 1 > n || max > 65536)
    return bad_args(env, usage_);
  CK_OBJECT_HANDLE h[256];
  CK_OBJECT_HANDLE *hs = max <= 256 ? h : malloc(max * sizeof *hs);
  if (hs == NULL) return fail(env, "ENOMEM", "out of memory");
  CK_ULONG count = 0;
  CK_RV rv = m->f->C_FindObjects(session, hs, max, &count);
  if (rv == CKR_OK) {
    if (count > max) count = max;
    out[0] = (double)count;
    for (CK_ULONG i = 0; i < count; i++) out[i + 1] = ulong_out(hs[i]);
  }
  if (hs != h) free(hs);
  return rv_value(env, rv);
}

static napi_value find_objects_final(napi_env env, napi_callback_info info) {
  ARGS(2, "findObjectsFinal(handle, session)");
  module_t *m;
  CK_ULONG session;
  if (!get_module(env, argv[0], &m) || !get_ulong(env, argv[1], &session))
    return bad_args(env, usage_);
  return rv_value(env, m->f->C_FindObjectsFinal(session));
}

static napi_value op_init(napi_env env, napi_callback_info info) {
  ARGS(6, "init(handle, which, session, mechanism, parameter | null, key)");
  module_t *m;
  CK_ULONG which, session, key;
  CK_MECHANISM mech = {0, NULL, 0};
  napi_valuetype pt;
  if (!get_module(env, argv[0], &m) || !get_ulong(env, argv[1], &which) || which >= INIT_COUNT ||
      !get_ulong(env, argv[2], &session) || !get_ulong(env, argv[3], &mech.mechanism) || !get_ulong(env, argv[5], &key) ||
      napi_typeof(env, argv[4], &pt) != napi_ok)
    return bad_args(env, usage_);
  if (pt != napi_null && pt != napi_undefined) {
    unsigned char *p;
    size_t len;
    if (!get_bytes(env, argv[4], &p, &len)) return bad_args(env, "mechanism parameter must be a Buffer or null");
    /* A zero-length parameter is no parameter (as pkcs11js passes it). */
    if (len > 0) {
      mech.pParameter = p;
      mech.ulParameterLen = len;
    }
  }
  CK_RV rv;
  switch (which) {
  case INIT_SIGN: rv = m->f->C_SignInit(session, &mech, key); break;
  case INIT_VERIFY: rv = m->f->C_VerifyInit(session, &mech, key); break;
  case INIT_ENCRYPT: rv = m->f->C_EncryptInit(session, &mech, key); break;
  case INIT_DECRYPT: rv = m->f->C_DecryptInit(session, &mech, key); break;
  default: rv = m->f->C_DigestInit(session, &mech); break;
  }
  return rv_value(env, rv);
}

static napi_value op_data(napi_env env, napi_callback_info info) {
  ARGS(6, "data(handle, which, session, input, output, Float64Array(1))");
  module_t *m;
  CK_ULONG which, session;
  unsigned char *in, *outp;
  size_t inlen, outcap, n;
  double *res;
  if (!get_module(env, argv[0], &m) || !get_ulong(env, argv[1], &which) || which >= DATA_COUNT ||
      !get_ulong(env, argv[2], &session) || !get_bytes(env, argv[3], &in, &inlen) || !get_bytes(env, argv[4], &outp, &outcap) ||
      !get_f64(env, argv[5], &res, &n) || n < 1)
    return bad_args(env, usage_);
  CK_ULONG outlen = outcap;
  CK_RV rv;
  switch (which) {
  case DATA_SIGN: rv = m->f->C_Sign(session, in, inlen, outp, &outlen); break;
  case DATA_ENCRYPT: rv = m->f->C_Encrypt(session, in, inlen, outp, &outlen); break;
  case DATA_DECRYPT: rv = m->f->C_Decrypt(session, in, inlen, outp, &outlen); break;
  default: rv = m->f->C_Digest(session, in, inlen, outp, &outlen); break;
  }
  res[0] = ulong_out(outlen);
  return rv_value(env, rv);
}

static napi_value op_verify(napi_env env, napi_callback_info info) {
  ARGS(4, "verify(handle, session, data, signature)");
  module_t *m;
  CK_ULONG session;
  unsigned char *data, *sig;
  size_t dlen, slen;
  if (!get_module(env, argv[0], &m) || !get_ulong(env, argv[1], &session) ||
      !get_bytes(env, argv[2], &data, &dlen) || !get_bytes(env, argv[3], &sig, &slen))
    return bad_args(env, usage_);
  return rv_value(env, m->f->C_Verify(session, data, dlen, sig, slen));
}

static napi_value thread_usage(napi_env env, napi_callback_info info) {
  ARGS(1, "threadUsage(out) with out a Float64Array of at least 2");
  double *res;
  size_t n;
  if (!get_f64(env, argv[0], &res, &n) || n < 2)
    return bad_args(env, usage_);
  /* getrusage's times for a thread can be tick-sampled (4 ms at HZ=250); the thread CPU clock is exact. */
  struct timespec ts;
  struct rusage ru;
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0 || getrusage(RUSAGE_THREAD, &ru) != 0) {
    res[0] = res[1] = -1;
  } else {
    res[0] = (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
    res[1] = (double)ru.ru_nvcsw;
  }
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  static const struct {
    const char *name;
    napi_callback fn;
  } fns[] = {
      {"open", open_module},
      {"getAttributeValueInto", get_attribute_value_into},
      {"getSessionInfo", get_session_info},
      {"findObjectsInit", find_objects_init},
      {"findObjects", find_objects},
      {"findObjectsFinal", find_objects_final},
      {"init", op_init},
      {"data", op_data},
      {"verify", op_verify},
      {"threadUsage", thread_usage},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value f;
    CHECK(napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f));
    CHECK(napi_set_named_property(env, exports, fns[i].name, f));
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
