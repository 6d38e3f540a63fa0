/*
 * peerCred(fd): the SO_PEERCRED credentials of a connected Unix-domain socket,
 * as {uid, gid, pid}: the identity of the process that called connect(2),
 * captured by the kernel at that moment (socket(7), unix(7)).
 * Node exposes no getsockopt; this is the whole addon.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <node_api.h>

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[128];
  const char *text = strerror(err);
  size_t n = strlen(what);
  if (n > 60) n = 60;
  memcpy(msg, what, n);
  msg[n] = '\0';
  strncat(msg, ": ", sizeof msg - strlen(msg) - 1);
  strncat(msg, text, sizeof msg - strlen(msg) - 1);
  napi_throw_error(env, err == EBADF || err == ENOTSOCK ? "EBADF" : "ESYSCALL", msg);
  return NULL;
}

static napi_value set_u32(napi_env env, napi_value obj, const char *name, uint32_t v) {
  napi_value x;
  if (napi_create_uint32(env, v, &x) != napi_ok) return NULL;
  if (napi_set_named_property(env, obj, name, x) != napi_ok) return NULL;
  return obj;
}

static napi_value peer_cred(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "EINVAL", "peerCred(fd) needs a non-negative integer descriptor");
    return NULL;
  }
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return throw_errno(env, "getsockopt(SO_PEERCRED)", errno);
  if (len != sizeof cred) return throw_errno(env, "getsockopt(SO_PEERCRED)", EPROTO);
  napi_value obj;
  if (napi_create_object(env, &obj) != napi_ok) return NULL;
  if (!set_u32(env, obj, "uid", cred.uid) || !set_u32(env, obj, "gid", cred.gid) ||
      !set_u32(env, obj, "pid", (uint32_t)cred.pid))
    return NULL;
  return obj;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  if (napi_create_function(env, "peerCred", NAPI_AUTO_LENGTH, peer_cred, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "peerCred", fn) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
