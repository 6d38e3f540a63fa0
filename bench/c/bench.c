/*
 * PKCS#11 micro-benchmark: dlopens a module, runs one workload for a fixed
 * time in K processes that start together, prints throughput and latency.
 *
 *   bench -m MODULE -w WORKLOAD [-t SECONDS] [-n OPS] [-p PROCS] [-T TOKEN]
 *         [-s SID]
 * (-n: each process stops after OPS operations if the time is not up first.)
 *
 * Workloads: sessioninfo, getattr, find, ecdsa, rsa, aescbc, newconn (see
 * workloads[]).
 * The token (label TOKEN, default "bench") must hold bench-ec (EC P-256 key
 * pair), bench-rsa (RSA-2048 key pair) and bench-aes (AES key), user PIN from
 * BENCH_PIN (default 1234). -s SID sums the CPU time of every process in
 * session SID (the server under test) over the measured window.
 *
 * Each process opens one session and logs in. Processes are set up one after
 * another (SoftHSM2 races when several processes initialize one store at
 * once), then all start on one event: the parent closes the write end of the
 * "go" pipe and every child's read returns 0. One operation is the whole
 * sequence (e.g. C_SignInit + C_Sign); its latency is wall time around it.
 *
 * Latencies go into a log-linear histogram (buckets under 1 % wide), so
 * p50/p99 are accurate to within a bucket.
 *
 * Last line on stdout, one of:
 *   RESULT status=ok procs=K ops=N secs=S ops_s=R p50_us=A p99_us=B
 *          client_cpu_us_op=C client_sys_pct=F server_cpu_us_op=D
 *          server_sys_pct=G server_cpu_pct=E
 * (CPU per operation in us, the kernel's share of it in %, the server's CPU
 * time as % of one core over the window; server fields only with -s).
 *   RESULT status=na reason=...      (workload not possible on this module)
 *   RESULT status=error reason=...
 * Exit status 0 for ok and na, 1 for error, 2 for bad usage.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#include "common.h"

#define MAX_PROCS 64
#define AES_LEN 4096
/* Bound on one process's set-up (C_Initialize, login, first operation). */
#define SETUP_TIMEOUT_MS 60000

enum status { ST_OK = 0, ST_NA = 1, ST_ERROR = 2 };

/* Record a child sends to the parent after its run. */
struct child_result {
  int32_t status;
  uint64_t ops;
  uint64_t elapsed_ns;
  uint64_t cpu_user_ns; /* CPU time of the child over the loop */
  uint64_t cpu_sys_ns;
  char msg[240];
  uint64_t hist[NBUCKETS];
};

struct ctx {
  CK_FUNCTION_LIST_PTR f;
  CK_SESSION_HANDLE s;
  CK_OBJECT_HANDLE ec, rsa, aes;
  unsigned char digest[32];
  unsigned char digest_info[51];
  unsigned char iv[16];
  unsigned char plain[AES_LEN];
  unsigned char out[AES_LEN];
  /* Which call of the operation failed, for the n/a reason. */
  const char *failed_call;
};

