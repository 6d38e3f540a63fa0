/*
 * Library state: C_Initialize, C_Finalize and the call brackets. The rest
 * of the state lives in the files listed in state.h.
 *
 * Connection model (see client/README.md): one control connection for
 * slot-level calls, and by default one dedicated connection per session.
 * Each connection has its own lock held across one round trip, so calls on
 * different sessions run concurrently; the state lock below is never held
 * across a round trip.
 *
 * Application mode (our daemon): C_Initialize asks the control connection
 * for an application token (px_GetAppToken) and every later connection
 * joins it (px_JoinApp). The daemon then shares sessions, object handles,
 * session objects and login between all connections, so session handles
 * are the daemon's own, C_Login/C_Logout/C_CloseAllSessions are sent once
 * and C_Finalize is sent once, on the control connection. The application
 * lives as long as one of its connections: a join the daemon refuses means
 * it is gone (daemon restart), and the next control reconnect starts a new
 * one; connections of the old one are then retired.
 *
 * Per-connection mode (a daemon without the extension answers
 * PROC_UNAVAIL, e.g. Caml Crush): the daemon scopes a session and the login
 * to the connection that opened it. Session handles are this library's own
 * (two connections can receive the same handle), and after a successful
 * C_Login the PIN is kept (zeroed on logout, on closing the slot's last
 * session, on C_Finalize and in a forked child) and replayed on the other
 * connections that have sessions on the slot and on connections opened for
 * new sessions.
 *
 * Several daemons (socket_path "a,b,..."): C_Initialize connects to the
 * first that answers. When the control connection is found lost (closed by
 * its daemon, or broken by a call) its reconnect tries the same daemon,
 * then the others round the list; the first that answers gets a new
 * application and every connection to the old daemon is retired: its
 * sessions are gone (CKR_SESSION_HANDLE_INVALID) and the login with them
 * (kept PINs are forgotten, not replayed). No state moves between daemons.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "state.h"

pthread_mutex_t st_lock = PTHREAD_MUTEX_INITIALIZER;
struct px_state st;

void px_secure_free(void *p, size_t len) {
  if (p == NULL)
    return;
  explicit_bzero(p, len);
  free(p);
}

void px_out_cache_clear(struct px_out_cache *oc) {
  px_secure_free(oc->in, oc->in_len);
  px_secure_free(oc->out, oc->out_len);
  memset(oc, 0, sizeof *oc);
}

__attribute__((destructor)) static void px_unload(void) {
  pthread_mutex_lock(&st_lock);
  if (!st.initialized && st.have_cfg) {
    px_config_free(&st.cfg);
    st.have_cfg = false;
  }
  pthread_mutex_unlock(&st_lock);
}

/* ---- initialize / finalize ---- */

CK_RV px_state_initialize(CK_C_INITIALIZE_ARGS *args) {
  if (args != NULL) {
    if (args->pReserved != NULL)
      return CKR_ARGUMENTS_BAD;
    int n = (args->CreateMutex != NULL) + (args->DestroyMutex != NULL) +
            (args->LockMutex != NULL) + (args->UnlockMutex != NULL);
    if (n != 0 && n != 4)
      return CKR_ARGUMENTS_BAD;
    /* This library locks with pthreads; application-supplied
     * mutex callbacks alone cannot be honoured. */
    if (n == 4 && !(args->flags & CKF_OS_LOCKING_OK))
      return CKR_CANT_LOCK;
  }
  px_fork_register();

  pthread_mutex_lock(&st_lock);
  if (st.initialized || st.initializing) {
    pthread_mutex_unlock(&st_lock);
    return CKR_CRYPTOKI_ALREADY_INITIALIZED;
  }
  st.initializing = true;
  if (st.have_cfg) {
    px_config_free(&st.cfg);
    st.have_cfg = false;
  }
  pthread_mutex_unlock(&st_lock);

  struct px_config cfg;
  CK_RV rv = px_config_load(&cfg);
  struct px_conn *control = NULL;
  size_t ep = 0;
  /* The first daemon of the list that answers; one that answers and
   * refuses (C_LoadModule) ends the walk with its rv. */
  if (rv == CKR_OK)
    rv = open_first_answering(&cfg, 0, cfg.n_ep, &control, &ep);
  unsigned char token[PX_APP_TOKEN_SIZE];
  bool app = false;
  if (rv == CKR_OK) {
    /* Any failure keeps per-connection mode; a transport failure also
     * leaves the control connection broken, to be reopened later. */
    CK_RV trv = px_conn_app_token(control, token);
    app = trv == CKR_OK;
    px_debug("C_Initialize: %s (0x%lx)",
             app ? "application mode" : "per-connection mode",
             (unsigned long)trv);
  }

  pthread_mutex_lock(&st_lock);
  st.initializing = false;
  if (rv != CKR_OK) {
    pthread_mutex_unlock(&st_lock);
    if (cfg.libname != NULL)
      px_config_free(&cfg);
    px_debug("C_Initialize failed: 0x%lx", (unsigned long)rv);
    return rv;
  }
  st.cfg = cfg;
  st.have_cfg = true;
  st.ep = ep;
  control->daemon_gen = ++st.daemon_gen;
  if (app)
    app_start_locked(token);
  explicit_bzero(token, sizeof token);
  control->app_epoch = st.app_epoch;
  control->control = true;
  conn_list_locked(control);
  st.control = control;
  st.initialized = true;
  pthread_mutex_unlock(&st_lock);
  return CKR_OK;
}

