/*
 * Settings. Precedence: environment variable, then config file, then
 * default. Config file: PKCS11PROXY_CONF or /etc/pkcs11proxyd/client.conf
 * (a missing default file is not an error), lines `key = value`, `#`
 * comments; keys socket_path (one daemon address, or several separated by
 * commas, tried in order), libname, rpc_timeout, connect_timeout, session_connections,
 * and for tls:// ca_file, cert_file, privkey_file (environment
 * PKCS11PROXY_CA_FILE, PKCS11PROXY_CERT_FILE, PKCS11PROXY_PRIVKEY_FILE, the
 * names of Caml Crush's TLS client).
 * Unknown keys and bad values are errors.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "px.h"
#include "tls.h"

static pthread_once_t debug_once = PTHREAD_ONCE_INIT;
static bool debug_on;

static void debug_init(void) {
  const char *v = getenv("PKCS11PROXY_DEBUG");
  debug_on = v != NULL && strcmp(v, "1") == 0;
}

void px_debug(const char *fmt, ...) {
  pthread_once(&debug_once, debug_init);
  if (!debug_on)
    return;
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  fprintf(stderr, "libp11client[%ld]: %s\n", (long)getpid(), line);
}

static char *trim(char *s) {
  while (isspace((unsigned char)*s))
    s++;
  size_t n = strlen(s);
  while (n > 0 && isspace((unsigned char)s[n - 1]))
    s[--n] = '\0';
  return s;
}

static void clear_address(struct px_config *cfg) {
  for (size_t i = 0; i < cfg->n_ep; i++) {
    free(cfg->ep[i].path);
    free(cfg->ep[i].host);
    free(cfg->ep[i].port);
  }
  memset(cfg->ep, 0, sizeof cfg->ep);
  cfg->n_ep = 0;
}

/* host:port, [v6]:port */
static int parse_host_port(struct px_endpoint *ep, const char *hp) {
  const char *colon;
  const char *host_start = hp;
  size_t host_len;
  if (hp[0] == '[') {
    const char *close = strchr(hp, ']');
    if (close == NULL || close[1] != ':')
      return -1;
    host_start = hp + 1;
    host_len = (size_t)(close - host_start);
    colon = close + 1;
  } else {
    colon = strrchr(hp, ':');
    if (colon == NULL)
      return -1;
    host_len = (size_t)(colon - hp);
  }
  const char *port = colon + 1;
  if (host_len == 0 || *port == '\0')
    return -1;
  for (const char *p = port; *p; p++)
    if (!isdigit((unsigned char)*p))
      return -1;
  long pn = strtol(port, NULL, 10);
  if (pn <= 0 || pn > 65535)
    return -1;
  ep->host = strndup(host_start, host_len);
  ep->port = strdup(port);
  return (ep->host && ep->port) ? 0 : -1;
}

/* One address (no comma in it). */
static int parse_endpoint(struct px_endpoint *ep, const char *addr) {
  if (*addr == '\0')
    return -1;
  if (strncmp(addr, "unix:", 5) == 0) {
    const char *p = addr + 5;
    if (strncmp(p, "//", 2) == 0)
      p += 2;
    if (*p == '\0')
      return -1;
    ep->transport = PX_TRANSPORT_UNIX;
    ep->path = strdup(p);
    return ep->path ? 0 : -1;
  }
  if (strncmp(addr, "tcp://", 6) == 0) {
    ep->transport = PX_TRANSPORT_TCP;
    return parse_host_port(ep, addr + 6);
  }
  if (strncmp(addr, "tls://", 6) == 0) {
    ep->transport = PX_TRANSPORT_TLS;
    return parse_host_port(ep, addr + 6);
  }
  /* A path: absolute, ./relative, or any value with a '/' (a host name has
   * none). Caml Crush's Unix client takes every value as a path. */
  if (addr[0] == '/' || addr[0] == '.' || strchr(addr, '/') != NULL) {
    ep->transport = PX_TRANSPORT_UNIX;
    ep->path = strdup(addr);
    return ep->path ? 0 : -1;
  }
  ep->transport = PX_TRANSPORT_TCP;
  return parse_host_port(ep, addr);
}

/* A list of daemons: addresses separated by ',' with optional blanks
 * around each. No address form contains a comma except a Unix path, and
 * such a path cannot be named here (a symlink to it can). An empty entry
 * or more than PX_MAX_DAEMONS entries is an error. */