static const char *rv_name(CK_RV rv) {
  switch (rv) {
  case CKR_OK: return "CKR_OK";
  case CKR_GENERAL_ERROR: return "CKR_GENERAL_ERROR";
  case CKR_FUNCTION_FAILED: return "CKR_FUNCTION_FAILED";
  case CKR_ARGUMENTS_BAD: return "CKR_ARGUMENTS_BAD";
  case CKR_DEVICE_ERROR: return "CKR_DEVICE_ERROR";
  case CKR_FUNCTION_NOT_SUPPORTED: return "CKR_FUNCTION_NOT_SUPPORTED";
  case CKR_KEY_TYPE_INCONSISTENT: return "CKR_KEY_TYPE_INCONSISTENT";
  case CKR_KEY_FUNCTION_NOT_PERMITTED: return "CKR_KEY_FUNCTION_NOT_PERMITTED";
  case CKR_MECHANISM_INVALID: return "CKR_MECHANISM_INVALID";
  case CKR_MECHANISM_PARAM_INVALID: return "CKR_MECHANISM_PARAM_INVALID";
  case CKR_OBJECT_HANDLE_INVALID: return "CKR_OBJECT_HANDLE_INVALID";
  case CKR_OPERATION_ACTIVE: return "CKR_OPERATION_ACTIVE";
  case CKR_PIN_INCORRECT: return "CKR_PIN_INCORRECT";
  case CKR_SESSION_HANDLE_INVALID: return "CKR_SESSION_HANDLE_INVALID";
  case CKR_TOKEN_NOT_PRESENT: return "CKR_TOKEN_NOT_PRESENT";
  case CKR_USER_ALREADY_LOGGED_IN: return "CKR_USER_ALREADY_LOGGED_IN";
  case CKR_USER_NOT_LOGGED_IN: return "CKR_USER_NOT_LOGGED_IN";
  case CKR_BUFFER_TOO_SMALL: return "CKR_BUFFER_TOO_SMALL";
  case CKR_CRYPTOKI_NOT_INITIALIZED: return "CKR_CRYPTOKI_NOT_INITIALIZED";
  default: return NULL;
  }
}

static void fmt_rv(char *buf, size_t n, CK_RV rv) {
  const char *name = rv_name(rv);
  if (name != NULL)
    snprintf(buf, n, "%s", name);
  else
    snprintf(buf, n, "0x%lx", (unsigned long)rv);
}

static uint64_t tv_ns(struct timeval tv) {
  return (uint64_t)tv.tv_sec * 1000000000u + (uint64_t)tv.tv_usec * 1000u;
}

/* This process's user and system CPU time. */
static void cpu_ns(uint64_t *user, uint64_t *sys) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  *user = tv_ns(ru.ru_utime);
  *sys = tv_ns(ru.ru_stime);
}

/* ---- workloads: each returns the first non-OK CK_RV ---- */

static CK_RV op_sessioninfo(struct ctx *c) {
  CK_SESSION_INFO info;
  c->failed_call = "C_GetSessionInfo";
  return c->f->C_GetSessionInfo(c->s, &info);
}

static CK_RV op_getattr(struct ctx *c) {
  unsigned char label[64];
  CK_ATTRIBUTE a = {CKA_LABEL, label, sizeof label};
  c->failed_call = "C_GetAttributeValue";
  CK_RV rv = c->f->C_GetAttributeValue(c->s, c->ec, &a, 1);
  if (rv == CKR_OK && a.ulValueLen != 8)
    return CKR_GENERAL_ERROR;
  return rv;
}

static CK_RV find_one(struct ctx *c, CK_OBJECT_CLASS cls, const char *label,
                      CK_OBJECT_HANDLE *out) {
  CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof cls},
                      {CKA_LABEL, (void *)label, strlen(label)}};
  CK_OBJECT_HANDLE h[4];
  CK_ULONG n = 0;
  c->failed_call = "C_FindObjectsInit";
  CK_RV rv = c->f->C_FindObjectsInit(c->s, t, 2);
  if (rv != CKR_OK)
    return rv;
  c->failed_call = "C_FindObjects";
  rv = c->f->C_FindObjects(c->s, h, 4, &n);
  c->failed_call = "C_FindObjectsFinal";
  CK_RV rv2 = c->f->C_FindObjectsFinal(c->s);
  if (rv == CKR_OK)
    rv = rv2;
  if (rv == CKR_OK && n != 1) {
    c->failed_call = "C_FindObjects (expected exactly one object)";
    return CKR_GENERAL_ERROR;
  }
  if (rv == CKR_OK && out != NULL)
    *out = h[0];
  return rv;
}

static CK_RV op_find(struct ctx *c) {
  return find_one(c, CKO_PRIVATE_KEY, "bench-ec", NULL);
}

