/** The set of live RPC connections of one process, and (with `-workers 0`) its listener. */
import net from 'net';
import { getErrorMessage, RpcOptionError, RpcServerClosedError } from './errors';
import { DEFAULT_SOCKET_OPTIONS, describePeer, Listener } from './listener';
import type { AcceptedSocket } from './listener';
import { DEFAULT_MAX_RECORD_SIZE } from './record-marking';
import {
  DEFAULT_MAX_PENDING_CALLS,
  DEFAULT_MAX_REPLY_BYTES,
  DEFAULT_STALL_TIMEOUT_MS,
  RpcConnection,
} from './rpc-connection';
import type { StreamHandle } from './direct-read';
import { createTraceLogger } from './rpc-trace';
import { TlsTerminator } from './tls';
import type { ConnectionInfo, ListenAddress, ListenResult, PeerIdentity, RpcLogger, RpcServerOptions, TlsServerSettings } from './types';

/** Node's Buffer limit bounds a record, which is held in one buffer. */
const MAX_RECORD_SIZE_LIMIT = 0x7fffffff;

export class RpcServer {
  private readonly log: RpcLogger;
  private readonly maxRecordSize: number;
  private readonly maxPendingCalls: number;
  private readonly maxReplyBytes: number;
  private readonly stallTimeoutMs: number;
  private readonly listeners: Listener[] = [];
  /** Connections whose handler has not finished closing. */
  private readonly connections = new Set<RpcConnection>();
  private nextConnectionId = 1;
  private closing: Promise<void> | null = null;
  /** Set when `opts.tls` is: it terminates TLS on every internet address. */
  private readonly tls: TlsTerminator | null;

  constructor(private readonly opts: RpcServerOptions) {
    this.log = opts.log ?? createTraceLogger();
    this.maxRecordSize = opts.maxRecordSize ?? DEFAULT_MAX_RECORD_SIZE;
    this.maxPendingCalls = opts.maxPendingCalls ?? DEFAULT_MAX_PENDING_CALLS;
    this.maxReplyBytes = opts.maxReplyBytes ?? DEFAULT_MAX_REPLY_BYTES;
    this.stallTimeoutMs = opts.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS;
    if (
      !Number.isInteger(this.maxRecordSize) ||
      this.maxRecordSize < 1 ||
      this.maxRecordSize > MAX_RECORD_SIZE_LIMIT
    ) {
      throw new RpcOptionError(`maxRecordSize must be an integer in [1, ${MAX_RECORD_SIZE_LIMIT}]`);
    }
    if (!Number.isInteger(this.maxPendingCalls) || this.maxPendingCalls < 1) {
      throw new RpcOptionError('maxPendingCalls must be a positive integer');
    }
    if (!Number.isInteger(this.maxReplyBytes) || this.maxReplyBytes < 1) {
      throw new RpcOptionError('maxReplyBytes must be a positive integer');
    }
    if (!Number.isInteger(this.stallTimeoutMs) || this.stallTimeoutMs < 1) {
      throw new RpcOptionError('stallTimeoutMs must be a positive integer');
    }
    if (typeof opts.createHandler !== 'function')
      throw new RpcOptionError('createHandler must be a function');
    this.tls = opts.tls
      ? new TlsTerminator({ settings: opts.tls, log: this.log, onSecure: (sock, peer) => this.secured(sock, peer) })
      : null;
  }

  /** A connection id of this process, for sockets attached with attachSocket. */
  allocateId(): number {
    return this.nextConnectionId++;
  }

  /** New TLS material for new connections (SIGHUP); throws TlsMaterialError and keeps the old one. */
  reloadTls(settings: TlsServerSettings): void {
    this.tls?.reload(settings);
  }

  /**
   * Serves a raw TCP socket of a TLS address once its handshake passes (tls.ts); `initial`: bytes
   * already read from it (the ClientHello the primary peeked). The raw socket's 'close' marks the end
   * of the connection, refused or served.
   */
  attachTlsSocket(raw: net.Socket, initial?: Buffer): void {
    if (this.closing || this.tls === null) {
      raw.on('error', () => {});
      raw.destroy();
      return;
    }
    this.tls.accept(raw, initial);
  }

