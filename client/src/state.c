/*
 * Library state: initialization epochs, connections, the session table and
 * login replay.
 *
 * Connection model (see client/README.md): one control connection for
 * slot-level calls, and by default one dedicated connection per session,
 * because the daemon scopes a session to the connection that opened it.
 * Each connection has its own lock held across one round trip, so calls on
 * different sessions run concurrently; the state lock below is never held
 * across a round trip.
 *
 * The daemon keeps login state per connection while PKCS#11 makes it
 * per application and token, so after a successful C_Login the PIN is kept
 * (zeroed on logout, on closing the slot's last session, on C_Finalize and
 * in a forked child) and replayed on the other connections that have
 * sessions on the slot and on connections opened for new sessions.
 *
 * Session handles given to the application are this library's own: two
 * connections can receive the same handle from the daemon.
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
} st;

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

static void destroy_dead(struct px_conn *dead, bool say_finalize) {
  while (dead != NULL) {
    struct px_conn *next = dead->next;
    px_conn_destroy(dead, say_finalize);
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

/* A broken connection takes its sessions with it. */
static void conn_drop_locked(struct px_conn *c, struct px_conn **dead) {
  for (size_t i = st.n_sessions; i > 0; i--) {
    struct px_session *s = st.sessions[i - 1];
    if (s->conn == c)
      session_unlist_locked(s, dead);
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
  /* Handles are never 0 (CK_INVALID_HANDLE) and not reused within an
   * epoch unless the counter wraps. */
  do {
    st.next_handle++;
  } while (st.next_handle == CK_INVALID_HANDLE ||
           session_find_locked(st.next_handle) != NULL);
  s->handle = st.next_handle;
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
    rv = px_conn_open(&cfg, &control);

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
  pthread_mutex_unlock(&st_lock);
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

/* Returns a referenced, healthy control connection, reconnecting if the
 * previous one broke. */
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
    pthread_mutex_unlock(&st_lock);
    destroy_dead(dead, false);
    dead = NULL;
    struct px_conn *nc = NULL;
    CK_RV rv = px_conn_open(&st.cfg, &nc);
    if (rv != CKR_OK) {
      px_debug("control connection: reconnect failed (0x%lx)",
               (unsigned long)rv);
      return unreachable_rv;
    }
    pthread_mutex_lock(&st_lock);
    if (!st.initialized) {
      pthread_mutex_unlock(&st_lock);
      px_conn_destroy(nc, true);
      return CKR_CRYPTOKI_NOT_INITIALIZED;
    }
    if (st.control != NULL && !atomic_load(&st.control->broken)) {
      nc->next = dead;
      dead = nc; /* another thread reconnected first */
    } else {
      if (st.control != NULL)
        conn_drop_locked(st.control, &dead);
      nc->control = true;
      conn_list_locked(nc);
      st.control = nc;
      px_debug("control connection: reconnected");
    }
    c = st.control;
  }
  c->refs++;
  pthread_mutex_unlock(&st_lock);
  destroy_dead(dead, true);
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
  struct px_rpc r;
  px_rpc_begin(&r);
  CK_RV rv = px_rpc_end(&r, c, c_login_3(a, &res, c->clnt), "C_Login");
  return rv == CKR_OK ? (CK_RV)res : rv;
}

static CK_RV rpc_logout(struct px_conn *c, CK_SESSION_HANDLE remote) {
  C_Logout_args a = {.session = (px_session_handle)remote};
  px_rv res = 0;
  struct px_rpc r;
  px_rpc_begin(&r);
  CK_RV rv = px_rpc_end(&r, c, c_logout_3(a, &res, c->clnt), "C_Logout");
  return rv == CKR_OK ? (CK_RV)res : rv;
}

static CK_RV rpc_close_session(struct px_conn *c, CK_SESSION_HANDLE remote) {
  C_CloseSession_args a = {.session = (px_session_handle)remote};
  px_rv res = 0;
  struct px_rpc r;
  px_rpc_begin(&r);
  CK_RV rv =
      px_rpc_end(&r, c, c_closesession_3(a, &res, c->clnt), "C_CloseSession");
  return rv == CKR_OK ? (CK_RV)res : rv;
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
    rv = px_conn_open(&st.cfg, &c);
    if (rv != CKR_OK)
      return CKR_DEVICE_ERROR;
    pthread_mutex_lock(&st_lock);
    if (!st.initialized) {
      pthread_mutex_unlock(&st_lock);
      px_conn_destroy(c, true);
      return CKR_CRYPTOKI_NOT_INITIALIZED;
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
  struct px_rpc r;
  pthread_mutex_lock(&c->lock);
  px_rpc_begin(&r);
  rv = px_rpc_end(&r, c, c_opensession_3(a, &res, c->clnt), "C_OpenSession");
  pthread_mutex_unlock(&c->lock);
  if (rv == CKR_OK)
    rv = (CK_RV)res.rv;

  struct px_session *s = NULL;
  if (rv == CKR_OK) {
    s = calloc(1, sizeof *s);
    if (s == NULL)
      rv = CKR_HOST_MEMORY; /* the remote session dies with the connection */
  }
  pthread_mutex_lock(&st_lock);
  if (rv != CKR_OK || !st.initialized) {
    if (rv == CKR_OK)
      rv = CKR_CRYPTOKI_NOT_INITIALIZED;
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
  struct target *t;
  size_t n = collect_targets_locked(slot, NULL, &t);
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
    struct px_rpc r;
    px_rpc_begin(&r);
    rv = px_rpc_end(&r, call.c, c_closeallsessions_3(a, &res, call.c->clnt),
                    "C_CloseAllSessions");
    px_control_leave(&call);
    return rv == CKR_OK ? (CK_RV)res : rv;
  }
  for (size_t i = 0; i < n; i++) {
    px_rv res = 0;
    struct px_rpc r;
    pthread_mutex_lock(&t[i].c->lock);
    px_rpc_begin(&r);
    CK_RV rv = px_rpc_end(&r, t[i].c,
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
