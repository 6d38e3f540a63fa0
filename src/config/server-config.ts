/**
 * pkcs11proxyd.conf loader: netplex syntax -> schema check -> ServerConfig.
 * See server-schema.ts for every accepted key.
 */
import path from 'path';
import type { SchemaObject } from 'ajv';
import { readConfigText } from './read';
import {
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_MAX_INFLIGHT_CALLS,
  DEFAULT_MAX_RANDOM_LENGTH,
  DEFAULT_SHUTDOWN_TIMEOUT_MS,
  DEFAULT_MAX_RECORD_SIZE,
  DEFAULT_MAX_REPLY_BYTES,
  DEFAULT_MAX_SESSIONS_PER_APP,
  DEFAULT_MAX_SESSION_OBJECT_BYTES_PER_APP,
  DEFAULT_STALL_TIMEOUT_MS,
  type LOG_LEVELS,
  serverSchema,
} from './server-schema';
import { type Plain, type SourceMap, parseConfigText, toPlain } from './syntax';
import { compileSchema, invalidAt, validatePlain } from './validate';
import { constantByName } from '../pkcs11/constants';
import { MECHANISM_SHAPES } from '../pkcs11/mechanism-shapes';

/** Socket options of the protocol block an address belongs to (absent: the daemon's default). */
interface SocketKeys {
  /** lstn_backlog */
  backlog?: number;
  /** tcp_nodelay (TCP only) */
  tcpNoDelay?: boolean;
  /** so_keepalive (TCP only) */
  keepAlive?: boolean;
}

export type ListenAddress =
  | ({ type: 'local'; path: string; mode?: number; owner?: string; group?: string } & SocketKeys)
  | ({ type: 'internet'; host: string; port: number } & SocketKeys);

/** Per-connection bounds (processor keys, ours). */
export interface ConnectionLimits {
  /** max_inflight_calls: calls read and not yet answered, above which reading pauses. */
  maxPendingCalls: number;
  /** max_reply_bytes: encoded replies held for a slow reader, above which no call is dispatched. */
  maxReplyBytes: number;
  /** stall_timeout_ms: a reader that takes none of its held replies this long is dropped. */
  stallTimeoutMs: number;
  /** idle_timeout_s in ms; 0: off. */
  idleTimeoutMs: number;
}

/** Admission limits (processor keys, ours; issue 9 item 7); 0 turns one off. */
export interface AdmissionKeys {
  maxConnections: number;
  maxConnectionsPerSource: number;
  connectionRatePerSource: number;
  /** 0: the default (the rate rounded up, at least 1). */
  connectionBurstPerSource: number;
}

export type LogLevel = (typeof LOG_LEVELS)[number];

/** processor.metrics_listen: a TCP address or a Unix socket path. */
export type MetricsListen = { type: 'tcp'; host: string; port: number } | { type: 'local'; path: string };

/** TLS material; paths are resolved against the directory of the server conf. */
export interface TlsSettings {
  certFile?: string;
  keyFile?: string;
  caFile?: string;
  /** OpenSSL cipher names from legacy `cipher_suite` ("A:B" -> ["A", "B"]). */
  cipherSuites?: string[];
  /** GnuTLS priority string from `tls.algorithms`. */
  priority?: string;
  peerAuth?: 'none' | 'optional' | 'required';
  dhParamsFile?: string;
  verifyDepth?: number;
}

/** The audit trail's syslog sink (processor.audit_syslog*; src/server/audit-sinks.ts). */
export interface SyslogSettings {
  /** Absolute path of the AF_UNIX datagram socket (/dev/log). */
  path: string;
  facility: 'user' | 'daemon' | 'auth' | 'authpriv' | 'local0' | 'local1' | 'local2' | 'local3' | 'local4' | 'local5' | 'local6' | 'local7';
  /** APP-NAME / TAG: 1 to 32 characters [A-Za-z0-9._-]. */
  tag: string;
  format: 'rfc3164' | 'rfc5424';
}