static CK_RV sign(struct ctx *c, CK_MECHANISM_TYPE m, CK_OBJECT_HANDLE key,
                  unsigned char *in, CK_ULONG in_len, CK_ULONG expect_max) {
  CK_MECHANISM mech = {m, NULL, 0};
  CK_ULONG n = sizeof c->out;
  c->failed_call = "C_SignInit";
  CK_RV rv = c->f->C_SignInit(c->s, &mech, key);
  if (rv != CKR_OK)
    return rv;
  c->failed_call = "C_Sign";
  rv = c->f->C_Sign(c->s, in, in_len, c->out, &n);
  if (rv == CKR_OK && (n == 0 || n > expect_max))
    return CKR_GENERAL_ERROR;
  return rv;
}

static CK_RV op_ecdsa(struct ctx *c) {
  return sign(c, CKM_ECDSA, c->ec, c->digest, sizeof c->digest, 64);
}

static CK_RV op_rsa(struct ctx *c) {
  return sign(c, CKM_RSA_PKCS, c->rsa, c->digest_info, sizeof c->digest_info,
              256);
}

static CK_RV op_aescbc(struct ctx *c) {
  CK_MECHANISM mech = {CKM_AES_CBC, c->iv, sizeof c->iv};
  CK_ULONG n = sizeof c->out;
  c->failed_call = "C_EncryptInit";
  CK_RV rv = c->f->C_EncryptInit(c->s, &mech, c->aes);
  if (rv != CKR_OK)
    return rv;
  c->failed_call = "C_Encrypt";
  rv = c->f->C_Encrypt(c->s, c->plain, sizeof c->plain, c->out, &n);
  if (rv == CKR_OK && n != AES_LEN)
    return CKR_GENERAL_ERROR;
  return rv;
}

/* One new connection per operation with our client (dedicated mode keeps
 * 2 idle connections, so the third of three sessions open together needs
 * a new one): 3 x C_OpenSession, 3 x C_CloseSession. */
#define NEWCONN_SESSIONS 3
static CK_RV op_newconn(struct ctx *c) {
  CK_SESSION_HANDLE s[NEWCONN_SESSIONS];
  CK_SESSION_INFO si;
  CK_RV rv = c->f->C_GetSessionInfo(c->s, &si);
  c->failed_call = "C_OpenSession";
  size_t n = 0;
  while (rv == CKR_OK && n < NEWCONN_SESSIONS)
    rv = c->f->C_OpenSession(si.slotID, CKF_SERIAL_SESSION, NULL, NULL, &s[n++]);
  if (rv != CKR_OK)
    n--;
  CK_RV crv = CKR_OK;
  for (size_t i = 0; i < n; i++) {
    CK_RV r = c->f->C_CloseSession(s[i]);
    if (crv == CKR_OK && r != CKR_OK) {
      crv = r;
      c->failed_call = "C_CloseSession";
    }
  }
  return rv != CKR_OK ? rv : crv;
}

struct workload {
  const char *name;
  CK_RV (*op)(struct ctx *);
  CK_MECHANISM_TYPE mech; /* CKM_VENDOR_DEFINED: none */
  const char *mech_name;
};

static const struct workload workloads[] = {
    {"sessioninfo", op_sessioninfo, CKM_VENDOR_DEFINED, NULL},
    {"getattr", op_getattr, CKM_VENDOR_DEFINED, NULL},
    {"find", op_find, CKM_VENDOR_DEFINED, NULL},
    {"ecdsa", op_ecdsa, CKM_ECDSA, "CKM_ECDSA"},
    {"rsa", op_rsa, CKM_RSA_PKCS, "CKM_RSA_PKCS"},
    {"aescbc", op_aescbc, CKM_AES_CBC, "CKM_AES_CBC"},
    {"newconn", op_newconn, CKM_VENDOR_DEFINED, NULL},
};

/* ---- child ---- */

struct child_args {
  const char *module;
  const char *token;
  const struct workload *w;
  double seconds;
  /* -n: stop after this many operations per process (0: no limit). */
  uint64_t max_ops;
  int ready_fd, go_fd, result_fd, release_fd;
};

