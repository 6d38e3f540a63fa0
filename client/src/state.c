/*
 * Library state: initialization epochs, the daemon-side application,
 * connections, the session table and login replay.
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
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

static pthread_mutex_t st_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static struct {
  bool initialized;
  bool initializing;
  bool have_cfg;
  struct px_config cfg;
  struct px_conn *conns; /* listed connections */
  struct px_conn *control;
  struct px_session **sessions;
  size_t n_sessions, cap_sessions;
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
} st;

/* Source of application epochs; never reset, so a connection of an older
 * initialization or application never matches the current one. */
static unsigned epoch_counter;

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

/* ---- helpers, all with st_lock held ---- */

static bool in_app_locked(const struct px_conn *c) {
  return st.app && c->app_epoch == st.app_epoch;
}

/* A session of the current application lost its connection but not its
 * daemon-side existence. If this fails, the daemon closes it with the
 * application. */
static void stale_add_locked(const struct px_conn *c,
                             CK_SESSION_HANDLE remote) {
  if (!in_app_locked(c))
    return;
  if (st.n_stale == st.cap_stale) {
    size_t ncap = st.cap_stale ? st.cap_stale * 2 : 8;
    CK_SESSION_HANDLE *n = realloc(st.stale, ncap * sizeof *n);
    if (n == NULL)
      return;
    st.stale = n;
    st.cap_stale = ncap;
  }
  st.stale[st.n_stale++] = remote;
}

/* Starts application mode with a new token. */
static void app_start_locked(const unsigned char *token) {
  st.app = true;
  memcpy(st.token, token, sizeof st.token);
  st.app_epoch = ++epoch_counter;
  if (st.app_epoch == 0)
    st.app_epoch = ++epoch_counter;
}

static void app_forget_locked(void) {
  st.app = false;
  st.app_epoch = 0;
  explicit_bzero(st.token, sizeof st.token);
  free(st.stale);
  st.stale = NULL;
  st.n_stale = st.cap_stale = 0;
}

static void login_free(struct px_login *l) {
  px_secure_free(l->pin, l->pin_len);
  free(l);
}

static struct px_login *login_find_locked(CK_SLOT_ID slot) {
  for (struct px_login *l = st.logins; l != NULL; l = l->next)
    if (l->slot == slot)
      return l;
  return NULL;
}

static void login_forget_locked(CK_SLOT_ID slot) {
  for (struct px_login **pp = &st.logins; *pp != NULL; pp = &(*pp)->next) {
    if ((*pp)->slot == slot) {
      struct px_login *l = *pp;
      *pp = l->next;
      login_free(l);
      return;
    }
  }
}

/* Connections whose refs drop to zero are queued on *dead (linked through
 * next) and destroyed by the caller after st_lock is released. */
static void conn_unref_locked(struct px_conn *c, struct px_conn **dead) {
  if (--c->refs == 0) {
    c->next = *dead;
    *dead = c;
  }
}

static void conn_unlist_locked(struct px_conn *c, struct px_conn **dead) {
  if (!c->listed)
    return;
  for (struct px_conn **pp = &st.conns; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == c) {
      *pp = c->next;
      break;
    }
  }
  c->listed = false;
  c->next = NULL;
  if (st.control == c)
    st.control = NULL;
  conn_unref_locked(c, dead);
}

static void conn_list_locked(struct px_conn *c) {
  c->listed = true;
  c->refs++;
  c->next = st.conns;
  st.conns = c;
}

/* C_Finalize on a connection of an application would finalize all its
 * connections: only px_state_finalize sends it there. */
static void destroy_dead(struct px_conn *dead, bool say_finalize) {
  while (dead != NULL) {
    struct px_conn *next = dead->next;
    px_conn_destroy(dead, say_finalize && dead->app_epoch == 0);
    dead = next;
  }
}

static void session_unref_locked(struct px_session *s, struct px_conn **dead) {
  if (--s->refs != 0)
    return;
  px_out_cache_clear(&s->cache);
  conn_unref_locked(s->conn, dead);
  free(s);
}

static struct px_session *session_find_locked(CK_SESSION_HANDLE h) {
  for (size_t i = 0; i < st.n_sessions; i++)
    if (st.sessions[i]->handle == h)
      return st.sessions[i];
  return NULL;
}

