import type { Reader } from '@stellar/js-xdr';

/**
 * Contract between the ONC RPC transport (this folder) and a program dispatcher.
 * The transport knows nothing about the program it carries.
 */
/** js-xdr's Reader, as the transport hands it to a handler. */
export type XdrArgsReader = Reader;

/** The fixed part of an RFC 5531 call message, as received. */
export interface RpcCallHeader {
  xid: number;
  rpcvers: number;
  prog: number;
  vers: number;
  proc: number;
  /** AUTH_NONE (0) or AUTH_SYS (1); other flavors are rejected before the handler sees the call. */
  credFlavor: number;
  /** Opaque credential body (at most 400 bytes); for AUTH_SYS it is a well-formed authsys_parms. */
  cred: Buffer;
  verfFlavor: number;
}

/**
 * Bytes in front of the result in a `success_framed` frame, which the transport fills: the record mark (4)
 * and the accepted-reply header (xid, msg_type REPLY, reply_stat MSG_ACCEPTED, verifier AUTH_NONE flavor and
 * length 0, accept_stat SUCCESS: 24).
 */
export const FRAMED_REPLY_PREFIX_SIZE = 28;

/** What a handler answers for one call; the transport turns it into the reply message. */
export type CallOutcome =
  | { kind: 'success'; body: Buffer } // encoded result, appended after the accepted-reply header
  // FRAMED_REPLY_PREFIX_SIZE bytes to fill, then the encoded result; written as it is, in one write.
  | { kind: 'success_framed'; frame: Buffer }
  | { kind: 'prog_unavail' }
  | { kind: 'prog_mismatch'; low: number; high: number }
  | { kind: 'proc_unavail' }
  | { kind: 'garbage_args' }
  | { kind: 'system_err' };

/**
 * A TLS client certificate that verified against the trusted CAs, as the
 * handshake proved it (the peer holds its private key). Fields are what
 * authorisation rules match; all are public.
 */
export interface PeerCertificate {
  /** Subject DN, RFC 4514 string form, most significant RDN last as OpenSSL prints it reversed: e.g. `CN=app1,O=Example`. */
  readonly subject: string;
  readonly issuer: string;
  /** subjectAltName entries as `DNS:name`, `URI:uri`, `email:addr`, `IP:addr`. */
  readonly san: readonly string[];
  /** SHA-256 of the certificate's DER, lowercase hex without separators. */
  readonly sha256: string;
  /** SHA-256 of the DER SubjectPublicKeyInfo, lowercase hex (stays the same across renewals with the same key). */
  readonly spkiSha256: string;
  /** Serial number, uppercase hex as Node prints it. */
  readonly serial: string;
  /** notAfter, ISO 8601. */
  readonly notAfter: string;
}

/** Who is at the other end, as the kernel or the TLS handshake tells it (not as the peer claims). */
export type PeerIdentity =
  /** SO_PEERCRED: the process that called connect(2), at that moment. */
  | { transport: 'unix'; uid: number; gid: number; pid: number }
  | { transport: 'tcp'; address: string; port: number }
  /** TLS over TCP; `certificate` absent when the client sent none (allowed only with peer_auth "none"/"optional"). */
  | { transport: 'tls'; address: string; port: number; certificate?: PeerCertificate };

/** TLS settings as the daemon hands them to every process (plain data, absolute paths); see tls.ts. */
export interface TlsServerSettings {
  certFile: string;
  keyFile: string;
  /** Trusted CAs for client certificates; required unless peerAuth is 'none'. */
  caFile?: string;
  /** CRLs (PEM; one per trusted CA, concatenated): every client certificate is checked against its CA's CRL. */
  crlFile?: string;
  /** OpenSSL cipher list for TLS 1.2 (`cipher_suite`); TLS 1.3 suites are OpenSSL's defaults. */
  ciphers?: string;
  dhParamsFile?: string;
  /** `ec_curve_name`: ECDHE groups, OpenSSL names, colon separated. */
  ecdhCurve?: string;
  minVersion: 'TLSv1.2' | 'TLSv1.3';
  maxVersion: 'TLSv1.2' | 'TLSv1.3';
  /** Longest accepted client chain below the trusted CA (`verify_depth`); absent: OpenSSL's default. */
  verifyDepth?: number;
  /** `allowed_clients_cert_path`: only client certificates found (PEM) in this directory are let in. */
  allowedClientsCertPath?: string;
  peerAuth: 'none' | 'optional' | 'required';
  handshakeTimeoutMs: number;
  /** Session ticket keys (48 bytes, hex) shared by the daemon's processes; absent: each process makes its own. Secret. */
  ticketKeys?: string;
}

/** The AUTH_SYS credential of a call (RFC 5531 appendix A): what the client claims, unverified. */
export interface AuthSysCred {
  stamp: number;
  machineName: string;
  uid: number;
  gid: number;
  gids: number[];
}

