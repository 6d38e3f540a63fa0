/*
 * AF_UNIX datagram sockets, which Node does not expose (node:dgram has
 * udp4/udp6 only), for the audit trail's syslog sink
 * (src/server/audit-sinks.ts, /dev/log):
 *   open(timeoutMs)            an unbound SOCK_DGRAM socket (close-on-exec)
 *                              whose blocking sends give up after timeoutMs
 *                              (SO_SNDTIMEO); returns the descriptor.
 *   send(fd, path, buf, wait)  one datagram to the socket at path. wait
 *                              false: MSG_DONTWAIT. Returns the bytes sent,
 *                              or -errno (EAGAIN: the receiver's queue is
 *                              full; ENOENT/ECONNREFUSED: nobody listens).
 *   close(fd)
 * The path is resolved at each send, so a syslog daemon that restarted
 * (a new /dev/log) is reached without reopening anything.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>
#include <node_api.h>

static napi_value make_int(napi_env env, int64_t v) {
  napi_value x;
  if (napi_create_int64(env, v, &x) != napi_ok) return NULL;
  return x;
}

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[160];
  snprintf(msg, sizeof msg, "%.80s: %s", what, strerror(err));
  napi_throw_error(env, "ESYSCALL", msg);
  return NULL;
}

static napi_value dgram_open(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t ms = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &ms) != napi_ok || ms < 1 || ms > 60000) {
    napi_throw_type_error(env, "EINVAL", "open(timeoutMs): timeoutMs must be an integer from 1 to 60000");
    return NULL;
  }
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket(AF_UNIX, SOCK_DGRAM)", errno);
  struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
  if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "setsockopt(SO_SNDTIMEO)", err);
  }
  return make_int(env, fd);
}

static napi_value dgram_send(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
  size_t plen = 0;
  void *data = NULL;
  size_t len = 0;
  bool wait = false;
  bool is_buf = false;
  if (argc < 4 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0 ||
      napi_get_value_string_utf8(env, argv[1], path, sizeof path, &plen) != napi_ok || plen == 0 ||
      plen >= sizeof(((struct sockaddr_un *)0)->sun_path) || napi_is_buffer(env, argv[2], &is_buf) != napi_ok || !is_buf ||
      napi_get_buffer_info(env, argv[2], &data, &len) != napi_ok || napi_get_value_bool(env, argv[3], &wait) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "send(fd, path, buffer, wait): a descriptor, a socket path shorter than 108 bytes, a Buffer, a boolean");
    return NULL;
  }
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, path, plen);
  socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + 1);
  ssize_t n = sendto(fd, data, len, MSG_NOSIGNAL | (wait ? 0 : MSG_DONTWAIT), (struct sockaddr *)&sa, salen);
  return make_int(env, n < 0 ? -(int64_t)errno : (int64_t)n);
}

static napi_value dgram_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "EINVAL", "close(fd) needs a non-negative integer descriptor");
    return NULL;
  }
  close(fd);
  return make_int(env, 0);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor d[] = {
      {"open", NULL, dgram_open, NULL, NULL, NULL, napi_default, NULL},
      {"send", NULL, dgram_send, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, dgram_close, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof d / sizeof d[0], d) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
