/*
 * fork: the child inherits copies of the parent's sockets and of whatever
 * the parent's other threads held at the time. The transport takes no
 * process-wide lock (wire.c), and st_lock and the connection registry's
 * lock are taken around fork() by the prepare handler, so the child finds
 * the state consistent and unlocked.
 * Sending on the inherited sockets would interleave with the parent's
 * traffic: the child closes its descriptor copies, frees the state without
 * taking any connection's lock (a parent thread may have held one) and
 * starts uninitialized; its C_Initialize starts a new application.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "state.h"
#include "tls.h"

static void atfork_prepare(void) {
  pthread_mutex_lock(&st_lock);
  px_conn_registry_lock();
  px_tls_fork_prepare(st.have_cfg ? st.cfg.tls : NULL);
}

static void atfork_parent(void) {
  px_tls_fork_parent(st.have_cfg ? st.cfg.tls : NULL);
  px_conn_registry_unlock();
  pthread_mutex_unlock(&st_lock);
}

static void atfork_child(void) {
  /* TLS: the parent's SSL objects are freed without a close_notify
   * (px_wire_abandon) and its kept session is forgotten. */
  px_tls_fork_child(st.have_cfg ? st.cfg.tls : NULL);
  session_table_forget_locked();
  /* Listed connections are among the registry's. */
  st.conns = NULL;
  st.control = NULL;
  px_conn_abandon_all();
  logins_clear_locked();
  /* The parent's application is not the child's: C_Initialize in the
   * child starts a new one. */
  app_forget_locked();
  st.initialized = false;
  st.initializing = false;
  pthread_mutex_unlock(&st_lock);
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void register_atfork(void) {
  pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

void px_fork_register(void) { pthread_once(&atfork_once, register_atfork); }
