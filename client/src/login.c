/*
 * C_Login and C_Logout. In application mode the daemon shares the login
 * between the application's connections: one call, nothing kept. In
 * per-connection mode the PIN of a successful login is kept per slot and
 * replayed on the other connections with sessions on the slot and on
 * connections opened later (sessions.c); it is zeroed on C_Logout, when the
 * slot's last session closes, on C_Finalize and in a forked child.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "state.h"

static void login_free(struct px_login *l) {
  px_secure_free(l->pin, l->pin_len);
  free(l);
}

struct px_login *login_find_locked(CK_SLOT_ID slot) {
  for (struct px_login *l = st.logins; l != NULL; l = l->next)
    if (l->slot == slot)
      return l;
  return NULL;
}

void login_forget_locked(CK_SLOT_ID slot) {
  for (struct px_login **pp = &st.logins; *pp != NULL; pp = &(*pp)->next) {
    if ((*pp)->slot == slot) {
      struct px_login *l = *pp;
      *pp = l->next;
      login_free(l);
      return;
    }
  }
}

void logins_clear_locked(void) {
  while (st.logins != NULL) {
    struct px_login *l = st.logins;
    st.logins = l->next;
    login_free(l);
  }
}

CK_RV rpc_login(struct px_conn *c, CK_SESSION_HANDLE remote,
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
