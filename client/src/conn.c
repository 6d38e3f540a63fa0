/*
 * Connections: the list of open ones and their references, the idle pool
 * of dedicated connections kept for later sessions, the control connection
 * (reconnected when it breaks; in application mode a refused join starts a
 * new application) and new dedicated connections for sessions.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "state.h"

/* Connections whose refs drop to zero are queued on *dead (linked through
 * next) and destroyed by the caller after st_lock is released. */
void conn_unref_locked(struct px_conn *c, struct px_conn **dead) {
  if (--c->refs == 0) {
    c->next = *dead;
    *dead = c;
  }
}

void conn_unlist_locked(struct px_conn *c, struct px_conn **dead) {
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

void conn_list_locked(struct px_conn *c) {
  c->listed = true;
  c->refs++;
  c->next = st.conns;
  st.conns = c;
}

/* C_Finalize on a connection of an application would finalize all its
 * connections: only px_state_finalize sends it there. */
void destroy_dead(struct px_conn *dead, bool say_finalize) {
  while (dead != NULL) {
    struct px_conn *next = dead->next;
    px_conn_destroy(dead, say_finalize && dead->app_epoch == 0);
    dead = next;
  }
}

/* Application mode: one C_Finalize ends the application for all its
 * connections. It goes to ctl when that is among dead and healthy, else to
 * another healthy connection of the application; the rest just close. */
void destroy_dead_app(struct px_conn *dead, const struct px_conn *ctl,
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

static size_t idle_conns_locked(void) {
  size_t n = 0;
  for (struct px_conn *c = st.conns; c != NULL; c = c->next)
    if (!c->control && c->nsessions == 0)
      n++;
  return n;
}

/* A dedicated connection without sessions is kept idle or closed. */
void conn_maybe_retire_locked(struct px_conn *c, struct px_conn **dead) {
  if (c->control || c->nsessions != 0 || !c->listed)
    return;
  if (atomic_load(&c->broken) || idle_conns_locked() > PX_MAX_IDLE_CONNS)
    conn_unlist_locked(c, dead);
}

struct px_conn *conn_take_idle_locked(struct px_conn **dead) {
  for (struct px_conn **pp = &st.conns; *pp != NULL;) {
    struct px_conn *i = *pp;
    if (i->control || i->nsessions != 0) {
      pp = &i->next;
      continue;
    }
    /* An idle connection its daemon closed is retired, not handed out. */
    if (!atomic_load(&i->broken) && px_conn_peer_gone(i))
      atomic_store(&i->broken, true);
    if (atomic_load(&i->broken)) {
      conn_unlist_locked(i, dead); /* *pp is now the next one */
      continue;
    }
    i->nsessions++;
    i->refs++;
    return i;
  }
  return NULL;
}

/* A broken connection takes its sessions with it (in application mode
 * only locally: they are closed in the daemon later). */
void conn_drop_locked(struct px_conn *c, struct px_conn **dead) {
  for (size_t i = st.n_sessions; i > 0; i--) {
    struct px_session *s = st.sessions[i - 1];
    if (s->conn == c) {
      stale_add_locked(c, s->remote);
      session_unlist_locked(s, dead);
    }
  }
  conn_unlist_locked(c, dead);
}

/* Drops a reference taken by get_control without holding c->lock. */
void conn_release(struct px_conn *c) {
  struct px_conn *dead = NULL;
  pthread_mutex_lock(&st_lock);
  if (atomic_load(&c->broken))
    conn_drop_locked(c, &dead);
  conn_unref_locked(c, &dead);
  pthread_mutex_unlock(&st_lock);
  destroy_dead(dead, false);
}

CK_RV open_first_answering(const struct px_config *cfg, size_t first,
                           size_t tries, struct px_conn **out, size_t *used) {
  CK_RV rv = CKR_DEVICE_ERROR;
  for (size_t k = 0; k < tries; k++) {
    size_t e = (first + k) % cfg->n_ep;
    rv = px_conn_open(cfg, e, NULL, out);
    if (rv != CKR_DEVICE_ERROR) {
      *used = e;
      return rv;
    }
    px_debug("daemon %zu of %zu does not answer", e + 1, cfg->n_ep);
  }
  return rv;
}

/* What open_control found. */
struct control_opened {
  bool renewed;  /* a new application (or none) replaces the old one */
  bool switched; /* on another daemon of the list (implies renewed) */
  bool new_app;  /* the new connection has a token: new_token */
  size_t ep;     /* the daemon it reached */
  unsigned char new_token[PX_APP_TOKEN_SIZE];
};

/* Opens a control connection to daemon ep: in application mode it joins
 * the application; if the daemon refuses (the application is gone), it
 * starts a new one there. If the daemon does not answer, the other
 * daemons of the list are tried in turn round it, and the first that
 * answers gets a new application: nothing of the old one is carried over. */
static CK_RV open_control(bool app, const unsigned char *token, size_t ep,
                          struct px_conn **out, struct control_opened *o) {
  o->renewed = o->switched = o->new_app = false;
  o->ep = ep;
  CK_RV rv = px_conn_open(&st.cfg, ep, app ? token : NULL, out);
  if (rv == CKR_OK || (!app && rv != CKR_DEVICE_ERROR))
    return rv;
  if (rv != CKR_DEVICE_ERROR) {
    px_debug("control connection: application gone (0x%lx), starting a new "
             "one",
             (unsigned long)rv);
    rv = px_conn_open(&st.cfg, ep, NULL, out);
  } else if (st.cfg.n_ep > 1) {
    rv = open_first_answering(&st.cfg, ep + 1, st.cfg.n_ep - 1, out, &o->ep);
    o->switched = rv == CKR_OK;
  }
  if (rv != CKR_OK)
    return rv;
  o->renewed = true;
  o->new_app = px_conn_app_token(*out, o->new_token) == CKR_OK;
  return CKR_OK;
}

/* Returns a referenced, healthy control connection, reconnecting if the
 * previous one broke, and closes stale sessions of the application on it. */
CK_RV get_control(struct px_conn **out, CK_RV unreachable_rv) {
  struct px_conn *dead = NULL;
  pthread_mutex_lock(&st_lock);
  if (!st.initialized) {
    pthread_mutex_unlock(&st_lock);
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  }
  struct px_conn *c = st.control;
  /* A daemon that died closed the idle control connection: found here,
   * before a call is sent on it, so the call goes to a new connection
   * (another daemon of the list) instead of failing. */
  if (c != NULL && !atomic_load(&c->broken) && px_conn_peer_gone(c)) {
    px_debug("control connection: closed by the daemon");
    atomic_store(&c->broken, true);
  }
  if (c != NULL && atomic_load(&c->broken)) {
    conn_drop_locked(c, &dead);
    c = NULL;
  }
  if (c == NULL) {
    bool app = st.app;
    unsigned epoch = st.app_epoch;
    unsigned gen = st.daemon_gen;
    size_t ep = st.ep;
    unsigned char token[PX_APP_TOKEN_SIZE];
    memcpy(token, st.token, sizeof token);
    pthread_mutex_unlock(&st_lock);
    destroy_dead(dead, false);
    dead = NULL;
    struct px_conn *nc = NULL;
    struct control_opened o;
    CK_RV rv = open_control(app, token, ep, &nc, &o);
    explicit_bzero(token, sizeof token);
    if (rv != CKR_OK) {
      px_debug("control connection: reconnect failed (0x%lx)",
               (unsigned long)rv);
      return unreachable_rv;
    }
    bool renewed = o.renewed;
    nc->app_epoch = renewed ? 0 : epoch;
    nc->daemon_gen = gen;
    pthread_mutex_lock(&st_lock);
    if (!st.initialized) {
      pthread_mutex_unlock(&st_lock);
      px_conn_destroy(nc, nc->app_epoch == 0);
      explicit_bzero(&o, sizeof o);
      return CKR_CRYPTOKI_NOT_INITIALIZED;
    }
    if ((st.control != NULL && !atomic_load(&st.control->broken)) ||
        st.app != app || st.app_epoch != epoch || st.daemon_gen != gen) {
      /* Another thread reconnected first. destroy_dead finalizes nc only
       * if it is an application of its own (renewed, or no extension). */
      nc->next = dead;
      dead = nc;
    } else {
      if (st.control != NULL)
        conn_drop_locked(st.control, &dead);
      if (renewed) {
        /* The old application's connections cannot reach it any more
         * (after a switch, no connection reaches the new daemon): idle
         * ones close now, the others with their sessions' next use. */
        for (struct px_conn **pp = &st.conns; *pp != NULL;) {
          struct px_conn *i = *pp;
          if (o.switched || i->app_epoch == epoch) {
            atomic_store(&i->broken, true);
            if (!i->control && i->nsessions == 0) {
              conn_unlist_locked(i, &dead); /* *pp is now the next one */
              continue;
            }
          }
          pp = &i->next;
        }
        app_forget_locked();
        if (o.new_app)
          app_start_locked(o.new_token);
        nc->app_epoch = st.app_epoch;
        if (o.switched) {
          /* The login belonged to the dead daemon: kept PINs are not
           * replayed on another one; the application logs in again. */
          logins_clear_locked();
          st.ep = o.ep;
          nc->daemon_gen = ++st.daemon_gen;
        }
      }
      nc->control = true;
      conn_list_locked(nc);
      st.control = nc;
      px_debug("control connection: reconnected%s%s",
               renewed ? " (new application)" : "",
               o.switched ? " on the next daemon" : "");
      if (o.switched)
        px_debug("now on daemon %zu of %zu", st.ep + 1, st.cfg.n_ep);
    }
    explicit_bzero(&o, sizeof o);
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

/* A dedicated connection for a new session; in application mode it joins
 * the application. A refused join means the application may be gone: the
 * control connection is asked for its token (a dead one fails, and its
 * reconnect starts a new application) and the join is tried once more. A
 * daemon that does not answer is checked through the control connection
 * (get_control finds it closed and moves to the next daemon of the list),
 * then the connection is tried once more. */
CK_RV open_session_conn(struct px_conn **out) {
  for (int attempt = 0;; attempt++) {
    pthread_mutex_lock(&st_lock);
    bool app = st.app;
    unsigned epoch = st.app_epoch;
    unsigned gen = st.daemon_gen;
    size_t ep = st.ep;
    unsigned char token[PX_APP_TOKEN_SIZE], check[PX_APP_TOKEN_SIZE];
    memcpy(token, st.token, sizeof token);
    pthread_mutex_unlock(&st_lock);
    CK_RV rv = px_conn_open(&st.cfg, ep, app ? token : NULL, out);
    if (rv == CKR_OK) {
      (*out)->app_epoch = epoch;
      (*out)->daemon_gen = gen;
    }
    if (rv == CKR_OK || attempt > 0 || (!app && rv != CKR_DEVICE_ERROR)) {
      explicit_bzero(token, sizeof token);
      return rv;
    }
    struct px_conn *ctl;
    if (rv == CKR_DEVICE_ERROR) {
      explicit_bzero(token, sizeof token);
      rv = get_control(&ctl, CKR_DEVICE_ERROR);
      if (rv != CKR_OK)
        return rv;
      conn_release(ctl);
      continue;
    }
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