export interface ServerConfig {
  file: string;
  /** Every address of every protocol of the service, in file order. Never empty. */
  listen: ListenAddress[];
  /** processor.filter_config, absolute (relative paths resolved against the conf file's directory). */
  filterConfig: string | null;
  /** processor.use_ssl. TLS is not served yet: the daemon refuses to start when true. */
  useTls: boolean;
  /** Present when use_ssl is true or any TLS key is set. `tls { }` values win over legacy keys. */
  tls?: TlsSettings;
  /** processor.max_record_size (our key). */
  maxRecordSize: number;
  /** processor.max_inflight_calls, max_reply_bytes, stall_timeout_ms (our keys), defaults filled in. */
  connectionLimits: ConnectionLimits;
  /** processor.workers (our key); null = daemon default. */
  workers: number | null;
  /** processor.max_connections, max_connections_per_source, connection_rate_per_source, connection_burst_per_source. */
  admission: AdmissionKeys;
  /** processor.max_sessions_per_app, max_session_object_bytes_per_app, max_random_length (our keys). */
  limits: { maxSessions: number; maxSessionObjectBytes: number; maxRandomLength: number };
  /** processor.pid_file (our key), absolute. */
  pidFile: string | null;
  /** service.user: privilege drop target (src/server/supervision/privilege.ts). */
  user: string | null;
  /** service.group. */
  group: string | null;
  /** processor.allow_root, umask (parsed), shutdown_timeout_ms (our keys; privdrop). */
  allowRoot: boolean;
  umask: number | null;
  shutdownTimeoutMs: number;
  /** service.name. */
  serviceName: string;
  /** controller.max_level, null when absent. */
  logLevel: LogLevel | null;
  /** processor.plain_parameter_mechanisms (our key): unknown mechanisms whose raw parameter passes as bytes. */
  plainParameterMechanisms: number[];
  // ---- logging, audit and metrics (issue 9 item 8; our keys) ----
  /** processor.log_format, null when absent. */
  logFormat: 'text' | 'json' | null;
  /** processor.audit_file, absolute; null: no file sink. */
  auditFile: string | null;
  /** processor.audit_stderr. */
  auditStderr: boolean;
  /** processor.audit_syslog and its facility, tag and format; null: no syslog sink. */
  auditSyslog: SyslogSettings | null;
  /** processor.metrics_listen parsed; null: no metrics endpoint. */
  metricsListen: MetricsListen | null;
  /** workload_manager threads (type "constant"), null when absent. */
  workloadThreads: number | null;
  /** workload_manager max_threads, null when absent. */
  maxThreads: number | null;
  /** The validated tree (objects have a null prototype), for logging the effective config. */
  raw: unknown;
  /** Positions of `raw`'s entries, for errors found after parsing (not-enforced keys). */
  sourceMap: SourceMap;
}

// ---- shape of the validated plain data (mirrors server-schema.ts) ----

interface AddressBlock {
  type: 'local' | 'internet';
  path?: string;
  bind?: string;
}
interface ProtocolBlock {
  name: string;
  local_chmod?: number | string;
  local_chown?: string;
  lstn_backlog?: number;
  tcp_nodelay?: boolean;
  so_keepalive?: boolean;
  address: AddressBlock[];
}
interface TlsBlock {
  algorithms?: string;
  peer_auth?: 'none' | 'optional' | 'required';
  dh_params?: { pkcs3_file?: string };
  x509?: { key?: { crt_file: string; key_file: string }; trust?: { crt_file: string } };
}
interface ProcessorBlock {
  type: 'rpc_pkcs11';
  filter_config?: string;
  use_ssl?: boolean;
  cafile?: string;
  certfile?: string;
  certkey?: string;
  cipher_suite?: string;
  dh_params?: string;
  verify_depth?: number;
  tls?: TlsBlock;
  max_record_size?: number;
  max_inflight_calls?: number;
  max_reply_bytes?: number;
  stall_timeout_ms?: number;
  workers?: number;
  max_sessions_per_app?: number;
  max_session_object_bytes_per_app?: number;
  max_random_length?: number;
  max_connections?: number;
  max_connections_per_source?: number;
  connection_rate_per_source?: number;
  connection_burst_per_source?: number;
  idle_timeout_s?: number;
  pid_file?: string;
  plain_parameter_mechanisms?: string;
  log_format?: 'text' | 'json';
  audit_file?: string;
  audit_stderr?: boolean;
  audit_syslog?: string;
  audit_syslog_facility?: SyslogSettings['facility'];
  audit_syslog_tag?: string;
  audit_syslog_format?: SyslogSettings['format'];
  metrics_listen?: string;
  allow_root?: boolean;
  umask?: string;
  shutdown_timeout_ms?: number;
}
interface ServiceBlock {
  name: string;
  user?: string;
  group?: string;
  protocol: ProtocolBlock[];
  processor: ProcessorBlock;
  workload_manager?: { type: 'dynamic' | 'constant'; threads?: number; max_threads?: number };
}
interface ServerFile {
  netplex: {
    controller?: { max_level?: LogLevel; socket_directory?: string };
    service: ServiceBlock[];
  };
}

