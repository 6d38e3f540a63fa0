/**
 * JSON Schema of pkcs11proxyd.conf (netplex syntax) after parsing to plain
 * data. Blocks listed with `type: 'array'` of blocks are always arrays, even
 * when written once; every other block must appear at most once.
 *
 * Accepted: every key present in Caml Crush's shipped and integration confs,
 * the OCamlnet netplex keys around them, and our own keys (marked "pkcs11proxyd
 * extension"), which live in `processor` because Caml Crush ignores unknown
 * processor keys there, so one file still serves both daemons. Anything else
 * is rejected as an unknown key.
 */
import type { SchemaObject } from 'ajv';

export const DEFAULT_MAX_RECORD_SIZE = 16 * 1024 * 1024;
export const MIN_MAX_RECORD_SIZE = 4096;
export const MAX_MAX_RECORD_SIZE = 1024 * 1024 * 1024;
/** Per-connection bounds; the transport's own defaults (rpc-connection.ts) are the same numbers. */
export const DEFAULT_MAX_INFLIGHT_CALLS = 16;
export const DEFAULT_MAX_REPLY_BYTES = 4 * 1024 * 1024;
export const DEFAULT_STALL_TIMEOUT_MS = 30_000;
export const MAX_WORKERS = 1024;
/** Per-application limits (processor keys max_sessions_per_app, max_session_object_bytes_per_app, max_random_length). */
export const DEFAULT_MAX_SESSIONS_PER_APP = 16384;
export const DEFAULT_MAX_SESSION_OBJECT_BYTES_PER_APP = 64 * 1024 * 1024;
export const DEFAULT_MAX_RANDOM_LENGTH = 1024 * 1024;
/** processor.shutdown_timeout_ms default: SIGTERM waits this long for calls in flight. */
export const DEFAULT_SHUTDOWN_TIMEOUT_MS = 30_000;
/** The daemon never allocates more than this for one call's output. */
export const MAX_MAX_RANDOM_LENGTH = 16 * 1024 * 1024;
/** Connection limits (issue 9 item 7, limits.ts): 0 turns each off; max_connections is on by default. */
export const DEFAULT_MAX_CONNECTIONS = 16384;
export const MAX_CONNECTION_LIMIT = 1_000_000;
export const MAX_IDLE_TIMEOUT_S = 30 * 24 * 3600;

type S = SchemaObject;

const str = (description: string, extra: S = {}): S => ({ type: 'string', description, ...extra });
const path = (description: string): S => str(description, { minLength: 1 });
const int = (description: string, extra: S = {}): S => ({ type: 'integer', description, ...extra });
const bool = (description: string): S => ({ type: 'boolean', description });
const oneOf = (description: string, values: readonly string[]): S => ({
  type: 'string',
  description,
  enum: values,
});
const block = (
  description: string,
  properties: Record<string, S>,
  required: string[] = [],
  extra: S = {},
): S => ({
  type: 'object',
  description,
  additionalProperties: false,
  properties,
  ...(required.length > 0 ? { required } : {}),
  ...extra,
});
const blocks = (description: string, item: S, extra: S = {}): S => ({
  type: 'array',
  description,
  items: item,
  ...extra,
});

export const LOG_LEVELS = ['emerg', 'alert', 'crit', 'err', 'warning', 'notice', 'info', 'debug'] as const;

const logging = block(
  'netplex log destination. Parsed for compatibility; pkcs11proxyd logs through its own logger.',
  {
    type: oneOf('Destination kind.', ['stderr', 'syslog', 'file']),
    max_level: oneOf('Most verbose level sent to this destination.', LOG_LEVELS),
    format: str('netplex log line format.'),
    component: str('netplex component filter.'),
    subchannel: str('netplex subchannel filter.'),
    file: path('Log file (type "file").'),
    identifier: str('syslog identifier (type "syslog").'),
    facility: str('syslog facility (type "syslog").'),
  },
  ['type'],
);

