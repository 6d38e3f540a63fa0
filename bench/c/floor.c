/*
 * Round-trip floor of this machine: a 64-byte ping-pong over a Unix socket
 * with no PKCS#11 and no RPC. What it costs is what any proxy pays per call
 * before doing work, so it bounds what bench/c/run.sh can show.
 *
 *   floor serve PATH                 echo server, one thread per connection
 *   floor run -p K -t SECS PATH      K client processes, prints a RESULT line
 *
 * bench/c/floor.sh runs it against this server and against Node.js echo
 * servers (bench/echo-server.ts).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

enum { MSG = 64, MAX_PROCS = 64 };

static int unix_addr(const char *path, struct sockaddr_un *a) {
  memset(a, 0, sizeof *a);
  a->sun_family = AF_UNIX;
  if (strlen(path) >= sizeof a->sun_path) return -1;
  strcpy(a->sun_path, path);
  return 0;
}

static void *echo_conn(void *arg) {
  int fd = (int)(intptr_t)arg;
  char buf[MSG];
  while (read_all(fd, buf, MSG) && write_all(fd, buf, MSG)) {
  }
  close(fd);
  return NULL;
}

static int serve(const char *path) {
  struct sockaddr_un a;
  int l = socket(AF_UNIX, SOCK_STREAM, 0);
  if (l < 0 || unix_addr(path, &a) != 0) return 1;
  unlink(path);
  if (bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 64) != 0) {
    perror("floor: bind/listen");
    return 1;
  }
  printf("READY\n");
  fflush(stdout);
  for (;;) {
    int fd = accept(l, NULL, NULL);
    if (fd < 0) continue;
    pthread_t t;
    if (pthread_create(&t, NULL, echo_conn, (void *)(intptr_t)fd) != 0) {
      close(fd);
      continue;
    }
    pthread_detach(t);
  }
}

/* What a client process sends the parent when its run is over. */
struct report {
  uint64_t ops;
  uint64_t hist[NBUCKETS];
};

/* One client process: ping-pong until the deadline, then report. */
static void client(const char *path, double secs, int out) {
  struct sockaddr_un a;
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0 || unix_addr(path, &a) != 0 ||
      connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
    _exit(2);
  static struct report r;
  char buf[MSG] = {0};
  uint64_t end = now_ns() + (uint64_t)(secs * 1e9);
  for (uint64_t t0 = now_ns(); t0 < end; r.ops++) {
    if (!write_all(fd, buf, MSG) || !read_all(fd, buf, MSG)) _exit(3);
    uint64_t t1 = now_ns();
    r.hist[bucket_of(t1 - t0)]++;
    t0 = t1;
  }
  _exit(write_all(out, &r, sizeof r) ? 0 : 4);
}

static int run(int procs, double secs, const char *path) {
  /* One pipe per client: a report is larger than PIPE_BUF, so reports
   * sharing one pipe could interleave. */
  int fds[MAX_PROCS];
  for (int i = 0; i < procs; i++) {
    int p[2];
    if (pipe(p) != 0) return 1;
    pid_t pid = fork();
    if (pid < 0) return 1;
    if (pid == 0) {
      close(p[0]);
      client(path, secs, p[1]);
    }
    close(p[1]);
    fds[i] = p[0];
  }
  static struct report one, all;
  int failed = 0;
  for (int i = 0; i < procs && !failed; i++) {
    if (!read_all(fds[i], &one, sizeof one)) {
      failed = 1;
      break;
    }
    all.ops += one.ops;
    for (unsigned b = 0; b < NBUCKETS; b++) all.hist[b] += one.hist[b];
  }
  int st;
  while (wait(&st) > 0)
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) failed = 1;
  if (failed || all.ops == 0) {
    fprintf(stderr, "floor: a client failed\n");
    return 1;
  }
  printf("RESULT procs=%d ops_s=%.0f p50_us=%.1f p99_us=%.1f\n", procs, (double)all.ops / secs,
         percentile(all.hist, all.ops, 0.5) / 1e3, percentile(all.hist, all.ops, 0.99) / 1e3);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "serve") == 0) return serve(argv[2]);
  if (argc >= 2 && strcmp(argv[1], "run") == 0) {
    int procs = 1, opt;
    double secs = 2;
    optind = 2;
    while ((opt = getopt(argc, argv, "p:t:")) != -1) {
      if (opt == 'p') procs = atoi(optarg);
      else if (opt == 't') secs = atof(optarg);
      else return 64;
    }
    if (optind != argc - 1 || procs < 1 || procs > MAX_PROCS || secs <= 0) return 64;
    return run(procs, secs, argv[optind]);
  }
  fprintf(stderr, "usage: floor serve PATH | floor run [-p K] [-t SECS] PATH\n");
  return 64;
}
