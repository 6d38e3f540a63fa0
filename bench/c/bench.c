/*
 * PKCS#11 micro-benchmark: dlopens a module, runs one workload for a fixed
 * time in K processes that start together, prints throughput and latency.
 *
 *   bench -m MODULE -w WORKLOAD [-t SECONDS] [-n OPS] [-p PROCS] [-T TOKEN]
 *         [-s SID]
 *   bench -S 'NAME SID MODULE [VAR=value...]'... [-q SLICE] [-o ROTATION] [-v]
 *         -w WORKLOAD [-t SECONDS] [-n OPS] [-p PROCS] [-T TOKEN]
 * (-n: each process stops after OPS operations if the time is not up first.)
 *
 * Workloads: sessioninfo, getattr, find, ecdsa, rsa, aescbc, newconn (see
 * workloads[]).
 * The token (label TOKEN, default "bench") must hold bench-ec (EC P-256 key
 * pair), bench-rsa (RSA-2048 key pair) and bench-aes (AES key), user PIN from
 * BENCH_PIN (default 1234). -s SID sums the CPU time of every process in
 * session SID (the server under test) over the measured window. -o ROTATION
 * picks which system runs first in the first round of slices; -v prints each
 * slice run ("slice ROUND NAME") on stderr.
 *
 * Each process opens one session and logs in. Processes are set up one after
 * another (SoftHSM2 races when several processes initialize one store at
 * once), then run in slices on the parent's command (child_main), a system's
 * processes all starting together. One operation is the whole sequence (e.g.
 * C_SignInit + C_Sign); its latency is wall time around it.
 *
 * Several systems in one cell: each -S names a system (a module, the session
 * id of its server or 0, and VAR=value words its processes load the module
 * under); the systems take turns in slices of about -q SLICE seconds until
 * each has run -t SECONDS, and each gets a RESULT line with sys=NAME first.
 *
 * Latencies go into a log-linear histogram (buckets under 1 % wide), so
 * p50/p99 are accurate to within a bucket.
 *
 * Last line on stdout (with -S: one line per system, `RESULT sys=NAME ...`), one of:
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
  /* -n: stop after this many operations per process (0: no limit). */
  uint64_t max_ops;
  int ready_fd, cmd_fd, result_fd, release_fd;
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

/*
 * After set-up the child runs slices on command: the parent writes a slice
 * length (uint64_t ns) on cmd_fd, the child runs operations until that much
 * time has passed (the operation in flight completes) and answers one byte,
 * 'D' or, after a failed operation, 'E' (later slices then answer 'E' at once).
 * Length 0 ends the run: the child writes its child_result and waits for
 * release_fd's EOF before it closes its session.
 */
static int child_main(const struct child_args *a) {
  static struct child_result r;
  struct ctx *c = calloc(1, sizeof *c);
  bool set_up = c != NULL && setup(c, a, &r);
  bool ok = set_up;
  if (c == NULL)
    set_msg(&r, ST_ERROR, "out of memory");
  char flag = ok ? 'R' : 'E';
  if (!write_all(a->ready_fd, &flag, 1))
    return 1;
  close(a->ready_fd);
  uint64_t slice;
  while (read_all(a->cmd_fd, &slice, sizeof slice) && slice != 0) {
    if (ok && (a->max_ops == 0 || r.ops < a->max_ops)) {
      uint64_t user0, sys0, user1, sys1;
      cpu_ns(&user0, &sys0);
      uint64_t start = now_ns();
      uint64_t end = start + slice;
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
          ok = false;
          break;
        }
        r.hist[bucket_of(t - t0)]++;
        r.ops++;
      }
      r.elapsed_ns += t - start;
      cpu_ns(&user1, &sys1);
      r.cpu_user_ns += user1 - user0;
      r.cpu_sys_ns += sys1 - sys0;
    }
    char done = ok ? 'D' : 'E';
    if (!write_all(a->result_fd, &done, 1))
      return 1;
  }
  if (!write_all(a->result_fd, &r, sizeof r))
    return 1;
  close(a->result_fd);
  /* Sessions stay open until the parent has sampled the server's CPU time. */
  wait_eof(a->release_fd);
  if (set_up) {
    c->f->C_CloseSession(c->s);
    c->f->C_Finalize(NULL);
  }
  free(c);
  return r.status == ST_ERROR ? 1 : 0;
}