const controller = block(
  'netplex controller. Parsed for compatibility; only socket_directory has an effect (base of relative local socket paths).',
  {
    max_level: oneOf('Most verbose log level.', LOG_LEVELS),
    socket_directory: path(
      'netplex admin socket directory. pkcs11proxyd resolves relative `address.path` values against it.',
    ),
    logging: blocks('Log destinations.', logging),
  },
);

const address = block(
  'One listening socket. type "local" needs `path` (Unix socket), type "internet" needs `bind` ("HOST:PORT", "[IPV6]:PORT").',
  {
    type: oneOf('Socket kind.', ['local', 'internet']),
    path: path(
      'Unix socket path (type "local"). Relative paths are resolved against controller.socket_directory when set, else the directory of this file.',
    ),
    bind: str(
      'Listening address (type "internet"): "HOST:PORT" or "[IPV6]:PORT". Port 0 picks a free port.',
      {
        pattern: '^(\\[[0-9A-Fa-f.:]+\\]|[^\\s\\[\\]:]+):[0-9]{1,5}$',
        ruleText: 'must be "HOST:PORT" or "[IPV6]:PORT"',
      },
    ),
  },
  ['type'],
  {
    allOf: [
      {
        if: { properties: { type: { const: 'local' } }, required: ['type'] },
        then: {
          required: ['path'],
          properties: { path: {}, bind: { not: {}, ruleText: 'only allowed when type is "internet"' } },
        },
      },
      {
        if: { properties: { type: { const: 'internet' } }, required: ['type'] },
        then: {
          required: ['bind'],
          properties: { bind: {}, path: { not: {}, ruleText: 'only allowed when type is "local"' } },
        },
      },
    ],
  },
);

const protocol = block(
  'Listening sockets of the service.',
  {
    name: str('netplex protocol name; Caml Crush uses "rpc_pkcs11".', { minLength: 1 }),
    lstn_backlog: int('listen(2) backlog of the sockets of this protocol (default 1024; the kernel caps it at net.core.somaxconn).', { minimum: 1, maximum: 65535 }),
    lstn_reuseaddr: bool('Set SO_REUSEADDR on listening sockets.'),
    so_keepalive: bool('Set SO_KEEPALIVE on accepted TCP sockets of this protocol (default true).'),
    tcp_nodelay: bool('Set TCP_NODELAY on accepted TCP sockets of this protocol (default true).'),
    local_chmod: {
      type: ['integer', 'string'],
      description:
        'Mode of the Unix sockets of this protocol: an integer, or a string "0o777", "0x1ff", "0b...", or decimal. A string with a leading 0 and no radix letter ("0777") is rejected: OCamlnet reads it as decimal.',
      ruleText: 'must be a file mode (integer or "0o..." string)',
    },
    local_chown: str('Owner of the Unix sockets of this protocol, "USER:GROUP".', {
      pattern: '^[^:\\s]+:[^:\\s]+$',
      ruleText: 'must be "USER:GROUP"',
    }),
    address: blocks('Sockets to listen on.', address, { minItems: 1 }),
  },
  ['name', 'address'],
);

const tls = block(
  'TLS settings (OCamlnet 4 / GnuTLS style), used when use_ssl is true. File paths here and in the legacy keys are resolved against the directory of this file; values here win over the legacy keys.',
  {
    algorithms: str(
      'GnuTLS priority string. Its VERS-* tokens choose the TLS versions (1.2 and 1.3 only); removals of algorithms are met by the TLS 1.2 list pkcs11proxyd offers (ECDHE with AES-GCM or ChaCha20-Poly1305); additions are refused (use cipher_suite).',
    ),
    peer_auth: oneOf('Client certificate requirement (default required).', ['none', 'optional', 'required']),
    min_version: oneOf('pkcs11proxyd extension: lowest TLS version served (default 1.3; "1.2" allows TLS 1.2 as well).', ['1.2', '1.3']),
    handshake_timeout_ms: int('pkcs11proxyd extension: a client that has not finished its TLS handshake in this many ms is dropped (default 10000).', {
      minimum: 100,
      maximum: 600000,
    }),
    dh_params: block('Diffie-Hellman parameters.', {
      pkcs3_file: path('PEM file with PKCS#3 DH parameters.'),
      bits: int('Generate DH parameters of this size at startup.', { minimum: 512 }),
    }),
    x509: block('Certificates.', {
      key: block(
        'Server certificate and key.',
        {
          crt_file: path('Server certificate (PEM).'),
          key_file: path('Server private key (PEM, unencrypted).'),
        },
        ['crt_file', 'key_file'],
      ),
      trust: block('Trusted CAs for client certificates.', { crt_file: path('CA certificates (PEM).') }, [
        'crt_file',
      ]),
      revoke: block('Revocation lists.', { crl_file: path('CRL file (PEM).') }, ['crl_file']),
    }),
  },
);

