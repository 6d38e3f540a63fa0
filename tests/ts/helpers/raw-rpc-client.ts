/**
 * Raw ONC RPC test client. Encodes calls and decodes replies by hand (RFC 5531 layouts written out
 * here), deliberately independent of src/server/transport so tests do not check the code against itself.
 */
import net from 'net';
import tls from 'tls';

export const RPC_CALL = 0;
export const RPC_REPLY = 1;
export const AUTH_NONE = 0;
export const AUTH_SYS = 1;
export const LAST_FRAGMENT = 0x80000000;

export const MSG_ACCEPTED = 0;
export const MSG_DENIED = 1;
export const ACCEPT = {
  SUCCESS: 0,
  PROG_UNAVAIL: 1,
  PROG_MISMATCH: 2,
  PROC_UNAVAIL: 3,
  GARBAGE_ARGS: 4,
  SYSTEM_ERR: 5,
};
export const REJECT = { RPC_MISMATCH: 0, AUTH_ERROR: 1 };
export const AUTH_STAT = {
  AUTH_OK: 0,
  AUTH_BADCRED: 1,
  AUTH_REJECTEDCRED: 2,
  AUTH_BADVERF: 3,
  AUTH_TOOWEAK: 5,
};

export function u32(...values: number[]): Buffer {
  const b = Buffer.alloc(4 * values.length);
  values.forEach((v, i) => b.writeUInt32BE(v >>> 0, 4 * i));
  return b;
}

/** XDR variable-length opaque: length, bytes, zero padding. */
export function xdrOpaque(data: Buffer | string): Buffer {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
  return Buffer.concat([u32(bytes.length), bytes, Buffer.alloc((4 - (bytes.length % 4)) % 4)]);
}

/** authsys_parms: stamp, machinename<255>, uid, gid, gids<16>. */
export function authSysBody(p: {
  stamp?: number;
  machine?: string;
  uid: number;
  gid: number;
  gids?: number[];
}): Buffer {
  const gids = p.gids ?? [];
  return Buffer.concat([
    u32(p.stamp ?? 0),
    xdrOpaque(p.machine ?? 'host'),
    u32(p.uid, p.gid, gids.length),
    u32(...gids),
  ]);
}

export interface CallSpec {
  xid: number;
  prog: number;
  vers: number;
  proc: number;
  args?: Buffer;
  rpcvers?: number;
  msgType?: number;
  credFlavor?: number;
  cred?: Buffer;
  verfFlavor?: number;
  verf?: Buffer;
}

/** Call message (no record mark). */
export function encodeCall(spec: CallSpec): Buffer {
  return Buffer.concat([
    u32(spec.xid, spec.msgType ?? RPC_CALL, spec.rpcvers ?? 2, spec.prog, spec.vers, spec.proc),
    u32(spec.credFlavor ?? AUTH_NONE),
    xdrOpaque(spec.cred ?? Buffer.alloc(0)),
    u32(spec.verfFlavor ?? AUTH_NONE),
    xdrOpaque(spec.verf ?? Buffer.alloc(0)),
    spec.args ?? Buffer.alloc(0),
  ]);
}

/**
 * Record-mark a message. `fragmentSizes` splits it (their sum must be the message length); by
 * default one last fragment.
 */
export function recordMark(msg: Buffer, fragmentSizes: number[] = [msg.length]): Buffer {
  const total = fragmentSizes.reduce((a, b) => a + b, 0);
  if (total !== msg.length) throw new Error(`fragment sizes sum ${total} != ${msg.length}`);
  const out: Buffer[] = [];
  let off = 0;
  fragmentSizes.forEach((size, i) => {
    const last = i === fragmentSizes.length - 1;
    out.push(u32((last ? LAST_FRAGMENT : 0) + size), msg.subarray(off, off + size));
    off += size;
  });
  return Buffer.concat(out);
}

export function encodeCallRecord(spec: CallSpec, fragmentSizes?: number[]): Buffer {
  return recordMark(encodeCall(spec), fragmentSizes);
}

export type ParsedReply =
  | {
      xid: number;
      stat: 'accepted';
      verfFlavor: number;
      verf: Buffer;
      acceptStat: 0 | 1 | 3 | 4 | 5;
      body: Buffer;
    }
  | {
      xid: number;
      stat: 'accepted';
      verfFlavor: number;
      verf: Buffer;
      acceptStat: 2;
      low: number;
      high: number;
    }
  | { xid: number; stat: 'denied'; rejectStat: 0; low: number; high: number }
  | { xid: number; stat: 'denied'; rejectStat: 1; authStat: number };

