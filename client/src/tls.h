/*
 * TLS for tls://host:port connections (OpenSSL), under record.c: a TLS
 * connection's record marking runs over SSL_write/SSL_read instead of
 * send/recv. One px_tls per loaded configuration holds the SSL_CTX (CA,
 * client certificate), the last resumable session the daemon gave (TLS 1.3
 * tickets, TLS 1.2 tickets or session ids) and handshake counters.
 * Every SSL object belongs to one px_conn and is used under its lock.
 */
#ifndef PX_TLS_H
#define PX_TLS_H

#include "px.h"

struct px_tls_files {
  const char *ca_file;   /* PEM, required: the daemon's certificate must chain to it */
  const char *cert_file; /* PEM client certificate (chain), optional */
  const char *key_file;  /* its private key; set with cert_file or not at all */
  const char *stats_file; /* PKCS11PROXY_TLS_STATS, test hook, optional */
  bool no_resumption;     /* PKCS11PROXY_TLS_RESUMPTION=0: never offer a session */
};

/* CKR_OK, or CKR_GENERAL_ERROR for unreadable or inconsistent files
 * (reason on the debug channel). */
CK_RV px_tls_new(const struct px_tls_files *f, struct px_tls **out);
void px_tls_free(struct px_tls *t);

/* An SSL object over the connected socket fd for host: the daemon's
 * certificate must chain to the CA and name host in its subjectAltName
 * (DNS name, or IP address when host is a literal); the kept session is
 * offered. NULL on failure (reason on the debug channel). */
struct ssl_st *px_tls_new_ssl(struct px_tls *t, int fd, const char *host);
/* Before the handshake of a connection joining an application: offers the
 * routing ALPN name of `token` (see tls.c). 0, or -1 on failure. */
int px_tls_offer_join(struct ssl_st *ssl, const unsigned char *token);
/* The handshake until the deadline; 0 on success, -1 otherwise (reason on
 * the debug channel; nothing more is sent). Counts full and resumed
 * handshakes. */
int px_tls_handshake(struct px_tls *t, struct ssl_st *ssl, int fd,
                     const char *host, const char *port, int64_t deadline);
/* Sends all of p. */
enum clnt_stat px_tls_send(struct ssl_st *ssl, int fd, const unsigned char *p,
                           size_t len, int64_t deadline);
/* Reads at least one byte into buf (up to cap). */
enum clnt_stat px_tls_recv(struct ssl_st *ssl, int fd, unsigned char *buf,
                           size_t cap, size_t *got, int64_t deadline);
/* say_goodbye: send close_notify (never in a forked child, where the
 * stream is the parent's). Frees ssl; the socket is the caller's. */
void px_tls_close(struct ssl_st *ssl, bool say_goodbye);

/* fork: prepare takes t's lock (after the state lock), parent releases
 * it, child releases it and forgets the kept session (the child starts
 * its own TLS sessions). t may be NULL. */
void px_tls_fork_prepare(struct px_tls *t);
void px_tls_fork_parent(struct px_tls *t);
void px_tls_fork_child(struct px_tls *t);

#endif
