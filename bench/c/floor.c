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
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { MSG = 64, MAX_SAMPLES = 1 << 20 };

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static int full_io(int fd, char *buf, size_t len, int writing) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = writing ? write(fd, buf + done, len - done)
                        : read(fd, buf + done, len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    done += (size_t)n;
  }
  return 0;
}

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
  while (full_io(fd, buf, MSG, 0) == 0 && full_io(fd, buf, MSG, 1) == 0) {
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

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* One client process: ping-pong until the deadline, then report the count
 * and every latency sample through the pipe. */
static void client(const char *path, double secs, int out) {
  struct sockaddr_un a;
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0 || unix_addr(path, &a) != 0 ||
      connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
    _exit(2);
  static double lat[MAX_SAMPLES];
  char buf[MSG] = {0};
  long n = 0;
  double end = now_us() + secs * 1e6;
  for (double t0 = now_us(); t0 < end; n++) {
    if (full_io(fd, buf, MSG, 1) != 0 || full_io(fd, buf, MSG, 0) != 0) _exit(3);
    double t1 = now_us();
    if (n < MAX_SAMPLES) lat[n] = t1 - t0;
    t0 = t1;
  }
  long kept = n < MAX_SAMPLES ? n : MAX_SAMPLES;
  if (write(out, &n, sizeof n) != sizeof n ||
      write(out, &kept, sizeof kept) != sizeof kept ||
      full_io(out, (char *)lat, (size_t)kept * sizeof lat[0], 1) != 0)
    _exit(4);
  _exit(0);
}

static int run(int procs, double secs, const char *path) {
  /* One pipe per client: reports are larger than PIPE_BUF and would interleave. */
  int fds[64];
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
  long total = 0, kept_total = 0;
  double *all = malloc(sizeof(double) * (size_t)procs * MAX_SAMPLES);
  if (!all) return 1;
  int failed = 0;
  for (int i = 0; i < procs && !failed; i++) {
    long n, kept;
    if (full_io(fds[i], (char *)&n, sizeof n, 0) != 0 ||
        full_io(fds[i], (char *)&kept, sizeof kept, 0) != 0 || kept < 0 || kept > MAX_SAMPLES ||
        full_io(fds[i], (char *)(all + kept_total), (size_t)kept * sizeof(double), 0) != 0) {
      failed = 1;
      break;
    }
    total += n;
    kept_total += kept;
  }
  int st;
  while (wait(&st) > 0)
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) failed = 1;
  if (failed || kept_total == 0) {
    fprintf(stderr, "floor: a client failed\n");
    return 1;
  }
  qsort(all, (size_t)kept_total, sizeof(double), cmp_double);
  printf("RESULT procs=%d ops_s=%.0f p50_us=%.1f p99_us=%.1f\n", procs, (double)total / secs,
         all[kept_total / 2], all[(long)((double)kept_total * 0.99)]);
  free(all);
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
    if (optind != argc - 1 || procs < 1 || procs > 64 || secs <= 0) return 64;
    return run(procs, secs, argv[optind]);
  }
  fprintf(stderr, "usage: floor serve PATH | floor run [-p K] [-t SECS] PATH\n");
  return 64;
}
