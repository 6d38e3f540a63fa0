/*
 * TLS connections (see tls.h).
 *
 * The SSL objects run over a BIO of this file that calls send(MSG_NOSIGNAL
 * | MSG_DONTWAIT) and recv(MSG_DONTWAIT) on the socket: OpenSSL's socket
 * BIO writes with write(2), which raises SIGPIPE on a closed connection,
 * and this library never raises SIGPIPE nor changes the signal mask.
 * Waiting is poll with the round trip's deadline (record.c).
 *
 * OpenSSL's per-thread error queue is the application's too (it may use
 * OpenSSL itself): it is cleared before each operation here and after a
 * failure has been reported.
 *
 * Resumption: the daemon's new sessions (TLS 1.3 NewSessionTicket, read
 * with the first reply; TLS 1.2 ticket or id) reach new_session(), which
 * keeps the newest resumable one; every later handshake of this
 * configuration offers it, so the connection per session a process opens
 * (px_JoinApp) resumes instead of a full handshake.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "record.h"
#include "tls.h"

struct px_tls {
  SSL_CTX *ctx;
  pthread_mutex_t lock; /* guards session, counters and the stats file */
  SSL_SESSION *session; /* newest resumable session, or NULL */
  unsigned long full, resumed;
  bool no_resumption;
  char *stats_file;
};

/* ---- the socket BIO ---- */

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static int fd_of(BIO *b) { return (int)(intptr_t)BIO_get_data(b); }