/* ---- parent ---- */

#define MAX_SYSTEMS 8
#define MAX_ENV 16

/* One system under test: a module, the environment its processes load it
 * with, and the session id of its server (0: none, e.g. the module itself). */
struct system {
  const char *name; /* NULL: the one system of -m/-s (no sys= in RESULT) */
  const char *module;
  pid_t sid;
  char *env[MAX_ENV];
  int nenv;
  int first, count; /* its processes in children[] */
  int status;
  char reason[300];
  uint64_t window_ns; /* wall time of its slices */
  uint64_t user0, sys0, user1, sys1;
};

struct child {
  pid_t pid;
  int cmd_fd, result_fd;
  int sys;
  struct child_result res;
};

static struct system systems[MAX_SYSTEMS];
static int nsystems;
static struct child children[MAX_SYSTEMS * MAX_PROCS];
static int nchildren;

/*
 * User (utime+cutime) and system (stime+cstime) clock ticks summed over the
 * processes of each system's session; cutime/cstime hold reaped children's
 * time. One pass over /proc for all systems.
 */
static void sample_sessions(bool end) {
  for (int i = 0; i < nsystems; i++) {
    uint64_t *u = end ? &systems[i].user1 : &systems[i].user0;
    uint64_t *k = end ? &systems[i].sys1 : &systems[i].sys0;
    *u = *k = 0;
  }
  DIR *d = opendir("/proc");
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
               &state, &ppid, &pgrp, &session, &ut, &st, &cut, &cst) != 8)
      continue;
    for (int i = 0; i < nsystems; i++)
      if (systems[i].sid != 0 && session == systems[i].sid) {
        *(end ? &systems[i].user1 : &systems[i].user0) += ut + cut;
        *(end ? &systems[i].sys1 : &systems[i].sys0) += st + cst;
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
  fprintf(stderr,
          "usage: bench -m MODULE [-s SID] -w WORKLOAD [-t SECONDS] [-n OPS] "
          "[-p PROCS] [-T TOKEN]\n"
          "       bench -S 'NAME SID MODULE [VAR=value...]'... -q SLICE "
          "-w WORKLOAD [-t SECONDS] [-p PROCS] [-o ROTATION] [-v]\nworkloads:");
  for (size_t i = 0; i < sizeof workloads / sizeof workloads[0]; i++)
    fprintf(stderr, " %s", workloads[i].name);
  fputc('\n', stderr);
}

/* -S 'NAME SID MODULE [VAR=value...]' (words separated by spaces). */
static bool parse_system(char *spec, struct system *s) {
  char *save = NULL;
  char *name = strtok_r(spec, " ", &save);
  char *sid = strtok_r(NULL, " ", &save);
  char *module = strtok_r(NULL, " ", &save);
  if (name == NULL || sid == NULL || module == NULL)
    return false;
  s->name = name;
  s->sid = (pid_t)atoi(sid);
  s->module = module;
  char *w;
  while ((w = strtok_r(NULL, " ", &save)) != NULL) {
    if (strchr(w, '=') == NULL || s->nenv == MAX_ENV)
      return false;
    s->env[s->nenv++] = w;
  }
  return true;
}

/* Forks and sets up one system's processes, one after another. */
static void start_system(int si, struct child_args a, int procs, int release_rd,
                         int release_wr) {
  struct system *s = &systems[si];
  s->first = nchildren;
  for (int i = 0; i < procs && s->status == ST_OK; i++) {
    int ready[2], cmd[2], result[2];
    if (pipe(ready) != 0 || pipe(cmd) != 0 || pipe(result) != 0) {
      perror("pipe");
      exit(1);
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
      perror("fork");
      exit(1);
    }
    if (pid == 0) {
      close(release_wr);
      close(ready[0]);
      close(cmd[1]);
      close(result[0]);
      for (int j = 0; j < nchildren; j++) {
        close(children[j].cmd_fd);
        close(children[j].result_fd);
      }
      for (int j = 0; j < s->nenv; j++)
        putenv(s->env[j]);
      a.module = s->module;
      a.ready_fd = ready[1];
      a.cmd_fd = cmd[0];
      a.result_fd = result[1];
      a.release_fd = release_rd;
      _exit(child_main(&a));
    }
    close(ready[1]);
    close(cmd[0]);
    close(result[1]);
    struct child *c = &children[nchildren++];
    c->pid = pid;
    c->cmd_fd = cmd[1];
    c->result_fd = result[0];
    c->sys = si;
    s->count++;
    struct pollfd pfd = {ready[0], POLLIN, 0};
    char flag = 0;
    if (poll(&pfd, 1, SETUP_TIMEOUT_MS) != 1 || read(ready[0], &flag, 1) != 1) {
      snprintf(s->reason, sizeof s->reason,
               "process %d: no ready signal within %d ms", i, SETUP_TIMEOUT_MS);
      s->status = ST_ERROR;
    } else if (flag != 'R') {
      s->status = ST_ERROR; /* its child_result says why */
    }
    close(ready[0]);
  }
}

