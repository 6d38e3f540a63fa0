/** Listeners (unix and TCP) and the set of live RPC connections. */
import net from 'net';
import {
  getErrorCode,
  getErrorMessage,
  RpcAddressInUseError,
  RpcListenError,
  RpcOptionError,
  RpcServerClosedError,
} from './errors';
import { applySocketPermissions, removeStaleSocket } from './local-socket';
import { DEFAULT_MAX_RECORD_SIZE } from './record-marking';
import { DEFAULT_MAX_PENDING_CALLS, RpcConnection } from './rpc-connection';
import { createTraceLogger } from './rpc-trace';
import type { ConnectionInfo, ListenAddress, ListenResult, RpcLogger, RpcServerOptions } from './types';

/** Node's Buffer limit bounds a record, which is held in one buffer. */
const MAX_RECORD_SIZE_LIMIT = 0x7fffffff;

interface Listener {
  server: net.Server;
  addr: ListenAddress;
}

export class RpcServer {
  private readonly log: RpcLogger;
  private readonly maxRecordSize: number;
  private readonly maxPendingCalls: number;
  private readonly listeners: Listener[] = [];
  /** Connections whose handler has not finished closing. */
  private readonly connections = new Set<RpcConnection>();
  private nextConnectionId = 1;
  private closing: Promise<void> | null = null;

  constructor(private readonly opts: RpcServerOptions) {
    this.log = opts.log ?? createTraceLogger();
    this.maxRecordSize = opts.maxRecordSize ?? DEFAULT_MAX_RECORD_SIZE;
    this.maxPendingCalls = opts.maxPendingCalls ?? DEFAULT_MAX_PENDING_CALLS;
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
    if (typeof opts.createHandler !== 'function')
      throw new RpcOptionError('createHandler must be a function');
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
    const bound: Listener[] = [];
    const results: ListenResult[] = [];
    try {
      for (const addr of addrs) {
        const { listener, result } =
          addr.type === 'local' ? await this.listenLocal(addr) : await this.listenInternet(addr);
        bound.push(listener);
        results.push(result);
        if (this.closing) throw new RpcServerClosedError();
      }
    } catch (e) {
      await Promise.all(bound.map((l) => closeServer(l.server)));
      throw e;
    }
    this.listeners.push(...bound);
    for (const r of results) {
      const where =
        r.addr.type === 'local' ? r.addr.path : describe({ ...r.addr, port: r.port ?? r.addr.port });
      this.log('info', `listening on ${where}`);
    }
    return results;
  }

  /**
   * Serve an already accepted socket (e.g. one handed over by a cluster
   * primary). `initial` holds bytes the previous owner already read from it;
   * they are processed before anything the socket delivers.
   */
  attachSocket(sock: net.Socket, info: ConnectionInfo, initial?: Buffer): void {
    if (this.closing) {
      sock.on('error', () => {});
      sock.destroy();
      return;
    }
    let handler;
    try {
      handler = this.opts.createHandler(info);
    } catch (e) {
      this.log('error', `conn ${info.id}: createHandler failed: ${getErrorMessage(e)}`);
      sock.on('error', () => {});
      sock.destroy();
      return;
    }
    const conn = new RpcConnection(sock, info, handler, {
      maxRecordSize: this.maxRecordSize,
      maxPendingCalls: this.maxPendingCalls,
      log: this.log,
      initial,
    });
    this.connections.add(conn);
    void conn.closed.then(() => this.connections.delete(conn));
    this.log('debug', `conn ${info.id} (${info.transport} ${info.remote}): open`);
  }

  /**
   * Stop listening, drop every connection and wait until each handler's close() has finished
   * (which itself waits for that connection's running calls). Idempotent.
   */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    const listeners = this.listeners.splice(0);
    const stopped = Promise.all(listeners.map((l) => closeServer(l.server)));
    const conns = [...this.connections];
    for (const c of conns) c.destroy();
    await Promise.all([stopped, ...conns.map((c) => c.closed)]);
  }

  private accept(sock: net.Socket, transport: 'unix' | 'tcp'): void {
    if (transport === 'tcp') {
      sock.setNoDelay(true);
      sock.setKeepAlive(true);
    }
    const info: ConnectionInfo = {
      id: this.nextConnectionId++,
      transport,
      remote: transport === 'unix' ? 'unix' : formatPeer(sock),
    };
    this.attachSocket(sock, info);
  }

  private newNetServer(transport: 'unix' | 'tcp'): net.Server {
    const server = net.createServer({ allowHalfOpen: true }, (sock) => this.accept(sock, transport));
    server.on('error', (e) => this.log('error', `listener error: ${getErrorMessage(e)}`));
    return server;
  }

  private async listenLocal(
    addr: Extract<ListenAddress, { type: 'local' }>,
  ): Promise<{ listener: Listener; result: ListenResult }> {
    await removeStaleSocket(addr.path);
    const server = this.newNetServer('unix');
    await bind(server, { path: addr.path }, addr.path);
    try {
      await applySocketPermissions(addr.path, addr);
    } catch (e) {
      await closeServer(server);
      throw e;
    }
    return { listener: { server, addr }, result: { addr, path: addr.path } };
  }

  private async listenInternet(
    addr: Extract<ListenAddress, { type: 'internet' }>,
  ): Promise<{ listener: Listener; result: ListenResult }> {
    const server = this.newNetServer('tcp');
    await bind(server, { host: addr.host, port: addr.port }, describe(addr));
    const bound = server.address();
    const port = typeof bound === 'object' && bound !== null ? bound.port : addr.port;
    return { listener: { server, addr }, result: { addr, port } };
  }
}

function bind(server: net.Server, options: net.ListenOptions, label: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error): void => {
      server.off('listening', onListening);
      reject(
        getErrorCode(e) === 'EADDRINUSE' ? new RpcAddressInUseError(label) : new RpcListenError(label, e),
      );
    };
    const onListening = (): void => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(options);
  });
}

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

function describe(addr: ListenAddress): string {
  if (addr.type === 'local') return addr.path;
  return addr.host.includes(':') ? `[${addr.host}]:${addr.port}` : `${addr.host}:${addr.port}`;
}

function formatPeer(sock: net.Socket): string {
  const host = sock.remoteAddress;
  if (host === undefined) return 'unknown';
  return host.includes(':') ? `[${host}]:${sock.remotePort}` : `${host}:${sock.remotePort}`;
}
