/**
 * Glue code copied into every generated file, split into snippets so that a file only carries the helpers its
 * types use (the generated file is compiled with noUnusedLocals). Wire work is done by the js-xdr Reader and
 * Writer; these helpers add bounds checks before every read, value checks before every write, and turn every
 * failure into XdrDecodeError / XdrEncodeError.
 *
 * Generated code builds messages with `+`, not template literals, so the snippets can live in template strings.
 */

export interface Snippet {
  readonly name: string;
  readonly deps: readonly string[];
  /** Extra import lines this snippet needs. */
  readonly imports?: readonly string[];
  readonly code: string;
}

const S = (name: string, deps: readonly string[], code: string, imports?: readonly string[]): Snippet => ({
  name,
  deps,
  code: code.replace(/^\n/, ''),
  imports,
});

/** In emission order. Snippets named in ALWAYS are emitted in every file. */
export const SNIPPETS: readonly Snippet[] = [
  S(
    'core',
    [],
    `
/**
 * Encoder and decoder of one XDR type. \`decode\` reads exactly one value at the reader's position and throws
 * XdrDecodeError on malformed input (it never returns partial values); \`encode\` throws XdrEncodeError for
 * values that do not fit the type. Both may be called directly on a shared Reader/Writer to handle several
 * values in sequence (RPC header, then arguments).
 */
export interface Codec<T> {
  encode(w: XdrSink, v: T): void;
  decode(r: Reader): T;
}

/** What an encoder writes to: the part of js-xdr's Writer that codecs use. */
export type XdrSink = Pick<Writer, 'writeInt32' | 'writeUint32' | 'writeFloat32' | 'writeFloat64' | 'writeBytes' | 'writePadding'>;

/**
 * The write half every growable sink shares: each write makes room with ensure(), then writes at \`off\`.
 * Subclasses decide how the buffer grows and what a message is.
 */
abstract class GrowableSink implements XdrSink {
  protected off = 0;

  constructor(protected buf: Buffer) {}

  /** Makes room for \`n\` more bytes at \`off\` (may replace \`buf\`). */
  protected abstract ensure(n: number): void;

  writeInt32(v: number): void {
    this.ensure(4);
    this.off = this.buf.writeInt32BE(v, this.off);
  }

  writeUint32(v: number): void {
    this.ensure(4);
    this.off = this.buf.writeUInt32BE(v, this.off);
  }

  writeFloat32(v: number): void {
    this.ensure(4);
    this.off = this.buf.writeFloatBE(v, this.off);
  }

  writeFloat64(v: number): void {
    this.ensure(8);
    this.off = this.buf.writeDoubleBE(v, this.off);
  }

  writeBytes(v: Uint8Array): void {
    this.ensure(v.length);
    this.buf.set(v, this.off);
    this.off += v.length;
  }

  /** Zero bytes that pad \`length\` bytes of data to a multiple of 4. */
  writePadding(length: number): void {
    const pad = (4 - (length % 4)) % 4;
    if (pad === 0) return;
    this.ensure(pad);
    this.buf.fill(0, this.off, this.off + pad);
    this.off += pad;
  }
}

/**
 * An XdrSink over one growable Buffer, emptied by reset() and reused. js-xdr's Writer allocates a zeroed 8 KiB
 * buffer per message and copies it out again; on the daemon's reply path that was about a fifth of the
 * per-call CPU, so xdrEncode writes here instead. Values are range-checked by the write* helpers before they
 * reach the sink.
 */
export class ReusableSink extends GrowableSink {
  constructor(private readonly initialSize = 16 * 1024, private readonly keepLimit = 1024 * 1024) {
    super(Buffer.allocUnsafe(initialSize));
  }

  get length(): number {
    return this.off;
  }

  /** Empties the sink; a buffer grown past keepLimit by a large message is released. */
  reset(): void {
    this.off = 0;
    if (this.buf.length > this.keepLimit) this.buf = Buffer.allocUnsafe(this.initialSize);
  }

  /** A copy of the bytes written since reset(). */
  take(): Buffer {
    const out = Buffer.allocUnsafe(this.off);
    this.buf.copy(out, 0, 0, this.off);
    return out;
  }

  protected ensure(n: number): void {
    if (this.off + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.off + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.off);
    this.buf = next;
  }
}

/** Bytes of room left after a large write in a grown slab (the fields that follow an opaque). */
const LARGE_WRITE_SLACK = 1024;

/**
 * An XdrSink that writes each message right after the previous one in a shared slab and hands it out as a
 * view, with room reserved in front for headers the caller fills in (the daemon's record mark and reply
 * header), so a reply is encoded once and written as it is. A view handed out is never written again: the
 * next message starts after it, and one that outgrows the slab's rest moves, with what it has written so
 * far, to a new slab; the old slab lives as long as its views. Encoding is synchronous, so one sink serves
 * every message of a process.
 */
export class SlabSink extends GrowableSink {
  private start = 0;

  constructor(private readonly slabSize = 64 * 1024) {
    super(Buffer.allocUnsafe(slabSize));
  }

  /** Starts a message with \`prefix\` unwritten bytes in front. */
  begin(prefix: number): void {
    // A slab grown for one large message is not kept for the small ones after it.
    if (this.buf.length > this.slabSize) {
      this.buf = Buffer.allocUnsafe(this.slabSize);
      this.off = 0;
    }
    this.start = this.off;
    this.ensure(prefix);
    this.off += prefix;
  }

  /** The message since begin(), prefix included. */
  end(): Buffer {
    const out = this.buf.subarray(this.start, this.off);
    this.start = this.off;
    return out;
  }

  /** Drops the message since begin(). */
  abort(): void {
    this.off = this.start;
  }

  protected ensure(n: number): void {
    if (this.off + n <= this.buf.length) return;
    const used = this.off - this.start;
    // A large write (an opaque of data) gets just the room it needs plus a little for the fields
    // after it: the frame keeps its whole buffer alive until the socket took it, so doubling would
    // hold twice the reply's bytes for a slow reader. Many small writes grow by doubling.
    const size = n > this.slabSize / 4 ? used + n + LARGE_WRITE_SLACK : 2 * (used + n);
    const next = Buffer.allocUnsafe(Math.max(this.slabSize, size));
    this.buf.copy(next, 0, this.start, this.off);
    this.buf = next;
    this.start = 0;
    this.off = used;
  }
}

/** Deepest nesting of recursive types (types that reach themselves through '*' or '<>') accepted by a codec. */
export const XDR_MAX_DEPTH = 32;

/** Largest XDR length; the bound of '<>'. */
export const XDR_UNBOUNDED = 0xffffffff;

const TWO_POW_32 = 4294967296;

/** Base class of codec failures; \`code\` is stable. Messages name the type and field, never the data. */
export abstract class XdrCodecError extends Error {
  abstract readonly code: 'XDR_DECODE' | 'XDR_ENCODE';
}

/** Malformed input: truncated, bound exceeded, length beyond the input, bad padding, bad bool/enum/union tag,
 * hyper outside the safe integer range, nesting too deep, or unconsumed trailing bytes. */
export class XdrDecodeError extends XdrCodecError {
  readonly code = 'XDR_DECODE';
  /** Byte offset in the input where the faulty item starts. */
  readonly offset: number;
  constructor(message: string, offset: number) {
    super(message);
    this.name = 'XdrDecodeError';
    this.offset = offset;
  }
}

/** A value that cannot be encoded as its XDR type (wrong JS type, out of range, bound exceeded). */
export class XdrEncodeError extends XdrCodecError {
  readonly code = 'XDR_ENCODE';
  constructor(message: string) {
    super(message);
    this.name = 'XdrEncodeError';
  }
}

function truncated(r: Reader, need: number, path: string): XdrDecodeError {
  return new XdrDecodeError(
    path + ': input truncated at offset ' + r.offset + ': need ' + need + ' byte(s), ' + r.remaining + ' left',
    r.offset,
  );
}

function typeName(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

function readInt(r: Reader, path: string): number {
  if (r.remaining < 4) throw truncated(r, 4, path);
  return r.readInt32(path);
}

function readUint(r: Reader, path: string): number {
  if (r.remaining < 4) throw truncated(r, 4, path);
  return r.readUint32(path);
}

/** Signed 64-bit; only values in the safe integer range decode. */
function readHyper(r: Reader, path: string): number {
  if (r.remaining < 8) throw truncated(r, 8, path);
  const at = r.offset;
  const v = r.readInt32(path) * TWO_POW_32 + r.readUint32(path);
  if (!Number.isSafeInteger(v)) throw new XdrDecodeError(path + ': hyper at offset ' + at + ' is not a safe integer', at);
  return v;
}

/** Unsigned 64-bit; only values up to 2^53-1 decode. */
function readUhyper(r: Reader, path: string): number {
  if (r.remaining < 8) throw truncated(r, 8, path);
  const at = r.offset;
  const v = r.readUint32(path) * TWO_POW_32 + r.readUint32(path);
  if (!Number.isSafeInteger(v)) {
    throw new XdrDecodeError(path + ': unsigned hyper at offset ' + at + ' is not a safe integer', at);
  }
  return v;
}

function readBool(r: Reader, path: string): boolean {
  const at = r.offset;
  const v = readInt(r, path);
  if (v === 0) return false;
  if (v === 1) return true;
  throw new XdrDecodeError(path + ': bool at offset ' + at + ' is ' + v + ', not 0 or 1', at);
}

function readFloat(r: Reader, path: string): number {
  if (r.remaining < 4) throw truncated(r, 4, path);
  return r.readFloat32(path);
}

function readDouble(r: Reader, path: string): number {
  if (r.remaining < 8) throw truncated(r, 8, path);
  return r.readFloat64(path);
}

function writeInt(w: XdrSink, v: number, path: string): void {
  if (typeof v !== 'number' || (v | 0) !== v) throw new XdrEncodeError(path + ': expected an int32, got ' + typeName(v));
  w.writeInt32(v);
}

function writeUint(w: XdrSink, v: number, path: string): void {
  if (typeof v !== 'number' || v >>> 0 !== v) throw new XdrEncodeError(path + ': expected a uint32, got ' + typeName(v));
  w.writeUint32(v);
}

/** Any safe integer, negative ones as two's complement (-1 is ff ff ff ff ff ff ff ff). */
function writeHyper(w: XdrSink, v: number, path: string): void {
  if (!Number.isSafeInteger(v)) throw new XdrEncodeError(path + ': expected a safe integer, got ' + typeName(v));
  const hi = Math.floor(v / TWO_POW_32);
  w.writeInt32(hi);
  w.writeUint32(v - hi * TWO_POW_32);
}

function writeUhyper(w: XdrSink, v: number, path: string): void {
  if (!Number.isSafeInteger(v) || v < 0) {
    throw new XdrEncodeError(path + ': expected a non-negative safe integer, got ' + typeName(v));
  }
  const hi = Math.floor(v / TWO_POW_32);
  w.writeUint32(hi);
  w.writeUint32(v - hi * TWO_POW_32);
}

function writeBool(w: XdrSink, v: boolean, path: string): void {
  if (typeof v !== 'boolean') throw new XdrEncodeError(path + ': expected a boolean, got ' + typeName(v));
  w.writeInt32(v ? 1 : 0);
}

function writeFloat(w: XdrSink, v: number, path: string): void {
  if (typeof v !== 'number') throw new XdrEncodeError(path + ': expected a number, got ' + typeName(v));
  w.writeFloat32(v);
}

function writeDouble(w: XdrSink, v: number, path: string): void {
  if (typeof v !== 'number') throw new XdrEncodeError(path + ': expected a number, got ' + typeName(v));
  w.writeFloat64(v);
}

/** Zero bytes on the wire; the value is \`undefined\`. */
export const voidCodec: Codec<void> = {
  encode(): void {},
  decode(): void {},
};

export const intCodec: Codec<number> = {
  encode: (w, v) => writeInt(w, v, 'int'),
  decode: (r) => readInt(r, 'int'),
};

export const unsignedIntCodec: Codec<number> = {
  encode: (w, v) => writeUint(w, v, 'unsigned int'),
  decode: (r) => readUint(r, 'unsigned int'),
};

export const hyperCodec: Codec<number> = {
  encode: (w, v) => writeHyper(w, v, 'hyper'),
  decode: (r) => readHyper(r, 'hyper'),
};

export const unsignedHyperCodec: Codec<number> = {
  encode: (w, v) => writeUhyper(w, v, 'unsigned hyper'),
  decode: (r) => readUhyper(r, 'unsigned hyper'),
};

export const boolCodec: Codec<boolean> = {
  encode: (w, v) => writeBool(w, v, 'bool'),
  decode: (r) => readBool(r, 'bool'),
};

export const floatCodec: Codec<number> = {
  encode: (w, v) => writeFloat(w, v, 'float'),
  decode: (r) => readFloat(r, 'float'),
};

export const doubleCodec: Codec<number> = {
  encode: (w, v) => writeDouble(w, v, 'double'),
  decode: (r) => readDouble(r, 'double'),
};

/** Shared by every xdrEncode call: encoding is synchronous and codecs never call xdrEncode. */
const ENCODE_SINK = new ReusableSink();

/** Encodes one value into a new Buffer. Throws XdrEncodeError. */
export function xdrEncode<T>(c: Codec<T>, v: T): Buffer {
  ENCODE_SINK.reset();
  try {
    c.encode(ENCODE_SINK, v);
  } catch (e) {
    if (e instanceof XdrCodecError || !(e instanceof XdrError)) throw e;
    throw new XdrEncodeError(e.message);
  }
  return ENCODE_SINK.take();
}

/** Shared by every xdrEncodeFramed call (see SlabSink). */
const FRAME_SINK = new SlabSink();

/**
 * Encodes one value after \`prefix\` reserved bytes (contents undefined, for the caller to fill) into a
 * buffer of its own: later encodings never write to it. Throws XdrEncodeError.
 */
export function xdrEncodeFramed<T>(c: Codec<T>, v: T, prefix: number): Buffer {
  FRAME_SINK.begin(prefix);
  try {
    c.encode(FRAME_SINK, v);
  } catch (e) {
    FRAME_SINK.abort();
    if (e instanceof XdrCodecError || !(e instanceof XdrError)) throw e;
    throw new XdrEncodeError(e.message);
  }
  return FRAME_SINK.end();
}

/**
 * Decodes one value from \`r\`'s position that must span the rest of its input (the arguments after an RPC
 * header read with the same Reader). Throws XdrDecodeError, also for trailing bytes.
 */
export function xdrDecodeFrom<T>(c: Codec<T>, r: Reader): T {
  let v: T;
  try {
    v = c.decode(r);
  } catch (e) {
    if (e instanceof XdrCodecError || !(e instanceof XdrError)) throw e;
    throw new XdrDecodeError(e.message, r.offset);
  }
  if (r.remaining !== 0) {
    throw new XdrDecodeError(r.remaining + ' trailing byte(s) after the value at offset ' + r.offset, r.offset);
  }
  return v;
}

/** Decodes one value that must span all of \`buf\`. Throws XdrDecodeError, also for trailing bytes. */
export function xdrDecode<T>(c: Codec<T>, buf: Uint8Array): T {
  const r = new Reader(buf);
  let v: T;
  try {
    v = c.decode(r);
  } catch (e) {
    if (e instanceof XdrCodecError || !(e instanceof XdrError)) throw e;
    throw new XdrDecodeError(e.message, r.offset);
  }
  if (r.remaining !== 0) {
    throw new XdrDecodeError(r.remaining + ' trailing byte(s) after the value at offset ' + r.offset, r.offset);
  }
  return v;
}
`,
  ),
  S(
    'skipPadding',
    [],
    `
function skipPadding(r: Reader, length: number, path: string): void {
  const pad = (4 - (length % 4)) % 4;
  if (pad === 0) return;
  if (r.remaining < pad) throw truncated(r, pad, path);
  const at = r.offset;
  try {
    r.skipPadding(length, path);
  } catch {
    throw new XdrDecodeError(path + ': non-zero padding at offset ' + at, at);
  }
}
`,
  ),
  S(
    'readLength',
    [],
    `
/** A uint32 count or byte length that must not exceed \`max\`. */
function readLength(r: Reader, max: number, path: string): number {
  const at = r.offset;
  const n = readUint(r, path);
  if (n > max) throw new XdrDecodeError(path + ': length ' + n + ' at offset ' + at + ' exceeds the bound ' + max, at);
  return n;
}
`,
  ),
  S(
    'readOpaqueBody',
    ['skipPadding'],
    `
/** V8 keeps typed arrays up to this size on its heap; taking their \`.buffer\` moves them off it, which costs
 * more than copying them into a pooled Buffer. */
const ON_HEAP_MAX = 64;

/** Reads \`n\` bytes plus padding, checking the input holds them before anything is allocated. */
function readOpaqueBody(r: Reader, n: number, path: string): Buffer {
  if (n > r.remaining) throw truncated(r, n, path);
  const bytes = r.readBytes(n, path);
  skipPadding(r, n, path);
  return n <= ON_HEAP_MAX ? Buffer.from(bytes) : Buffer.from(bytes.buffer, bytes.byteOffset, n);
}
`,
  ),
  S(
    'readFixedOpaque',
    ['readOpaqueBody'],
    `
function readFixedOpaque(r: Reader, size: number, path: string): Buffer {
  return readOpaqueBody(r, size, path);
}
`,
  ),
  S(
    'readVarOpaque',
    ['readOpaqueBody', 'readLength'],
    `
function readVarOpaque(r: Reader, max: number, path: string): Buffer {
  return readOpaqueBody(r, readLength(r, max, path), path);
}
`,
  ),
  S(
    'readString',
    ['readOpaqueBody', 'readLength'],
    `
/** The bytes must be valid UTF-8. */
function readString(r: Reader, max: number, path: string): string {
  const at = r.offset;
  const bytes = readOpaqueBody(r, readLength(r, max, path), path);
  if (!isUtf8(bytes)) throw new XdrDecodeError(path + ': string at offset ' + at + ' is not valid UTF-8', at);
  return bytes.toString('utf8');
}
`,
    ["import { isUtf8 } from 'buffer';"],
  ),
  S(
    'checkBytes',
    [],
    `
function checkBytes(v: Uint8Array, path: string): void {
  if (!(v instanceof Uint8Array)) throw new XdrEncodeError(path + ': expected a Buffer, got ' + typeName(v));
}
`,
  ),
  S(
    'writeFixedOpaque',
    ['checkBytes'],
    `
function writeFixedOpaque(w: XdrSink, v: Uint8Array, size: number, path: string): void {
  checkBytes(v, path);
  if (v.length !== size) throw new XdrEncodeError(path + ': expected exactly ' + size + ' byte(s), got ' + v.length);
  w.writeBytes(v);
  w.writePadding(size);
}
`,
  ),
  S(
    'writeVarOpaque',
    ['checkBytes'],
    `
function writeVarOpaque(w: XdrSink, v: Uint8Array, max: number, path: string): void {
  checkBytes(v, path);
  if (v.length > max) throw new XdrEncodeError(path + ': ' + v.length + ' byte(s) exceed the bound ' + max);
  w.writeUint32(v.length);
  w.writeBytes(v);
  w.writePadding(v.length);
}
`,
  ),
  S(
    'writeString',
    [],
    `
/** Encoded as UTF-8; the bound applies to the byte length. */
function writeString(w: XdrSink, v: string, max: number, path: string): void {
  if (typeof v !== 'string') throw new XdrEncodeError(path + ': expected a string, got ' + typeName(v));
  const bytes = Buffer.from(v, 'utf8');
  if (bytes.length > max) throw new XdrEncodeError(path + ': ' + bytes.length + ' byte(s) exceed the bound ' + max);
  w.writeUint32(bytes.length);
  w.writeBytes(bytes);
  w.writePadding(bytes.length);
}
`,
  ),
  S(
    'prefixDecodeError',
    [],
    `
function prefixDecodeError(e: unknown, prefix: string): unknown {
  return e instanceof XdrDecodeError ? new XdrDecodeError(prefix + ': ' + e.message, e.offset) : e;
}
`,
  ),
  S(
    'prefixEncodeError',
    [],
    `
function prefixEncodeError(e: unknown, prefix: string): unknown {
  return e instanceof XdrEncodeError ? new XdrEncodeError(prefix + ': ' + e.message) : e;
}
`,
  ),
  S(
    'readElements',
    ['prefixDecodeError'],
    `
/** \`minSize\` is the smallest wire size of one element: \`n\` elements cannot fit in fewer than n * minSize bytes,
 * so an impossible count fails before any element is read. */
function readElements<T>(r: Reader, n: number, minSize: number, decode: (r: Reader) => T, path: string): T[] {
  if (n * minSize > r.remaining) {
    throw new XdrDecodeError(
      path + ': ' + n + ' element(s) need at least ' + n * minSize + ' byte(s) at offset ' + r.offset + ', ' +
        r.remaining + ' left',
      r.offset,
    );
  }
  const out: T[] = [];
  let i = 0;
  try {
    for (; i < n; i++) out.push(decode(r));
  } catch (e) {
    throw prefixDecodeError(e, path + '[' + i + ']');
  }
  return out;
}
`,
  ),
  S(
    'readFixedArray',
    ['readElements'],
    `
function readFixedArray<T>(r: Reader, size: number, minSize: number, decode: (r: Reader) => T, path: string): T[] {
  return readElements(r, size, minSize, decode, path);
}
`,
  ),
  S(
    'readVarArray',
    ['readElements', 'readLength'],
    `
function readVarArray<T>(r: Reader, max: number, minSize: number, decode: (r: Reader) => T, path: string): T[] {
  return readElements(r, readLength(r, max, path), minSize, decode, path);
}
`,
  ),
  S(
    'writeElements',
    ['prefixEncodeError'],
    `
function writeElements<T>(w: XdrSink, v: readonly T[], encode: (w: XdrSink, v: T) => void, path: string): void {
  let i = 0;
  try {
    for (; i < v.length; i++) encode(w, v[i]);
  } catch (e) {
    throw prefixEncodeError(e, path + '[' + i + ']');
  }
}
`,
  ),
  S(
    'writeFixedArray',
    ['writeElements'],
    `
function writeFixedArray<T>(w: XdrSink, v: readonly T[], size: number, encode: (w: XdrSink, v: T) => void, path: string): void {
  if (!Array.isArray(v)) throw new XdrEncodeError(path + ': expected an array, got ' + typeName(v));
  if (v.length !== size) throw new XdrEncodeError(path + ': expected exactly ' + size + ' element(s), got ' + v.length);
  writeElements(w, v, encode, path);
}
`,
  ),
  S(
    'writeVarArray',
    ['writeElements'],
    `
function writeVarArray<T>(w: XdrSink, v: readonly T[], max: number, encode: (w: XdrSink, v: T) => void, path: string): void {
  if (!Array.isArray(v)) throw new XdrEncodeError(path + ': expected an array, got ' + typeName(v));
  if (v.length > max) throw new XdrEncodeError(path + ': ' + v.length + ' element(s) exceed the bound ' + max);
  w.writeUint32(v.length);
  writeElements(w, v, encode, path);
}
`,
  ),
  S(
    'readOptional',
    [],
    `
/** XDR optional-data: a bool, then the value if it is TRUE. */
function readOptional<T>(r: Reader, decode: (r: Reader) => T, path: string): T | null {
  return readBool(r, path) ? decode(r) : null;
}
`,
  ),
  S(
    'writeOptional',
    [],
    `
function writeOptional<T>(w: XdrSink, v: T | null, encode: (w: XdrSink, v: T) => void): void {
  if (v === null) {
    w.writeInt32(0);
  } else {
    w.writeInt32(1);
    encode(w, v);
  }
}
`,
  ),
  S(
    'readEnum',
    [],
    `
function readEnum(r: Reader, values: ReadonlySet<number>, path: string): number {
  const at = r.offset;
  const v = readInt(r, path);
  if (!values.has(v)) throw new XdrDecodeError(path + ': ' + v + ' at offset ' + at + ' is not a declared enum value', at);
  return v;
}
`,
  ),
  S(
    'writeEnum',
    [],
    `
function writeEnum(w: XdrSink, v: number, values: ReadonlySet<number>, path: string): void {
  if (!values.has(v)) throw new XdrEncodeError(path + ': ' + String(v) + ' is not a declared enum value');
  w.writeInt32(v);
}
`,
  ),
  S(
    'checkStruct',
    [],
    `
function checkStruct(v: unknown, path: string): void {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new XdrEncodeError(path + ': expected an object, got ' + typeName(v));
  }
}
`,
  ),
  S(
    'noArmDecode',
    [],
    `
function noArmDecode(tag: number, at: number, path: string): XdrDecodeError {
  return new XdrDecodeError(path + ': discriminant ' + tag + ' at offset ' + at + ' selects no arm', at);
}
`,
  ),
  S(
    'noArmEncode',
    [],
    `
function noArmEncode(tag: unknown, path: string): XdrEncodeError {
  return new XdrEncodeError(path + ': tag ' + String(tag) + ' selects no arm');
}
`,
  ),
  S(
    'depth',
    [],
    `
/** Nesting of recursive types in the decode or encode running now; codecs run synchronously, so one
 * counter per direction is exact. */
let decodeDepth = 0;
let encodeDepth = 0;

function enterDecode(r: Reader, path: string): void {
  if (decodeDepth >= XDR_MAX_DEPTH) {
    throw new XdrDecodeError(path + ': nesting deeper than ' + XDR_MAX_DEPTH + ' at offset ' + r.offset, r.offset);
  }
  decodeDepth++;
}

function exitDecode(): void {
  decodeDepth--;
}

function enterEncode(path: string): void {
  if (encodeDepth >= XDR_MAX_DEPTH) throw new XdrEncodeError(path + ': nesting deeper than ' + XDR_MAX_DEPTH);
  encodeDepth++;
}

function exitEncode(): void {
  encodeDepth--;
}
`,
  ),
];

export const ALWAYS: readonly string[] = ['core'];

export const BASE_IMPORTS: readonly string[] = ["import { Reader, Writer, XdrError } from '@stellar/js-xdr';"];

/** Names the snippets declare at top level; user definitions must not reuse them. */
export function snippetNames(): Set<string> {
  const names = new Set<string>(['Reader', 'Writer', 'XdrError', 'isUtf8']);
  for (const s of SNIPPETS) {
    for (const m of s.code.matchAll(/^(?:export )?(?:abstract )?(?:function|const|let|class|interface|type) (\w+)/gm)) {
      names.add(m[1]);
    }
  }
  return names;
}