/* One slice of system si: every process runs for `ns`; returns false if one failed. */
static bool run_slice(int si, uint64_t ns) {
  struct system *s = &systems[si];
  bool ok = true;
  uint64_t t0 = now_ns();
  for (int i = s->first; i < s->first + s->count; i++)
    ok = write_all(children[i].cmd_fd, &ns, sizeof ns) && ok;
  for (int i = s->first; i < s->first + s->count; i++) {
    char done = 0;
    ok = read_all(children[i].result_fd, &done, 1) && done == 'D' && ok;
  }
  s->window_ns += now_ns() - t0;
  return ok;
}

static void report(const struct system *s, const char *status,
                   const char *fmt, ...) {
  char buf[1200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (s->name != NULL)
    printf("RESULT sys=%s status=%s %s\n", s->name, status, buf);
  else
    printf("RESULT status=%s %s\n", status, buf);
}

int main(int argc, char **argv) {
  struct child_args a = {.token = "bench"};
  double seconds = 2.0, slice_s = 0;
  int procs = 1, rotation = 0;
  bool verbose = false;
  const char *wname = NULL, *module = NULL;
  pid_t sid = 0;
  int opt;
  while ((opt = getopt(argc, argv, "m:w:t:n:p:T:s:S:q:o:vh")) != -1) {
    switch (opt) {
    case 'm': module = optarg; break;
    case 'w': wname = optarg; break;
    case 't': seconds = atof(optarg); break;
    case 'n': a.max_ops = strtoull(optarg, NULL, 10); break;
    case 'p': procs = atoi(optarg); break;
    case 'T': a.token = optarg; break;
    case 's': sid = (pid_t)atoi(optarg); break;
    case 'q': slice_s = atof(optarg); break;
    case 'o': rotation = atoi(optarg); break;
    case 'v': verbose = true; break;
    case 'S':
      if (nsystems == MAX_SYSTEMS || !parse_system(optarg, &systems[nsystems])) {
        usage();
        return 2;
      }
      nsystems++;
      break;
    default: usage(); return 2;
    }
  }
  for (size_t i = 0; wname && i < sizeof workloads / sizeof workloads[0]; i++)
    if (strcmp(workloads[i].name, wname) == 0)
      a.w = &workloads[i];
  if ((module == NULL) == (nsystems == 0) || a.w == NULL || procs < 1 ||
      procs > MAX_PROCS || seconds <= 0 || slice_s < 0 || rotation < 0) {
    usage();
    return 2;
  }
  if (module != NULL) {
    systems[0] = (struct system){.module = module, .sid = sid};
    nsystems = 1;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);

  int release[2];
  if (pipe(release) != 0) {
    perror("pipe");
    return 1;
  }
  for (int i = 0; i < nsystems; i++)
    start_system(i, a, procs, release[0], release[1]);
  close(release[0]);
  signal(SIGPIPE, SIG_IGN); /* a child that died: its pipes answer EPIPE */

  /* Each system gets `seconds` in equal slices of about slice_s (one slice
   * without -q), systems taking turns, the first of each round rotating, so
   * that the machine's changes of speed (measured: the same cell alone at
   * 700 and at 1,050 ops/s a second apart) land on every system alike. */
  int nslices = 1;
  if (slice_s > 0 && seconds > slice_s)
    nslices = (int)(seconds / slice_s + 0.5);
  uint64_t slice_ns = (uint64_t)(seconds * 1e9 / nslices);
  sample_sessions(false);
  for (int r = 0; r < nslices; r++)
    for (int j = 0; j < nsystems; j++) {
      int si = (r + j + rotation) % nsystems;
      if (systems[si].status != ST_OK)
        continue;
      if (!run_slice(si, slice_ns))
        systems[si].status = ST_ERROR; /* its child_result says why */
      if (verbose)
        fprintf(stderr, "slice %d %s\n", r, systems[si].name ? systems[si].name : "-");
    }
  sample_sessions(true);

  uint64_t stop = 0;
  for (int i = 0; i < nchildren; i++)
    write_all(children[i].cmd_fd, &stop, sizeof stop);
  for (int i = 0; i < nchildren; i++) {
    struct child *c = &children[i];
    if (!read_all(c->result_fd, &c->res, sizeof c->res)) {
      memset(&c->res, 0, sizeof c->res);
      set_msg(&c->res, ST_ERROR, "process %d exited without a result",
              i - systems[c->sys].first);
    }
    c->res.msg[sizeof c->res.msg - 1] = '\0';
  }
  close(release[1]); /* children close their sessions and exit */
  for (int i = 0; i < nchildren; i++) {
    int st;
    while (waitpid(children[i].pid, &st, 0) < 0 && errno == EINTR) {
    }
  }

  long hz = sysconf(_SC_CLK_TCK);
  int exit_status = 0;
  static uint64_t hist[NBUCKETS];
  for (int si = 0; si < nsystems; si++) {
    struct system *s = &systems[si];
    int worst = ST_OK;
    char reason[300] = "";
    for (int i = s->first; i < s->first + s->count; i++)
      if (children[i].res.status > worst) {
        worst = children[i].res.status;
        snprintf(reason, sizeof reason, "%s", children[i].res.msg);
      }
    if (worst == ST_OK && s->status != ST_OK) {
      worst = ST_ERROR;
      snprintf(reason, sizeof reason, "%s",
               s->reason[0] ? s->reason : "a process stopped answering");
    }
    uint64_t total = 0, cuser = 0, csys = 0;
    double rate = 0;
    memset(hist, 0, sizeof hist);
    for (int i = s->first; i < s->first + s->count && worst == ST_OK; i++) {
      const struct child_result *res = &children[i].res;
      total += res->ops;
      cuser += res->cpu_user_ns;
      csys += res->cpu_sys_ns;
      rate += res->elapsed_ns ? (double)res->ops * 1e9 / res->elapsed_ns : 0;
      for (unsigned b = 0; b < NBUCKETS; b++)
        hist[b] += res->hist[b];
    }
    if (worst == ST_OK && total == 0) {
      worst = ST_ERROR;
      snprintf(reason, sizeof reason, "no operation completed");
    }
    if (worst != ST_OK) {
      sanitize(reason);
      report(s, worst == ST_NA ? "na" : "error", "reason=%s", reason);
      if (worst == ST_ERROR)
        exit_status = 1;
      continue;
    }
    double p50 = percentile(hist, total, 0.50) / 1e3;
    double p99 = percentile(hist, total, 0.99) / 1e3;
    double window = (double)s->window_ns / 1e9;
    double ccpu = (double)(cuser + csys);
    char server[200] = "";
    if (s->sid != 0) {
      /* The server's CPU time over the whole cell (its idle time between
       * slices included), per operation; its share of one core over its
       * slices. */
      double suser = (double)(s->user1 - s->user0) / (double)hz;
      double ssys = (double)(s->sys1 - s->sys0) / (double)hz;
      snprintf(server, sizeof server,
               " server_cpu_us_op=%.1f server_sys_pct=%.0f server_cpu_pct=%.0f",
               (suser + ssys) * 1e6 / (double)total,
               suser + ssys > 0 ? 100.0 * ssys / (suser + ssys) : 0.0,
               100.0 * (suser + ssys) / window);
    }
    report(s, "ok",
           "procs=%d ops=%" PRIu64 " secs=%.2f ops_s=%.0f p50_us=%.1f "
           "p99_us=%.1f client_cpu_us_op=%.1f client_sys_pct=%.0f%s",
           s->count, total, window, rate, p50, p99, ccpu / 1e3 / (double)total,
           ccpu > 0 ? 100.0 * (double)csys / ccpu : 0.0, server);
  }
  return exit_status;
}
