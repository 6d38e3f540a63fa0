/*
 * RFC 5531 section 11 record marking over one stream socket, for wire.c:
 * a record is fragments, each a 4-byte big-endian mark (top bit: last
 * fragment, low 31 bits: length) and its bytes. Reads and writes wait with
 * poll until a deadline (CLOCK_MONOTONIC milliseconds); writes use
 * MSG_NOSIGNAL. On a TLS connection (px_wire.ssl) the same records go
 * through tls.c instead of send/recv. No lock and no signal mask: the caller owns the connection.
 */
#ifndef PX_RECORD_H
#define PX_RECORD_H

#include "px.h"

#define PX_RECORD_MARK_SIZE 4
/* Buffer kept between calls; a larger one is given back after its call. */
#define PX_RECORD_KEEP_SIZE (64u * 1024u)
/* A call or reply record beyond this fails the call (RPC_CANTENCODEARGS /
 * RPC_CANTRECV) instead of growing without bound. */
#define PX_RECORD_MAX ((size_t)1 << 30)

int64_t px_now_ms(void);
/* Waits for events on fd until the deadline: 1 ready (hang-up included),
 * 0 timed out, -1 error. */
int px_wait_fd(int fd, short events, int64_t deadline);
/* Grows w->buf to at least need bytes; false when out of memory. */
bool px_record_reserve(struct px_wire *w, size_t need);
/* Sends w->buf[PX_RECORD_MARK_SIZE..+body_len) as one record (the mark is
 * written in front). */
enum clnt_stat px_record_send(struct px_wire *w, size_t body_len,
                              int64_t deadline);
/* Reads one record into w->buf: its body (fragments joined) starts at
 * PX_RECORD_MARK_SIZE, *body_len long; *raw_len is how many bytes of the
 * buffer were written. Bytes after the last fragment fail the read: one
 * call is in flight per connection, so they belong to no call. */
enum clnt_stat px_record_recv(struct px_wire *w, size_t *body_len,
                              size_t *raw_len, int64_t deadline);

#endif
