/*
 * Internal declarations of libp11client (pkcs11proxyd client library).
 * Layers, bottom up: config.c (settings); record.c (record marking over
 * the socket, over tls.c for tls://) and wire.c (ONC RPC calls on it); transport.c (sockets and the per-connection handshake);
 * the library state, split by concern and sharing state.h: state.c
 * (initialize, finalize, call brackets), conn.c (connections, idle pool,
 * control connection), session_table.c, sessions.c, login.c, app.c
 * (application epoch), fork.c; the C_* entry points by function group,
 * sharing calls.h: fn_general.c, fn_sessions.c, fn_objects.c, fn_crypto.c,
 * fn_keys.c, with fn_calls.c the helpers for recurring call shapes;
 * interface.c (function lists and C_GetInterface*).
 */
#ifndef PX_H
#define PX_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>

#include "pkcs11_rpc.h"
#include "pkcs11_v3_types.h"

#define PX_EXPORT __attribute__((visibility("default")))

/* ---- debug channel: PKCS11PROXY_DEBUG=1, stderr only, never secrets ---- */
void px_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- settings (config.c) ---- */
enum px_transport { PX_TRANSPORT_UNIX, PX_TRANSPORT_TCP, PX_TRANSPORT_TLS };

/* One daemon address of socket_path. */
struct px_endpoint {
  enum px_transport transport;
  char *path;          /* unix socket path (PX_TRANSPORT_UNIX) */
  char *host;          /* TCP/TLS host */
  char *port;          /* TCP/TLS port */
};

/* socket_path names up to this many daemons, separated by commas. */
#define PX_MAX_DAEMONS 16

struct px_config {
  /* The daemons in the order they are tried (n_ep >= 1 once loaded). */
  struct px_endpoint ep[PX_MAX_DAEMONS];
  size_t n_ep;
  char *libname;       /* C_LoadModule alias; "" when unset */
  unsigned long rpc_timeout; /* seconds */
  unsigned long connect_timeout; /* seconds, bounds connect(2) */
  bool shared_sessions; /* all sessions on the control connection */
  /* When one of the daemons is tls://: the context built from the CA,
   * certificate and key files (tls.c). */
  struct px_tls *tls;
};

#define PX_DEFAULT_SOCKET_PATH "/var/run/pkcs11proxyd.socket"
#define PX_DEFAULT_CONF "/etc/pkcs11proxyd/client.conf"
#define PX_DEFAULT_RPC_TIMEOUT 600UL
/* A connect(2) to a host that is gone waits for the kernel's SYN retries
 * (about 2 minutes on Linux) unless bounded. */
#define PX_DEFAULT_CONNECT_TIMEOUT 10UL

/* Returns CKR_OK or CKR_GENERAL_ERROR (reason on the debug channel). */
CK_RV px_config_load(struct px_config *cfg);
void px_config_free(struct px_config *cfg);
/* Parses a socket_path setting (one address, or several separated by
 * commas) into cfg->ep; 0 on success. */
int px_config_parse_address(struct px_config *cfg, const char *addr);

/* ---- RPC transport of one connection (wire.c, record.c) ---- */
struct px_wire {
  /* Handed to the rpcgen stubs; its ops vector is wire.c's. */
  CLIENT client;
  int fd;
  struct ssl_st *ssl;    /* TLS over fd (tls.c), or NULL */
  u_int prog, vers;
  uint32_t xid;          /* of the last call */
  int64_t timeout_ms;    /* per round trip */
  enum clnt_stat last;   /* status of the last call (clnt_geterr) */
  unsigned char *buf;    /* record being sent, then the reply record */
  size_t cap;
};

/* Takes ownership of fd. No allocation; the buffer is made on first use. */
void px_wire_init(struct px_wire *w, int fd, u_int prog, u_int vers,
                  unsigned long timeout_s);
/* Closes the descriptor and frees the buffer; safe to call twice. A TLS
 * connection sends its close_notify first. */
void px_wire_close(struct px_wire *w);
/* The same in a forked child: sends nothing (the stream is the parent's). */
void px_wire_abandon(struct px_wire *w);
/* Text for the debug channel. */
const char *px_wire_strerror(enum clnt_stat st);

/* ---- connections (transport.c / conn.c) ---- */
struct px_conn {
  CLIENT *clnt; /* &wire.client */
  struct px_wire wire;
  /* Held for a whole round trip; sessions owned by this connection and
   * their output caches are only touched while it is held. */
  pthread_mutex_t lock;
  /* Set on a transport failure; the connection is never used again. */
  atomic_bool broken;
  /* Typed mechanism procedures (73..84) on this connection's daemon:
   * 0 not known yet, 1 answered, -1 PROC_UNAVAIL (use version 3). Guarded
   * by lock. */
  int typed_mech;
  /* Fields below are guarded by the state lock. */
  unsigned refs;       /* list membership + owning sessions + calls */
  unsigned nsessions;  /* live sessions owned by this connection */
  bool listed;         /* still in the state's connection list */
  bool control;
  /* Application (px_GetAppToken) this connection belongs to, 0 for none
   * (a daemon without the extension). Set before listing, then fixed. */
  unsigned app_epoch;
  /* Daemon generation (state's daemon_gen) it was opened on; a switch to
   * another daemon of socket_path retires every older one. Set before
   * listing, then fixed. */
  unsigned daemon_gen;
  struct px_conn *next;
  /* Registry of every connection from px_conn_open to its destruction
   * (transport.c, its own lock). */
  struct px_conn *reg_prev, *reg_next;
};