export interface ConnectionInfo {
  id: number;
  transport: 'unix' | 'tcp' | 'tls';
  /** Peer address as `host:port` (`[v6]:port`), or 'unix'; for logs. */
  remote: string;
  /** Set for every connection accepted by a Listener; absent only for in-process callers (benchmarks). */
  peer?: PeerIdentity;
  /** The AUTH_SYS credential of the latest call that carried one (AUTH_NONE calls leave it). */
  authSys?: AuthSysCred;
}

/** Per-connection program state, created by `RpcServerOptions.createHandler`. */
export interface RpcConnectionHandler {
  /**
   * The handler runs this connection's calls one at a time, in order (a PKCS#11 application's
   * calls on one connection): the transport then hands it the next call only when the running
   * one has answered, so held reply bytes are checked before every call.
   */
  readonly sequential?: boolean;
  /**
   * Handle one call. Calls on one connection may overlap (pipelining); replies are still sent in
   * request order. A throw or rejection becomes a SYSTEM_ERR reply.
   * A `success` body must be a whole number of XDR units (length % 4 === 0), else SYSTEM_ERR is sent.
   * `reader`, when given, is the js-xdr Reader the header was read with, at the first byte of `args`:
   * decoding from it saves a second reader per call.
   */
  handleCall(header: RpcCallHeader, args: Buffer, reader?: XdrArgsReader): Promise<CallOutcome> | CallOutcome;
  /**
   * Called once when the socket closes (any reason); must release the connection's state.
   * Invariant: it runs after every handleCall started on this connection has settled, so state is
   * never released under a running call.
   */
  close(): void | Promise<void>;
}

export type RpcLogLevel = 'debug' | 'info' | 'warn' | 'error';
export type RpcLogger = (level: RpcLogLevel, msg: string) => void;

export interface RpcServerOptions {
  /**
   * Largest accepted record (sum of its fragments), in bytes; default 16 MiB (DEFAULT_MAX_RECORD_SIZE).
   * A record announced above it closes the connection (logged at warn).
   */
  maxRecordSize?: number;
  createHandler(info: ConnectionInfo): RpcConnectionHandler;
  /** Defaults to the `rpc` trace channel (PKCS11PROXYD_TRACE=rpc). Never given call arguments or results. */
  log?: RpcLogger;
  /**
   * Calls read but not yet answered on one connection, above which reading pauses; default 64
   * (DEFAULT_MAX_PENDING_CALLS).
   */
  maxPendingCalls?: number;
  /**
   * Bytes of encoded replies held for one connection (queued in order or in the socket's write
   * buffer) above which no further call is dispatched; default 4 MiB (DEFAULT_MAX_REPLY_BYTES).
   */
  maxReplyBytes?: number;
  /**
   * How long a connection may stay blocked on a reader that takes nothing before it is dropped, ms;
   * default 30 s (DEFAULT_STALL_TIMEOUT_MS).
   */
  stallTimeoutMs?: number;
  /** Options of accepted sockets; default DEFAULT_SOCKET_OPTIONS. */
  socket?: SocketOptions;
  /** Serve TLS on every internet address (tls.ts); absent: plain TCP. */
  tls?: TlsServerSettings;
  /** idle_timeout_s in ms (limits.ts IdleWatch); absent or 0: off. */
  idleTimeoutMs?: number;
  /** Admission limits for connections this server accepts itself (listen()); attachSocket() is not metered. */
  admission?: ConnectionAdmission;
}

/** What an accepting server asks before it serves a connection (limits.ts AdmissionControl). */
export interface ConnectionAdmission {
  /** Refused: the connection is closed (the admission has logged why); admitted: release the ticket when it closes. */
  admit(peer: PeerIdentity): { ok: true; ticket: { release(): void } } | { ok: false };
}

/** netplex protocol keys `tcp_nodelay`, `so_keepalive`, `lstn_backlog`. */
export interface SocketOptions {
  /** TCP_NODELAY on accepted TCP sockets: a reply is one small write the client waits for. */
  tcpNoDelay: boolean;
  /** SO_KEEPALIVE on accepted TCP sockets, so a vanished peer's connection is reaped. */
  keepAlive: boolean;
  /** listen(2) backlog (the kernel caps it at net.core.somaxconn). */
  backlog: number;
}

/** Per-address overrides of SocketOptions (from the address's netplex protocol block). */
type AddressSocketKeys = Partial<SocketOptions> & {
  /**
   * A listening socket inherited from the service manager (LISTEN_FDS, systemd.ts): listened on
   * as is, never bound; its file (a local one) belongs to the manager and is not removed.
   */
  inheritedFd?: number;
};

export type ListenAddress =
  | ({ type: 'local'; path: string; mode?: number; owner?: string | number; group?: string | number } & AddressSocketKeys)
  | ({ type: 'internet'; host: string; port: number } & AddressSocketKeys);

export interface ListenResult {
  addr: ListenAddress;
  /** Bound TCP port (the real one when 0 was asked); set iff addr.type is 'internet'. */
  port?: number;
  /** Socket file path; set iff addr.type is 'local'. */
  path?: string;
}
