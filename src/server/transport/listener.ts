/**
 * The one listener of every process mode. It binds Unix and TCP addresses,
 * applies the same socket options to every accepted socket, and names the
 * peer: SO_PEERCRED for Unix sockets, address and port for TCP. With worker
 * processes the primary owns it and hands sockets over; with `-workers 0`
 * the RpcServer owns it. A TLS listener (issue 9) plugs in here: see the
 * README's design notes for how its connections reach their worker.
 */
import net from 'net';
import { getErrorCode, getErrorMessage, RpcAddressInUseError, RpcListenError, RpcOptionError } from './errors';
import { applySocketPermissions, removeStaleSocket } from './local-socket';
import { loadPeerCredAddon, unixPeerCred } from './peer-cred';
import type { ListenAddress, ListenResult, PeerIdentity, RpcLogger, SocketOptions } from './types';

export const DEFAULT_SOCKET_OPTIONS: SocketOptions = { tcpNoDelay: true, keepAlive: true, backlog: 1024 };

export interface AcceptedSocket {
  sock: net.Socket;
  addr: ListenAddress;
  peer: PeerIdentity;
}

export interface ListenerOptions {
  socket: SocketOptions;
  /** Accept without reading (a primary that hands the socket to a worker). */
  pauseOnConnect: boolean;
  log: RpcLogger;
  onConnection(a: AcceptedSocket): void;
}

export class Listener {
  private constructor(
    private readonly servers: Array<{ server: net.Server; addr: ListenAddress }>,
    readonly results: ListenResult[],
  ) {}

  /** Binds every address; all or nothing (on failure the ones bound are closed). */
  static async open(addrs: ListenAddress[], o: ListenerOptions): Promise<Listener> {
    const servers: Array<{ server: net.Server; addr: ListenAddress }> = [];
    const results: ListenResult[] = [];
    try {
      for (const addr of addrs) {
        const so = socketOptionsOf(addr, o.socket);
        const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: o.pauseOnConnect }, (sock) =>
          accepted(sock, addr, so, o),
        );
        server.on('error', (e) => o.log('error', `listener error: ${getErrorMessage(e)}`));
        if (addr.inheritedFd !== undefined) {
          if (addr.type === 'local') loadPeerCredAddon();
          await bind(server, { fd: addr.inheritedFd }, `inherited fd ${addr.inheritedFd}`);
          servers.push({ server, addr });
          const bound = server.address();
          results.push(addr.type === 'local' ? { addr, path: addr.path } : { addr, port: typeof bound === 'object' && bound !== null ? bound.port : addr.port });
        } else if (addr.type === 'local') {
          loadPeerCredAddon();
          await removeStaleSocket(addr.path);
          await bind(server, { path: addr.path, backlog: so.backlog }, addr.path);
          servers.push({ server, addr });
          await applySocketPermissions(addr.path, addr);
          results.push({ addr, path: addr.path });
        } else {
          await bind(server, { host: addr.host, port: addr.port, backlog: so.backlog }, describe(addr));
          servers.push({ server, addr });
          const bound = server.address();
          results.push({ addr, port: typeof bound === 'object' && bound !== null ? bound.port : addr.port });
        }
      }
    } catch (e) {
      await Promise.all(servers.map((s) => closeServer(s.server)));
      throw e;
    }
    for (const r of results) {
      o.log('info', `listening on ${r.addr.type === 'local' ? r.addr.path : describe({ ...r.addr, port: r.port ?? r.addr.port })}`);
    }
    return new Listener(servers, results);
  }

  /** Stops accepting; established connections are not touched. Socket files are removed. */
  async close(): Promise<void> {
    const servers = this.servers.splice(0);
    await Promise.all(servers.map((s) => closeServer(s.server)));
    for (const s of servers) {
      if (s.addr.type === 'local' && s.addr.inheritedFd === undefined) await removeStaleSocket(s.addr.path).catch(() => undefined);
    }
  }
}

function accepted(sock: net.Socket, addr: ListenAddress, so: SocketOptions, o: ListenerOptions): void {
  let peer: PeerIdentity;
  if (addr.type === 'local') {
    const cred = unixPeerCred(sock);
    if (cred === null) {
      // The peer is gone before we could ask who it was: nothing to serve.
      sock.on('error', () => {});
      sock.destroy();
      return;
    }
    peer = { transport: 'unix', ...cred };
  } else {
    sock.setNoDelay(so.tcpNoDelay);
    sock.setKeepAlive(so.keepAlive);
    peer = { transport: 'tcp', address: sock.remoteAddress ?? '', port: sock.remotePort ?? 0 };
  }
  o.onConnection({ sock, addr, peer });
}

/** Log form of a peer: `uid 1000 gid 1000 pid 42`, `host:port`, `[v6]:port`. */
export function describePeer(p: PeerIdentity | undefined): string {
  if (p === undefined) return 'unknown';
  if (p.transport === 'unix') return `uid ${p.uid} gid ${p.gid} pid ${p.pid}`;
  return p.address.includes(':') ? `[${p.address}]:${p.port}` : `${p.address}:${p.port}`;
}

/** The address's own keys over the defaults. */
export function socketOptionsOf(addr: ListenAddress, defaults: SocketOptions): SocketOptions {
  const s: SocketOptions = {
    tcpNoDelay: addr.tcpNoDelay ?? defaults.tcpNoDelay,
    keepAlive: addr.keepAlive ?? defaults.keepAlive,
    backlog: addr.backlog ?? defaults.backlog,
  };
  if (!Number.isInteger(s.backlog) || s.backlog < 1) throw new RpcOptionError('backlog must be a positive integer');
  return s;
}

function bind(server: net.Server, options: net.ListenOptions | { fd: number }, label: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error): void => {
      server.off('listening', onListening);
      reject(getErrorCode(e) === 'EADDRINUSE' ? new RpcAddressInUseError(label) : new RpcListenError(label, e));
    };
    const onListening = (): void => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    // `{ fd }` is the handle form of listen() (an already listening descriptor).
    server.listen(options as net.ListenOptions);
  });
}

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

function describe(addr: ListenAddress): string {
  if (addr.type === 'local') return addr.path;
  return addr.host.includes(':') ? `[${addr.host}]:${addr.port}` : `${addr.host}:${addr.port}`;
}
