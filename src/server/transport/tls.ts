/**
 * TLS termination. A worker (or, with `-workers 0`, the one process) wraps
 * each raw TCP socket of a TLS address here; bytes its previous owner already
 * read (the ClientHello the primary peeked to route it) are given back first.
 * Only a connection whose handshake finished and whose client certificate
 * verified (as `peer_auth` asks) reaches the RPC layer, with a PeerIdentity
 * naming that certificate. Every refusal is an `authentication_failure`
 * audit event and closes the socket; other connections are not touched.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import type net from 'node:net';
import tls from 'node:tls';
import { ProxyError } from '../../errors';
import { audit } from '../audit';
import { errorMessage } from '../../pkcs11/errors';
import type { PeerCertificate, PeerIdentity, RpcLogger, TlsServerSettings } from './types';

export type { TlsServerSettings } from './types';

export const DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS = 10_000;

/** OpenSSL's TLS 1.3 suites (all AEAD). */
const TLS13_SUITES = 'TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256';

export class TlsMaterialError extends ProxyError {
  readonly code = 'TLS_MATERIAL';
  /** Which setting the error is about, so the config loader can point at its key. */
  constructor(
    readonly setting: 'certFile' | 'keyFile' | 'caFile' | 'crlFile' | 'dhParamsFile' | 'ciphers' | 'ecdhCurve' | 'allowedClientsCertPath',
    message: string,
  ) {
    super(message);
  }
}

