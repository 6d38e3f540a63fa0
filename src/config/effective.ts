/**
 * The configuration that took effect, as log lines: what the daemon serves,
 * with which modules, limits and policy. No secrets: PINs never appear in a
 * configuration, and wrapping_format_key is shown only as set or not.
 */
import type { DaemonConfig } from './daemon-config';
import { NOT_ENFORCED, matchPointers } from './not-enforced';
import type { Plain } from './syntax';
import { defaultBurst } from '../server/transport/limits';
import type { TlsServerSettings } from '../server/transport/types';

export interface EffectiveRuntime {
  workers: number;
  trace: boolean;
  traceFormat?: 'text' | 'json';
  maxRecordSize: number;
}

const hex = (v: number): string => `0x${v.toString(16)}`;
const off = (v: number): string => (v > 0 ? String(v) : 'off');

export function effectiveConfiguration(dc: DaemonConfig, rt: EffectiveRuntime, endpoints: readonly string[], version: string): string[] {
  const { server: sc, filter: fc } = dc;
  // Policy keys present with their neutral value: shown so a reader sees they were read, not dropped.
  const neutral: string[] = [];
  for (const e of NOT_ENFORCED) {
    if (e.file !== 'filter') continue;
    for (const m of matchPointers(fc.data, e.pointer)) neutral.push(`${m.pointer.slice(1)} (neutral)`);
  }
  const raw = fc.raw as { [k: string]: Plain };
  const lines = [
    `pkcs11proxyd ${version}: effective configuration (${sc.file}, ${fc.file})`,
    `  listen: ${endpoints.join(', ')}`,
    `  modules: ${fc.modules.map((m) => `${m.alias}=${m.path}${m.isolation?.mode === 'helper' ? ` (helper process, call_timeout_ms ${m.isolation.callTimeoutMs})` : ''}`).join(', ')} (default ${fc.defaultModule})`,
    ...(fc.pools.length + fc.slotNat.length > 0
      ? [
        `  pools: ${fc.pools.map((p) => `${p.name} = ${p.strategy} [${p.members.map((m) => `${m.alias} ${m.uri}${m.weight !== 1 ? ` weight ${m.weight}` : ''}`).join(', ')}]`).join('; ') || 'none'}; ` +
            `slot_nat: ${fc.slotNat.map((n) => `${n.name} = [${n.aliases.join(', ')}]`).join('; ') || 'none'} (member aliases reserved)`,
      ]
      : []),
    `  workers: ${rt.workers === 0 ? 'none (served in the main process)' : rt.workers}`,
    `  limits: max_record_size ${rt.maxRecordSize}; per connection: max_inflight_calls ${sc.connectionLimits.maxPendingCalls}, ` +
      `max_reply_bytes ${sc.connectionLimits.maxReplyBytes}, stall_timeout_ms ${sc.connectionLimits.stallTimeoutMs}; ` +
      `per application: max_sessions_per_app ${sc.limits.maxSessions}, ` +
      `max_session_object_bytes_per_app ${sc.limits.maxSessionObjectBytes}, max_random_length ${sc.limits.maxRandomLength}`,
    `  connection limits: max_connections ${off(sc.admission.maxConnections)}, max_connections_per_source ${off(sc.admission.maxConnectionsPerSource)} ` +
      `(source: Unix uid, TCP/TLS address), connection_rate_per_source ${
        sc.admission.connectionRatePerSource > 0
          ? `${sc.admission.connectionRatePerSource}/s burst ${sc.admission.connectionBurstPerSource || defaultBurst(sc.admission.connectionRatePerSource)}`
          : 'off'
      }, idle_timeout_s ${off(sc.connectionLimits.idleTimeoutMs / 1000)}`,
    `  mechanism parameters: table of known shapes${
      sc.plainParameterMechanisms.length > 0 ? `; plain bytes also for ${sc.plainParameterMechanisms.map(hex).join(', ')}` : ''
    }`,
    `  policy: ${policyKeys(fc.data)}${neutral.length > 0 ? `; present: ${neutral.join(', ')}` : ''} (pkcs11proxyd -check-filter FILE prints the compiled rules)`,
    `  filter debug ${fc.debug}${raw.log_subchannel !== undefined ? `, log_subchannel ${JSON.stringify(raw.log_subchannel)}` : ''}`,
    `  service: ${JSON.stringify(sc.serviceName)}; ${tlsLine(dc.tls)}; log level ${sc.logLevel ?? 'default'}; trace ${rt.trace ? (rt.traceFormat === 'json' ? 'on (JSON lines)' : 'on') : 'off'}`,
    // logging, audit and metrics (issue 9 item 8)
    `  log format ${sc.logFormat ?? 'text'}; audit: ${[sc.auditFile !== null ? `file ${sc.auditFile}` : '', sc.auditStderr ? 'stderr' : '', sc.auditSyslog !== null ? `syslog ${sc.auditSyslog.path} (${sc.auditSyslog.facility}, ${sc.auditSyslog.format})` : ''].filter((x) => x !== '').join(', ') || 'off'}; metrics: ${
      sc.metricsListen === null ? 'off' : sc.metricsListen.type === 'local' ? sc.metricsListen.path : `${sc.metricsListen.host}:${sc.metricsListen.port}`
    }`,
  ];
  return lines;
}

/** The filter.conf keys with rules (all but modules and debug), or pass-through. */
function policyKeys(data: unknown): string {
  const keys = data !== null && typeof data === 'object' ? Object.keys(data).filter((k) => k !== 'modules' && k !== 'debug') : [];
  return keys.length > 0 ? `rules from ${keys.join(', ')}` : 'pass-through (no rule)';
}

/** TLS summary: versions, peer authentication, material files (no secret: paths only). */
function tlsLine(t: TlsServerSettings | null): string {
  if (t === null) return 'tls off';
  const v = t.minVersion === t.maxVersion ? t.minVersion : `${t.minVersion}-${t.maxVersion}`;
  return `tls ${v}, client certificates ${t.peerAuth}, cert ${t.certFile}${t.caFile ? `, CAs ${t.caFile}` : ''}${t.crlFile ? `, CRL ${t.crlFile}` : ''}, handshake timeout ${t.handshakeTimeoutMs} ms`;
}
