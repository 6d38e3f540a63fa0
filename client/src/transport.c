/*
 * Sockets and the per-connection handshake. One px_conn is one socket
 * with its own RPC transport (wire.c). A connection that starts an
 * application sends C_SetupArch (this process's CK_ULONG layout),
 * C_LoadModule (alias bytes) and C_Initialize; a connection joining an
 * existing application sends px_JoinApp(token) as its first record (the
 * daemon routes the connection by it), then C_SetupArch only.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "px.h"
#include "record.h"
#include "tls.h"

/* Transport failures retire the connection: a reply may be half read, so
 * the stream cannot be trusted for another call. */
CK_RV px_rpc_done(struct px_conn *c, enum clnt_stat st, const char *what) {
  if (st == RPC_SUCCESS)
    return CKR_OK;
  atomic_store(&c->broken, true);
  px_debug("%s: RPC failed: %s", what, px_wire_strerror(st));
  return CKR_DEVICE_ERROR;
}

/* Every connection object, listed in the state or not; see px.h. */
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct px_conn *reg_head;

void px_conn_registry_lock(void) { pthread_mutex_lock(&reg_lock); }
void px_conn_registry_unlock(void) { pthread_mutex_unlock(&reg_lock); }

static void reg_add(struct px_conn *c) {
  pthread_mutex_lock(&reg_lock);
  c->reg_prev = NULL;
  c->reg_next = reg_head;
  if (reg_head != NULL)
    reg_head->reg_prev = c;
  reg_head = c;
  pthread_mutex_unlock(&reg_lock);
}

static void reg_remove(struct px_conn *c) {
  pthread_mutex_lock(&reg_lock);
  if (c->reg_prev != NULL)
    c->reg_prev->reg_next = c->reg_next;
  else
    reg_head = c->reg_next;
  if (c->reg_next != NULL)
    c->reg_next->reg_prev = c->reg_prev;
  pthread_mutex_unlock(&reg_lock);
}

/* The descriptor (and SSL object) of a connection being opened is set
 * under the registry lock, which fork's prepare handler holds: a child
 * forked while a thread connects or handshakes finds them in the registry
 * and closes them. */
static int reg_socket(struct px_conn *c, int domain, int type, int proto) {
  pthread_mutex_lock(&reg_lock);
  int fd = socket(domain, type | SOCK_CLOEXEC, proto);
  c->wire.fd = fd;
  pthread_mutex_unlock(&reg_lock);
  return fd;
}

static void reg_close_socket(struct px_conn *c) {
  pthread_mutex_lock(&reg_lock);
  close(c->wire.fd);
  c->wire.fd = -1;
  pthread_mutex_unlock(&reg_lock);
}

/* connect(2) bounded by SO_SNDTIMEO, which both AF_UNIX (a full backlog)
 * and TCP (no SYN-ACK) connects honour; the option is cleared afterwards,
 * the stream's sends being bounded by the RPC deadline instead. */
static int connect_bounded(int fd, const struct sockaddr *sa, socklen_t len,
                           unsigned long timeout_s) {
  struct timeval tv = {.tv_sec = (time_t)timeout_s, .tv_usec = 0};
  if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0)
    return -1;
  int rc = connect(fd, sa, len);
  int err = errno;
  if (rc != 0 && (err == EINPROGRESS || err == EAGAIN))
    err = ETIMEDOUT;
  struct timeval zero = {0, 0};
  if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &zero, sizeof zero) != 0 &&
      rc == 0) {
    rc = -1;
    err = errno;
  }
  errno = err;
  return rc;
}

static int connect_unix(struct px_conn *c, const char *path,
                        unsigned long timeout_s) {
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (strlen(path) >= sizeof sa.sun_path) {
    px_debug("connect: unix socket path too long");
    return -1;
  }
  strcpy(sa.sun_path, path);
  int fd = reg_socket(c, AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0)
    return -1;
  if (connect_bounded(fd, (struct sockaddr *)&sa, sizeof sa, timeout_s) < 0) {
    px_debug("connect: unix:%s: %s", path, strerror(errno));
    reg_close_socket(c);
    return -1;
  }
  return 0;
}

static int connect_tcp(struct px_conn *c, const char *host, const char *port,
                       unsigned long timeout_s) {
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int gai = getaddrinfo(host, port, &hints, &res);
  if (gai != 0) {
    px_debug("connect: %s:%s: %s", host, port, gai_strerror(gai));
    return -1;
  }
  int fd = -1;
  for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
    fd = reg_socket(c, ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0)
      continue;
    if (connect_bounded(fd, ai->ai_addr, ai->ai_addrlen, timeout_s) == 0) {
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      break;
    }
    px_debug("connect: tcp://%s:%s: %s", host, port, strerror(errno));
    reg_close_socket(c);
    fd = -1;
  }
  freeaddrinfo(res);
  return fd < 0 ? -1 : 0;
}

