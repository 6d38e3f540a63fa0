/*
 * Record marking over the connection's socket (see record.h).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "record.h"
#include "tls.h"

#define LAST_FRAGMENT 0x80000000u

int64_t px_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for events on the socket until the deadline: 1 ready, 0 timed out,
 * -1 error (hang-up counts as ready: the next recv or send reports it). */
int px_wait_fd(int fd, short events, int64_t deadline) {
  for (;;) {
    int64_t left = deadline - px_now_ms();
    if (left <= 0)
      return 0;
    struct pollfd p = {.fd = fd, .events = events};
    int n = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
    if (n > 0)
      return 1;
    if (n == 0)
      return 0;
    if (errno != EINTR)
      return -1;
  }
}

bool px_record_reserve(struct px_wire *w, size_t need) {
  if (need <= w->cap)
    return true;
  size_t ncap = w->cap ? w->cap : PX_RECORD_KEEP_SIZE;
  while (ncap < need)
    ncap *= 2;
  unsigned char *n = realloc(w->buf, ncap);
  if (n == NULL)
    return false;
  w->buf = n;
  w->cap = ncap;
  return true;
}

enum clnt_stat px_record_send(struct px_wire *w, size_t body_len,
                              int64_t deadline) {
  uint32_t mark = htonl(LAST_FRAGMENT | (uint32_t)body_len);
  memcpy(w->buf, &mark, sizeof mark);
  const unsigned char *p = w->buf;
  size_t len = PX_RECORD_MARK_SIZE + body_len;
  if (w->ssl != NULL)
    return px_tls_send(w->ssl, w->fd, p, len, deadline);
  while (len > 0) {
    ssize_t n = send(w->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      p += n;
      len -= (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      int r = px_wait_fd(w->fd, POLLOUT, deadline);
      if (r == 0)
        return RPC_TIMEDOUT;
      if (r < 0)
        return RPC_CANTSEND;
      continue;
    }
    return RPC_CANTSEND;
  }
  return RPC_SUCCESS;
}

/* Makes at least `need` bytes of raw input available in w->buf. */
static enum clnt_stat fill(struct px_wire *w, size_t *have, size_t need,
                           int64_t deadline) {
  if (!px_record_reserve(w, need))
    return RPC_CANTRECV;
  while (*have < need && w->ssl != NULL) {
    /* TLS may hold decrypted bytes already: read before any poll. */
    size_t n = 0;
    enum clnt_stat s =
        px_tls_recv(w->ssl, w->fd, w->buf + *have, w->cap - *have, &n, deadline);
    if (s != RPC_SUCCESS)
      return s;
    *have += n;
  }
  while (*have < need) {
    int r = px_wait_fd(w->fd, POLLIN, deadline);
    if (r == 0)
      return RPC_TIMEDOUT;
    if (r < 0)
      return RPC_CANTRECV;
    ssize_t n = recv(w->fd, w->buf + *have, w->cap - *have, MSG_DONTWAIT);
    if (n > 0)
      *have += (size_t)n;
    else if (n == 0)
      return RPC_CANTRECV; /* the daemon closed the connection */
    else if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
      return RPC_CANTRECV;
  }
  return RPC_SUCCESS;
}

/* Fragments are joined in place: the body starts after the first mark
 * and later fragments are moved down over their marks. */
enum clnt_stat px_record_recv(struct px_wire *w, size_t *body_len,
                              size_t *raw_len, int64_t deadline) {
  size_t have = 0, raw = 0, body = 0;
  for (;;) {
    enum clnt_stat s = fill(w, &have, raw + PX_RECORD_MARK_SIZE, deadline);
    *raw_len = have;
    if (s != RPC_SUCCESS)
      return s;
    uint32_t mark;
    memcpy(&mark, w->buf + raw, sizeof mark);
    mark = ntohl(mark);
    size_t flen = mark & ~LAST_FRAGMENT;
    raw += PX_RECORD_MARK_SIZE;
    if (body + flen > PX_RECORD_MAX)
      return RPC_CANTRECV;
    s = fill(w, &have, raw + flen, deadline);
    *raw_len = have;
    if (s != RPC_SUCCESS)
      return s;
    if (PX_RECORD_MARK_SIZE + body != raw)
      memmove(w->buf + PX_RECORD_MARK_SIZE + body, w->buf + raw, flen);
    raw += flen;
    body += flen;
    if (mark & LAST_FRAGMENT)
      break;
  }
  if (have != raw)
    return RPC_CANTRECV;
  *body_len = body;
  return RPC_SUCCESS;
}