const processor = block(
  'How connections are served.',
  {
    type: oneOf('Processor kind; the only one is the PKCS#11 RPC server.', ['rpc_pkcs11']),
    filter_config: path('filter.conf path; relative paths are resolved against the directory of this file.'),
    libnames: str(
      'Caml Crush without filter: "alias:path;alias:path;". Parsed only; pkcs11proxyd always reads modules from filter_config.',
    ),
    use_ssl: bool('Serve TLS (mutual by default) on every internet address of the service; see the tls block.'),
    cafile: path('Legacy TLS (Caml Crush <= 1.0.6): CA chain file.'),
    certfile: path('Legacy TLS: server certificate file.'),
    certkey: path('Legacy TLS: server private key file.'),
    cipher_suite: str('Legacy TLS: OpenSSL cipher list, colon separated.'),
    dh_params: path('Legacy TLS: DH parameters file.'),
    ec_curve_name: str('Legacy TLS: ECDHE curve name.'),
    verify_depth: int('Legacy TLS: most CA certificates allowed between a client certificate and its trusted CA.', { minimum: 0 }),
    allowed_clients_cert_path: path('Legacy TLS: directory of accepted client certificates.'),
    tls,
    max_record_size: int(
      `pkcs11proxyd extension: largest accepted RPC record in bytes (default ${DEFAULT_MAX_RECORD_SIZE}). Larger records close the connection.`,
      { minimum: MIN_MAX_RECORD_SIZE, maximum: MAX_MAX_RECORD_SIZE },
    ),
    max_inflight_calls: int(
      `pkcs11proxyd extension: calls read from one connection and not yet answered, above which the daemon stops reading it (default ${DEFAULT_MAX_INFLIGHT_CALLS}).`,
      { minimum: 1, maximum: 4096 },
    ),
    max_reply_bytes: int(
      `pkcs11proxyd extension: bytes of replies held for one connection that does not read them, above which no further call of it is run (default ${DEFAULT_MAX_REPLY_BYTES}).`,
      { minimum: 4096, maximum: MAX_MAX_RECORD_SIZE },
    ),
    stall_timeout_ms: int(
      `pkcs11proxyd extension: a connection over max_reply_bytes whose peer takes no bytes for this long is closed (default ${DEFAULT_STALL_TIMEOUT_MS}).`,
      { minimum: 100, maximum: 3_600_000 },
    ),
    workers: int('pkcs11proxyd extension: number of worker processes (default: chosen by the daemon).', {
      minimum: 1,
      maximum: MAX_WORKERS,
    }),
    pid_file: path(
      'pkcs11proxyd extension: write the daemon pid to this file; relative paths are resolved against the directory of this file.',
    ),
    plain_parameter_mechanisms: str(
      'pkcs11proxyd extension: mechanisms (numbers, decimal or 0x hex, or CKM_ names; separated by spaces or commas) whose parameter is plain bytes. A raw parameter of a mechanism unknown to pkcs11proxyd is refused (CKR_MECHANISM_PARAM_INVALID) unless listed here; list only vendor mechanisms whose parameter holds no pointer. Mechanisms pkcs11proxyd knows cannot be listed.',
    ),
    max_sessions_per_app: int(
      `pkcs11proxyd extension: open sessions per PKCS#11 application (default ${DEFAULT_MAX_SESSIONS_PER_APP}); C_OpenSession beyond it answers CKR_SESSION_COUNT.`,
      { minimum: 1, maximum: 1 << 24 },
    ),
    max_session_object_bytes_per_app: int(
      `pkcs11proxyd extension: bytes of session objects per application, counted as attribute bytes given plus 1 KiB per object (default ${DEFAULT_MAX_SESSION_OBJECT_BYTES_PER_APP}); beyond: CKR_DEVICE_MEMORY.`,
      { minimum: 0, maximum: 2 ** 40 },
    ),
    max_random_length: int(
      `pkcs11proxyd extension: longest C_GenerateRandom output in bytes (default ${DEFAULT_MAX_RANDOM_LENGTH}); longer asks answer CKR_ARGUMENTS_BAD.`,
      { minimum: 0, maximum: MAX_MAX_RANDOM_LENGTH },
    ),
    // ---- logging, audit and metrics (issue 9 item 8) ----
    log_format: oneOf('pkcs11proxyd extension: "text" (default): one line per message on stderr; "json": one JSON object per line (time, level, pid, worker, msg). PKCS11PROXYD_LOG_FORMAT wins.', ['text', 'json']),
    audit_file: path(
      'pkcs11proxyd extension: append the audit trail to this file, one JSON object per line, created with mode 0600, reopened on SIGHUP (logrotate); relative paths are resolved against the directory of this file.',
    ),
    audit_stderr: bool('pkcs11proxyd extension: write the audit trail to stderr as well (one JSON object per line; under systemd it reaches the journal). Default false.'),
    audit_syslog: str(
      'pkcs11proxyd extension: send the audit trail to the local syslog datagram socket at this absolute path (e.g. "/dev/log"; journald listens there too), one message per event whose text is the JSON object. Default: no syslog sink.',
      { minLength: 2, maxLength: 107, pattern: '^/' },
    ),
    audit_syslog_facility: oneOf('pkcs11proxyd extension: syslog facility of audit_syslog messages (default "authpriv").', [
      'user',
      'daemon',
      'auth',
      'authpriv',
      'local0',
      'local1',
      'local2',
      'local3',
      'local4',
      'local5',
      'local6',
      'local7',
    ]),
    audit_syslog_tag: str('pkcs11proxyd extension: TAG (RFC 3164) or APP-NAME (RFC 5424) of audit_syslog messages (default "pkcs11proxyd").', {
      pattern: '^[A-Za-z0-9._-]{1,32}$',
    }),
    audit_syslog_format: oneOf(
      'pkcs11proxyd extension: header of audit_syslog messages: "rfc3164" (default; `<PRI>Mmm dd hh:mm:ss TAG[PID]: `, what syslog(3) sends to /dev/log) or "rfc5424" (`<PRI>1 TIMESTAMP HOST APP-NAME PID EVENT - `).',
      ['rfc3164', 'rfc5424'],
    ),
    metrics_listen: str(
      'pkcs11proxyd extension: serve Prometheus metrics (GET /metrics) on "HOST:PORT" (TCP) or an absolute path (Unix socket, mode 0600). Default: no metrics endpoint.',
      { minLength: 1 },
    ),
    // ---- connection limits (issue 9 item 7; src/server/transport/limits.ts) ----
    max_connections: int(
      `pkcs11proxyd extension: connections open at once, all clients together (default ${DEFAULT_MAX_CONNECTIONS}; 0: no limit). A connection beyond it is closed at accept, with a logged reason.`,
      { minimum: 0, maximum: MAX_CONNECTION_LIMIT },
    ),
    max_connections_per_source: int(
      'pkcs11proxyd extension: connections open at once from one source: the peer uid on a Unix socket, the peer address on TCP/TLS (default 0: no limit beyond max_connections). A TLS client certificate is not a source: several certificates behind one address share its limit.',
      { minimum: 0, maximum: MAX_CONNECTION_LIMIT },
    ),
    connection_rate_per_source: {
      type: 'number',
      description:
        'pkcs11proxyd extension: new connections per second one source may open, on average (token bucket; default 0: no limit). Connections beyond it are closed at accept, with a logged reason.',
      minimum: 0,
      maximum: MAX_CONNECTION_LIMIT,
    },
    connection_burst_per_source: int(
      'pkcs11proxyd extension: new connections one source may open at once before connection_rate_per_source applies (bucket size; default: the rate rounded up, at least 1).',
      { minimum: 1, maximum: MAX_CONNECTION_LIMIT },
    ),
    idle_timeout_s: int(
      'pkcs11proxyd extension: a connection with no call in flight and none received for this many seconds is closed, its sessions with it (default 0: never). Long-lived applications (a web server holding a key) may stay quiet for hours with sessions open: set it above their quietest period, or leave it off.',
      { minimum: 0, maximum: MAX_IDLE_TIMEOUT_S },
    ),
    // ---- privilege drop and service manager (issue 9, privdrop) ----
    allow_root: bool(
      'pkcs11proxyd extension: keep running as root when service.user is absent (default false: a daemon started as root without `user` refuses to start).',
    ),
    umask: {
      type: 'string',
      pattern: '^0?[0-7]{3}$',
      description: 'pkcs11proxyd extension: file creation mask set at start, octal (e.g. "0077"; default: inherited).',
    },
    shutdown_timeout_ms: int(
      `pkcs11proxyd extension: on SIGTERM, calls in flight get this long to finish and be answered before their connections are closed (default ${DEFAULT_SHUTDOWN_TIMEOUT_MS}).`,
      { minimum: 0, maximum: 3_600_000 },
    ),
  },
  ['type'],
);

