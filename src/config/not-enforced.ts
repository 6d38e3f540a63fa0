/**
 * Keys the schemas accept but the daemon does not enforce yet. The daemon's
 * loader (daemon-config.ts) refuses a configuration that gives one of them a
 * value with an effect: exit 78, `file:line:col: key 'k': not enforced yet
 * (...)`. A neutral value (one that means what the key's absence means) is
 * allowed, so files written for Caml Crush that spell the default still load.
 * The parsers (parseServerConfig, parseFilterConfig) accept every key; this
 * table is the one place that says what is not honoured. The issue that
 * implements a key removes its entry.
 *
 * Every other key of server-schema.ts and filter-schema.ts is honoured; where
 * is listed in HONOURED below (kept next to this table so both are read
 * together; a test checks that the two cover every schema key).
 */
import type { Plain } from './syntax';

export interface PendingKey {
  readonly file: 'server' | 'filter';
  /** JSON pointer of the key; `*` stands for any one segment (a list index). */
  readonly pointer: string;
  /**
   * True when the value has no effect (absent: every value is refused).
   * `parent` is the block holding the key.
   */
  readonly neutral?: (value: Plain, parent: { readonly [k: string]: Plain }) => boolean;
  /** The neutral values, for the message. */
  readonly neutralText?: string;
  /** What will enforce it: the key is refused as "not enforced yet". */
  readonly until?: string;
  /** Why it will not be: the key is refused as "not supported". */
  readonly unsupported?: string;
}

const is =
  (...values: Plain[]) =>
  (v: Plain): boolean =>
    values.includes(v);

export const NOT_ENFORCED: readonly PendingKey[] = [
  // ---- pkcs11proxyd.conf ----
  {
    file: 'server',
    pointer: '/netplex/service/*/processor/libnames',
    neutral: is(''),
    neutralText: '""',
    unsupported: 'modules come from filter_config; move them to its `modules`',
  },
  // netplex process model. Caml Crush requires one connection per process
  // (conn_limit = 1, one job per thread, free capacities 1); pkcs11proxyd
  // gives each connection its own virtual handles and login share instead, so
  // those values are met. Other values ask for something the daemon does not do.
  { file: 'server', pointer: '/netplex/service/*/conn_limit', neutral: is(1), neutralText: '1', unsupported: 'connections are isolated whatever their count' },
  { file: 'server', pointer: '/netplex/service/*/startup_timeout', until: 'supervision (worker start timeout)' },
  { file: 'server', pointer: '/netplex/service/*/gc_when_idle', neutral: is(false), neutralText: 'false', unsupported: 'no use without netplex' },
  ...(['max_jobs_per_thread', 'min_free_jobs_capacity', 'max_free_jobs_capacity', 'recommended_jobs_per_thread'] as const).map(
    (k): PendingKey => ({
      file: 'server',
      pointer: `/netplex/service/*/workload_manager/${k}`,
      neutral: is(1),
      neutralText: '1',
      unsupported: 'workers serve many isolated connections',
    }),
  ),
  { file: 'server', pointer: '/netplex/service/*/workload_manager/inactivity_timeout', unsupported: 'the worker pool is fixed' },
  { file: 'server', pointer: '/netplex/service/*/workload_manager/greedy_accepts', unsupported: 'no use without netplex' },
  { file: 'server', pointer: '/netplex/service/*/protocol/*/lstn_reuseaddr', neutral: is(true), neutralText: 'true', unsupported: 'Node.js always sets SO_REUSEADDR on TCP listeners' },
  // One logger, on stderr (the log file when detached).
  { file: 'server', pointer: '/netplex/controller/logging/*/type', neutral: is('stderr'), neutralText: '"stderr"', unsupported: 'pkcs11proxyd logs to stderr' },
  ...(['max_level', 'format', 'component', 'subchannel', 'file', 'identifier', 'facility'] as const).map(
    (k): PendingKey => ({
      file: 'server',
      pointer: `/netplex/controller/logging/*/${k}`,
      unsupported: 'use controller.max_level',
    }),
  ),
];

/**
 * Where each other key takes effect. Keys of a block also listed in
 * NOT_ENFORCED are honoured for their neutral values.
 */