int px_config_parse_address(struct px_config *cfg, const char *addr) {
  clear_address(cfg);
  if (addr == NULL)
    return -1;
  char *copy = strdup(addr);
  if (copy == NULL)
    return -1;
  int rc = 0;
  char *rest = copy;
  for (;;) {
    char *comma = strchr(rest, ',');
    if (comma != NULL)
      *comma = '\0';
    if (cfg->n_ep == PX_MAX_DAEMONS) {
      px_debug("config: socket_path names more than %d daemons",
               PX_MAX_DAEMONS);
      rc = -1;
      break;
    }
    /* Counted first, so clear_address frees a half-parsed entry. */
    struct px_endpoint *ep = &cfg->ep[cfg->n_ep++];
    if (parse_endpoint(ep, trim(rest)) != 0) {
      rc = -1;
      break;
    }
    if (comma == NULL)
      break;
    rest = comma + 1;
  }
  free(copy);
  if (rc != 0)
    clear_address(cfg);
  return rc;
}

static int parse_timeout(const char *s, unsigned long *out) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v == 0 || v > 86400UL * 365)
    return -1;
  *out = v;
  return 0;
}

static int parse_mode(const char *s, bool *shared) {
  if (strcmp(s, "dedicated") == 0) {
    *shared = false;
    return 0;
  }
  if (strcmp(s, "shared") == 0) {
    *shared = true;
    return 0;
  }
  return -1;
}

/* File values, applied only where no environment variable overrides. */
struct file_values {
  char *socket_path;
  char *libname;
  char *rpc_timeout;
  char *connect_timeout;
  char *mode;
  char *ca_file, *cert_file, *key_file;
};

static void file_values_free(struct file_values *fv) {
  free(fv->socket_path);
  free(fv->libname);
  free(fv->rpc_timeout);
  free(fv->connect_timeout);
  free(fv->mode);
  free(fv->ca_file);
  free(fv->cert_file);
  free(fv->key_file);
}

static int read_file(const char *path, bool must_exist,
                     struct file_values *fv) {
  FILE *f = fopen(path, "re");
  if (f == NULL) {
    if (!must_exist && errno == ENOENT)
      return 0;
    px_debug("config: cannot open %s: %s", path, strerror(errno));
    return -1;
  }
  char buf[1024];
  int lineno = 0;
  int rc = 0;
  while (rc == 0 && fgets(buf, sizeof buf, f) != NULL) {
    lineno++;
    char *line = trim(buf);
    if (*line == '\0' || *line == '#')
      continue;
    char *eq = strchr(line, '=');
    if (eq == NULL) {
      px_debug("config: %s:%d: expected `key = value`", path, lineno);
      rc = -1;
      break;
    }
    *eq = '\0';
    char *key = trim(line);
    char *val = trim(eq + 1);
    size_t vl = strlen(val);
    if (vl >= 2 && val[0] == '"' && val[vl - 1] == '"') {
      val[vl - 1] = '\0';
      val++;
    }
    char **slot = NULL;
    if (strcmp(key, "socket_path") == 0)
      slot = &fv->socket_path;
    else if (strcmp(key, "libname") == 0)
      slot = &fv->libname;
    else if (strcmp(key, "rpc_timeout") == 0)
      slot = &fv->rpc_timeout;
    else if (strcmp(key, "connect_timeout") == 0)
      slot = &fv->connect_timeout;
    else if (strcmp(key, "session_connections") == 0)
      slot = &fv->mode;
    else if (strcmp(key, "ca_file") == 0)
      slot = &fv->ca_file;
    else if (strcmp(key, "cert_file") == 0)
      slot = &fv->cert_file;
    else if (strcmp(key, "privkey_file") == 0)
      slot = &fv->key_file;
    if (slot == NULL) {
      px_debug("config: %s:%d: unknown key '%s'", path, lineno, key);
      rc = -1;
      break;
    }
    free(*slot);
    *slot = strdup(val);
    if (*slot == NULL)
      rc = -1;
  }
  fclose(f);
  return rc;
}

static const char *pick(const char *env_name, const char *file_value) {
  const char *e = getenv(env_name);
  return (e != NULL && *e != '\0') ? e : file_value;
}