CK_RV px_state_finalize(void) {
  struct px_conn *dead = NULL;
  pthread_mutex_lock(&st_lock);
  if (!st.initialized) {
    pthread_mutex_unlock(&st_lock);
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  }
  st.initialized = false;
  const struct px_conn *ctl = st.control; /* compared, never dereferenced */
  bool app = st.app;
  unsigned epoch = st.app_epoch;
  while (st.n_sessions > 0)
    session_unlist_locked(st.sessions[st.n_sessions - 1], &dead);
  session_table_free_locked();
  while (st.conns != NULL)
    conn_unlist_locked(st.conns, &dead);
  logins_clear_locked();
  app_forget_locked();
  pthread_mutex_unlock(&st_lock);
  if (app)
    destroy_dead_app(dead, ctl, epoch);
  else
    destroy_dead(dead, true);
  return CKR_OK;
}

bool px_state_is_initialized(void) {
  pthread_mutex_lock(&st_lock);
  bool v = st.initialized;
  pthread_mutex_unlock(&st_lock);
  return v;
}

/* ---- call brackets ---- */

CK_RV px_session_enter(CK_SESSION_HANDLE h, struct px_call *call) {
  struct px_conn *dead = NULL;
  pthread_mutex_lock(&st_lock);
  if (!st.initialized) {
    pthread_mutex_unlock(&st_lock);
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  }
  struct px_session *s = session_find_locked(h);
  if (s == NULL) {
    pthread_mutex_unlock(&st_lock);
    return CKR_SESSION_HANDLE_INVALID;
  }
  struct px_conn *c = s->conn;
  if (atomic_load(&c->broken)) {
    conn_drop_locked(c, &dead);
    pthread_mutex_unlock(&st_lock);
    destroy_dead(dead, false);
    return CKR_SESSION_HANDLE_INVALID;
  }
  s->refs++;
  c->refs++;
  pthread_mutex_unlock(&st_lock);
  pthread_mutex_lock(&c->lock);
  call->s = s;
  call->c = c;
  if (atomic_load(&c->broken) || !s->listed) {
    px_session_leave(call);
    return CKR_SESSION_HANDLE_INVALID;
  }
  return CKR_OK;
}

void px_session_leave(struct px_call *call) {
  struct px_conn *dead = NULL;
  struct px_conn *c = call->c;
  bool broken = atomic_load(&c->broken);
  pthread_mutex_unlock(&c->lock);
  pthread_mutex_lock(&st_lock);
  if (broken)
    conn_drop_locked(c, &dead);
  if (call->s != NULL)
    session_unref_locked(call->s, &dead);
  conn_unref_locked(c, &dead);
  pthread_mutex_unlock(&st_lock);
  destroy_dead(dead, false);
  call->s = NULL;
  call->c = NULL;
}

CK_RV px_control_enter(struct px_call *call, CK_RV unreachable_rv) {
  struct px_conn *c;
  CK_RV rv = get_control(&c, unreachable_rv);
  if (rv != CKR_OK)
    return rv;
  pthread_mutex_lock(&c->lock);
  call->s = NULL;
  call->c = c;
  if (atomic_load(&c->broken)) {
    px_session_leave(call);
    return unreachable_rv;
  }
  return CKR_OK;
}

void px_control_leave(struct px_call *call) { px_session_leave(call); }