/* TLS over the connected socket; the handshake, like a round trip, is
 * bounded by rpc_timeout. */
static int start_tls(struct px_conn *c, const struct px_config *cfg,
                     const struct px_endpoint *ep,
                     const unsigned char *token) {
  if (cfg->tls == NULL)
    return -1;
  pthread_mutex_lock(&reg_lock);
  c->wire.ssl = px_tls_new_ssl(cfg->tls, c->wire.fd, ep->host);
  pthread_mutex_unlock(&reg_lock);
  if (c->wire.ssl == NULL)
    return -1;
  if (token != NULL && px_tls_offer_join(c->wire.ssl, token) != 0)
    return -1;
  return px_tls_handshake(cfg->tls, c->wire.ssl, c->wire.fd, ep->host,
                          ep->port,
                          px_now_ms() + (int64_t)cfg->rpc_timeout * 1000);
}

/* C_SetupArch code of this process (rpc/pkcs11.x PX_ARCH_*). */
static int64_t local_arch(void) {
  const uint16_t probe = 1;
  bool little = *(const uint8_t *)&probe == 1;
  if (sizeof(CK_ULONG) == 8)
    return little ? PX_ARCH_LITTLE_ENDIAN_64 : PX_ARCH_BIG_ENDIAN_64;
  return little ? PX_ARCH_LITTLE_ENDIAN_32 : PX_ARCH_BIG_ENDIAN_32;
}

/* px_JoinApp: a refusal (the application is gone) is returned as the
 * daemon's rv, a transport failure as CKR_DEVICE_ERROR. */
static CK_RV join_app(struct px_conn *c, const unsigned char *token) {
  px_rv rv = 0;
  px_JoinApp_args ja;
  ja.token.token_len = PX_APP_TOKEN_SIZE;
  ja.token.token_val = (char *)token;
  CK_RV st = px_rpc_done(c, px_joinapp_3(ja, &rv, c->clnt), "px_JoinApp");
  if (st != CKR_OK)
    return st;
  if (rv != CKR_OK) {
    px_debug("px_JoinApp returned 0x%llx", (unsigned long long)rv);
    return rv == CKR_DEVICE_ERROR ? CKR_GENERAL_ERROR : (CK_RV)rv;
  }
  return CKR_OK;
}

static CK_RV setup_arch(struct px_conn *c) {
  px_rv rv = 0;
  C_SetupArch_args sa = {.arch = local_arch()};
  CK_RV st = px_rpc_done(c, c_setuparch_3(sa, &rv, c->clnt), "C_SetupArch");
  if (st != CKR_OK)
    return st;
  px_debug("C_SetupArch: client arch %lld, server arch %lld",
           (long long)sa.arch, (long long)rv);
  if (rv == PX_ARCH_UNSUPPORTED || rv < PX_ARCH_LITTLE_ENDIAN_64 ||
      rv > PX_ARCH_BIG_ENDIAN_32) {
    px_debug("C_SetupArch: server refused this architecture");
    return CKR_DEVICE_ERROR;
  }
  return CKR_OK;
}

static CK_RV load_and_initialize(struct px_conn *c, const char *libname) {
  px_rv rv = 0;
  CK_RV st;
  C_LoadModule_args lm;
  lm.alias.px_bytes_len = (u_int)strlen(libname);
  lm.alias.px_bytes_val = (char *)libname;
  rv = 0;
  st = px_rpc_done(c, c_loadmodule_3(lm, &rv, c->clnt), "C_LoadModule");
  if (st != CKR_OK)
    return st;
  if (rv != CKR_OK) {
    px_debug("C_LoadModule('%s') returned 0x%llx", libname,
             (unsigned long long)rv);
    return (CK_RV)rv;
  }

  rv = 0;
  st = px_rpc_done(c, c_initialize_3(&rv, c->clnt), "C_Initialize");
  if (st != CKR_OK)
    return st;
  /* A daemon sharing one module between connections may already have
   * initialized it. */
  if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
    px_debug("remote C_Initialize returned 0x%llx", (unsigned long long)rv);
    return (CK_RV)rv;
  }
  return CKR_OK;
}