static void set_msg(struct child_result *r, enum status st, const char *fmt,
                    ...) {
  va_list ap;
  r->status = st;
  va_start(ap, fmt);
  vsnprintf(r->msg, sizeof r->msg, fmt, ap);
  va_end(ap);
}

/* Blocks until the peer closes the pipe's write end. */
static void wait_eof(int fd) {
  char b;
  for (;;) {
    ssize_t k = read(fd, &b, 1);
    if (k > 0 || (k < 0 && errno == EINTR))
      continue;
    return;
  }
}

static bool mechanism_listed(CK_FUNCTION_LIST_PTR f, CK_SLOT_ID slot,
                             CK_MECHANISM_TYPE m) {
  CK_ULONG n = 0;
  if (f->C_GetMechanismList(slot, NULL, &n) != CKR_OK || n == 0)
    return false;
  CK_MECHANISM_TYPE *list = calloc(n, sizeof *list);
  if (list == NULL)
    return false;
  bool found = false;
  if (f->C_GetMechanismList(slot, list, &n) == CKR_OK)
    for (CK_ULONG i = 0; i < n; i++)
      found = found || list[i] == m;
  free(list);
  return found;
}

/* Opens, logs in, finds the keys and runs the operation once. */
static bool setup(struct ctx *c, const struct child_args *a,
                  struct child_result *r) {
  char rvs[32];
  void *h = dlopen(a->module, RTLD_NOW | RTLD_LOCAL);
  if (h == NULL) {
    set_msg(r, ST_ERROR, "dlopen: %s", dlerror());
    return false;
  }
  CK_C_GetFunctionList gfl = (CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList");
  if (gfl == NULL || gfl(&c->f) != CKR_OK) {
    set_msg(r, ST_ERROR, "C_GetFunctionList failed");
    return false;
  }
  CK_RV rv = c->f->C_Initialize(NULL);
  if (rv != CKR_OK) {
    fmt_rv(rvs, sizeof rvs, rv);
    set_msg(r, ST_ERROR, "C_Initialize: %s", rvs);
    return false;
  }
  CK_SLOT_ID slots[32];
  CK_ULONG ns = 32;
  rv = c->f->C_GetSlotList(CK_TRUE, slots, &ns);
  if (rv != CKR_OK) {
    fmt_rv(rvs, sizeof rvs, rv);
    set_msg(r, ST_ERROR, "C_GetSlotList: %s", rvs);
    return false;
  }
  char want[32];
  memset(want, ' ', sizeof want);
  memcpy(want, a->token, strnlen(a->token, sizeof want));
  CK_SLOT_ID slot = 0;
  bool found = false;
  for (CK_ULONG i = 0; i < ns && !found; i++) {
    CK_TOKEN_INFO ti;
    if (c->f->C_GetTokenInfo(slots[i], &ti) == CKR_OK &&
        memcmp(ti.label, want, sizeof want) == 0) {
      slot = slots[i];
      found = true;
    }
  }
  if (!found) {
    set_msg(r, ST_ERROR, "no token labelled '%s' among %lu slots", a->token,
            (unsigned long)ns);
    return false;
  }
  rv = c->f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL,
                           NULL, &c->s);
  if (rv != CKR_OK) {
    fmt_rv(rvs, sizeof rvs, rv);
    set_msg(r, ST_ERROR, "C_OpenSession: %s", rvs);
    return false;
  }
  const char *pin = getenv("BENCH_PIN");
  if (pin == NULL)
    pin = "1234";
  rv = c->f->C_Login(c->s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
  if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
    fmt_rv(rvs, sizeof rvs, rv);
    set_msg(r, ST_ERROR, "C_Login: %s", rvs);
    return false;
  }
  struct {
    CK_OBJECT_CLASS cls;
    const char *label;
    CK_OBJECT_HANDLE *out;
  } keys[] = {{CKO_PRIVATE_KEY, "bench-ec", &c->ec},
              {CKO_PRIVATE_KEY, "bench-rsa", &c->rsa},
              {CKO_SECRET_KEY, "bench-aes", &c->aes}};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    rv = find_one(c, keys[i].cls, keys[i].label, keys[i].out);
    if (rv != CKR_OK) {
      fmt_rv(rvs, sizeof rvs, rv);
      set_msg(r, ST_ERROR, "finding %s: %s: %s", keys[i].label, c->failed_call,
              rvs);
      return false;
    }
  }
  for (size_t i = 0; i < sizeof c->digest; i++)
    c->digest[i] = (unsigned char)(i * 7 + 1);
  /* DER DigestInfo prefix for SHA-256, then the digest. */
  static const unsigned char sha256_prefix[19] = {
      0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
      0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20};
  memcpy(c->digest_info, sha256_prefix, sizeof sha256_prefix);
  memcpy(c->digest_info + sizeof sha256_prefix, c->digest, sizeof c->digest);
  memset(c->iv, 0x5a, sizeof c->iv);
  for (size_t i = 0; i < sizeof c->plain; i++)
    c->plain[i] = (unsigned char)i;

  rv = a->w->op(c);
  if (rv != CKR_OK) {
    fmt_rv(rvs, sizeof rvs, rv);
    bool unsupported = rv == CKR_MECHANISM_INVALID ||
                       rv == CKR_MECHANISM_PARAM_INVALID ||
                       rv == CKR_FUNCTION_NOT_SUPPORTED;
    if (unsupported && a->w->mech != CKM_VENDOR_DEFINED)
      set_msg(r, ST_NA, "%s: %s; %s %s in C_GetMechanismList", c->failed_call,
              rvs, a->w->mech_name,
              mechanism_listed(c->f, slot, a->w->mech) ? "is" : "not");
    else
      set_msg(r, unsupported ? ST_NA : ST_ERROR, "%s: %s", c->failed_call, rvs);
    return false;
  }
  return true;
}

