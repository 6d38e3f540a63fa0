/**
 * processor.use_ssl and its keys, resolved into the settings the TLS
 * terminator uses (transport/tls.ts). Caml Crush's two spellings are read:
 * the OCamlnet 4 `tls { x509 { key {...} trust {...} revoke {...} } peer_auth
 * algorithms dh_params }` block and the legacy OpenSSL keys (`cafile`,
 * `certfile`, `certkey`, `cipher_suite`, `dh_params`, `ec_curve_name`,
 * `verify_depth`); the block wins. Ours: `tls.min_version`,
 * `tls.handshake_timeout_ms`.
 *
 * Every error names the key at file:line:column. The material itself is read
 * and checked here too (a key that does not match its certificate refuses to
 * start, at the key that named the file).
 */
import path from 'path';
import type { TlsServerSettings } from '../server/transport/types';
import { createTlsContext, DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS, TlsMaterialError } from '../server/transport/tls';
import type { ServerConfig } from './server-config';
import type { Plain } from './syntax';
import { invalidAt } from './validate';

type Block = { readonly [k: string]: Plain };

function blockAt(v: Plain | undefined): Block | undefined {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Block) : undefined;
}

/** TLS versions pkcs11proxyd serves: never below 1.2. */
const VERSIONS = ['TLSv1.2', 'TLSv1.3'] as const;
type Version = (typeof VERSIONS)[number];

/**
 * TLS 1.2 suites: ECDHE with an AEAD only. This list is inside what every
 * GnuTLS priority string of the SECURE/NORMAL/PFS families allows once the
 * usual removals are applied (-RSA key exchange, -DHE-DSS, -CAMELLIA, -3DES,
 * -ARCFOUR, -SHA1 MACs), so a Caml Crush `algorithms` value never widens what
 * is offered. TLS 1.3 suites are OpenSSL's (all AEAD).
 */
export const TLS12_DEFAULT_CIPHERS = 'ECDHE+AESGCM:ECDHE+CHACHA20';

/** GnuTLS priority keywords that select a base level; each allows at least our TLS 1.2 list. */
const PRIORITY_LEVELS = new Set(['SECURE256', 'SECURE192', 'SECURE128', 'SECURE', 'NORMAL', 'PFS', 'PERFORMANCE', 'SUITEB128', 'SUITEB192']);

/**
 * The TLS versions a GnuTLS priority string (`tls.algorithms`) enables, or a
 * rule text when a token cannot be honoured. Removals of algorithms our TLS
 * 1.2 list never offers are accepted (they are already met); additions of
 * algorithms outside it are refused, since they would not be served.
 */
export function versionsOfPriority(priority: string): Set<Version> | string {
  const on = new Set<Version>(VERSIONS);
  let sawLevel = false;
  for (const raw of priority.split(':')) {
    const tok = raw.trim();
    if (tok === '') continue;
    const level = tok.replace(/^\+/, '');
    if (PRIORITY_LEVELS.has(level) || tok.startsWith('%')) {
      sawLevel ||= PRIORITY_LEVELS.has(level);
      continue;
    }
    const m = /^([+-])VERS-(.+)$/.exec(tok);
    if (m !== null) {
      const which: Version[] | null =
        m[2] === 'ALL' || m[2] === 'TLS-ALL' ? [...VERSIONS] : m[2] === 'TLS1.2' ? ['TLSv1.2'] : m[2] === 'TLS1.3' ? ['TLSv1.3'] : /^(TLS1\.[01]|SSL3\.0|DTLS.*)$/.test(m[2]) ? [] : null;
      if (which === null) return `unknown protocol version token '${tok}'`;
      if (which.length === 0 && m[1] === '+') return `'${tok}': pkcs11proxyd serves TLS 1.2 and 1.3 only`;
      for (const v of which) {
        if (m[1] === '+') on.add(v);
        else on.delete(v);
      }
      continue;
    }
    if (tok.startsWith('-') || tok.startsWith('!')) continue;
    return `'${tok}': pkcs11proxyd cannot add algorithms to its TLS 1.2 list (${TLS12_DEFAULT_CIPHERS}); use cipher_suite (OpenSSL syntax)`;
  }
  if (!sawLevel) return 'a GnuTLS priority string starts with a level (SECURE256, SECURE128, NORMAL, PFS...)';
  return on;
}

/**
 * The TLS settings of the daemon, or null when use_ssl is false (Caml Crush
 * reads the TLS keys only with use_ssl; they are inert then).
 */