CK_RV px_conn_open(const struct px_config *cfg, size_t ep_index,
                   const unsigned char *token, struct px_conn **out) {
  *out = NULL;
  const struct px_endpoint *ep = &cfg->ep[ep_index];
  struct px_conn *c = calloc(1, sizeof *c);
  if (c == NULL)
    return CKR_HOST_MEMORY;
  px_wire_init(&c->wire, -1, PKCS11_PROG, PKCS11_V3, cfg->rpc_timeout);
  c->clnt = &c->wire.client;
  pthread_mutex_init(&c->lock, NULL);
  atomic_init(&c->broken, false);
  reg_add(c);
  int rc = ep->transport == PX_TRANSPORT_UNIX
               ? connect_unix(c, ep->path, cfg->connect_timeout)
               : connect_tcp(c, ep->host, ep->port, cfg->connect_timeout);
  if (rc == 0 && ep->transport == PX_TRANSPORT_TLS)
    rc = start_tls(c, cfg, ep, token);
  if (rc != 0) {
    px_conn_destroy(c, false);
    return CKR_DEVICE_ERROR;
  }
  int fd = c->wire.fd;

  CK_RV rv = token != NULL ? join_app(c, token) : CKR_OK;
  if (rv == CKR_OK)
    rv = setup_arch(c);
  if (rv == CKR_OK && token == NULL)
    rv = load_and_initialize(c, cfg->libname);
  if (rv != CKR_OK) {
    px_conn_destroy(c, false);
    return rv;
  }
  px_debug("connected to daemon %zu (fd %d%s)", ep_index + 1, fd,
           token != NULL ? ", joined" : "");
  *out = c;
  return CKR_OK;
}

CK_RV px_conn_app_token(struct px_conn *c,
                        unsigned char token[PX_APP_TOKEN_SIZE]) {
  px_GetAppToken_ret res;
  memset(&res, 0, sizeof res);
  pthread_mutex_lock(&c->lock);
  enum clnt_stat cs = px_getapptoken_3(&res, c->clnt);
  /* A daemon without the extension (Caml Crush) sends a complete
   * PROC_UNAVAIL reply: the connection stays usable. */
  bool refused = cs == RPC_PROCUNAVAIL || cs == RPC_PROGVERSMISMATCH ||
                 cs == RPC_PROGUNAVAIL;
  CK_RV rv = px_rpc_done(c, refused ? RPC_SUCCESS : cs, "px_GetAppToken");
  pthread_mutex_unlock(&c->lock);
  if (refused) {
    px_debug("px_GetAppToken: %s", px_wire_strerror(cs));
    rv = CKR_FUNCTION_NOT_SUPPORTED;
  } else if (rv == CKR_OK && res.rv != CKR_OK) {
    px_debug("px_GetAppToken returned 0x%llx", (unsigned long long)res.rv);
    rv = CKR_FUNCTION_FAILED;
  } else if (rv == CKR_OK && res.token.token_len != PX_APP_TOKEN_SIZE) {
    px_debug("px_GetAppToken: token of %u bytes", res.token.token_len);
    rv = CKR_FUNCTION_FAILED;
  }
  if (rv == CKR_OK)
    memcpy(token, res.token.token_val, PX_APP_TOKEN_SIZE);
  xdr_free((xdrproc_t)xdr_px_GetAppToken_ret, (char *)&res);
  return rv;
}

/* An idle connection whose daemon closed it (or reset it) reads EOF or an
 * error without blocking; pending bytes (a reply another thread waits for,
 * a TLS ticket) mean the peer is alive. */
bool px_conn_peer_gone(const struct px_conn *c) {
  unsigned char b;
  ssize_t n = recv(c->wire.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0)
    return false;
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
    return false;
  return true;
}

void px_conn_destroy(struct px_conn *c, bool say_finalize) {
  if (c == NULL)
    return;
  if (say_finalize && !atomic_load(&c->broken)) {
    px_rv rv = 0;
    pthread_mutex_lock(&c->lock);
    px_rpc_done(c, c_finalize_3(&rv, c->clnt), "C_Finalize");
    pthread_mutex_unlock(&c->lock);
  }
  reg_remove(c);
  px_wire_close(&c->wire);
  pthread_mutex_destroy(&c->lock);
  free(c);
}

/* In a forked child: a connection's lock may be held by a parent thread
 * that does not exist here, so it is neither taken nor destroyed; nothing
 * else in the transport is shared. */
void px_conn_abandon_all(void) {
  while (reg_head != NULL) {
    struct px_conn *c = reg_head;
    reg_head = c->reg_next;
    px_wire_abandon(&c->wire);
    free(c);
  }
  pthread_mutex_unlock(&reg_lock);
}