static bool slot_has_sessions_locked(CK_SLOT_ID slot) {
  for (size_t i = 0; i < st.n_sessions; i++)
    if (st.sessions[i]->slot == slot)
      return true;
  return false;
}

static size_t idle_conns_locked(void) {
  size_t n = 0;
  for (struct px_conn *c = st.conns; c != NULL; c = c->next)
    if (!c->control && c->nsessions == 0)
      n++;
  return n;
}

/* A dedicated connection without sessions is kept idle or closed. */
static void conn_maybe_retire_locked(struct px_conn *c, struct px_conn **dead) {
  if (c->control || c->nsessions != 0 || !c->listed)
    return;
  if (atomic_load(&c->broken) || idle_conns_locked() > PX_MAX_IDLE_CONNS)
    conn_unlist_locked(c, dead);
}

static void session_unlist_locked(struct px_session *s,
                                  struct px_conn **dead) {
  if (!s->listed)
    return;
  for (size_t i = 0; i < st.n_sessions; i++) {
    if (st.sessions[i] == s) {
      st.sessions[i] = st.sessions[--st.n_sessions];
      break;
    }
  }
  s->listed = false;
  s->conn->nsessions--;
  /* PKCS#11: closing the last session of a token logs the user out. */
  if (!slot_has_sessions_locked(s->slot))
    login_forget_locked(s->slot);
  conn_maybe_retire_locked(s->conn, dead);
  session_unref_locked(s, dead);
}

/* A broken connection takes its sessions with it (in application mode
 * only locally: they are closed in the daemon later). */
static void conn_drop_locked(struct px_conn *c, struct px_conn **dead) {
  for (size_t i = st.n_sessions; i > 0; i--) {
    struct px_session *s = st.sessions[i - 1];
    if (s->conn == c) {
      stale_add_locked(c, s->remote);
      session_unlist_locked(s, dead);
    }
  }
  conn_unlist_locked(c, dead);
}

static CK_RV session_add_locked(struct px_session *s) {
  if (st.n_sessions == st.cap_sessions) {
    size_t ncap = st.cap_sessions ? st.cap_sessions * 2 : 16;
    struct px_session **n = realloc(st.sessions, ncap * sizeof *n);
    if (n == NULL)
      return CKR_HOST_MEMORY;
    st.sessions = n;
    st.cap_sessions = ncap;
  }
  /* An application's session handles are unique in the daemon: they are
   * handed out unchanged. Otherwise (and on a clash with a handle of an
   * older application) handles are this library's own, never 0
   * (CK_INVALID_HANDLE) and not reused within an epoch unless the counter
   * wraps. */
  if (in_app_locked(s->conn) && s->remote != CK_INVALID_HANDLE &&
      session_find_locked(s->remote) == NULL) {
    s->handle = s->remote;
  } else {
    do {
      st.next_handle++;
    } while (st.next_handle == CK_INVALID_HANDLE ||
             session_find_locked(st.next_handle) != NULL);
    s->handle = st.next_handle;
  }
  s->listed = true;
  s->refs = 1;
  st.sessions[st.n_sessions++] = s;
  return CKR_OK;
}

/* ---- fork ---- */

static void atfork_prepare(void) { pthread_mutex_lock(&st_lock); }
static void atfork_parent(void) { pthread_mutex_unlock(&st_lock); }

/* The child inherits copies of the parent's sockets; sending on them would
 * interleave with the parent's traffic, so the child only closes its
 * descriptor copies and starts uninitialized. */
static void atfork_child(void) {
  for (size_t i = 0; i < st.n_sessions; i++) {
    px_out_cache_clear(&st.sessions[i]->cache);
    free(st.sessions[i]);
  }
  free(st.sessions);
  st.sessions = NULL;
  st.n_sessions = st.cap_sessions = 0;
  while (st.conns != NULL) {
    struct px_conn *c = st.conns;
    st.conns = c->next;
    px_conn_abandon(c);
  }
  st.control = NULL;
  while (st.logins != NULL) {
    struct px_login *l = st.logins;
    st.logins = l->next;
    login_free(l);
  }
  /* The parent's application is not the child's: C_Initialize in the
   * child starts a new one. */
  app_forget_locked();
  st.initialized = false;
  st.initializing = false;
  pthread_mutex_unlock(&st_lock);
}