/* Connects to daemon ep_index of cfg. Without a token: C_SetupArch,
 * C_LoadModule and C_Initialize.
 * With one: px_JoinApp(token), then C_SetupArch. Returns CKR_DEVICE_ERROR
 * when the daemon cannot be reached or talked to, and another rv when it
 * refuses the join (the application is gone) or the module. */
CK_RV px_conn_open(const struct px_config *cfg, size_t ep_index,
                   const unsigned char *token, struct px_conn **out);
/* The daemon closed or reset this connection (a non-blocking peek reads
 * EOF or an error). No lock needed: nothing is consumed. */
bool px_conn_peer_gone(const struct px_conn *c);
/* px_GetAppToken on an idle connection (takes its lock). CKR_OK fills
 * token; CKR_FUNCTION_NOT_SUPPORTED when the daemon lacks the procedure
 * (the connection stays usable); otherwise another failure. */
CK_RV px_conn_app_token(struct px_conn *c,
                        unsigned char token[PX_APP_TOKEN_SIZE]);
/* Sends C_Finalize when the connection is healthy, then closes it. */
void px_conn_destroy(struct px_conn *c, bool say_finalize);
/* Fork: the prepare handler holds the registry lock across fork() (after
 * the state lock); the parent handler releases it; the child handler calls
 * px_conn_abandon_all, which closes the descriptor copy of every
 * connection, listed in the state or not (one a parent thread was opening
 * or finalizing), frees them without taking their locks, sends nothing,
 * and releases the registry lock. */
void px_conn_registry_lock(void);
void px_conn_registry_unlock(void);
void px_conn_abandon_all(void);

/* Result of one round trip: marks the connection broken on any transport
 * failure. Returns CKR_OK or CKR_DEVICE_ERROR. */
CK_RV px_rpc_done(struct px_conn *c, enum clnt_stat st, const char *what);

/* ---- output cache for the size-query protocol (state.c) ---- */
struct px_out_cache {
  bool valid;
  int proc;               /* RPC procedure number that produced it */
  unsigned char *in;      /* copy of the input the result belongs to */
  size_t in_len;
  unsigned char *out;
  size_t out_len;
};
void px_out_cache_clear(struct px_out_cache *oc);

/* ---- sessions (state.c, session_table.c, sessions.c, login.c) ---- */
struct px_session {
  CK_SESSION_HANDLE handle;  /* handed to the application: remote in
                                application mode, else this library's */
  CK_SESSION_HANDLE remote;  /* the daemon's handle on conn */
  CK_SLOT_ID slot;
  struct px_conn *conn;
  struct px_out_cache cache; /* guarded by conn->lock */
  unsigned refs;             /* table membership + calls; state lock */
  bool listed;
  size_t index;              /* position in the table's array */
  struct px_session *hnext;  /* hash chain of the table */
};

/* A session-scoped call in progress: holds refs and conn->lock. */
struct px_call {
  struct px_session *s;
  struct px_conn *c;
};

CK_RV px_state_initialize(CK_C_INITIALIZE_ARGS *args);
CK_RV px_state_finalize(void);
bool px_state_is_initialized(void);

/* Session call bracket; enter returns CKR_CRYPTOKI_NOT_INITIALIZED,
 * CKR_SESSION_HANDLE_INVALID or CKR_OK (then conn->lock is held). */
CK_RV px_session_enter(CK_SESSION_HANDLE h, struct px_call *call);
void px_session_leave(struct px_call *call);

/* Control connection bracket for slot-level calls (reconnects a broken
 * control connection). On failure returns the given rv. */
CK_RV px_control_enter(struct px_call *call, CK_RV unreachable_rv);
void px_control_leave(struct px_call *call);

/* Session lifecycle helpers used by fn_sessions.c. */
CK_RV px_session_open(CK_SLOT_ID slot, CK_FLAGS flags,
                      CK_SESSION_HANDLE_PTR out);
CK_RV px_session_close(CK_SESSION_HANDLE h);
CK_RV px_session_close_all(CK_SLOT_ID slot);
CK_RV px_session_login(CK_SESSION_HANDLE h, CK_USER_TYPE user,
                       const unsigned char *pin, size_t pin_len);
CK_RV px_session_logout(CK_SESSION_HANDLE h);
/* After a successful C_SetPIN: keeps the replayed PIN current. */
void px_login_pin_changed(CK_SESSION_HANDLE h, const unsigned char *old_pin,
                          size_t old_len, const unsigned char *new_pin,
                          size_t new_len);

/* Zeroes then frees. */
void px_secure_free(void *p, size_t len);

#endif