export function resolveTlsServer(sc: ServerConfig): TlsServerSettings | null {
  if (!sc.useTls) return null;
  const data = sc.raw as Plain;
  const sp = '/netplex/service/0/processor';
  // Validated by the schema: one service, with a processor block.
  const service = ((blockAt(data)!.netplex as Block).service as Plain[])[0] as Block;
  const proc = blockAt(service.processor) ?? {};
  const fail = (pointer: string, rule: string, at: 'key' | 'value' = 'value'): never => {
    throw invalidAt(sc.file, data, sc.sourceMap, pointer, rule, at);
  };
  const baseDir = path.dirname(path.resolve(sc.file));
  const t = blockAt(proc.tls);
  const x509 = blockAt(t?.x509);
  const str = (b: Block | undefined, k: string): string | undefined => (typeof b?.[k] === 'string' ? (b[k] as string) : undefined);
  /** The value and the pointer of the first spelling present. */
  const pick = (...c: Array<[string | undefined, string]>): [string, string] | undefined => {
    for (const [v, p] of c) if (v !== undefined) return [v, p];
    return undefined;
  };
  const cert = pick([str(blockAt(x509?.key), 'crt_file'), `${sp}/tls/x509/key/crt_file`], [str(proc, 'certfile'), `${sp}/certfile`]);
  const key = pick([str(blockAt(x509?.key), 'key_file'), `${sp}/tls/x509/key/key_file`], [str(proc, 'certkey'), `${sp}/certkey`]);
  const ca = pick([str(blockAt(x509?.trust), 'crt_file'), `${sp}/tls/x509/trust/crt_file`], [str(proc, 'cafile'), `${sp}/cafile`]);
  const crl = pick([str(blockAt(x509?.revoke), 'crl_file'), `${sp}/tls/x509/revoke/crl_file`]);
  const dh = pick([str(blockAt(t?.dh_params), 'pkcs3_file'), `${sp}/tls/dh_params/pkcs3_file`], [str(proc, 'dh_params'), `${sp}/dh_params`]);
  if (cert === undefined || key === undefined) {
    fail(`${sp}/use_ssl`, 'TLS needs a server certificate and key: tls { x509 { key { crt_file = "..."; key_file = "..." } } } (or certfile and certkey)', 'key');
  }
  const peerAuth = (str(t, 'peer_auth') ?? 'required') as TlsServerSettings['peerAuth'];
  if (peerAuth !== 'none' && ca === undefined) {
    fail(t?.peer_auth !== undefined ? `${sp}/tls/peer_auth` : `${sp}/use_ssl`, `peer_auth "${peerAuth}" needs trusted client CAs: tls { x509 { trust { crt_file = "..." } } } (or cafile)`, 'key');
  }
  const local = sc.listen.findIndex((a) => a.type === 'local');
  if (local >= 0) {
    fail(`${sp}/use_ssl`, 'pkcs11proxyd serves TLS on internet addresses only; a local socket is authenticated by its peer credentials: serve it from a service without use_ssl', 'key');
  }

  // Versions: tls.min_version (ours) and the VERS tokens of tls.algorithms (GnuTLS) must agree.
  let versions = new Set<Version>(['TLSv1.3']);
  const algorithms = str(t, 'algorithms');
  if (algorithms !== undefined) {
    const r = versionsOfPriority(algorithms);
    if (typeof r === 'string') fail(`${sp}/tls/algorithms`, r);
    else versions = r;
  }
  const minVersion = str(t, 'min_version');
  if (minVersion !== undefined) {
    const min: Version = minVersion === '1.2' ? 'TLSv1.2' : 'TLSv1.3';
    const allowed = VERSIONS.filter((v) => v >= min);
    versions = algorithms !== undefined ? new Set([...versions].filter((v) => allowed.includes(v))) : new Set(allowed);
  }
  if (versions.size === 0) fail(`${sp}/tls/${minVersion !== undefined ? 'min_version' : 'algorithms'}`, 'no TLS version is left (pkcs11proxyd serves 1.2 and 1.3)');
  const sorted = VERSIONS.filter((v) => versions.has(v));

  const out: TlsServerSettings = {
    certFile: path.resolve(baseDir, cert![0]),
    keyFile: path.resolve(baseDir, key![0]),
    minVersion: sorted[0],
    maxVersion: sorted[sorted.length - 1],
    peerAuth,
    handshakeTimeoutMs: typeof t?.handshake_timeout_ms === 'number' ? t.handshake_timeout_ms : DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS,
    ciphers: str(proc, 'cipher_suite') ?? TLS12_DEFAULT_CIPHERS,
  };
  if (ca !== undefined) out.caFile = path.resolve(baseDir, ca[0]);
  if (crl !== undefined) out.crlFile = path.resolve(baseDir, crl[0]);
  if (dh !== undefined) out.dhParamsFile = path.resolve(baseDir, dh[0]);
  const curve = str(proc, 'ec_curve_name');
  if (curve !== undefined) out.ecdhCurve = curve;
  if (typeof proc.verify_depth === 'number') out.verifyDepth = proc.verify_depth;
  const allowedDir = str(proc, 'allowed_clients_cert_path');
  if (allowedDir !== undefined) out.allowedClientsCertPath = path.resolve(baseDir, allowedDir);

  try {
    createTlsContext(out);
  } catch (e) {
    if (!(e instanceof TlsMaterialError)) throw e;
    const where: Record<TlsMaterialError['setting'], string | undefined> = {
      certFile: cert?.[1],
      keyFile: key?.[1],
      caFile: ca?.[1],
      crlFile: crl?.[1],
      dhParamsFile: dh?.[1],
      ciphers: `${sp}/cipher_suite`,
      ecdhCurve: `${sp}/ec_curve_name`,
      allowedClientsCertPath: `${sp}/allowed_clients_cert_path`,
    };
    fail(where[e.setting] ?? `${sp}/use_ssl`, e.message);
  }
  return out;
}