/** Decode a reply message (no record mark). Throws on anything malformed; trailing bytes are an error except after SUCCESS. */
export function parseReply(msg: Buffer): ParsedReply {
  let off = 0;
  const next = (): number => {
    if (off > msg.length - 4) throw new Error(`reply truncated at ${off}`);
    const v = msg.readUInt32BE(off);
    off += 4;
    return v;
  };
  const done = <T>(r: T): T => {
    if (off !== msg.length) throw new Error(`reply has ${msg.length - off} trailing bytes`);
    return r;
  };
  const xid = next();
  const msgType = next();
  if (msgType !== RPC_REPLY) throw new Error(`msg_type ${msgType} is not REPLY`);
  const replyStat = next();
  if (replyStat === MSG_ACCEPTED) {
    const verfFlavor = next();
    const verfLen = next();
    const padded = verfLen + ((4 - (verfLen % 4)) % 4);
    if (padded > msg.length - off) throw new Error('verifier truncated');
    const verf = msg.subarray(off, off + verfLen);
    off += padded;
    const acceptStat = next();
    switch (acceptStat) {
      case 2: {
        const low = next();
        const high = next();
        return done({ xid, stat: 'accepted', verfFlavor, verf, acceptStat, low, high });
      }
      case 0:
        return { xid, stat: 'accepted', verfFlavor, verf, acceptStat, body: msg.subarray(off) };
      case 1:
      case 3:
      case 4:
      case 5:
        return done({ xid, stat: 'accepted', verfFlavor, verf, acceptStat, body: Buffer.alloc(0) });
      default:
        throw new Error(`unknown accept_stat ${acceptStat}`);
    }
  }
  if (replyStat === MSG_DENIED) {
    const rejectStat = next();
    if (rejectStat === 0) {
      const low = next();
      const high = next();
      return done({ xid, stat: 'denied', rejectStat, low, high });
    }
    if (rejectStat === 1) return done({ xid, stat: 'denied', rejectStat, authStat: next() });
    throw new Error(`unknown reject_stat ${rejectStat}`);
  }
  throw new Error(`unknown reply_stat ${replyStat}`);
}

/** `tls`: a TLS connection (node:tls options: CA, client certificate...), resolved once the client side of the handshake is done. */
export type Target = { path: string } | { host: string; port: number; tls?: tls.ConnectionOptions };

/**
 * A socket that collects record-marked replies. Replies are handed out in arrival order by
 * `nextReply()`; `closed` resolves when the server closes the connection.
 */
export class RawRpcClient {
  readonly closed: Promise<void>;
  /** Socket errors seen (EPIPE/ECONNRESET after the server dropped us are expected in some tests). */
  readonly errors: Error[] = [];
  /** Every reply record received, in order. */
  readonly records: Buffer[] = [];
  private pending = Buffer.alloc(0);
  private fragments: Buffer[] = [];
  private readonly queue: Buffer[] = [];
  private readonly waiters: Array<{ resolve: (b: Buffer) => void; reject: (e: Error) => void }> = [];
  private isClosed = false;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (e) => this.errors.push(e));
    this.closed = new Promise((resolve) =>
      socket.on('close', () => {
        this.isClosed = true;
        for (const w of this.waiters.splice(0)) w.reject(new Error('connection closed before reply'));
        resolve();
      }),
    );
  }

  static connect(target: Target): Promise<RawRpcClient> {
    return new Promise((resolve, reject) => {
      if ('tls' in target && target.tls !== undefined) {
        const t = tls.connect({ host: target.host, port: target.port, ...target.tls });
        t.once('secureConnect', () => {
          t.off('error', reject);
          resolve(new RawRpcClient(t));
        });
        t.once('error', reject);
        return;
      }
      const sock = net.connect(target as net.NetConnectOpts);
      sock.once('connect', () => {
        sock.off('error', reject);
        resolve(new RawRpcClient(sock));
      });
      sock.once('error', reject);
    });
  }

  get isOpen(): boolean {
    return !this.isClosed;
  }

  write(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  sendCall(spec: CallSpec, fragmentSizes?: number[]): void {
    this.write(encodeCallRecord(spec, fragmentSizes));
  }

  /** The next reply record, decoded. */
  async nextReply(): Promise<ParsedReply> {
    return parseReply(await this.nextRecord());
  }

  nextRecord(): Promise<Buffer> {
    const ready = this.queue.shift();
    if (ready) return Promise.resolve(ready);
    if (this.isClosed) return Promise.reject(new Error('connection closed before reply'));
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  call(spec: CallSpec): Promise<ParsedReply> {
    this.sendCall(spec);
    return this.nextReply();
  }

  /** Ends our side and waits for the server to close. */
  async end(): Promise<void> {
    this.socket.end();
    await this.closed;
  }

  destroy(): void {
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    this.pending = Buffer.concat([this.pending, chunk]);
    for (;;) {
      if (this.pending.length < 4) return;
      const mark = this.pending.readUInt32BE(0);
      const len = mark % LAST_FRAGMENT;
      if (this.pending.length < 4 + len) return;
      this.fragments.push(this.pending.subarray(4, 4 + len));
      this.pending = this.pending.subarray(4 + len);
      if (mark >= LAST_FRAGMENT) {
        const record = Buffer.concat(this.fragments);
        this.fragments = [];
        this.records.push(record);
        const w = this.waiters.shift();
        if (w) w.resolve(record);
        else this.queue.push(record);
      }
    }
  }
}

/** Send one AUTH_NONE call and wait for the next reply. */
export function rawCall(
  client: RawRpcClient,
  xid: number,
  prog: number,
  vers: number,
  proc: number,
  args: Buffer = Buffer.alloc(0),
): Promise<ParsedReply> {
  return client.call({ xid, prog, vers, proc, args });
}
