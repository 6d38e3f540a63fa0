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
 * pkcs11js's C_GetAttributeValue always asks for the lengths, then calls
 * again for the values; SoftHSM2 re-reads a token object on each call, so
 * one call instead of two halves the module's cost of an attribute read.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
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

static napi_value get_attribute_value(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  module_t *m;
  CK_ULONG session, object;
  uint32_t n, ncaps;
  if (argc < 5 || napi_get_value_external(env, argv[0], (void **)&m) != napi_ok || !get_ulong(env, argv[1], &session) ||
      !get_ulong(env, argv[2], &object) || napi_get_array_length(env, argv[3], &n) != napi_ok ||
      napi_get_array_length(env, argv[4], &ncaps) != napi_ok || n != ncaps || n > MAX_ATTRS)
    return fail(env, "EINVAL", "getAttributeValue(handle, session, object, types[], caps[]) with at most 256 attributes");
  CK_ATTRIBUTE t[MAX_ATTRS];
  size_t total = 0;
  for (uint32_t i = 0; i < n; i++) {
    napi_value x;
    int64_t cap;
    CHECK(napi_get_element(env, argv[3], i, &x));
    if (!get_ulong(env, x, &t[i].type)) return fail(env, "EINVAL", "attribute type must be a non-negative integer");
    CHECK(napi_get_element(env, argv[4], i, &x));
    CHECK(napi_get_value_int64(env, x, &cap));
    t[i].pValue = NULL;
    t[i].ulValueLen = cap < 0 ? 0 : (CK_ULONG)cap;
    if (cap > 0) total += (size_t)cap;
    if (total > MAX_BYTES) return fail(env, "E2BIG", "attribute capacities above 16 MiB");
  }
  unsigned char *buf = total > 0 ? malloc(total) : NULL;
  if (total > 0 && buf == NULL) return fail(env, "ENOMEM", "out of memory");
  size_t at = 0;
  for (uint32_t i = 0; i < n; i++) {
    napi_value x;
    int64_t cap;
    CHECK(napi_get_element(env, argv[4], i, &x));
    CHECK(napi_get_value_int64(env, x, &cap));
    if (cap >= 0) {
      /* A zero capacity still offers a (non-NULL) buffer: it asks for the value, as the caller's does. */
      t[i].pValue = buf != NULL ? buf + at : (void *)t;
      at += (size_t)cap;
    }
  }
  CK_RV rv = m->f->C_GetAttributeValue(session, object, t, n);
  napi_value out, x;
  napi_status st = napi_create_array_with_length(env, n + 1, &out);
  if (st == napi_ok) st = napi_create_double(env, (double)rv, &x);
  if (st == napi_ok) st = napi_set_element(env, out, 0, x);
  for (uint32_t i = 0; st == napi_ok && i < n; i++) {
    if (t[i].ulValueLen == CK_UNAVAILABLE_INFORMATION)
      st = napi_create_double(env, -1, &x);
    else if (t[i].pValue == NULL)
      st = napi_create_double(env, (double)t[i].ulValueLen, &x);
    else
      st = napi_create_buffer_copy(env, t[i].ulValueLen, t[i].pValue, NULL, &x);
    if (st == napi_ok) st = napi_set_element(env, out, i + 1, x);
  }
  free(buf);
  return st == napi_ok ? out : NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value f;
  CHECK(napi_create_function(env, "open", NAPI_AUTO_LENGTH, open_module, NULL, &f));
  CHECK(napi_set_named_property(env, exports, "open", f));
  CHECK(napi_create_function(env, "getAttributeValue", NAPI_AUTO_LENGTH, get_attribute_value, NULL, &f));
  CHECK(napi_set_named_property(env, exports, "getAttributeValue", f));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