static int child_main(const struct child_args *a) {
  static struct child_result r;
  struct ctx *c = calloc(1, sizeof *c);
  bool ok = c != NULL && setup(c, a, &r);
  if (c == NULL)
    set_msg(&r, ST_ERROR, "out of memory");
  char flag = ok ? 'R' : 'E';
  if (!write_all(a->ready_fd, &flag, 1))
    return 1;
  close(a->ready_fd);
  if (ok) {
    wait_eof(a->go_fd);
    uint64_t user0, sys0;
    cpu_ns(&user0, &sys0);
    uint64_t start = now_ns();
    uint64_t end = start + (uint64_t)(a->seconds * 1e9);
    uint64_t t = start;
    while (t < end && (a->max_ops == 0 || r.ops < a->max_ops)) {
      uint64_t t0 = now_ns();
      CK_RV rv = a->w->op(c);
      t = now_ns();
      if (rv != CKR_OK) {
        char rvs[32];
        fmt_rv(rvs, sizeof rvs, rv);
        set_msg(&r, ST_ERROR, "after %" PRIu64 " ops: %s: %s", r.ops,
                c->failed_call, rvs);
        break;
      }
      r.hist[bucket_of(t - t0)]++;
      r.ops++;
    }
    r.elapsed_ns = t - start;
    cpu_ns(&r.cpu_user_ns, &r.cpu_sys_ns);
    r.cpu_user_ns -= user0;
    r.cpu_sys_ns -= sys0;
  }
  if (!write_all(a->result_fd, &r, sizeof r))
    return 1;
  close(a->result_fd);
  /* Sessions stay open until the parent has sampled the server's CPU time. */
  wait_eof(a->release_fd);
  if (ok) {
    c->f->C_CloseSession(c->s);
    c->f->C_Finalize(NULL);
  }
  free(c);
  return r.status == ST_ERROR ? 1 : 0;
}

/* ---- parent ---- */

/*
 * User (utime+cutime) and system (stime+cstime) clock ticks summed over the
 * processes of session sid; cutime/cstime hold reaped children's time.
 */