export const HONOURED: Readonly<Record<'server' | 'filter', Readonly<Record<string, string>>>> = {
  filter: {
    modules: 'the backends (cli.ts -> DaemonSettings.modules)',
    debug: 'src/filter/filter-layer.ts: refusals at 1, checks passed at 2, the compiled policy at start at 3',
    forbidden_mechanisms: 'src/filter/filter-layer.ts (hidden from mechanism lists, refused at every call with a mechanism)',
    forbidden_functions: 'src/filter/filter-layer.ts (CKR_FUNCTION_NOT_SUPPORTED)',
    remove_padding_oracles: 'src/filter/filter-layer.ts (C_EncryptInit, C_SignInit, C_WrapKey, C_UnwrapKey)',
    allowed_labels: 'src/filter/filter-layer.ts (objects outside the patterns are invisible)',
    allowed_ids: 'src/filter/filter-layer.ts (objects outside the patterns are invisible)',
    enforce_ro_sessions: 'src/filter/filter-layer.ts (C_OpenSession: CKF_RW_SESSION cleared)',
    forbid_admin_operations: 'src/filter/filter-layer.ts (C_Login as CKU_SO / CKU_CONTEXT_SPECIFIC, C_InitToken)',
    filter_actions_pre: 'src/filter/actions (an action not implemented refuses to start)',
    filter_actions_post: 'src/filter/actions (an action not implemented refuses to start)',
    log_subchannel: 'tag of the filter log lines (src/filter/policy.ts logTag); one logger, no separate output',
    wrapping_format_key: 'wrapping_format_patch (src/filter/actions/wrapping-format.ts): AES-CMAC key of wrapped-key blobs',
    shadow: 'src/filter/filter-layer.ts shadowed() (dry run, refusals logged, nothing refused)',
    template_rules: 'src/filter/rules/templates.ts',
    hidden_attributes: 'src/filter/rules/templates.ts (C_GetAttributeValue)',
    allowed_mechanisms: 'src/filter/rules/lists.ts',
    allowed_functions: 'src/filter/rules/lists.ts',
    denied_labels: 'src/filter/rules/lists.ts',
    denied_ids: 'src/filter/rules/lists.ts',
    max_random_length: 'src/filter/rules/limits.ts',
    max_template_attributes: 'src/filter/rules/limits.ts',
    min_rsa_modulus_bits: 'src/filter/rules/limits.ts',
    allowed_ec_curves: 'src/filter/rules/limits.ts',
    profile_map: 'src/filter/identity.ts (profile by client identity: Unix peer, TLS certificate; src/filter/authz-patterns.ts)',
    // issue 10 (pool); blocks of names: pools, slot_nat (src/bindings/pool, built by src/bindings/open-backends.ts)
    // issue 9 part C (authz); blocks of names (like profiles): identity_groups (src/filter/authz-patterns.ts @NAME), authorization (src/server/layers/authz-layer.ts, slot-view-layer.ts, src/filter/identity.ts policyFor)
    'login_throttle.base_delay_ms': 'login-throttle-layer.ts backoffDelay',
    'login_throttle.max_delay_ms': 'login-throttle-layer.ts backoffDelay',
    'login_throttle.lockout_failures': 'login-throttle-layer.ts (lock-out after N consecutive CKR_PIN_INCORRECT)',
    'login_throttle.lockout_seconds': 'login-throttle-layer.ts (CKR_PIN_LOCKED this long)',
  },
  server: {
    'netplex.controller.max_level': 'log threshold (cli.ts; PKCS11PROXYD_LOG wins)',
    'netplex.controller.socket_directory': 'base of relative local socket paths (server-config.ts)',
    'netplex.service.name': 'the effective configuration log',
    // ---- privilege drop and service manager (issue 9, privdrop) ----
    'netplex.service.user': 'privilege drop after binding and loading the modules, primary and workers (src/server/supervision/privilege.ts)',
    'netplex.service.group': 'primary group after the drop (src/server/supervision/privilege.ts)',
    'netplex.service.processor.allow_root': 'root without service.user is refused unless true (src/server/supervision/privilege.ts)',
    'netplex.service.processor.umask': 'process umask at start (src/server/supervision/privilege.ts)',
    'netplex.service.processor.shutdown_timeout_ms': 'SIGTERM grace for calls in flight (src/server/transport/rpc-server.ts close)',
    'netplex.service.protocol.name': 'checked non-empty; one protocol kind',
    'netplex.service.protocol.lstn_backlog': 'listener (src/server/transport/listener.ts)',
    'netplex.service.protocol.so_keepalive': 'listener (src/server/transport/listener.ts)',
    'netplex.service.protocol.tcp_nodelay': 'listener (src/server/transport/listener.ts)',
    'netplex.service.protocol.local_chmod': 'listener socket mode',
    'netplex.service.protocol.local_chown': 'listener socket owner',
    'netplex.service.protocol.address': 'listen addresses',
    'netplex.service.processor.type': 'checked: rpc_pkcs11',
    'netplex.service.processor.filter_config': 'modules and policy',
    'netplex.service.processor.max_record_size': 'record size limit',
    'netplex.service.processor.workers': 'worker count',
    'netplex.service.processor.pid_file': 'pid file when detached',
    'netplex.service.processor.max_inflight_calls': 'per-connection bound on calls in flight (rpc-connection.ts)',
    'netplex.service.processor.max_reply_bytes': 'per-connection bound on reply bytes held for a slow reader (rpc-connection.ts)',
    'netplex.service.processor.stall_timeout_ms': 'drop a connection over its reply bound that reads nothing for this long (rpc-connection.ts)',
    'netplex.service.processor.max_sessions_per_app': 'per-application session limit (handle layer)',
    'netplex.service.processor.max_session_object_bytes_per_app': 'per-application session-object bytes (handle layer)',
    'netplex.service.processor.max_random_length': 'C_GenerateRandom length cap (pkcs11js backend)',
    // connection limits (issue 9 item 7)
    'netplex.service.processor.max_connections': 'admission at accept (transport/limits.ts, primary or -workers 0)',
    'netplex.service.processor.max_connections_per_source': 'admission at accept (transport/limits.ts)',
    'netplex.service.processor.connection_rate_per_source': 'token bucket per source at accept (transport/limits.ts)',
    'netplex.service.processor.connection_burst_per_source': 'token bucket size (transport/limits.ts)',
    'netplex.service.processor.idle_timeout_s': 'IdleWatch per connection (transport/limits.ts, rpc-connection.ts)',
    'netplex.service.processor.plain_parameter_mechanisms': 'mechanism-shapes.ts (raw parameters passed as bytes)',
    // logging, audit and metrics (issue 9 item 8)
    'netplex.service.processor.log_format': 'log line format (src/server/log.ts)',
    'netplex.service.processor.audit_file': 'audit trail file sink (src/server/audit-sinks.ts)',
    'netplex.service.processor.audit_stderr': 'audit trail on stderr (src/server/audit-sinks.ts)',
    'netplex.service.processor.audit_syslog': 'audit trail to a local syslog socket (src/server/audit-sinks.ts)',
    'netplex.service.processor.audit_syslog_facility': 'syslog facility of the audit trail (src/server/audit-sinks.ts)',
    'netplex.service.processor.audit_syslog_tag': 'syslog tag of the audit trail (src/server/audit-sinks.ts)',
    'netplex.service.processor.audit_syslog_format': 'syslog header format of the audit trail (src/server/audit-sinks.ts)',
    'netplex.service.processor.metrics_listen': 'Prometheus endpoint (src/server/metrics/)',
    // TLS server (issue 9 item 1): config/tls-config.ts resolves, transport/tls.ts serves; inert while use_ssl is false.
    'netplex.service.processor.use_ssl': 'TLS on every internet address (transport/tls.ts)',
    'netplex.service.processor.tls': 'server certificate, trusted CAs, CRL, peer_auth, versions (config/tls-config.ts)',
    'netplex.service.processor.cafile': 'trusted client CAs (legacy spelling of tls.x509.trust)',
    'netplex.service.processor.certfile': 'server certificate (legacy spelling of tls.x509.key.crt_file)',
    'netplex.service.processor.certkey': 'server key (legacy spelling of tls.x509.key.key_file)',
    'netplex.service.processor.cipher_suite': 'OpenSSL cipher list for TLS 1.2',
    'netplex.service.processor.dh_params': 'DH parameters (only DHE suites listed in cipher_suite use them)',
    'netplex.service.processor.ec_curve_name': 'ECDHE groups',
    'netplex.service.processor.verify_depth': 'client chain length (transport/tls.ts)',
    'netplex.service.processor.allowed_clients_cert_path': 'client certificate allow-list (transport/tls.ts)',
    'netplex.service.workload_manager.type': 'constant: threads is the worker count; dynamic: max_threads caps it',
    'netplex.service.workload_manager.threads': 'worker count when processor.workers is absent (type constant)',
    'netplex.service.workload_manager.max_threads': 'upper bound of the worker count',
  },
};

/** Every concrete pointer in `data` that `pattern` (with `*` segments) names, with its parent block. */
export function matchPointers(
  data: Plain,
  pattern: string,
): Array<{ pointer: string; value: Plain; parent: { readonly [k: string]: Plain } }> {
  const segs = pattern.split('/').slice(1);
  const out: Array<{ pointer: string; value: Plain; parent: { readonly [k: string]: Plain } }> = [];
  const walk = (node: Plain, i: number, at: string, parent: { readonly [k: string]: Plain } | null): void => {
    if (i === segs.length) {
      if (parent !== null) out.push({ pointer: at, value: node, parent });
      return;
    }
    if (node === null || typeof node !== 'object') return;
    const seg = segs[i];
    if (Array.isArray(node)) {
      if (seg !== '*') return;
      node.forEach((child, k) => walk(child, i + 1, `${at}/${k}`, parent));
      return;
    }
    const keys = seg === '*' ? Object.keys(node) : Object.prototype.hasOwnProperty.call(node, seg) ? [seg] : [];
    for (const k of keys) walk(node[k], i + 1, `${at}/${k}`, node);
  };
  walk(data, 0, '', null);
  return out;
}