static int bio_write(BIO *b, const char *data, int len) {
  BIO_clear_retry_flags(b);
  ssize_t n = send(fd_of(b), data, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
    BIO_set_retry_write(b);
  return n < 0 ? -1 : (int)n;
}

static int bio_read(BIO *b, char *data, int len) {
  BIO_clear_retry_flags(b);
  ssize_t n = recv(fd_of(b), data, (size_t)len, MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
    BIO_set_retry_read(b);
  return n < 0 ? -1 : (int)n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
  (void)b;
  (void)num;
  (void)ptr;
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

static void bio_init_method(void) {
  BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
                               "pkcs11proxyd socket");
  if (m != NULL &&
      (!BIO_meth_set_write(m, bio_write) || !BIO_meth_set_read(m, bio_read) ||
       !BIO_meth_set_ctrl(m, bio_ctrl) || !BIO_meth_set_create(m, bio_create))) {
    BIO_meth_free(m);
    m = NULL;
  }
  bio_method = m;
}

static BIO *socket_bio(int fd) {
  pthread_once(&bio_once, bio_init_method);
  if (bio_method == NULL)
    return NULL;
  BIO *b = BIO_new(bio_method);
  if (b != NULL)
    BIO_set_data(b, (void *)(intptr_t)fd);
  return b;
}

/* ---- errors ---- */

static void debug_ssl_errors(const char *what) {
  unsigned long e;
  bool any = false;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    px_debug("%s: %s", what, buf);
    any = true;
  }
  if (!any)
    px_debug("%s: failed", what);
}

/* ---- context ---- */

static int new_session(SSL *ssl, SSL_SESSION *sess) {
  struct px_tls *t = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
  if (t == NULL || !SSL_SESSION_is_resumable(sess))
    return 0;
  pthread_mutex_lock(&t->lock);
  SSL_SESSION *old = t->session;
  t->session = sess; /* returning 1 hands us the reference */
  pthread_mutex_unlock(&t->lock);
  if (old != NULL)
    SSL_SESSION_free(old);
  return 1;
}

CK_RV px_tls_new(const struct px_tls_files *f, struct px_tls **out) {
  *out = NULL;
  if (f->ca_file == NULL) {
    px_debug("config: tls:// needs a CA file (PKCS11PROXY_CA_FILE or ca_file)");
    return CKR_GENERAL_ERROR;
  }
  if ((f->cert_file == NULL) != (f->key_file == NULL)) {
    px_debug("config: PKCS11PROXY_CERT_FILE and PKCS11PROXY_PRIVKEY_FILE go together");
    return CKR_GENERAL_ERROR;
  }
  struct px_tls *t = calloc(1, sizeof *t);
  if (t == NULL)
    return CKR_HOST_MEMORY;
  pthread_mutex_init(&t->lock, NULL);
  ERR_clear_error();
  CK_RV rv = CKR_GENERAL_ERROR;
  t->ctx = SSL_CTX_new(TLS_client_method());
  if (t->ctx == NULL) {
    debug_ssl_errors("tls: SSL_CTX_new");
    goto fail;
  }
  SSL_CTX_set_app_data(t->ctx, t);
  /* TLS 1.3 preferred; 1.2 for Caml Crush's daemon (GnuTLS, 1.2 only). */
  SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(t->ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_mode(t->ctx, SSL_MODE_AUTO_RETRY);
  SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
  if (SSL_CTX_load_verify_locations(t->ctx, f->ca_file, NULL) != 1) {
    px_debug("tls: cannot load CA file %s", f->ca_file);
    debug_ssl_errors("tls: CA file");
    goto fail;
  }
  if (f->cert_file != NULL) {
    if (SSL_CTX_use_certificate_chain_file(t->ctx, f->cert_file) != 1) {
      px_debug("tls: cannot load certificate file %s", f->cert_file);
      debug_ssl_errors("tls: certificate file");
      goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(t->ctx, f->key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(t->ctx) != 1) {
      px_debug("tls: cannot load private key %s for %s", f->key_file,
               f->cert_file);
      debug_ssl_errors("tls: private key");
      goto fail;
    }
  }
  /* Client-side cache kept by new_session, not OpenSSL's internal store. */
  SSL_CTX_set_session_cache_mode(t->ctx, SSL_SESS_CACHE_CLIENT |
                                             SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(t->ctx, new_session);
  t->no_resumption = f->no_resumption;
  if (f->stats_file != NULL && (t->stats_file = strdup(f->stats_file)) == NULL) {
    rv = CKR_HOST_MEMORY;
    goto fail;
  }
  *out = t;
  return CKR_OK;
fail:
  ERR_clear_error();
  px_tls_free(t);
  return rv;
}

void px_tls_free(struct px_tls *t) {
  if (t == NULL)
    return;
  if (t->session != NULL)
    SSL_SESSION_free(t->session);
  SSL_CTX_free(t->ctx);
  free(t->stats_file);
  pthread_mutex_destroy(&t->lock);
  free(t);
}

/* Test hook: one JSON object with the handshake counts, rewritten after
 * every handshake. Called with t->lock held. */
static void write_stats_locked(const struct px_tls *t) {
  if (t->stats_file == NULL)
    return;
  char line[128];
  int n = snprintf(line, sizeof line,
                   "{\"full_handshakes\":%lu,\"resumed_handshakes\":%lu}\n",
                   t->full, t->resumed);
  int fd = open(t->stats_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return;
  ssize_t w = write(fd, line, (size_t)n);
  (void)w;
  close(fd);
}

/* ---- connections ---- */

/* Waits for what SSL_get_error asked for: 1 ready, 0 timed out, -1 other
 * error (not a retry). */
static int wait_ssl(SSL *ssl, int fd, int ret, int64_t deadline) {
  switch (SSL_get_error(ssl, ret)) {
  case SSL_ERROR_WANT_READ:
    return px_wait_fd(fd, POLLIN, deadline);
  case SSL_ERROR_WANT_WRITE:
    return px_wait_fd(fd, POLLOUT, deadline);
  default:
    return -1;
  }
}

static int set_peer_name(SSL *ssl, const char *host) {
  X509_VERIFY_PARAM *p = SSL_get0_param(ssl);
  unsigned char ip[16];
  if (inet_pton(AF_INET, host, ip) == 1)
    return X509_VERIFY_PARAM_set1_ip(p, ip, 4) == 1 ? 0 : -1;
  if (inet_pton(AF_INET6, host, ip) == 1)
    return X509_VERIFY_PARAM_set1_ip(p, ip, 16) == 1 ? 0 : -1;
  /* A DNS name: only subjectAltName dNSName entries count, never the
   * subject CN; SNI carries it (RFC 6066 forbids literals there). */
  X509_VERIFY_PARAM_set_hostflags(p, X509_CHECK_FLAG_NEVER_CHECK_SUBJECT |
                                         X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  if (X509_VERIFY_PARAM_set1_host(p, host, 0) != 1)
    return -1;
  return SSL_set_tlsext_host_name(ssl, host) == 1 ? 0 : -1;
}

SSL *px_tls_new_ssl(struct px_tls *t, int fd, const char *host) {
  ERR_clear_error();
  SSL *ssl = SSL_new(t->ctx);
  BIO *b = ssl != NULL ? socket_bio(fd) : NULL;
  if (b == NULL || set_peer_name(ssl, host) != 0) {
    debug_ssl_errors("tls: setup");
    BIO_free(b);
    SSL_free(ssl);
    ERR_clear_error();
    return NULL;
  }
  SSL_set_bio(ssl, b, b);
  /* Each connection resumes from its own copy: a fatal error on one
   * connection (a peer that vanished) makes OpenSSL flag the session it used
   * not resumable, which must not cost every later connection a full
   * handshake. */
  pthread_mutex_lock(&t->lock);
  SSL_SESSION *copy = t->session != NULL && !t->no_resumption
                          ? SSL_SESSION_dup(t->session)
                          : NULL;
  pthread_mutex_unlock(&t->lock);
  if (copy != NULL) {
    SSL_set_session(ssl, copy);
    SSL_SESSION_free(copy); /* the SSL holds its own reference */
  }
  return ssl;
}

/* A joining connection offers the ALPN protocol "pkcs11proxyd-worker.<N>",
 * N the first byte of the application token in decimal: the daemon's primary
 * reads it from the cleartext ClientHello to hand the connection to the worker
 * holding the application (the token itself travels inside TLS). The daemon
 * selects no protocol; servers that know no ALPN ignore it. */
int px_tls_offer_join(SSL *ssl, const unsigned char *token) {
  char name[32];
  int n = snprintf(name, sizeof name, "pkcs11proxyd-worker.%u",
                   (unsigned)token[0]);
  unsigned char wire[33];
  wire[0] = (unsigned char)n;
  memcpy(wire + 1, name, (size_t)n);
  return SSL_set_alpn_protos(ssl, wire, (unsigned)n + 1) == 0 ? 0 : -1;
}

int px_tls_handshake(struct px_tls *t, SSL *ssl, int fd, const char *host,
                     const char *port, int64_t deadline) {
  ERR_clear_error();
  for (;;) {
    int r = SSL_connect(ssl);
    if (r == 1)
      break;
    int w = wait_ssl(ssl, fd, r, deadline);
    if (w > 0)
      continue;
    long vr = SSL_get_verify_result(ssl);
    if (w == 0)
      px_debug("tls://%s:%s: handshake timed out", host, port);
    else if (vr != X509_V_OK)
      px_debug("tls://%s:%s: server certificate refused: %s", host, port,
               X509_verify_cert_error_string(vr));
    else
      debug_ssl_errors("tls: handshake");
    ERR_clear_error();
    /* Nothing more is sent on a failed handshake. */
    SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    return -1;
  }
  bool reused = SSL_session_reused(ssl) == 1;
  pthread_mutex_lock(&t->lock);
  if (reused)
    t->resumed++;
  else
    t->full++;
  write_stats_locked(t);
  pthread_mutex_unlock(&t->lock);
  px_debug("tls://%s:%s: %s, %s, %s handshake", host, port,
           SSL_get_version(ssl), SSL_get_cipher_name(ssl),
           reused ? "resumed" : "full");
  return 0;
}

enum clnt_stat px_tls_send(SSL *ssl, int fd, const unsigned char *p,
                           size_t len, int64_t deadline) {
  ERR_clear_error();
  while (len > 0) {
    size_t n = 0;
    int r = SSL_write_ex(ssl, p, len, &n);
    if (r == 1) {
      p += n;
      len -= n;
      continue;
    }
    int w = wait_ssl(ssl, fd, r, deadline);
    if (w > 0)
      continue;
    if (w < 0)
      debug_ssl_errors("tls: write");
    ERR_clear_error();
    return w == 0 ? RPC_TIMEDOUT : RPC_CANTSEND;
  }
  return RPC_SUCCESS;
}

enum clnt_stat px_tls_recv(SSL *ssl, int fd, unsigned char *buf, size_t cap,
                           size_t *got, int64_t deadline) {
  ERR_clear_error();
  for (;;) {
    size_t n = 0;
    int r = SSL_read_ex(ssl, buf, cap, &n);
    if (r == 1) {
      *got = n;
      return RPC_SUCCESS;
    }
    int w = wait_ssl(ssl, fd, r, deadline);
    if (w > 0)
      continue;
    /* SSL_ERROR_ZERO_RETURN (close_notify) and a bare EOF land here. */
    if (w < 0 && SSL_get_error(ssl, r) != SSL_ERROR_ZERO_RETURN)
      debug_ssl_errors("tls: read");
    ERR_clear_error();
    return w == 0 ? RPC_TIMEDOUT : RPC_CANTRECV;
  }
}

void px_tls_close(SSL *ssl, bool say_goodbye) {
  if (ssl == NULL)
    return;
  ERR_clear_error();
  if (say_goodbye)
    SSL_shutdown(ssl); /* one non-blocking close_notify, no wait for the reply */
  /* Marked shut down either way: OpenSSL would otherwise flag the session
   * (possibly the kept one) not resumable when freeing. */
  SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  SSL_free(ssl);
  ERR_clear_error();
}

void px_tls_fork_prepare(struct px_tls *t) {
  if (t != NULL)
    pthread_mutex_lock(&t->lock);
}

void px_tls_fork_parent(struct px_tls *t) {
  if (t != NULL)
    pthread_mutex_unlock(&t->lock);
}

void px_tls_fork_child(struct px_tls *t) {
  if (t == NULL)
    return;
  SSL_SESSION *s = t->session;
  t->session = NULL;
  t->full = t->resumed = 0;
  pthread_mutex_unlock(&t->lock);
  if (s != NULL)
    SSL_SESSION_free(s);
}