static void session_ticks(pid_t sid, uint64_t *user, uint64_t *sys) {
  DIR *d = opendir("/proc");
  *user = *sys = 0;
  if (d == NULL)
    return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9')
      continue;
    char path[300], buf[1024];
    snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
    FILE *fp = fopen(path, "r");
    if (fp == NULL)
      continue;
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    /* The command name may contain spaces: fields resume after the last ')'. */
    char *p = strrchr(buf, ')');
    if (p == NULL)
      continue;
    char state;
    int ppid, pgrp, session;
    unsigned long long ut, st, cut, cst;
    if (sscanf(p + 2,
               "%c %d %d %d %*d %*d %*u %*u %*u %*u %*u %llu %llu %llu %llu",
               &state, &ppid, &pgrp, &session, &ut, &st, &cut, &cst) == 8 &&
        session == sid) {
      *user += ut + cut;
      *sys += st + cst;
    }
  }
  closedir(d);
}

static void sanitize(char *s) {
  for (; *s; s++)
    if (*s == '\n' || *s == '\r')
      *s = ' ';
}

static void usage(void) {
  fprintf(stderr, "usage: bench -m MODULE -w WORKLOAD [-t SECONDS] [-n OPS] "
                  "[-p PROCS] [-T TOKEN] [-s SID]\nworkloads:");
  for (size_t i = 0; i < sizeof workloads / sizeof workloads[0]; i++)
    fprintf(stderr, " %s", workloads[i].name);
  fputc('\n', stderr);
}