  private secured(sock: net.Socket, peer: Extract<PeerIdentity, { transport: 'tls' }>): void {
    this.attachSocket(sock, { id: this.nextConnectionId++, transport: 'tls', remote: describePeer(peer), peer });
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /**
   * Bind every address; all or nothing (on failure the ones bound by this call are closed).
   * Resolves with the bound port or path of each, in order.
   */
  async listen(addrs: ListenAddress[]): Promise<ListenResult[]> {
    if (this.closing) throw new RpcServerClosedError();
    const listener = await Listener.open(addrs, {
      socket: this.opts.socket ?? DEFAULT_SOCKET_OPTIONS,
      pauseOnConnect: false,
      log: this.log,
      onConnection: (a) => this.accept(a),
    });
    if (this.closing) {
      await listener.close();
      throw new RpcServerClosedError();
    }
    this.listeners.push(listener);
    return listener.results;
  }

  /**
   * Serve an already accepted socket, or the bare handle of one a primary
   * handed over. `initial` holds bytes the previous owner already read from
   * it; they are processed before anything the socket delivers.
   */
  attachSocket(sock: net.Socket | StreamHandle, info: ConnectionInfo, initial?: Buffer): RpcConnection | null {
    if (this.closing) {
      discard(sock);
      return null;
    }
    let handler;
    try {
      handler = this.opts.createHandler(info);
    } catch (e) {
      this.log('error', `conn ${info.id}: createHandler failed: ${getErrorMessage(e)}`);
      discard(sock);
      return null;
    }
    const conn = new RpcConnection(sock, info, handler, {
      maxRecordSize: this.maxRecordSize,
      maxPendingCalls: this.maxPendingCalls,
      maxReplyBytes: this.maxReplyBytes,
      stallTimeoutMs: this.stallTimeoutMs,
      idleTimeoutMs: this.opts.idleTimeoutMs,
      log: this.log,
      initial,
    });
    this.connections.add(conn);
    void conn.closed.then(() => this.connections.delete(conn));
    this.log('debug', `conn ${info.id} (${info.transport} ${info.remote}): open, peer ${describePeer(info.peer)}`);
    return conn;
  }

  /**
   * Stop listening, drop every connection and wait until each handler's close() has finished
   * (which itself waits for that connection's running calls). Idempotent.
   */
  close(graceMs = 0): Promise<void> {
    this.closing ??= this.doClose(graceMs);
    return this.closing;
  }

  /**
   * With `graceMs` > 0 (SIGTERM, processor.shutdown_timeout_ms) each
   * connection first drains: calls in flight are answered, nothing new is
   * read; what is still open after `graceMs` is dropped.
   */
  private async doClose(graceMs: number): Promise<void> {
    const listeners = this.listeners.splice(0);
    const stopped = Promise.all(listeners.map((l) => l.close()));
    this.tls?.close();
    const conns = [...this.connections];
    if (graceMs > 0) {
      for (const c of conns) c.drain();
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)));
      await Promise.race([Promise.all(conns.map((c) => c.closed)), late]);
      clearTimeout(timer);
    }
    for (const c of conns) c.destroy();
    await Promise.all([stopped, ...conns.map((c) => c.closed)]);
  }

  private accept({ sock, addr, peer }: AcceptedSocket): void {
    // -workers 0: this process accepts, so it applies the admission limits (limits.ts).
    const admitted = this.opts.admission?.admit(peer);
    if (admitted !== undefined && !admitted.ok) {
      sock.on('error', () => {});
      sock.destroy();
      return;
    }
    if (addr.type === 'internet' && this.tls !== null) {
      this.tls.accept(sock);
      if (admitted !== undefined) sock.once('close', () => admitted.ticket.release());
      return;
    }
    const transport = addr.type === 'local' ? 'unix' : 'tcp';
    const info: ConnectionInfo = {
      id: this.nextConnectionId++,
      transport,
      remote: transport === 'unix' ? 'unix' : describePeer(peer),
      peer,
    };
    const conn = this.attachSocket(sock, info);
    if (admitted === undefined) return;
    if (conn === null) admitted.ticket.release();
    else void conn.closed.then(() => admitted.ticket.release());
  }
}

function discard(sock: net.Socket | StreamHandle): void {
  if (sock instanceof net.Socket) {
    sock.on('error', () => {});
    sock.destroy();
  } else {
    sock.close();
  }
}
