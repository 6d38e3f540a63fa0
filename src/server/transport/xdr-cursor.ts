/** Minimal XDR (RFC 4506) cursor over an untrusted buffer: unsigned ints and bounded opaques. */
import { RpcError, RpcFieldTooLongError, RpcTruncatedError } from './errors';

export const XDR_UNIT = 4;

/** Bytes of zero padding that follow `len` bytes of opaque data. */
export function xdrPad(len: number): number {
  return (XDR_UNIT - (len % XDR_UNIT)) % XDR_UNIT;
}

export class XdrReader {
  private pos = 0;

  constructor(private readonly buf: Buffer) {}

  get offset(): number {
    return this.pos;
  }

  get remaining(): number {
    return this.buf.length - this.pos;
  }

  u32(what: string): number {
    if (this.pos > this.buf.length - XDR_UNIT) throw new RpcTruncatedError(what, this.pos, this.buf.length);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += XDR_UNIT;
    return v;
  }

  /** opaque<max>: length, bytes, zero padding to a 4-byte boundary (padding content is not checked). */
  opaque(what: string, max: number): Buffer {
    const len = this.u32(what);
    if (len > max) throw new RpcFieldTooLongError(what, len, max);
    const total = len + xdrPad(len);
    if (total > this.buf.length - this.pos) throw new RpcTruncatedError(what, this.pos, this.buf.length);
    const out = this.buf.subarray(this.pos, this.pos + len);
    this.pos += total;
    return out;
  }

  /** The unread bytes, without copying. */
  rest(): Buffer {
    return this.buf.subarray(this.pos);
  }
}

/** Fixed-size writer: the caller knows the message length up front. */
export class XdrWriter {
  private pos = 0;
  private readonly buf: Buffer;

  constructor(size: number) {
    // Unzeroed (pooled for small sizes): finish() refuses a buffer that was not written in full.
    this.buf = Buffer.allocUnsafe(size);
  }

  u32(v: number): this {
    this.buf.writeUInt32BE(v >>> 0, this.pos);
    this.pos += XDR_UNIT;
    return this;
  }

  /** The written bytes; throws if fewer than the declared size were written. */
  finish(): Buffer {
    if (this.pos !== this.buf.length)
      throw new RpcError('RPC_ERR_INTERNAL', `XdrWriter wrote ${this.pos} of ${this.buf.length}`);
    return this.buf;
  }
}
