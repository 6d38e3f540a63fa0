/*
 * Library state shared by the files that keep it: state.c (initialize,
 * finalize, call brackets), conn.c (connections, idle pool, control
 * connection), session_table.c (session table), sessions.c (opening and
 * closing sessions), login.c (login and its replay), app.c (the daemon-side
 * application and its epoch), fork.c (the fork child).
 *
 * One lock, st_lock, guards everything in st and the listed connections'
 * bookkeeping fields; functions named *_locked need it held. It is never
 * held across a round trip: a round trip holds only its connection's lock.
 * Connections whose last reference goes are queued on a `dead` list under
 * st_lock and destroyed (destroy_dead) after it is released.
 */
#ifndef PX_STATE_H
#define PX_STATE_H

#include "px.h"

/* Idle dedicated connections kept for reuse by later C_OpenSession. */
#define PX_MAX_IDLE_CONNS 2
/* Cap on live sessions, so a runaway caller cannot exhaust the daemon. */
#define PX_MAX_SESSIONS 4096

struct px_login {
  CK_SLOT_ID slot;
  CK_USER_TYPE user;
  unsigned char *pin;
  size_t pin_len;
  struct px_login *next;
};

/* Number of live sessions on one slot (a slot's last session closing logs
 * the user out). */
struct px_slot_count {
  CK_SLOT_ID slot;
  size_t n;
};

struct px_state {
  bool initialized;
  bool initializing;
  bool have_cfg;
  struct px_config cfg;
  struct px_conn *conns; /* listed connections */
  struct px_conn *control;
  /* Session table: a dense array for walks (px_session.index is the
   * position) and hash chains by handle for lookups (session_table.c). */
  struct px_session **sessions;
  size_t n_sessions, cap_sessions;
  struct px_session **buckets; /* n_buckets: 0 or a power of two */
  size_t n_buckets;
  struct px_slot_count *slots;
  size_t n_slots, cap_slots;
  CK_SESSION_HANDLE next_handle;
  struct px_login *logins;
  /* Application mode: the token every new connection joins with, and the
   * epoch stamped on the application's connections. app_epoch is 0 in
   * per-connection mode. */
  bool app;
  unsigned char token[PX_APP_TOKEN_SIZE];
  unsigned app_epoch;
  /* Remote sessions of the current application whose connection broke:
   * still open in the daemon, closed through the control connection by
   * get_control. */
  CK_SESSION_HANDLE *stale;
  size_t n_stale, cap_stale;
  /* The daemon of cfg.ep in use, and its generation: bumped each time the
   * library moves to another daemon of the list (conn.c, switch_daemon),
   * never reset, so connections to an earlier daemon never match. */
  size_t ep;
  unsigned daemon_gen;
};

extern struct px_state st;
extern pthread_mutex_t st_lock;

/* ---- app.c ---- */
bool in_app_locked(const struct px_conn *c);
/* A session of the current application lost its connection but not its
 * daemon-side existence. */
void stale_add_locked(const struct px_conn *c, CK_SESSION_HANDLE remote);
void app_start_locked(const unsigned char *token);
void app_forget_locked(void);

/* ---- login.c ---- */
struct px_login *login_find_locked(CK_SLOT_ID slot);
void login_forget_locked(CK_SLOT_ID slot);
/* Forgets (and zeroes) every kept PIN. */
void logins_clear_locked(void);
CK_RV rpc_login(struct px_conn *c, CK_SESSION_HANDLE remote, CK_USER_TYPE user,
                const unsigned char *pin, size_t pin_len);

/* ---- conn.c ---- */
void conn_unref_locked(struct px_conn *c, struct px_conn **dead);
void conn_unlist_locked(struct px_conn *c, struct px_conn **dead);
void conn_list_locked(struct px_conn *c);
/* A dedicated connection without sessions is kept idle or closed. */
void conn_maybe_retire_locked(struct px_conn *c, struct px_conn **dead);
/* A broken connection takes its sessions with it. */
void conn_drop_locked(struct px_conn *c, struct px_conn **dead);
/* An idle dedicated connection, reserved for one new session
 * (nsessions and refs taken), or NULL. Idle connections found closed by
 * their daemon are unlisted onto *dead. */
struct px_conn *conn_take_idle_locked(struct px_conn **dead);
void destroy_dead(struct px_conn *dead, bool say_finalize);
void destroy_dead_app(struct px_conn *dead, const struct px_conn *ctl,
                      unsigned epoch);
/* Drops a reference taken by get_control without holding c->lock. */
void conn_release(struct px_conn *c);
/* A referenced, healthy control connection (reconnecting a broken one). */
CK_RV get_control(struct px_conn **out, CK_RV unreachable_rv);
/* A new dedicated connection for a session (joins the application). */
CK_RV open_session_conn(struct px_conn **out);
/* Opens a connection that starts an application, trying `tries` daemons
 * of cfg from index `first` round the list; only unreachable ones
 * (CKR_DEVICE_ERROR) are passed over. *used gets the index it reached. */
CK_RV open_first_answering(const struct px_config *cfg, size_t first,
                           size_t tries, struct px_conn **out, size_t *used);

/* ---- session_table.c ---- */
struct px_session *session_find_locked(CK_SESSION_HANDLE h);
bool slot_has_sessions_locked(CK_SLOT_ID slot);
/* Lists s under a new handle (the daemon's in application mode, else this
 * library's); CKR_HOST_MEMORY leaves it unlisted. */
CK_RV session_add_locked(struct px_session *s);
void session_unlist_locked(struct px_session *s, struct px_conn **dead);
void session_unref_locked(struct px_session *s, struct px_conn **dead);
/* Frees the table's arrays; the table must be empty. */
void session_table_free_locked(void);
/* Fork child: frees every session without touching its connection. */
void session_table_forget_locked(void);

struct target {
  struct px_conn *c;
  CK_SESSION_HANDLE remote;
};
/* Other connections holding sessions on the slot, one entry each, each
 * referenced; release_targets drops them. */
size_t collect_targets_locked(CK_SLOT_ID slot, struct px_conn *skip,
                              struct target **out);
void release_targets(struct target *t, size_t n);

/* ---- sessions.c ---- */
CK_RV rpc_close_session(struct px_conn *c, CK_SESSION_HANDLE remote);

/* ---- fork.c ---- */
/* Registers the pthread_atfork handlers once per process. */
void px_fork_register(void);

#endif