function readMaterial(setting: TlsMaterialError['setting'], file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw new TlsMaterialError(setting, `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
}

const OPENSSL_ERROR_SETTING: Array<[RegExp, TlsMaterialError['setting']]> = [
  [/KEY_VALUES_MISMATCH|key values mismatch/i, 'keyFile'],
  [/no cipher match|NO_CIPHER_MATCH/i, 'ciphers'],
  [/curve|group/i, 'ecdhCurve'],
  [/dh/i, 'dhParamsFile'],
  [/crl/i, 'crlFile'],
];

/**
 * Reads the files and checks them by building a secure context: a missing
 * file, a key that does not match its certificate or an unusable cipher list
 * throws TlsMaterialError naming the setting. Returns the options the server
 * takes (tls.Server builds its context from options, not from a context).
 */
export function createTlsContext(s: TlsServerSettings): tls.SecureContextOptions {
  const o: tls.SecureContextOptions = {
    cert: readMaterial('certFile', s.certFile),
    key: readMaterial('keyFile', s.keyFile),
    minVersion: s.minVersion,
    maxVersion: s.maxVersion,
  };
  if (s.caFile !== undefined) o.ca = readMaterial('caFile', s.caFile);
  if (s.crlFile !== undefined) o.crl = readMaterial('crlFile', s.crlFile);
  if (s.dhParamsFile !== undefined) o.dhparam = readMaterial('dhParamsFile', s.dhParamsFile);
  // Node's `ciphers` sets the TLS 1.3 suites too, from the TLS_* names in it: keep OpenSSL's
  // TLS 1.3 suites unless the list names its own.
  if (s.ciphers !== undefined) o.ciphers = /(^|:)TLS_/.test(s.ciphers) ? s.ciphers : `${TLS13_SUITES}:${s.ciphers}`;
  if (s.ecdhCurve !== undefined) o.ecdhCurve = s.ecdhCurve;
  if (!/-----BEGIN [A-Z ]*CERTIFICATE-----/.test(o.cert!.toString('latin1'))) {
    throw new TlsMaterialError('certFile', `${s.certFile}: no PEM certificate in it`);
  }
  if (o.ca !== undefined && !/-----BEGIN CERTIFICATE-----/.test(o.ca.toString('latin1'))) {
    throw new TlsMaterialError('caFile', `${s.caFile}: no PEM certificate in it`);
  }
  if (s.allowedClientsCertPath !== undefined) allowedClientCertificates(s.allowedClientsCertPath);
  try {
    tls.createSecureContext(o);
    return o;
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    const code = (e as { code?: string }).code ?? '';
    const setting = OPENSSL_ERROR_SETTING.find(([re]) => re.test(code) || re.test(msg))?.[1] ?? 'keyFile';
    const file = { certFile: s.certFile, keyFile: s.keyFile, caFile: s.caFile, crlFile: s.crlFile, dhParamsFile: s.dhParamsFile }[
      setting as 'certFile'
    ];
    throw new TlsMaterialError(setting, `${file ?? setting}: ${setting === 'keyFile' && /mismatch/i.test(msg) ? 'the private key does not match the certificate' : msg}`);
  }
}

/**
 * SHA-256 of every certificate (PEM, any number per file) in the files of
 * `dir`: Caml Crush's `allowed_clients_cert_path`, a list of the client
 * certificates let in (on top of the CA check).
 */
export function allowedClientCertificates(dir: string): ReadonlySet<string> {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (e) {
    throw new TlsMaterialError('allowedClientsCertPath', `cannot read ${dir}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  const out = new Set<string>();
  for (const n of names.sort()) {
    const file = `${dir}/${n}`;
    if (!fs.statSync(file).isFile()) continue;
    const text = fs.readFileSync(file, 'latin1');
    for (const m of text.matchAll(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g)) {
      try {
        out.add(crypto.createHash('sha256').update(new crypto.X509Certificate(m[0]).raw).digest('hex'));
      } catch {
        throw new TlsMaterialError('allowedClientsCertPath', `${file}: a certificate in it cannot be parsed`);
      }
    }
  }
  return out;
}

/** Audit reason of a refused handshake. */
export type TlsFailureReason =
  | 'no_certificate'
  | 'unknown_ca'
  | 'expired'
  | 'not_yet_valid'
  | 'revoked'
  | 'bad_certificate'
  | 'chain_too_long'
  | 'not_allowed'
  | 'handshake_timeout'
  | 'handshake_failed';

/** OpenSSL verify error codes (as Node names them) -> reason. */
function verifyReason(code: string): TlsFailureReason {
  switch (code) {
    case 'UNABLE_TO_GET_ISSUER_CERT':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
      return 'unknown_ca';
    case 'CERT_HAS_EXPIRED':
      return 'expired';
    case 'CERT_NOT_YET_VALID':
      return 'not_yet_valid';
    case 'CERT_REVOKED':
      return 'revoked';
    default:
      return 'bad_certificate';
  }
}

/** Public fields of a verified certificate (types.ts PeerCertificate). */
export function peerCertificateOf(c: tls.DetailedPeerCertificate): PeerCertificate {
  const x = new crypto.X509Certificate(c.raw);
  const spki = x.publicKey.export({ type: 'spki', format: 'der' });
  const dn = (s: string): string =>
    s
      .split('\n')
      .filter((l) => l !== '')
      .reverse()
      .join(',');
  const san = (x.subjectAltName ?? '')
    .split(', ')
    .filter((e) => e !== '')
    .map((e) => e.replace(/^IP Address:/, 'IP:'));
  return Object.freeze({
    subject: dn(x.subject),
    issuer: dn(x.issuer),
    san: Object.freeze(san),
    sha256: crypto.createHash('sha256').update(c.raw).digest('hex'),
    spkiSha256: crypto.createHash('sha256').update(spki).digest('hex'),
    serial: x.serialNumber.toUpperCase(),
    notAfter: new Date(x.validTo).toISOString(),
  });
}

/** One-line form of an identity for logs and audit events. */
export function describeCertificate(c: PeerCertificate | undefined): string {
  return c === undefined ? 'no certificate' : `${c.subject} (sha256 ${c.sha256.slice(0, 16)}...)`;
}

export interface TlsTerminatorOptions {
  settings: TlsServerSettings;
  log: RpcLogger;
  /** A connection whose handshake and certificate check passed. */
  onSecure(sock: tls.TLSSocket, peer: Extract<PeerIdentity, { transport: 'tls' }>): void;
}

/**
 * Terminates TLS for sockets it is given. A tls.Server that never listens
 * does the handshakes: its 'connection' path is the one Node uses for its own
 * accepted sockets, including feeding back bytes already read (unshift).
 */
export class TlsTerminator {
  private readonly server: tls.Server;
  /** Raw sockets whose handshake has not finished. */
  private readonly handshaking = new Set<net.Socket>();
  private settings: TlsServerSettings;
  private allowed: ReadonlySet<string> | null;

  constructor(private readonly o: TlsTerminatorOptions) {
    const s = o.settings;
    this.settings = s;
    const material = createTlsContext(s);
    this.allowed = s.allowedClientsCertPath !== undefined ? allowedClientCertificates(s.allowedClientsCertPath) : null;
    this.server = tls.createServer({
      ...material,
      requestCert: s.peerAuth !== 'none',
      // The certificate is judged in onSecureConnection, so that each refusal has its audited reason.
      rejectUnauthorized: false,
      handshakeTimeout: s.handshakeTimeoutMs,
      allowHalfOpen: true,
    });
    if (s.ticketKeys !== undefined) this.server.setTicketKeys(Buffer.from(s.ticketKeys, 'hex'));
    this.server.on('secureConnection', (sock: tls.TLSSocket) => this.secured(sock));
    this.server.on('tlsClientError', (err: Error & { code?: string }, sock: tls.TLSSocket) => {
      const reason: TlsFailureReason = err.code === 'ERR_TLS_HANDSHAKE_TIMEOUT' ? 'handshake_timeout' : 'handshake_failed';
      this.refuse(sock, reason, err.code ?? err.message);
    });
  }

  /** Starts the handshake on `raw`; `initial`: bytes already read from it, handled first. */
  accept(raw: net.Socket, initial?: Buffer): void {
    raw.on('error', () => raw.destroy());
    this.handshaking.add(raw);
    raw.once('close', () => this.handshaking.delete(raw));
    if (initial !== undefined && initial.length > 0) raw.unshift(initial);
    this.server.emit('connection', raw);
  }

  /** Drops the connections still in their handshake (shutdown). */
  close(): void {
    for (const raw of this.handshaking) raw.destroy();
    this.handshaking.clear();
  }

  /** New material for new connections (SIGHUP); throws TlsMaterialError and keeps the old one. */
  reload(settings: TlsServerSettings): void {
    const material = createTlsContext(settings);
    const allowed = settings.allowedClientsCertPath !== undefined ? allowedClientCertificates(settings.allowedClientsCertPath) : null;
    this.server.setSecureContext(material);
    if (settings.ticketKeys !== undefined) this.server.setTicketKeys(Buffer.from(settings.ticketKeys, 'hex'));
    this.settings = settings;
    this.allowed = allowed;
  }

  private secured(sock: tls.TLSSocket): void {
    const s = this.settings;
    const parent = (sock as unknown as { _parent?: net.Socket })._parent;
    if (parent !== undefined) this.handshaking.delete(parent);
    const address = sock.remoteAddress ?? '';
    const port = sock.remotePort ?? 0;
    let certificate: PeerCertificate | undefined;
    if (s.peerAuth !== 'none') {
      const c = sock.getPeerCertificate(true);
      const present = c !== null && typeof c === 'object' && c.raw !== undefined;
      if (!present) {
        if (s.peerAuth === 'required') return this.refuse(sock, 'no_certificate', 'no client certificate');
      } else if (!sock.authorized) {
        // 'optional' lets a client without a certificate in; one that shows a bad certificate stays out.
        const code = String(sock.authorizationError ?? 'unknown');
        return this.refuse(sock, verifyReason(code), code, describeSubject(c));
      } else {
        certificate = peerCertificateOf(c);
        if (s.verifyDepth !== undefined && chainDepth(c) > s.verifyDepth + 2) {
          return this.refuse(sock, 'chain_too_long', `chain longer than verify_depth ${s.verifyDepth}`, certificate.subject);
        }
        if (this.allowed !== null && !this.allowed.has(certificate.sha256)) {
          return this.refuse(sock, 'not_allowed', 'not in allowed_clients_cert_path', certificate.subject);
        }
      }
    }
    const peer: Extract<PeerIdentity, { transport: 'tls' }> = { transport: 'tls', address, port };
    if (certificate !== undefined) peer.certificate = certificate;
    audit({
      event: 'connection',
      transport: 'tls',
      remote: remoteOf(address, port),
      protocol: sock.getProtocol() ?? undefined,
      cipher: sock.getCipher()?.name,
      resumed: sock.isSessionReused(),
      subject: certificate?.subject,
      issuer: certificate?.issuer,
      sha256: certificate?.sha256,
      identity: describeCertificate(certificate),
    });
    this.o.onSecure(sock, peer);
  }

  private refuse(sock: tls.TLSSocket, reason: TlsFailureReason, detail: string, subject?: string): void {
    const remote = remoteOf(sock.remoteAddress ?? '', sock.remotePort ?? 0);
    audit({ event: 'authentication_failure', transport: 'tls', remote, reason, detail, subject });
    this.o.log('warn', `tls ${remote}: refused (${reason}: ${detail}${subject !== undefined ? `, subject ${subject}` : ''})`);
    sock.destroy();
  }
}

/** Certificates from the client's up to the self-signed root, as verified (verify_depth counts the CAs between them). */
function chainDepth(c: tls.DetailedPeerCertificate): number {
  let n = 1;
  for (let x = c; x.issuerCertificate !== undefined && x.issuerCertificate !== x && n < 64; x = x.issuerCertificate) n += 1;
  return n;
}

function describeSubject(c: tls.PeerCertificate): string | undefined {
  try {
    return peerCertificateOf(c as tls.DetailedPeerCertificate).subject;
  } catch {
    return undefined;
  }
}

function remoteOf(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/** Reloads `server`'s TLS material from the files of `settings`, logging and auditing the outcome. */
export function reloadTlsMaterial(server: { reloadTls(s: TlsServerSettings): void }, settings: TlsServerSettings, log: RpcLogger): void {
  try {
    server.reloadTls(settings);
    log('info', `SIGHUP: TLS material reloaded (${settings.certFile})`);
    audit({ event: 'config_reload', file: settings.certFile, outcome: 'ok', what: 'tls' });
  } catch (e) {
    log('error', `SIGHUP: TLS reload refused, the old certificate and key stay: ${errorMessage(e)}`);
    audit({ event: 'config_reload', file: settings.certFile, outcome: 'error', what: 'tls', error: errorMessage(e) });
  }
}
