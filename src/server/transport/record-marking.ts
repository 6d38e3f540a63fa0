/**
 * RPC record marking over a byte stream (RFC 5531 section 11). A record is one or more fragments;
 * each fragment is a 4-byte big-endian mark followed by its bytes. The mark's top bit flags the
 * last fragment of the record, the low 31 bits are the fragment length.
 */
import { RpcRecordTooLargeError } from './errors';

export const RECORD_MARK_SIZE = 4;
export const LAST_FRAGMENT_BIT = 0x80000000;
export const MAX_FRAGMENT_LENGTH = 0x7fffffff;
export const DEFAULT_MAX_RECORD_SIZE = 16 * 1024 * 1024;

/** First allocation when a record spans several pieces; grows by doubling up to the record limit. */
const INITIAL_ACCUMULATOR_SIZE = 4096;

/**
 * Records copied out of a reused read buffer are carved from slabs of this size (the largest a
 * carved record may be is a quarter of it; larger ones get their own buffer). A slab lives while
 * any record carved from it does.
 */
const COPY_SLAB_SIZE = 64 * 1024;
let slab = Buffer.allocUnsafeSlow(COPY_SLAB_SIZE);
let slabUsed = 0;

/** A copy of `piece` that no later read can overwrite. */
function ownCopy(piece: Buffer): Buffer {
  const n = piece.length;
  if (n > COPY_SLAB_SIZE / 4) return Buffer.from(piece);
  if (slabUsed + n > COPY_SLAB_SIZE) {
    slab = Buffer.allocUnsafeSlow(COPY_SLAB_SIZE);
    slabUsed = 0;
  }
  const out = slab.subarray(slabUsed, slabUsed + n);
  piece.copy(out);
  // 8-byte steps keep each record's start aligned as a fresh allocation's is.
  slabUsed += (n + 7) & ~7;
  return out;
}

/**
 * Turns arbitrarily split or coalesced stream chunks into whole records.
 * After `push` throws, the stream is out of sync and the assembler must be discarded.
 */
export class RecordAssembler {
  /** Mark bytes collected so far; meaningful iff `!inBody`. */
  private readonly mark = Buffer.alloc(RECORD_MARK_SIZE);
  private markFill = 0;
  /** True while reading a fragment's bytes (its mark has been read and checked). */
  private inBody = false;
  /** Bytes of the current fragment still to come; meaningful iff `inBody`. */
  private fragmentLeft = 0;
  private fragmentIsLast = false;

  /** Record bytes so far, held without copying while they come from a single chunk. */
  private single: Buffer | null = null;
  /** Record bytes once they span pieces; `size` bytes are valid. Set iff `single` is null and size > 0. */
  private accumulator: Buffer | null = null;
  private size = 0;

  constructor(readonly maxRecordSize: number = DEFAULT_MAX_RECORD_SIZE) {}

  /** True when a record or mark is partly received. */
  get midRecord(): boolean {
    return this.inBody || this.markFill > 0 || this.size > 0;
  }

  /**
   * Consume a chunk; returns the records it completes, in order. Throws RpcRecordTooLargeError.
   * A `transient` chunk is overwritten once push returns (a reused read buffer): every byte kept,
   * in a returned record or a partial one, is copied. Otherwise records may be views of `chunk`.
   */
  push(chunk: Buffer, transient = false): Buffer[] {
    const records: Buffer[] = [];
    let off = 0;
    while (off < chunk.length) {
      if (!this.inBody) {
        const n = Math.min(RECORD_MARK_SIZE - this.markFill, chunk.length - off);
        chunk.copy(this.mark, this.markFill, off, off + n);
        this.markFill += n;
        off += n;
        if (this.markFill < RECORD_MARK_SIZE) break;
        this.markFill = 0;
        const mark = this.mark.readUInt32BE(0);
        const len = mark & MAX_FRAGMENT_LENGTH;
        // Checked before any of the fragment is buffered, so a huge announced length costs nothing.
        if (len > this.maxRecordSize - this.size) {
          throw new RpcRecordTooLargeError(this.size + len, this.maxRecordSize);
        }
        this.inBody = true;
        this.fragmentLeft = len;
        this.fragmentIsLast = mark >>> 31 === 1;
      }
      const n = Math.min(this.fragmentLeft, chunk.length - off);
      if (n > 0) {
        const piece = chunk.subarray(off, off + n);
        if (transient && this.size === 0) this.appendFirstCopy(piece, this.fragmentLeft === n && this.fragmentIsLast);
        else this.append(piece);
        off += n;
        this.fragmentLeft -= n;
      }
      if (this.fragmentLeft === 0) {
        this.inBody = false;
        if (this.fragmentIsLast) records.push(this.take());
      }
    }
    return records;
  }

  private append(piece: Buffer): void {
    if (this.size === 0) {
      this.single = piece;
      this.size = piece.length;
      return;
    }
    const needed = this.size + piece.length;
    if (this.accumulator === null || needed > this.accumulator.length) {
      // Doubling keeps copying linear even for a record sent as many tiny fragments.
      const cap = Math.min(Math.max(needed, 2 * this.size, INITIAL_ACCUMULATOR_SIZE), this.maxRecordSize);
      const grown = Buffer.allocUnsafe(Math.max(cap, needed));
      (this.single ?? this.accumulator!).copy(grown, 0, 0, this.size);
      this.accumulator = grown;
      this.single = null;
    }
    piece.copy(this.accumulator, this.size);
    this.size = needed;
  }

  /** The record's first bytes, from a transient chunk: copied whole, or into an accumulator sized for the fragment. */
  private appendFirstCopy(piece: Buffer, completesRecord: boolean): void {
    this.size = piece.length;
    if (completesRecord) {
      this.single = ownCopy(piece);
      return;
    }
    // fragmentLeft still counts this piece: the fragment's full length is known, so one allocation holds it.
    this.accumulator = Buffer.allocUnsafe(Math.min(Math.max(this.fragmentLeft, INITIAL_ACCUMULATOR_SIZE), this.maxRecordSize));
    piece.copy(this.accumulator, 0);
  }

  private take(): Buffer {
    const record =
      this.single ?? (this.accumulator ? this.accumulator.subarray(0, this.size) : Buffer.alloc(0));
    this.single = null;
    this.accumulator = null;
    this.size = 0;
    return record;
  }
}

/**
 * Frame a record from its pieces as one buffer (one socket write). Fragments are at most
 * `maxFragment` bytes; an empty record is one empty last fragment.
 */
export function frameRecord(pieces: readonly Buffer[], maxFragment: number = MAX_FRAGMENT_LENGTH): Buffer {
  let total = 0;
  for (const p of pieces) total += p.length;
  const fragments = Math.max(1, Math.ceil(total / maxFragment));
  const out = Buffer.allocUnsafe(total + fragments * RECORD_MARK_SIZE);
  let pieceIdx = 0;
  let pieceOff = 0;
  let pos = 0;
  let left = total;
  for (let f = 0; f < fragments; f++) {
    const len = Math.min(left, maxFragment);
    left -= len;
    out.writeUInt32BE((left === 0 ? LAST_FRAGMENT_BIT : 0) + len, pos);
    pos += RECORD_MARK_SIZE;
    let need = len;
    while (need > 0) {
      const piece = pieces[pieceIdx];
      const n = Math.min(need, piece.length - pieceOff);
      piece.copy(out, pos, pieceOff, pieceOff + n);
      pos += n;
      need -= n;
      pieceOff += n;
      if (pieceOff === piece.length) {
        pieceIdx++;
        pieceOff = 0;
      }
    }
  }
  return out;
}
