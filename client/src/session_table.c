/*
 * The session table: live sessions in a dense array (walks) with hash
 * chains by handle (lookups, so a call's lookup does not grow with the
 * number of sessions), and a count of sessions per slot.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "state.h"

void session_unref_locked(struct px_session *s, struct px_conn **dead) {
  if (--s->refs != 0)
    return;
  px_out_cache_clear(&s->cache);
  conn_unref_locked(s->conn, dead);
  free(s);
}

/* Fibonacci hashing: handles are small consecutive numbers (ours) or the
 * daemon's, spread over the top bits of the product. */
static size_t bucket_of(CK_SESSION_HANDLE h) {
  return (size_t)(((uint64_t)h * 0x9E3779B97F4A7C15ull) >> 40) &
         (st.n_buckets - 1);
}

struct px_session *session_find_locked(CK_SESSION_HANDLE h) {
  if (st.n_buckets == 0)
    return NULL;
  for (struct px_session *s = st.buckets[bucket_of(h)]; s != NULL;
       s = s->hnext)
    if (s->handle == h)
      return s;
  return NULL;
}

static void hash_insert_locked(struct px_session *s) {
  size_t b = bucket_of(s->handle);
  s->hnext = st.buckets[b];
  st.buckets[b] = s;
}

static void hash_remove_locked(struct px_session *s) {
  for (struct px_session **pp = &st.buckets[bucket_of(s->handle)];
       *pp != NULL; pp = &(*pp)->hnext) {
    if (*pp == s) {
      *pp = s->hnext;
      s->hnext = NULL;
      return;
    }
  }
}

/* Keeps at least as many buckets as sessions (chains of about one). */
static CK_RV hash_reserve_locked(size_t n) {
  if (n <= st.n_buckets)
    return CKR_OK;
  size_t nb = st.n_buckets ? st.n_buckets * 2 : 64;
  while (nb < n)
    nb *= 2;
  struct px_session **b = calloc(nb, sizeof *b);
  if (b == NULL)
    return CKR_HOST_MEMORY;
  free(st.buckets);
  st.buckets = b;
  st.n_buckets = nb;
  for (size_t i = 0; i < st.n_sessions; i++)
    hash_insert_locked(st.sessions[i]);
  return CKR_OK;
}

static struct px_slot_count *slot_count_locked(CK_SLOT_ID slot) {
  for (size_t i = 0; i < st.n_slots; i++)
    if (st.slots[i].slot == slot)
      return &st.slots[i];
  return NULL;
}

bool slot_has_sessions_locked(CK_SLOT_ID slot) {
  return slot_count_locked(slot) != NULL;
}

void session_unlist_locked(struct px_session *s, struct px_conn **dead) {
  if (!s->listed)
    return;
  struct px_session *last = st.sessions[--st.n_sessions];
  st.sessions[s->index] = last;
  last->index = s->index;
  hash_remove_locked(s);
  struct px_slot_count *sc = slot_count_locked(s->slot);
  if (sc != NULL && --sc->n == 0)
    *sc = st.slots[--st.n_slots];
  s->listed = false;
  s->conn->nsessions--;
  /* PKCS#11: closing the last session of a token logs the user out. */
  if (!slot_has_sessions_locked(s->slot))
    login_forget_locked(s->slot);
  conn_maybe_retire_locked(s->conn, dead);
  session_unref_locked(s, dead);
}

CK_RV session_add_locked(struct px_session *s) {
  if (st.n_sessions == st.cap_sessions) {
    size_t ncap = st.cap_sessions ? st.cap_sessions * 2 : 16;
    struct px_session **n = realloc(st.sessions, ncap * sizeof *n);
    if (n == NULL)
      return CKR_HOST_MEMORY;
    st.sessions = n;
    st.cap_sessions = ncap;
  }
  if (hash_reserve_locked(st.n_sessions + 1) != CKR_OK)
    return CKR_HOST_MEMORY;
  struct px_slot_count *sc = slot_count_locked(s->slot);
  if (sc == NULL) {
    if (st.n_slots == st.cap_slots) {
      size_t ncap = st.cap_slots ? st.cap_slots * 2 : 4;
      struct px_slot_count *n = realloc(st.slots, ncap * sizeof *n);
      if (n == NULL)
        return CKR_HOST_MEMORY;
      st.slots = n;
      st.cap_slots = ncap;
    }
    sc = &st.slots[st.n_slots++];
    sc->slot = s->slot;
    sc->n = 0;
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
  sc->n++;
  s->listed = true;
  s->refs = 1;
  s->index = st.n_sessions;
  st.sessions[st.n_sessions++] = s;
  hash_insert_locked(s);
  return CKR_OK;
}

void session_table_free_locked(void) {
  free(st.sessions);
  free(st.buckets);
  free(st.slots);
  st.sessions = NULL;
  st.buckets = NULL;
  st.slots = NULL;
  st.n_sessions = st.cap_sessions = st.n_buckets = 0;
  st.n_slots = st.cap_slots = 0;
}

void session_table_forget_locked(void) {
  for (size_t i = 0; i < st.n_sessions; i++) {
    px_out_cache_clear(&st.sessions[i]->cache);
    free(st.sessions[i]);
  }
  session_table_free_locked();
}

size_t collect_targets_locked(CK_SLOT_ID slot, struct px_conn *skip,
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

void release_targets(struct target *t, size_t n) {
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