const workloadManager = block(
  'netplex workload manager. Parsed for compatibility; pkcs11proxyd sizes its pool with processor.workers.',
  {
    type: oneOf('Manager kind.', ['dynamic', 'constant']),
    max_jobs_per_thread: int('Connections per worker.', { minimum: 1 }),
    min_free_jobs_capacity: int('Spare capacity to keep.', { minimum: 0 }),
    max_free_jobs_capacity: int('Spare capacity to allow.', { minimum: 0 }),
    max_threads: int('Most workers.', { minimum: 1 }),
    recommended_jobs_per_thread: int('Preferred connections per worker.', { minimum: 1 }),
    inactivity_timeout: int('Seconds before an idle worker exits.', { minimum: 0 }),
    greedy_accepts: bool('Accept as many connections as possible at once.'),
    threads: int('Workers (type "constant").', { minimum: 1 }),
  },
  ['type'],
);

const service = block(
  'The PKCS#11 proxy service.',
  {
    name: str('Service name, used in logs.', { minLength: 1 }),
    user: str('Drop privileges to this user (name or uid) after binding the sockets and loading the modules, with its supplementary groups.', { minLength: 1 }),
    group: str('Primary group (name or gid) after the drop (needs user; default: the user\'s own).', { minLength: 1 }),
    conn_limit: int('netplex connections per worker process before it is recycled; Caml Crush requires 1.', {
      minimum: 1,
    }),
    startup_timeout: {
      type: 'number',
      description: 'netplex worker startup timeout in seconds.',
      minimum: 0,
    },
    gc_when_idle: bool('netplex: run the GC when idle.'),
    protocol: blocks('Listening protocols.', protocol, { minItems: 1 }),
    processor,
    workload_manager: workloadManager,
  },
  ['name', 'protocol', 'processor'],
  { dependencies: { group: ['user'] } },
);

export const serverSchema: SchemaObject = block(
  'pkcs11proxyd.conf: a single netplex { ... } block.',
  {
    netplex: block(
      'netplex root.',
      {
        controller,
        service: blocks('The service; exactly one (one filter configuration per daemon).', service, {
          minItems: 1,
          maxItems: 1,
        }),
      },
      ['service'],
    ),
  },
  ['netplex'],
);