int main(int argc, char **argv) {
  struct child_args a = {.token = "bench", .seconds = 2.0};
  int procs = 1;
  pid_t sid = 0;
  const char *wname = NULL;
  int opt;
  while ((opt = getopt(argc, argv, "m:w:t:n:p:T:s:h")) != -1) {
    switch (opt) {
    case 'm': a.module = optarg; break;
    case 'w': wname = optarg; break;
    case 't': a.seconds = atof(optarg); break;
    case 'n': a.max_ops = strtoull(optarg, NULL, 10); break;
    case 'p': procs = atoi(optarg); break;
    case 'T': a.token = optarg; break;
    case 's': sid = (pid_t)atoi(optarg); break;
    default: usage(); return 2;
    }
  }
  for (size_t i = 0; wname && i < sizeof workloads / sizeof workloads[0]; i++)
    if (strcmp(workloads[i].name, wname) == 0)
      a.w = &workloads[i];
  if (a.module == NULL || a.w == NULL || procs < 1 || procs > MAX_PROCS ||
      a.seconds <= 0) {
    usage();
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);

  int go[2], release[2];
  int result_fd[MAX_PROCS];
  pid_t pids[MAX_PROCS];
  if (pipe(go) != 0 || pipe(release) != 0) {
    perror("pipe");
    return 1;
  }
  int started = 0;
  bool setup_ok = true;
  char setup_msg[300] = "";
  for (int i = 0; i < procs && setup_ok; i++) {
    int ready[2], result[2];
    if (pipe(ready) != 0 || pipe(result) != 0) {
      perror("pipe");
      return 1;
    }
    pid_t pid = fork();
    if (pid < 0) {
      perror("fork");
      return 1;
    }
    if (pid == 0) {
      close(go[1]);
      close(release[1]);
      close(ready[0]);
      close(result[0]);
      for (int j = 0; j < i; j++)
        close(result_fd[j]);
      a.ready_fd = ready[1];
      a.go_fd = go[0];
      a.result_fd = result[1];
      a.release_fd = release[0];
      _exit(child_main(&a));
    }
    close(ready[1]);
    close(result[1]);
    pids[i] = pid;
    result_fd[i] = result[0];
    started++;
    struct pollfd pfd = {ready[0], POLLIN, 0};
    char flag = 0;
    if (poll(&pfd, 1, SETUP_TIMEOUT_MS) != 1 || read(ready[0], &flag, 1) != 1) {
      snprintf(setup_msg, sizeof setup_msg,
               "process %d: no ready signal within %d ms", i, SETUP_TIMEOUT_MS);
      setup_ok = false;
    } else if (flag != 'R') {
      setup_ok = false;
    }
    close(ready[0]);
  }
  close(go[0]);
  close(release[0]);

  uint64_t user0 = 0, sys0 = 0, user1 = 0, sys1 = 0;
  if (sid)
    session_ticks(sid, &user0, &sys0);
  uint64_t t_go = now_ns();
  close(go[1]); /* all children start */

  struct child_result *res = calloc(MAX_PROCS, sizeof *res);
  static uint64_t hist[NBUCKETS];
  if (res == NULL) {
    perror("calloc");
    return 1;
  }
  int worst = ST_OK;
  char reason[300] = "";
  for (int i = 0; i < started; i++) {
    if (!read_all(result_fd[i], &res[i], sizeof res[i])) {
      memset(&res[i], 0, sizeof res[i]);
      set_msg(&res[i], ST_ERROR, "process %d exited without a result", i);
    }
    res[i].msg[sizeof res[i].msg - 1] = '\0';
    if (res[i].status > worst) {
      worst = res[i].status;
      snprintf(reason, sizeof reason, "%s", res[i].msg);
    }
  }
  uint64_t t_end = now_ns();
  if (sid)
    session_ticks(sid, &user1, &sys1);
  if (worst == ST_OK && !setup_ok) {
    worst = ST_ERROR;
    snprintf(reason, sizeof reason, "%s", setup_msg);
  }

  uint64_t total = 0, cuser = 0, csys = 0;
  double rate = 0;
  for (int i = 0; i < started && worst == ST_OK; i++) {
    total += res[i].ops;
    cuser += res[i].cpu_user_ns;
    csys += res[i].cpu_sys_ns;
    rate += res[i].elapsed_ns ? (double)res[i].ops * 1e9 / res[i].elapsed_ns : 0;
    for (unsigned b = 0; b < NBUCKETS; b++)
      hist[b] += res[i].hist[b];
  }
  free(res);
  for (int i = 0; i < started; i++)
    close(result_fd[i]);
  close(release[1]); /* children close their sessions and exit */
  for (int i = 0; i < started; i++) {
    int st;
    while (waitpid(pids[i], &st, 0) < 0 && errno == EINTR) {
    }
  }

  if (worst != ST_OK) {
    sanitize(reason);
    printf("RESULT status=%s reason=%s\n", worst == ST_NA ? "na" : "error",
           reason);
    return worst == ST_NA ? 0 : 1;
  }
  if (total == 0) {
    printf("RESULT status=error reason=no operation completed\n");
    return 1;
  }
  double p50 = percentile(hist, total, 0.50) / 1e3;
  double p99 = percentile(hist, total, 0.99) / 1e3;
  double window = (t_end - t_go) / 1e9;
  long hz = sysconf(_SC_CLK_TCK);
  double suser = (double)(user1 - user0) / (double)hz;
  double ssys = (double)(sys1 - sys0) / (double)hz;
  double ccpu = (double)(cuser + csys);
  printf("RESULT status=ok procs=%d ops=%" PRIu64 " secs=%.2f ops_s=%.0f "
         "p50_us=%.1f p99_us=%.1f client_cpu_us_op=%.1f client_sys_pct=%.0f",
         started, total, window, rate, p50, p99, ccpu / 1e3 / (double)total,
         ccpu > 0 ? 100.0 * (double)csys / ccpu : 0.0);
  if (sid)
    printf(" server_cpu_us_op=%.1f server_sys_pct=%.0f server_cpu_pct=%.0f",
           (suser + ssys) * 1e6 / (double)total,
           suser + ssys > 0 ? 100.0 * ssys / (suser + ssys) : 0.0,
           100.0 * (suser + ssys) / window);
  printf("\n");
  return 0;
}
