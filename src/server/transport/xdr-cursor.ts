/** Minimal XDR (RFC 4506) cursor over an untrusted buffer: unsigned ints and bounded opaques. */
import { Reader } from '@stellar/js-xdr';
import { RpcError, RpcFieldTooLongError, RpcTruncatedError } from './errors';

export const XDR_UNIT = 4;

/** Every empty opaque (AUTH_NONE credentials and verifiers): a Buffer view costs about 0.1 µs to make. */
const EMPTY = Buffer.alloc(0);

/** Bytes of zero padding that follow `len` bytes of opaque data. */
export function xdrPad(len: number): number {
  return (XDR_UNIT - (len % XDR_UNIT)) % XDR_UNIT;
}

/**
 * Over js-xdr's Reader, the one XDR reader of the daemon: the call header is read with it, and the
 * generated codecs go on decoding the arguments from the same Reader (`xdr`), so a call makes one reader.
 */
export class XdrReader {
  /** At the first byte not yet read by this cursor. */
  readonly xdr: Reader;

  constructor(private readonly buf: Buffer) {
    this.xdr = new Reader(buf);
  }

  get offset(): number {
    return this.xdr.offset;
  }

  get remaining(): number {
    return this.xdr.remaining;
  }

  u32(what: string): number {
    if (this.xdr.remaining < XDR_UNIT) throw new RpcTruncatedError(what, this.xdr.offset, this.buf.length);
    return this.xdr.readUint32(what);
  }

  /** opaque<max>: length, bytes, zero padding to a 4-byte boundary (padding content is not checked). */
  opaque(what: string, max: number): Buffer {
    const len = this.u32(what);
    if (len === 0) return EMPTY;
    if (len > max) throw new RpcFieldTooLongError(what, len, max);
    const total = len + xdrPad(len);
    if (total > this.xdr.remaining) throw new RpcTruncatedError(what, this.xdr.offset, this.buf.length);
    const at = this.xdr.offset;
    // Skipped a word at a time: js-xdr's readBytes would copy.
    for (let i = 0; i < total; i += XDR_UNIT) this.xdr.readUint32(what);
    return this.buf.subarray(at, at + len);
  }

  /** The unread bytes, without copying. */
  rest(): Buffer {
    return this.buf.subarray(this.xdr.offset);
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