/** Dotted paths of blocks the schema declares as lists of blocks (always arrays). */
function blockListPaths(schema: SchemaObject, prefix: string, out: Set<string>): Set<string> {
  const props = (schema.properties ?? {}) as Record<string, SchemaObject>;
  for (const [key, sub] of Object.entries(props)) {
    const p = prefix ? `${prefix}.${key}` : key;
    if (sub.type === 'array' && (sub.items as SchemaObject | undefined)?.type === 'object') {
      out.add(p);
      blockListPaths(sub.items as SchemaObject, p, out);
    } else if (sub.type === 'object') {
      blockListPaths(sub, p, out);
    }
  }
  return out;
}

let validator: ReturnType<typeof compileSchema> | undefined;
let listPaths: Set<string> | undefined;

/**
 * OCamlnet reads string modes with OCaml's int_of_string, so "0777" would be
 * decimal 777; we refuse that spelling rather than reproduce the surprise.
 */
function parseMode(v: number | string): number | string {
  if (typeof v === 'number') return v;
  const s = v.trim();
  let m: RegExpMatchArray | null;
  if ((m = /^0[oO]([0-7]+)$/.exec(s))) return parseInt(m[1], 8);
  if ((m = /^0[xX]([0-9a-fA-F]+)$/.exec(s))) return parseInt(m[1], 16);
  if ((m = /^0[bB]([01]+)$/.exec(s))) return parseInt(m[1], 2);
  if (/^(0|[1-9][0-9]*)$/.test(s)) return Number(s);
  if (/^0[0-7]+$/.test(s)) return `ambiguous mode "${s}": write "0o${s.slice(1)}"`;
  return 'must be a file mode (integer or "0o..." string)';
}

const MAX_MODE = 0o7777;

/** Parse "HOST:PORT" / "[V6]:PORT" (the shape is already checked by the schema). */
function parseBind(bind: string): { host: string; port: number } | string {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):([0-9]+)$/.exec(bind);
  if (!m) return 'must be "HOST:PORT" or "[IPV6]:PORT"';
  const port = Number(m[3]);
  if (port > 65535) return 'port must be 0..65535';
  return { host: m[1] ?? m[2], port };
}

export function parseServerConfig(text: string, file: string): ServerConfig {
  validator ??= compileSchema(serverSchema);
  listPaths ??= blockListPaths(serverSchema, '', new Set());
  const tree = parseConfigText(text, file, 'netplex');
  const { data, map } = toPlain(tree, file, { repeatBlocks: true, listPaths });
  validatePlain(validator, data, map, file);
  return build(data as unknown as ServerFile, data, map, file);
}

export function loadServerConfig(file: string): ServerConfig {
  return parseServerConfig(readConfigText(file), file);
}

