import { DEFAULT_MAX_RANDOM_LENGTH, DEFAULT_MAX_SESSION_OBJECT_BYTES_PER_APP, DEFAULT_MAX_SESSIONS_PER_APP } from '../config/server-schema';
import type { SyslogSettings } from '../config/server-config';
import type { AdmissionLimits } from './transport/limits';
import type { ListenAddress, TlsServerSettings } from './transport/types';
import type { PrivilegeSettings } from './supervision/privilege';
import type { VirtualAliasSpec } from '../bindings/pool/pool-spec';
import type { ModuleSpec } from '../bindings/open-backends';

/** Per-connection bounds (processor keys max_inflight_calls, max_reply_bytes, stall_timeout_ms). */
export interface ConnectionLimits {
  maxPendingCalls: number;
  maxReplyBytes: number;
  stallTimeoutMs: number;
  /** idle_timeout_s in ms; 0: off (limits.ts IdleWatch). Absent in settings made before the key existed. */
  idleTimeoutMs?: number;
}

/** Per-application bounds (processor keys in pkcs11proxyd.conf); see DEFAULT_APP_LIMITS. */
export interface AppLimits {
  /** Open sessions per application; C_OpenSession beyond it answers CKR_SESSION_COUNT. */
  maxSessions: number;
  /** Session-object bytes per application (attribute bytes given + SESSION_OBJECT_OVERHEAD each); beyond: CKR_DEVICE_MEMORY. */
  maxSessionObjectBytes: number;
  /** Longest C_GenerateRandom output; longer asks answer CKR_ARGUMENTS_BAD. */
  maxRandomLength: number;
}

export const DEFAULT_APP_LIMITS: Readonly<AppLimits> = Object.freeze({
  maxSessions: DEFAULT_MAX_SESSIONS_PER_APP,
  maxSessionObjectBytes: DEFAULT_MAX_SESSION_OBJECT_BYTES_PER_APP,
  maxRandomLength: DEFAULT_MAX_RANDOM_LENGTH,
});

/** What one daemon process needs to serve; plain data so it can be handed to workers. */
export interface DaemonSettings {
  listen: ListenAddress[];
  /** filter.conf `modules`, with each alias's `module_isolation` (absent: in the worker). */
  modules: ModuleSpec[];
  /** filter.conf `pools` and `slot_nat` (src/bindings/pool); their member aliases are not loadable directly. Absent: none. */
  virtualAliases?: VirtualAliasSpec[];
  defaultAlias: string;
  /** -debug-pkcs11 */
  trace: boolean;
  /** -debug-pkcs11-json: trace records as one JSON object per line (stderr); absent: text. */
  traceFormat?: 'text' | 'json';
  /** Worker processes; 0 serves in the main process. */
  workers: number;
  maxRecordSize: number;
  /** processor.plain_parameter_mechanisms: unknown mechanisms whose raw parameter passes as bytes. */
  plainParameterMechanisms?: number[];
  /** Absent: the transport's defaults. */
  connectionLimits?: ConnectionLimits;
  /**
   * filter.conf to enforce. With workers, the primary reads it (at start and on
   * SIGHUP) and hands each worker the text in force; a worker never reads the
   * file itself, so one that restarts after an unapplied edit runs the policy
   * of its siblings. Absent: no policy (tests, benchmarks).
   */
  filterFile?: string;
  /** Missing: DEFAULT_APP_LIMITS. */
  limits?: AppLimits;
  // ---- logging, audit and metrics (issue 9 item 8) ----
  /** processor.log_format; PKCS11PROXYD_LOG_FORMAT wins. Missing: text. */
  logFormat?: 'text' | 'json';
  /** Log threshold every process uses (controller.max_level, PKCS11PROXYD_LOG wins). Missing: PKCS11PROXYD_LOG or info. */
  logLevel?: 'debug' | 'info' | 'warn' | 'error';
  /** Audit sinks; missing or all off: audit() is a no-op and the audit layer is not in the stack. */
  audit?: AuditSettings;
  /** Prometheus endpoint (the primary serves it; workers answer its scrapes over IPC). Missing: no metrics. */
  metrics?: MetricsSettings;
  /** Admission limits applied where connections are accepted (limits.ts); absent: DEFAULT_ADMISSION_LIMITS. */
  admission?: AdmissionLimits;
  /** Privilege drop of every process after binding and loading (privilege.ts). Absent: nothing changes (tests, benchmarks). */
  privilege?: PrivilegeSettings;
  /** SIGTERM: how long calls in flight may take before their connections are closed. Absent: close at once. */
  shutdownTimeoutMs?: number;
  /** processor.use_ssl and its keys: TLS on every internet address. Absent: plain TCP. */
  tls?: TlsServerSettings;
}

export interface AuditSettings {
  /** Absolute path, appended to with mode 0600; null: no file. */
  file: string | null;
  stderr: boolean;
  /** Local syslog datagram socket (audit-sinks.ts SyslogSink); missing or null: none. */
  syslog?: SyslogSettings | null;
}


export interface MetricsSettings {
  listen: { type: 'tcp'; host: string; port: number } | { type: 'local'; path: string };
}
