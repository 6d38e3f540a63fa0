/**
 * Plain (Unix, TCP) connections read straight into one buffer the whole
 * process reuses, through net.Socket's `onread` option, instead of the
 * stream path's fresh 64 KiB allocation, Buffer and Readable push per read:
 * 3-4 µs of CPU less per round trip for a Node echo server under
 * bench/c/floor (14-20 µs before), and no read buffer held per idle
 * connection.
 *
 * Node 20 takes `onread` only when a Socket is constructed, while our
 * sockets come from net.Server or arrive from the primary already wrapped.
 * So a socket accepted here is re-created over its libuv handle (`_handle`,
 * the same private field peer-cred.ts reads the descriptor from), and the
 * primary hands workers the bare handle, over which the worker creates the
 * one Socket. Where that field is missing or the socket is not a plain one,
 * the caller keeps the stream path.
 *
 * Sharing one buffer is safe because libuv reads one stream at a time on the
 * loop thread and calls back before the next read: the callback must copy
 * whatever it keeps (RecordAssembler.push's `transient`).
 */
import net from 'net';
import tls from 'tls';

const READ_BUFFER_SIZE = 64 * 1024;
let readBuffer: Buffer | null = null;

/** A libuv stream as Node's net binding wraps it (a Pipe or TCP wrap): what a Socket's `_handle` holds. */
export interface StreamHandle {
  close(cb?: () => void): void;
  /** Node's own flag of whether readStart() is in effect; a Socket starts reading only when it is false. */
  reading?: boolean;
  readStop(): number;
  useUserBuffer(buf: Uint8Array): void;
}

interface SocketInternals {
  _handle: StreamHandle | null;
  /** The net.Server that counts this connection (close() waits for it), if any. */
  _server?: unknown;
  server?: unknown;
}

function isStreamHandle(h: unknown): h is StreamHandle {
  return (
    typeof h === 'object' &&
    h !== null &&
    typeof (h as StreamHandle).useUserBuffer === 'function' &&
    typeof (h as StreamHandle).readStop === 'function'
  );
}

/**
 * The libuv handle under a plain socket, for handing the connection to
 * another process as a bare handle (child.send's 'net.Native'): the receiver
 * then creates one Socket over it (directReadSocket) instead of getting one
 * Socket from Node and re-creating it. Null for TLS or a closed socket.
 */
export function streamHandleOf(sock: net.Socket): StreamHandle | null {
  if (sock instanceof tls.TLSSocket || sock.destroyed) return null;
  const h = (sock as unknown as SocketInternals)._handle;
  return isStreamHandle(h) ? h : null;
}

/** Node hands a received bare handle over as this (child_process 'net.Native'). */
export function isReceivedHandle(h: unknown): h is StreamHandle {
  return !(h instanceof net.Socket) && isStreamHandle(h);
}

function socketOver(handle: StreamHandle, onBytes: (chunk: Buffer) => void): net.Socket {
  readBuffer ??= Buffer.allocUnsafeSlow(READ_BUFFER_SIZE);
  return new net.Socket({
    handle,
    allowHalfOpen: true,
    onread: {
      buffer: readBuffer,
      callback: (n: number, buf: Uint8Array): boolean => {
        onBytes((buf as Buffer).subarray(0, n));
        return true;
      },
    },
  } as net.SocketConstructorOpts);
}

/**
 * A socket that delivers its bytes to `onBytes` (valid only during the call)
 * instead of 'data' events, or null when `from` cannot be adopted (it is then
 * untouched). `from` is a bare handle received from the primary, or a socket,
 * which is spent: it is re-created over its handle. Every other event ('end',
 * 'close', 'error', 'drain') and pause()/resume() behave as on any socket.
 */
export function directReadSocket(from: StreamHandle, onBytes: (chunk: Buffer) => void): net.Socket;
export function directReadSocket(from: net.Socket | StreamHandle, onBytes: (chunk: Buffer) => void): net.Socket | null;
export function directReadSocket(from: net.Socket | StreamHandle, onBytes: (chunk: Buffer) => void): net.Socket | null {
  if (!(from instanceof net.Socket)) return socketOver(from, onBytes);
  if (from.connecting) return null;
  const handle = streamHandleOf(from);
  // Nothing can be buffered yet: the caller adopts in the same turn the socket was accepted in.
  if (handle === null || from.readableLength > 0) return null;
  handle.readStop();
  handle.reading = false;
  const old = from as unknown as SocketInternals;
  old._handle = null;
  const adopted = socketOver(handle, onBytes);
  const fresh = adopted as unknown as SocketInternals;
  if (old._server !== undefined) {
    fresh._server = old._server;
    fresh.server = old.server;
    old._server = null;
    old.server = null;
  }
  return adopted;
}