function build(doc: ServerFile, data: Plain, map: SourceMap, file: string): ServerConfig {
  const baseDir = path.dirname(path.resolve(file));
  const fromConf = (p: string): string => path.resolve(baseDir, p);
  const socketDir = doc.netplex.controller?.socket_directory;
  const fromSocketDir = (p: string): string => path.resolve(socketDir ? fromConf(socketDir) : baseDir, p);
  const fail = (pointer: string, rule: string): never => {
    throw invalidAt(file, data, map, pointer, rule);
  };

  const service = doc.netplex.service[0];
  const sp = '/netplex/service/0';
  const listen: ListenAddress[] = [];
  service.protocol.forEach((proto, pi) => {
    const pp = `${sp}/protocol/${pi}`;
    let mode: number | undefined;
    if (proto.local_chmod !== undefined) {
      const r = parseMode(proto.local_chmod);
      if (typeof r === 'string') fail(`${pp}/local_chmod`, r);
      else if (!Number.isInteger(r) || r < 0 || r > MAX_MODE) fail(`${pp}/local_chmod`, 'must be 0..0o7777');
      else mode = r;
    }
    const [owner, group] = proto.local_chown ? proto.local_chown.split(':') : [undefined, undefined];
    const keys: SocketKeys = {};
    if (proto.lstn_backlog !== undefined) keys.backlog = proto.lstn_backlog;
    if (proto.tcp_nodelay !== undefined) keys.tcpNoDelay = proto.tcp_nodelay;
    if (proto.so_keepalive !== undefined) keys.keepAlive = proto.so_keepalive;
    proto.address.forEach((addr, ai) => {
      const ap = `${pp}/address/${ai}`;
      if (addr.type === 'local') {
        const a: ListenAddress = { type: 'local', path: fromSocketDir(addr.path as string), ...keys };
        if (mode !== undefined) a.mode = mode;
        if (owner !== undefined) a.owner = owner;
        if (group !== undefined) a.group = group;
        listen.push(a);
      } else {
        const r = parseBind(addr.bind as string);
        if (typeof r === 'string') fail(`${ap}/bind`, r);
        else listen.push({ type: 'internet', host: r.host, port: r.port, ...keys });
      }
    });
  });

  const proc = service.processor;
  const useTls = proc.use_ssl ?? false;
  const t = proc.tls;
  let tls: TlsSettings | undefined;
  const legacyKeys = [
    proc.cafile,
    proc.certfile,
    proc.certkey,
    proc.cipher_suite,
    proc.dh_params,
    proc.verify_depth,
  ];
  if (useTls || t !== undefined || legacyKeys.some((v) => v !== undefined)) {
    tls = {};
    const certFile = t?.x509?.key?.crt_file ?? proc.certfile;
    const keyFile = t?.x509?.key?.key_file ?? proc.certkey;
    const caFile = t?.x509?.trust?.crt_file ?? proc.cafile;
    const dhParamsFile = t?.dh_params?.pkcs3_file ?? proc.dh_params;
    if (certFile !== undefined) tls.certFile = fromConf(certFile);
    if (keyFile !== undefined) tls.keyFile = fromConf(keyFile);
    if (caFile !== undefined) tls.caFile = fromConf(caFile);
    if (dhParamsFile !== undefined) tls.dhParamsFile = fromConf(dhParamsFile);
    if (proc.cipher_suite !== undefined)
      tls.cipherSuites = proc.cipher_suite.split(':').filter((s) => s !== '');
    if (t?.algorithms !== undefined) tls.priority = t.algorithms;
    if (t?.peer_auth !== undefined) tls.peerAuth = t.peer_auth;
    if (proc.verify_depth !== undefined) tls.verifyDepth = proc.verify_depth;
  }

  const plainParameterMechanisms: number[] = [];
  if (proc.plain_parameter_mechanisms !== undefined) {
    const ptr = `${sp}/processor/plain_parameter_mechanisms`;
    for (const word of proc.plain_parameter_mechanisms.split(/[\s,]+/).filter((w) => w !== '')) {
      const v = /^(0[xX][0-9a-fA-F]+|[0-9]+)$/.test(word) ? Number(word) : constantByName(word.replace(/^cKM_/, 'CKM_'));
      if (v === undefined || !word.match(/^(0[xX]|[0-9]|[cC]KM_)/) || !Number.isSafeInteger(v) || v > 0xffffffff) {
        fail(ptr, `'${word}' is not a mechanism (CKM_ name or number)`);
      } else if (MECHANISM_SHAPES.has(v)) {
        fail(ptr, `'${word}' has a known parameter shape; list only mechanisms pkcs11proxyd does not know`);
      } else plainParameterMechanisms.push(v);
    }
  }
  let metricsListen: MetricsListen | null = null;
  if (proc.metrics_listen !== undefined) {
    const v = proc.metrics_listen;
    if (v.startsWith('/')) metricsListen = { type: 'local', path: v };
    else {
      const b = parseBind(v);
      if (typeof b === 'string') fail(`${sp}/processor/metrics_listen`, `${b} or an absolute socket path`);
      else metricsListen = { type: 'tcp', ...b };
    }
  }
  const wm = service.workload_manager;

  const cfg: ServerConfig = {
    file,
    listen,
    filterConfig: proc.filter_config !== undefined ? fromConf(proc.filter_config) : null,
    useTls,
    maxRecordSize: proc.max_record_size ?? DEFAULT_MAX_RECORD_SIZE,
    connectionLimits: {
      maxPendingCalls: proc.max_inflight_calls ?? DEFAULT_MAX_INFLIGHT_CALLS,
      maxReplyBytes: proc.max_reply_bytes ?? DEFAULT_MAX_REPLY_BYTES,
      stallTimeoutMs: proc.stall_timeout_ms ?? DEFAULT_STALL_TIMEOUT_MS,
      idleTimeoutMs: (proc.idle_timeout_s ?? 0) * 1000,
    },
    workers: proc.workers ?? null,
    admission: {
      maxConnections: proc.max_connections ?? DEFAULT_MAX_CONNECTIONS,
      maxConnectionsPerSource: proc.max_connections_per_source ?? 0,
      connectionRatePerSource: proc.connection_rate_per_source ?? 0,
      connectionBurstPerSource: proc.connection_burst_per_source ?? 0,
    },
    limits: {
      maxSessions: proc.max_sessions_per_app ?? DEFAULT_MAX_SESSIONS_PER_APP,
      maxSessionObjectBytes: proc.max_session_object_bytes_per_app ?? DEFAULT_MAX_SESSION_OBJECT_BYTES_PER_APP,
      maxRandomLength: proc.max_random_length ?? DEFAULT_MAX_RANDOM_LENGTH,
    },
    pidFile: proc.pid_file !== undefined ? fromConf(proc.pid_file) : null,
    user: service.user ?? null,
    group: service.group ?? null,
    allowRoot: proc.allow_root ?? false,
    umask: proc.umask !== undefined ? parseInt(proc.umask, 8) : null,
    shutdownTimeoutMs: proc.shutdown_timeout_ms ?? DEFAULT_SHUTDOWN_TIMEOUT_MS,
    serviceName: service.name,
    logLevel: doc.netplex.controller?.max_level ?? null,
    plainParameterMechanisms,
    logFormat: proc.log_format ?? null,
    auditFile: proc.audit_file !== undefined ? fromConf(proc.audit_file) : null,
    auditStderr: proc.audit_stderr ?? false,
    auditSyslog:
      proc.audit_syslog !== undefined
        ? {
            path: proc.audit_syslog,
            facility: proc.audit_syslog_facility ?? 'authpriv',
            tag: proc.audit_syslog_tag ?? 'pkcs11proxyd',
            format: proc.audit_syslog_format ?? 'rfc3164',
          }
        : null,
    metricsListen,
    workloadThreads: wm?.type === 'constant' ? (wm.threads ?? null) : null,
    maxThreads: wm?.max_threads ?? null,
    raw: data,
    sourceMap: map,
  };
  if (tls) cfg.tls = tls;
  return cfg;
}
