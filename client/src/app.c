/*
 * The daemon-side application (application mode, see state.c): its token,
 * the epoch stamped on its connections, and the remote sessions it still
 * holds whose connection broke (stale, closed through the control
 * connection by get_control).
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "state.h"

/* Source of application epochs; never reset, so a connection of an older
 * initialization or application never matches the current one. */
static unsigned epoch_counter;

bool in_app_locked(const struct px_conn *c) {
  return st.app && c->app_epoch == st.app_epoch;
}

/* A session of the current application lost its connection but not its
 * daemon-side existence. If this fails, the daemon closes it with the
 * application. */
void stale_add_locked(const struct px_conn *c, CK_SESSION_HANDLE remote) {
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
void app_start_locked(const unsigned char *token) {
  st.app = true;
  memcpy(st.token, token, sizeof st.token);
  st.app_epoch = ++epoch_counter;
  if (st.app_epoch == 0)
    st.app_epoch = ++epoch_counter;
}

void app_forget_locked(void) {
  st.app = false;
  st.app_epoch = 0;
  explicit_bzero(st.token, sizeof st.token);
  free(st.stale);
  st.stale = NULL;
  st.n_stale = st.cap_stale = 0;
}
