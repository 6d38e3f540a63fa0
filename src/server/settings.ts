import type { ListenAddress } from './transport/types';

/** Per-connection bounds (processor keys max_inflight_calls, max_reply_bytes, stall_timeout_ms). */
export interface ConnectionLimits {
  maxPendingCalls: number;
  maxReplyBytes: number;
  stallTimeoutMs: number;
}

/** What one daemon process needs to serve; plain data so it can be handed to workers. */
export interface DaemonSettings {
  listen: ListenAddress[];
  modules: Array<{ alias: string; path: string }>;
  defaultAlias: string;
  /** -debug-pkcs11 */
  trace: boolean;
  /** Worker processes; 0 serves in the main process. */
  workers: number;
  maxRecordSize: number;
  /** processor.plain_parameter_mechanisms: unknown mechanisms whose raw parameter passes as bytes. */
  plainParameterMechanisms?: number[];
  /** Absent: the transport's defaults. */
  connectionLimits?: ConnectionLimits;
}
