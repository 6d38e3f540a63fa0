/*
 * C_OpenSession, C_CloseSession and C_CloseAllSessions. A session lives on
 * a dedicated connection (default; an idle one is reused) or on the
 * control connection (session_connections = shared).
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "state.h"

CK_RV rpc_close_session(struct px_conn *c, CK_SESSION_HANDLE remote) {
  C_CloseSession_args a = {.session = (px_session_handle)remote};
  px_rv res = 0;
  CK_RV rv =
      px_rpc_done(c, c_closesession_3(a, &res, c->clnt), "C_CloseSession");
  return rv == CKR_OK ? (CK_RV)res : rv;
}

/* One attempt; *lost is set when the connection broke during the
 * C_OpenSession round trip (its daemon died). */
static CK_RV session_open_once(CK_SLOT_ID slot, CK_FLAGS flags,
                               CK_SESSION_HANDLE_PTR out, bool *lost) {
  *lost = false;
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
    c = conn_take_idle_locked(&dead);
  }
  pthread_mutex_unlock(&st_lock);
  destroy_dead(dead, false);
  dead = NULL;

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
    if (!st.initialized || c->app_epoch != st.app_epoch ||
        c->daemon_gen != st.daemon_gen) {
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
  else
    *lost = true;

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
  /* nsessions counts this one already: only a shared connection has
   * others to look at. */
  bool conn_had_slot = false;
  for (size_t i = 0; c->nsessions > 1 && i < st.n_sessions; i++)
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

/* A connection that breaks during C_OpenSession (an idle one, or the
 * shared control connection, whose daemon died since its last call) is
 * dropped and the session is opened once more on a new connection: to the
 * same daemon, or, when it does not answer, to the next daemon of the
 * list (open_session_conn, get_control). A session lost that way was
 * never handed out, so nothing the application holds changes. */
CK_RV px_session_open(CK_SLOT_ID slot, CK_FLAGS flags,
                      CK_SESSION_HANDLE_PTR out) {
  bool lost;
  CK_RV rv = session_open_once(slot, flags, out, &lost);
  if (rv == CKR_DEVICE_ERROR && lost) {
    px_debug("C_OpenSession: connection lost, trying once more");
    rv = session_open_once(slot, flags, out, &lost);
  }
  return rv;
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