CK_RV px_config_load(struct px_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  struct file_values fv = {0};
  const char *conf = getenv("PKCS11PROXY_CONF");
  bool explicit_conf = conf != NULL && *conf != '\0';
  if (read_file(explicit_conf ? conf : PX_DEFAULT_CONF, explicit_conf, &fv)) {
    file_values_free(&fv);
    return CKR_GENERAL_ERROR;
  }
  CK_RV rv = CKR_GENERAL_ERROR;
  const char *addr = pick("PKCS11PROXY_SOCKET_PATH", fv.socket_path);
  if (addr == NULL)
    addr = PX_DEFAULT_SOCKET_PATH;
  if (px_config_parse_address(cfg, addr)) {
    px_debug("config: bad socket_path '%s'", addr);
    goto out;
  }
  const char *lib = pick("PKCS11PROXY_LIBNAME", fv.libname);
  cfg->libname = strdup(lib ? lib : "");
  if (cfg->libname == NULL)
    goto out;
  cfg->rpc_timeout = PX_DEFAULT_RPC_TIMEOUT;
  const char *to = pick("PKCS11PROXY_RPC_TIMEOUT", fv.rpc_timeout);
  if (to != NULL && parse_timeout(to, &cfg->rpc_timeout)) {
    px_debug("config: bad rpc_timeout '%s'", to);
    goto out;
  }
  cfg->connect_timeout = PX_DEFAULT_CONNECT_TIMEOUT;
  const char *cto = pick("PKCS11PROXY_CONNECT_TIMEOUT", fv.connect_timeout);
  if (cto != NULL && parse_timeout(cto, &cfg->connect_timeout)) {
    px_debug("config: bad connect_timeout '%s'", cto);
    goto out;
  }
  const char *mode = pick("PKCS11PROXY_SESSION_CONNECTIONS", fv.mode);
  if (mode != NULL && parse_mode(mode, &cfg->shared_sessions)) {
    px_debug("config: bad session_connections '%s'", mode);
    goto out;
  }
  bool any_tls = false;
  for (size_t i = 0; i < cfg->n_ep; i++)
    any_tls = any_tls || cfg->ep[i].transport == PX_TRANSPORT_TLS;
  if (any_tls) {
    struct px_tls_files tf = {
        .ca_file = pick("PKCS11PROXY_CA_FILE", fv.ca_file),
        .cert_file = pick("PKCS11PROXY_CERT_FILE", fv.cert_file),
        .key_file = pick("PKCS11PROXY_PRIVKEY_FILE", fv.key_file),
        .stats_file = pick("PKCS11PROXY_TLS_STATS", NULL),
    };
    const char *resume = pick("PKCS11PROXY_TLS_RESUMPTION", NULL);
    if (resume != NULL && strcmp(resume, "0") != 0 && strcmp(resume, "1") != 0) {
      px_debug("config: bad PKCS11PROXY_TLS_RESUMPTION '%s' (0 or 1)", resume);
      goto out;
    }
    tf.no_resumption = resume != NULL && strcmp(resume, "0") == 0;
    rv = px_tls_new(&tf, &cfg->tls);
    if (rv != CKR_OK)
      goto out;
    rv = CKR_GENERAL_ERROR;
    px_debug("config: ca_file=%s cert_file=%s privkey_file=%s", tf.ca_file,
             tf.cert_file ? tf.cert_file : "(none)",
             tf.key_file ? tf.key_file : "(none)");
  }
  rv = CKR_OK;
  for (size_t i = 0; i < cfg->n_ep; i++) {
    const struct px_endpoint *ep = &cfg->ep[i];
    px_debug("config: daemon %zu of %zu: %s%s%s%s", i + 1, cfg->n_ep,
             ep->transport == PX_TRANSPORT_UNIX  ? "unix:"
             : ep->transport == PX_TRANSPORT_TCP ? "tcp://"
                                                 : "tls://",
             ep->path ? ep->path : ep->host, ep->path ? "" : ":",
             ep->path ? "" : ep->port);
  }
  px_debug("config: libname='%s' rpc_timeout=%lus connect_timeout=%lus "
           "session_connections=%s",
           cfg->libname, cfg->rpc_timeout, cfg->connect_timeout,
           cfg->shared_sessions ? "shared" : "dedicated");
out:
  file_values_free(&fv);
  if (rv != CKR_OK)
    px_config_free(cfg);
  return rv;
}

void px_config_free(struct px_config *cfg) {
  clear_address(cfg);
  px_tls_free(cfg->tls);
  cfg->tls = NULL;
  free(cfg->libname);
  cfg->libname = NULL;
}
