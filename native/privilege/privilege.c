/*
 * Process calls Node does not expose, for the daemon's start-up and its
 * service manager (src/server/supervision/privilege.ts, systemd.ts):
 *   setNoNewPrivs()      prctl(PR_SET_NO_NEW_PRIVS, 1): execve never grants
 *                        privileges again (setuid bits, file capabilities).
 *   getNoNewPrivs()      prctl(PR_GET_NO_NEW_PRIVS): 0 or 1.
 *   killWithParent()     prctl(PR_SET_PDEATHSIG, SIGKILL): the kernel kills this
 *                        process when its parent dies (module helper processes,
 *                        whose event loop a module call may block). Cleared by
 *                        a change of credentials: call it after the drop.
 *                        Returns getppid() afterwards (the parent may have died
 *                        before the call).
 *   notify(path, text)   one datagram on an AF_UNIX SOCK_DGRAM socket (sd_notify
 *                        protocol); a path starting with '@' names the abstract
 *                        namespace (the '@' becomes the leading NUL byte).
 *   listenSocket(fd)     checks that an inherited descriptor is a listening
 *                        stream socket, marks it close-on-exec, and returns
 *                        {family: "unix", path} or {family: "inet", host, port}.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <node_api.h>

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[160];
  snprintf(msg, sizeof msg, "%.80s: %s", what, strerror(err));
  napi_throw_error(env, "ESYSCALL", msg);
  return NULL;
}

static napi_value make_int(napi_env env, int32_t v) {
  napi_value x;
  if (napi_create_int32(env, v, &x) != napi_ok) return NULL;
  return x;
}

static int set_str(napi_env env, napi_value obj, const char *name, const char *v, size_t len) {
  napi_value x;
  if (napi_create_string_utf8(env, v, len, &x) != napi_ok) return 0;
  return napi_set_named_property(env, obj, name, x) == napi_ok;
}

static napi_value set_no_new_privs(napi_env env, napi_callback_info info) {
  (void)info;
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return throw_errno(env, "prctl(PR_SET_NO_NEW_PRIVS)", errno);
  return make_int(env, 1);
}

static napi_value get_no_new_privs(napi_env env, napi_callback_info info) {
  (void)info;
  int r = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0);
  if (r < 0) return throw_errno(env, "prctl(PR_GET_NO_NEW_PRIVS)", errno);
  return make_int(env, r);
}

static napi_value kill_with_parent(napi_env env, napi_callback_info info) {
  (void)info;
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) return throw_errno(env, "prctl(PR_SET_PDEATHSIG)", errno);
  return make_int(env, (int32_t)getppid());
}

static napi_value notify(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
  size_t plen = 0;
  if (argc < 2 || napi_get_value_string_utf8(env, argv[0], path, sizeof path, &plen) != napi_ok || plen == 0 ||
      plen >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
    napi_throw_type_error(env, "EINVAL", "notify(path, text): path must be a non-empty socket path shorter than 108 bytes");
    return NULL;
  }
  size_t tlen = 0;
  if (napi_get_value_string_utf8(env, argv[1], NULL, 0, &tlen) != napi_ok || tlen == 0 || tlen > 4096) {
    napi_throw_type_error(env, "EINVAL", "notify(path, text): text must be a string of 1 to 4096 bytes");
    return NULL;
  }
  char text[4097];
  if (napi_get_value_string_utf8(env, argv[1], text, sizeof text, &tlen) != napi_ok) return NULL;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, path, plen);
  if (path[0] == '@') sa.sun_path[0] = '\0';
  socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + (path[0] == '@' ? 0 : 1));
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket(AF_UNIX, SOCK_DGRAM)", errno);
  ssize_t n = sendto(fd, text, tlen, MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
  int err = errno;
  close(fd);
  if (n < 0) return throw_errno(env, "sendto(NOTIFY_SOCKET)", err);
  return make_int(env, (int32_t)n);
}

static napi_value listen_socket(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "EINVAL", "listenSocket(fd) needs a non-negative integer descriptor");
    return NULL;
  }
  int type = 0, acc = 0;
  socklen_t len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) return throw_errno(env, "getsockopt(SO_TYPE)", errno);
  len = sizeof acc;
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) != 0) return throw_errno(env, "getsockopt(SO_ACCEPTCONN)", errno);
  if (type != SOCK_STREAM || !acc) {
    napi_throw_error(env, "ENOTLISTEN", "not a listening stream socket");
    return NULL;
  }
  struct sockaddr_storage ss;
  len = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) return throw_errno(env, "getsockname", errno);
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) != 0) return throw_errno(env, "fcntl(FD_CLOEXEC)", errno);
  napi_value obj;
  if (napi_create_object(env, &obj) != napi_ok) return NULL;
  if (ss.ss_family == AF_UNIX) {
    struct sockaddr_un *un = (struct sockaddr_un *)&ss;
    size_t n = len > offsetof(struct sockaddr_un, sun_path) ? len - offsetof(struct sockaddr_un, sun_path) : 0;
    if (n > 0 && un->sun_path[0] != '\0') n = strnlen(un->sun_path, n);
    if (!set_str(env, obj, "family", "unix", 4) || !set_str(env, obj, "path", un->sun_path, n)) return NULL;
    return obj;
  }
  char host[INET6_ADDRSTRLEN];
  int port;
  if (ss.ss_family == AF_INET) {
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    port = ntohs(in->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    port = ntohs(in6->sin6_port);
  } else {
    napi_throw_error(env, "EAFNOSUPPORT", "listening socket of an unsupported address family");
    return NULL;
  }
  napi_value p;
  if (!set_str(env, obj, "family", "inet", 4) || !set_str(env, obj, "host", host, strlen(host))) return NULL;
  if (napi_create_int32(env, port, &p) != napi_ok || napi_set_named_property(env, obj, "port", p) != napi_ok) return NULL;
  return obj;
}

static int export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  if (napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn) != napi_ok) return 0;
  return napi_set_named_property(env, exports, name, fn) == napi_ok;
}

static napi_value init(napi_env env, napi_value exports) {
  if (!export_fn(env, exports, "setNoNewPrivs", set_no_new_privs) || !export_fn(env, exports, "getNoNewPrivs", get_no_new_privs) ||
      !export_fn(env, exports, "killWithParent", kill_with_parent) ||
      !export_fn(env, exports, "notify", notify) || !export_fn(env, exports, "listenSocket", listen_socket))
    return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
