/**
 * Security audit trail: one event per security-relevant fact, written by the
 * sink the daemon configures (one JSON object per line). Any layer or the
 * transport calls `audit()`; with no sink configured the call is a no-op.
 *
 * Invariant: events carry identities, CK_RVs, call and rule names, object
 * classes, handles and public labels; never a PIN, a key value or any other
 * attribute value, and never argument bytes.
 */

/** Event kinds; a sink may filter on them. */
export const AUDIT_EVENTS = [
  'connection', // accepted connection with its identity
  'connection_closed',
  'authentication_failure', // TLS handshake refused (no certificate, unknown CA, expired, revoked, timeout)
  'authorization_refused', // identity not allowed the alias (C_LoadModule) or the slot
  'login', // C_Login success or failure (rv), throttling and lock-out
  'call_refused', // the filter refused a call: rule and CK_RV
  'limit', // a limit refused a call or closed a connection
  'object_created', // C_GenerateKey, C_GenerateKeyPair, C_CreateObject, C_CopyObject, C_UnwrapKey, C_DeriveKey
  'object_destroyed', // C_DestroyObject
  'config_reload', // SIGHUP: file, outcome
  'pool_member_state', // a pool member went down (reason) or came back up
  'privilege_drop',
  'module_helper', // a module helper process (module_isolation "helper") ready or exited: alias, pid, state
  'startup',
  'shutdown',
] as const;
export type AuditEventKind = (typeof AUDIT_EVENTS)[number];

type AuditValue = string | number | boolean | null | undefined | readonly string[] | readonly number[];

export interface AuditEvent {
  readonly event: AuditEventKind;
  /** Everything else: flat, public values only (see the invariant above). */
  readonly [field: string]: AuditValue;
}

export type AuditSink = (e: AuditEvent) => void;

let sink: AuditSink | null = null;

/** Installs the process's sink (null: audit off). */
export function setAuditSink(s: AuditSink | null): void {
  sink = s;
}

export function auditEnabled(): boolean {
  return sink !== null;
}

export function audit(e: AuditEvent): void {
  if (sink !== null) sink(e);
}
