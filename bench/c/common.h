/* Shared by the C benchmark programs: clock, whole-buffer pipe I/O, and the
 * log-linear latency histogram. */
#ifndef PX_BENCH_COMMON_H
#define PX_BENCH_COMMON_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline bool write_all(int fd, const void *buf, size_t n) {
  const char *p = buf;
  while (n > 0) {
    ssize_t k = write(fd, p, n);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      return false;
    p += k;
    n -= (size_t)k;
  }
  return true;
}

static inline bool read_all(int fd, void *buf, size_t n) {
  char *p = buf;
  while (n > 0) {
    ssize_t k = read(fd, p, n);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      return false;
    p += k;
    n -= (size_t)k;
  }
  return true;
}

/*
 * Latency histogram, log-linear: values below 2^SUB_BITS ns have their own
 * bucket; above, each power of two is split into 2^SUB_BITS buckets, so a
 * bucket is at most 1/128 (0.8 %) of its value wide.
 */
#define SUB_BITS 7
#define SUB (1u << SUB_BITS)
#define NBUCKETS (64 * SUB)

static inline unsigned bucket_of(uint64_t v) {
  if (v < SUB)
    return (unsigned)v;
  unsigned msb = 63u - (unsigned)__builtin_clzll(v);
  return (msb - SUB_BITS + 1) * SUB + (unsigned)((v >> (msb - SUB_BITS)) & (SUB - 1));
}

/* Middle of a bucket's value range. */
static inline double bucket_value(unsigned b) {
  if (b < SUB)
    return b;
  unsigned msb = b / SUB + SUB_BITS - 1;
  uint64_t lo = ((uint64_t)SUB + b % SUB) << (msb - SUB_BITS);
  return (double)lo + (double)(1ull << (msb - SUB_BITS)) / 2.0;
}

/* Value (ns) below which a fraction q of the histogram's samples lie. */
static inline double percentile(const uint64_t *hist, uint64_t total, double q) {
  uint64_t rank = (uint64_t)(q * (double)(total - 1)), seen = 0;
  for (unsigned b = 0; b < NBUCKETS; b++) {
    seen += hist[b];
    if (seen > rank)
      return bucket_value(b);
  }
  return 0;
}

#endif