static void register_atfork(void) {
  pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
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
    /* tirpc and this library lock with pthreads; application-supplied
     * mutex callbacks alone cannot be honoured. */
    if (n == 4 && !(args->flags & CKF_OS_LOCKING_OK))
      return CKR_CANT_LOCK;
  }
  pthread_once(&atfork_once, register_atfork);

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
  if (rv == CKR_OK)
    rv = px_conn_open(&cfg, NULL, &control);
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

/* Application mode: one C_Finalize ends the application for all its
 * connections. It goes to ctl when that is among dead and healthy, else to
 * another healthy connection of the application; the rest just close. */
static void destroy_dead_app(struct px_conn *dead, const struct px_conn *ctl,
                             unsigned epoch) {
  struct px_conn **fin = NULL;
  for (struct px_conn **pp = &dead; *pp != NULL; pp = &(*pp)->next) {
    if ((*pp)->app_epoch != epoch || atomic_load(&(*pp)->broken))
      continue;
    if (fin == NULL || *pp == ctl)
      fin = pp;
  }
  if (fin != NULL) {
    struct px_conn *c = *fin;
    *fin = c->next;
    px_conn_destroy(c, true);
  }
  destroy_dead(dead, false);
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
  free(st.sessions);
  st.sessions = NULL;
  st.cap_sessions = 0;
  while (st.conns != NULL)
    conn_unlist_locked(st.conns, &dead);
  while (st.logins != NULL) {
    struct px_login *l = st.logins;
    st.logins = l->next;
    login_free(l);
  }
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

static CK_RV rpc_close_session(struct px_conn *c, CK_SESSION_HANDLE remote);

/* Drops a reference taken by get_control without holding c->lock. */
static void conn_release(struct px_conn *c) {
  struct px_conn *dead = NULL;
  pthread_mutex_lock(&st_lock);
  if (atomic_load(&c->broken))
    conn_drop_locked(c, &dead);
  conn_unref_locked(c, &dead);
  pthread_mutex_unlock(&st_lock);
  destroy_dead(dead, false);
}

/* Opens a control connection: in application mode it joins the
 * application; if the daemon refuses (the application is gone), it starts
 * a new one, reported through *renewed, *new_app and new_token. */
static CK_RV open_control(bool app, const unsigned char *token,
                          struct px_conn **out, bool *renewed, bool *new_app,
                          unsigned char *new_token) {
  *renewed = false;
  *new_app = false;
  CK_RV rv = px_conn_open(&st.cfg, app ? token : NULL, out);
  if (!app || rv == CKR_OK || rv == CKR_DEVICE_ERROR)
    return rv;
  px_debug("control connection: application gone (0x%lx), starting a new one",
           (unsigned long)rv);
  rv = px_conn_open(&st.cfg, NULL, out);
  if (rv != CKR_OK)
    return rv;
  *renewed = true;
  *new_app = px_conn_app_token(*out, new_token) == CKR_OK;
  return CKR_OK;
}

/* Returns a referenced, healthy control connection, reconnecting if the
 * previous one broke, and closes stale sessions of the application on it. */
static CK_RV get_control(struct px_conn **out, CK_RV unreachable_rv) {
  struct px_conn *dead = NULL;
  pthread_mutex_lock(&st_lock);
  if (!st.initialized) {
    pthread_mutex_unlock(&st_lock);
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  }
  struct px_conn *c = st.control;
  if (c != NULL && atomic_load(&c->broken)) {
    conn_drop_locked(c, &dead);
    c = NULL;
  }
  if (c == NULL) {
    bool app = st.app;
    unsigned epoch = st.app_epoch;
    unsigned char token[PX_APP_TOKEN_SIZE], new_token[PX_APP_TOKEN_SIZE];
    memcpy(token, st.token, sizeof token);
    pthread_mutex_unlock(&st_lock);
    destroy_dead(dead, false);
    dead = NULL;
    struct px_conn *nc = NULL;
    bool renewed, new_app;
    CK_RV rv = open_control(app, token, &nc, &renewed, &new_app, new_token);
    explicit_bzero(token, sizeof token);
    if (rv != CKR_OK) {
      px_debug("control connection: reconnect failed (0x%lx)",
               (unsigned long)rv);
      return unreachable_rv;
    }
    nc->app_epoch = renewed ? 0 : epoch;
    pthread_mutex_lock(&st_lock);
    if (!st.initialized) {
      pthread_mutex_unlock(&st_lock);
      px_conn_destroy(nc, nc->app_epoch == 0);
      explicit_bzero(new_token, sizeof new_token);
      return CKR_CRYPTOKI_NOT_INITIALIZED;
    }
    if ((st.control != NULL && !atomic_load(&st.control->broken)) ||
        st.app != app || st.app_epoch != epoch) {
      /* Another thread reconnected first. destroy_dead finalizes nc only
       * if it is an application of its own (renewed, or no extension). */
      nc->next = dead;
      dead = nc;
    } else {
      if (st.control != NULL)
        conn_drop_locked(st.control, &dead);
      if (renewed) {
        /* The old application's connections cannot reach it any more:
         * idle ones close now, the others with their sessions' next use. */
        for (struct px_conn **pp = &st.conns; *pp != NULL;) {
          struct px_conn *i = *pp;
          if (i->app_epoch == epoch) {
            atomic_store(&i->broken, true);
            if (!i->control && i->nsessions == 0) {
              conn_unlist_locked(i, &dead); /* *pp is now the next one */
              continue;
            }
          }
          pp = &i->next;
        }
        app_forget_locked();
        if (new_app)
          app_start_locked(new_token);
        nc->app_epoch = st.app_epoch;
      }
      nc->control = true;
      conn_list_locked(nc);
      st.control = nc;
      px_debug("control connection: reconnected%s",
               renewed ? " (new application)" : "");
    }
    explicit_bzero(new_token, sizeof new_token);
    c = st.control;
    if (c == NULL || atomic_load(&c->broken)) {
      /* The application changed meanwhile and its control broke again. */
      pthread_mutex_unlock(&st_lock);
      destroy_dead(dead, true);
      return unreachable_rv;
    }
  }
  CK_SESSION_HANDLE *stale = NULL;
  size_t n_stale = 0;
  if (st.n_stale > 0 && in_app_locked(c)) {
    stale = st.stale;
    n_stale = st.n_stale;
    st.stale = NULL;
    st.n_stale = st.cap_stale = 0;
  }
  c->refs++;
  pthread_mutex_unlock(&st_lock);
  destroy_dead(dead, true);
  if (n_stale > 0) {
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < n_stale && !atomic_load(&c->broken); i++)
      rpc_close_session(c, stale[i]);
    pthread_mutex_unlock(&c->lock);
    px_debug("control connection: closed %zu stale sessions", n_stale);
  }
  free(stale);
  *out = c;
  return CKR_OK;
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

/* ---- sessions ---- */

static CK_RV rpc_login(struct px_conn *c, CK_SESSION_HANDLE remote,
                       CK_USER_TYPE user, const unsigned char *pin,
                       size_t pin_len) {
  C_Login_args a = {.session = (px_session_handle)remote,
                    .userType = (px_user_type)user};
  a.pin.px_bytes_len = (u_int)pin_len;
  a.pin.px_bytes_val = (char *)pin;
  px_rv res = 0;
  CK_RV rv = px_rpc_done(c, c_login_3(a, &res, c->clnt), "C_Login");
  return rv == CKR_OK ? (CK_RV)res : rv;
}

static CK_RV rpc_logout(struct px_conn *c, CK_SESSION_HANDLE remote) {
  C_Logout_args a = {.session = (px_session_handle)remote};
  px_rv res = 0;
  CK_RV rv = px_rpc_done(c, c_logout_3(a, &res, c->clnt), "C_Logout");
  return rv == CKR_OK ? (CK_RV)res : rv;
}

static CK_RV rpc_close_session(struct px_conn *c, CK_SESSION_HANDLE remote) {
  C_CloseSession_args a = {.session = (px_session_handle)remote};
  px_rv res = 0;
  CK_RV rv =
      px_rpc_done(c, c_closesession_3(a, &res, c->clnt), "C_CloseSession");
  return rv == CKR_OK ? (CK_RV)res : rv;
}

/* A dedicated connection for a new session; in application mode it joins
 * the application. A refused join means the application may be gone: the
 * control connection is asked for its token (a dead one fails, and its
 * reconnect starts a new application) and the join is tried once more. */
static CK_RV open_session_conn(struct px_conn **out) {
  for (int attempt = 0;; attempt++) {
    pthread_mutex_lock(&st_lock);
    bool app = st.app;
    unsigned epoch = st.app_epoch;
    unsigned char token[PX_APP_TOKEN_SIZE], check[PX_APP_TOKEN_SIZE];
    memcpy(token, st.token, sizeof token);
    pthread_mutex_unlock(&st_lock);
    CK_RV rv = px_conn_open(&st.cfg, app ? token : NULL, out);
    if (rv == CKR_OK)
      (*out)->app_epoch = epoch;
    if (rv == CKR_OK || !app || rv == CKR_DEVICE_ERROR || attempt > 0) {
      explicit_bzero(token, sizeof token);
      return rv;
    }
    struct px_conn *ctl;
    rv = get_control(&ctl, CKR_DEVICE_ERROR);
    if (rv != CKR_OK) {
      explicit_bzero(token, sizeof token);
      return rv;
    }
    bool alive = px_conn_app_token(ctl, check) == CKR_OK &&
                 memcmp(check, token, sizeof check) == 0;
    conn_release(ctl);
    explicit_bzero(token, sizeof token);
    explicit_bzero(check, sizeof check);
    if (alive) {
      px_debug("C_OpenSession: px_JoinApp refused for a live application");
      return CKR_DEVICE_ERROR;
    }
    /* Reopens a control connection found dead (new application). */
    rv = get_control(&ctl, CKR_DEVICE_ERROR);
    if (rv != CKR_OK)
      return rv;
    conn_release(ctl);
  }
}

CK_RV px_session_open(CK_SLOT_ID slot, CK_FLAGS flags,
                      CK_SESSION_HANDLE_PTR out) {
  struct px_conn *dead = NULL;
  struct px_conn *c = NULL;
  CK_RV rv;

  pthread_mutex_lock(&st_lock);
  if (!st.initialized) {
    pthread_mutex_unlock(&st_lock);
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  }
  if (st.n_sessions >= PX_MAX_SESSIONS) {
    pthread_mutex_unlock(&st_lock);
    return CKR_SESSION_COUNT;
  }
  if (st.n_stale > 0) {
    /* get_control closes the application's stale sessions first, so their
     * share of the login does not outlive them. */
    pthread_mutex_unlock(&st_lock);
    if (get_control(&c, CKR_DEVICE_ERROR) == CKR_OK)
      conn_release(c);
    c = NULL;
    pthread_mutex_lock(&st_lock);
    if (!st.initialized) {
      pthread_mutex_unlock(&st_lock);
      return CKR_CRYPTOKI_NOT_INITIALIZED;
    }
  }
  bool shared = st.cfg.shared_sessions;
  if (!shared) {
    for (struct px_conn *i = st.conns; i != NULL; i = i->next) {
      if (!i->control && i->nsessions == 0 && !atomic_load(&i->broken)) {
        c = i;
        break;
      }
    }
    if (c != NULL) {
      c->nsessions++; /* reserves the idle connection */
      c->refs++;
    }
  }
  pthread_mutex_unlock(&st_lock);

  if (shared) {
    rv = get_control(&c, CKR_DEVICE_ERROR);
    if (rv != CKR_OK)
      return rv;
    pthread_mutex_lock(&st_lock);
    c->nsessions++;
    pthread_mutex_unlock(&st_lock);
  } else if (c == NULL) {
    rv = open_session_conn(&c);
    if (rv != CKR_OK)
      return CKR_DEVICE_ERROR;
    pthread_mutex_lock(&st_lock);
    if (!st.initialized || c->app_epoch != st.app_epoch) {
      /* Finalized, or the application was replaced meanwhile. */
      rv = st.initialized ? CKR_DEVICE_ERROR : CKR_CRYPTOKI_NOT_INITIALIZED;
      pthread_mutex_unlock(&st_lock);
      px_conn_destroy(c, c->app_epoch == 0);
      return rv;
    }
    conn_list_locked(c);
    c->refs++;
    c->nsessions++;
    pthread_mutex_unlock(&st_lock);
  }

  C_OpenSession_args a = {.slotID = (px_slot_id)slot,
                          .flags = (px_flags)flags};
  C_OpenSession_ret res;
  memset(&res, 0, sizeof res);
  pthread_mutex_lock(&c->lock);
  rv = px_rpc_done(c, c_opensession_3(a, &res, c->clnt), "C_OpenSession");
  pthread_mutex_unlock(&c->lock);
  if (rv == CKR_OK)
    rv = (CK_RV)res.rv;

  struct px_session *s = NULL;
  bool opened = rv == CKR_OK;
  if (rv == CKR_OK) {
    s = calloc(1, sizeof *s);
    if (s == NULL)
      rv = CKR_HOST_MEMORY; /* the remote session dies with the connection,
                               or as a stale session of the application */
  }
  pthread_mutex_lock(&st_lock);
  if (rv != CKR_OK || !st.initialized) {
    if (rv == CKR_OK)
      rv = CKR_CRYPTOKI_NOT_INITIALIZED;
    if (opened)
      stale_add_locked(c, (CK_SESSION_HANDLE)res.session);
    free(s);
    c->nsessions--;
    if (atomic_load(&c->broken))
      conn_drop_locked(c, &dead);
    else
      conn_maybe_retire_locked(c, &dead);
    conn_unref_locked(c, &dead);
    pthread_mutex_unlock(&st_lock);
    destroy_dead(dead, false);
    return rv;
  }
  bool conn_had_slot = false;
  for (size_t i = 0; i < st.n_sessions; i++)
    if (st.sessions[i]->conn == c && st.sessions[i]->slot == slot)
      conn_had_slot = true;
  s->remote = (CK_SESSION_HANDLE)res.session;
  s->slot = slot;
  s->conn = c; /* takes over this call's reference */
  rv = session_add_locked(s);
  if (rv != CKR_OK) {
    stale_add_locked(c, s->remote);
    free(s);
    c->nsessions--;
    conn_unref_locked(c, &dead);
    pthread_mutex_unlock(&st_lock);
    destroy_dead(dead, false);
    return rv;
  }
  CK_SESSION_HANDLE handle = s->handle;
  struct px_login *l = conn_had_slot ? NULL : login_find_locked(slot);
  unsigned char *pin = NULL;
  size_t pin_len = 0;
  CK_USER_TYPE user = 0;
  if (l != NULL) {
    pin = malloc(l->pin_len ? l->pin_len : 1);
    if (pin != NULL) {
      memcpy(pin, l->pin, l->pin_len);
      pin_len = l->pin_len;
      user = l->user;
    }
  }
  pthread_mutex_unlock(&st_lock);

  if (l != NULL) {
    struct px_call call;
    rv = pin ? px_session_enter(handle, &call) : CKR_HOST_MEMORY;
    if (rv == CKR_OK) {
      rv = rpc_login(call.c, call.s->remote, user, pin, pin_len);
      if (rv == CKR_USER_ALREADY_LOGGED_IN)
        rv = CKR_OK;
      if (rv != CKR_OK) {
        px_debug("C_OpenSession: login replay failed (0x%lx)",
                 (unsigned long)rv);
        rpc_close_session(call.c, call.s->remote);
      }
      px_session_leave(&call);
    }
    px_secure_free(pin, pin_len);
    if (rv != CKR_OK) {
      pthread_mutex_lock(&st_lock);
      struct px_session *gone = session_find_locked(handle);
      if (gone != NULL)
        session_unlist_locked(gone, &dead);
      pthread_mutex_unlock(&st_lock);
      destroy_dead(dead, false);
      return CKR_DEVICE_ERROR;
    }
  }
  px_debug("C_OpenSession: slot %lu -> session %lu (remote %lu)",
           (unsigned long)slot, (unsigned long)handle,
           (unsigned long)res.session);
  *out = handle;
  return CKR_OK;
}

CK_RV px_session_close(CK_SESSION_HANDLE h) {
  struct px_call call;
  CK_RV rv = px_session_enter(h, &call);
  if (rv != CKR_OK)
    return rv;
  rv = rpc_close_session(call.c, call.s->remote);
  struct px_conn *dead = NULL;
  if (rv == CKR_OK || rv == CKR_SESSION_HANDLE_INVALID ||
      rv == CKR_SESSION_CLOSED || rv == CKR_DEVICE_ERROR) {
    pthread_mutex_lock(&st_lock);
    if (atomic_load(&call.c->broken))
      stale_add_locked(call.c, call.s->remote);
    session_unlist_locked(call.s, &dead);
    pthread_mutex_unlock(&st_lock);
    /* A closed or unreachable remote session is closed for the caller. */
    rv = CKR_OK;
  }
  px_session_leave(&call);
  destroy_dead(dead, false);
  return rv;
}

struct target {
  struct px_conn *c;
  CK_SESSION_HANDLE remote;
};

/* Other connections holding sessions on the slot, one entry each, each
 * referenced. */
static size_t collect_targets_locked(CK_SLOT_ID slot, struct px_conn *skip,
                                     struct target **out) {
  *out = NULL;
  if (st.n_sessions == 0)
    return 0;
  struct target *t = calloc(st.n_sessions, sizeof *t);
  if (t == NULL)
    return 0;
  size_t n = 0;
  for (size_t i = 0; i < st.n_sessions; i++) {
    struct px_session *s = st.sessions[i];
    if (s->slot != slot || s->conn == skip || atomic_load(&s->conn->broken))
      continue;
    bool seen = false;
    for (size_t j = 0; j < n; j++)
      if (t[j].c == s->conn)
        seen = true;
    if (seen)
      continue;
    t[n].c = s->conn;
    t[n].remote = s->remote;
    s->conn->refs++;
    n++;
  }
  *out = t;
  return n;
}

static void release_targets(struct target *t, size_t n) {
  struct px_conn *dead = NULL;
  pthread_mutex_lock(&st_lock);
  for (size_t i = 0; i < n; i++) {
    if (atomic_load(&t[i].c->broken))
      conn_drop_locked(t[i].c, &dead);
    conn_unref_locked(t[i].c, &dead);
  }
  pthread_mutex_unlock(&st_lock);
  destroy_dead(dead, false);
  free(t);
}

CK_RV px_session_close_all(CK_SLOT_ID slot) {
  struct px_conn *dead = NULL;
  pthread_mutex_lock(&st_lock);
  if (!st.initialized) {
    pthread_mutex_unlock(&st_lock);
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  }
  /* In application mode one C_CloseAllSessions, on the control
   * connection, closes the application's sessions on every connection. */
  struct target *t = NULL;
  size_t n = st.app ? 0 : collect_targets_locked(slot, NULL, &t);
  for (size_t i = st.n_sessions; i > 0; i--)
    if (st.sessions[i - 1]->slot == slot)
      session_unlist_locked(st.sessions[i - 1], &dead);
  pthread_mutex_unlock(&st_lock);
  destroy_dead(dead, false);

  CK_RV result = CKR_OK;
  C_CloseAllSessions_args a = {.slotID = (px_slot_id)slot};
  if (n == 0) {
    free(t);
    struct px_call call;
    CK_RV rv = px_control_enter(&call, CKR_DEVICE_ERROR);
    if (rv != CKR_OK)
      return rv;
    px_rv res = 0;
    rv = px_rpc_done(call.c, c_closeallsessions_3(a, &res, call.c->clnt),
                    "C_CloseAllSessions");
    px_control_leave(&call);
    return rv == CKR_OK ? (CK_RV)res : rv;
  }
  for (size_t i = 0; i < n; i++) {
    px_rv res = 0;
    pthread_mutex_lock(&t[i].c->lock);
    CK_RV rv = px_rpc_done(t[i].c,
                          c_closeallsessions_3(a, &res, t[i].c->clnt),
                          "C_CloseAllSessions");
    pthread_mutex_unlock(&t[i].c->lock);
    if (rv == CKR_OK)
      rv = (CK_RV)res;
    if (rv != CKR_OK && rv != CKR_DEVICE_ERROR && result == CKR_OK)
      result = rv;
  }
  release_targets(t, n);
  return result;
}

CK_RV px_session_login(CK_SESSION_HANDLE h, CK_USER_TYPE user,
                       const unsigned char *pin, size_t pin_len) {
  struct px_call call;
  CK_RV rv = px_session_enter(h, &call);
  if (rv != CKR_OK)
    return rv;
  if (call.c->app_epoch != 0) {
    /* The daemon shares the login with every connection of the
     * application: nothing is kept or replayed. */
    rv = rpc_login(call.c, call.s->remote, user, pin, pin_len);
    px_session_leave(&call);
    return rv;
  }
  CK_SLOT_ID slot = call.s->slot;
  if (user != CKU_CONTEXT_SPECIFIC) {
    pthread_mutex_lock(&st_lock);
    struct px_login *l = login_find_locked(slot);
    CK_USER_TYPE current = l ? l->user : 0;
    pthread_mutex_unlock(&st_lock);
    if (l != NULL) {
      px_session_leave(&call);
      return current == user ? CKR_USER_ALREADY_LOGGED_IN
                             : CKR_USER_ANOTHER_ALREADY_LOGGED_IN;
    }
  }
  rv = rpc_login(call.c, call.s->remote, user, pin, pin_len);
  struct px_conn *origin = call.c;
  if (rv != CKR_OK || user == CKU_CONTEXT_SPECIFIC) {
    px_session_leave(&call);
    return rv;
  }

  struct px_login *l = calloc(1, sizeof *l);
  unsigned char *copy = malloc(pin_len ? pin_len : 1);
  if (l == NULL || copy == NULL) {
    free(l);
    free(copy);
    px_session_leave(&call);
    return CKR_OK; /* logged in on this session's connection only */
  }
  memcpy(copy, pin, pin_len);
  l->slot = slot;
  l->user = user;
  l->pin = copy;
  l->pin_len = pin_len;

  pthread_mutex_lock(&st_lock);
  login_forget_locked(slot);
  l->next = st.logins;
  st.logins = l;
  struct target *t;
  size_t n = collect_targets_locked(slot, origin, &t);
  pthread_mutex_unlock(&st_lock);
  px_session_leave(&call);

  for (size_t i = 0; i < n; i++) {
    pthread_mutex_lock(&t[i].c->lock);
    CK_RV r2 = rpc_login(t[i].c, t[i].remote, user, pin, pin_len);
    pthread_mutex_unlock(&t[i].c->lock);
    if (r2 != CKR_OK && r2 != CKR_USER_ALREADY_LOGGED_IN)
      px_debug("C_Login: replay on another connection failed (0x%lx)",
               (unsigned long)r2);
  }
  release_targets(t, n);
  return CKR_OK;
}

CK_RV px_session_logout(CK_SESSION_HANDLE h) {
  struct px_call call;
  CK_RV rv = px_session_enter(h, &call);
  if (rv != CKR_OK)
    return rv;
  if (call.c->app_epoch != 0) {
    rv = rpc_logout(call.c, call.s->remote);
    px_session_leave(&call);
    return rv;
  }
  CK_SLOT_ID slot = call.s->slot;
  rv = rpc_logout(call.c, call.s->remote);
  struct px_conn *origin = call.c;
  if (rv != CKR_OK && rv != CKR_USER_NOT_LOGGED_IN) {
    px_session_leave(&call);
    return rv;
  }
  pthread_mutex_lock(&st_lock);
  bool had = login_find_locked(slot) != NULL;
  login_forget_locked(slot);
  struct target *t;
  size_t n = collect_targets_locked(slot, origin, &t);
  pthread_mutex_unlock(&st_lock);
  px_session_leave(&call);
  for (size_t i = 0; i < n; i++) {
    pthread_mutex_lock(&t[i].c->lock);
    rpc_logout(t[i].c, t[i].remote);
    pthread_mutex_unlock(&t[i].c->lock);
  }
  release_targets(t, n);
  /* Logged in through a replayed login only: still a success. */
  return (rv == CKR_USER_NOT_LOGGED_IN && had) ? CKR_OK : rv;
}

void px_login_pin_changed(CK_SESSION_HANDLE h, const unsigned char *old_pin,
                          size_t old_len, const unsigned char *new_pin,
                          size_t new_len) {
  pthread_mutex_lock(&st_lock);
  struct px_session *s = session_find_locked(h);
  struct px_login *l = s ? login_find_locked(s->slot) : NULL;
  if (l != NULL && l->pin_len == old_len &&
      (old_len == 0 || memcmp(l->pin, old_pin, old_len) == 0)) {
    unsigned char *copy = malloc(new_len ? new_len : 1);
    if (copy != NULL) {
      memcpy(copy, new_pin, new_len);
      px_secure_free(l->pin, l->pin_len);
      l->pin = copy;
      l->pin_len = new_len;
    }
  }
  pthread_mutex_unlock(&st_lock);
}
