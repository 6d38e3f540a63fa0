import { ProxyError } from '../errors';
import { ATTR_SHAPE, ATTRIBUTE_NAMES, attributeShape } from '../generated/attribute-shapes';
import type { AttrShape } from '../generated/attribute-shapes';

/** C_SetupArch codes (wire facts of program 4 version 3). */
export const ARCH_LE64 = 1;
export const ARCH_LE32 = 2;
export const ARCH_BE64 = 3;
export const ARCH_BE32 = 4;
export const ARCH_UNSUPPORTED = 5;

export interface ArchLayout {
  readonly code: number;
  /** sizeof(CK_ULONG) in the peer's memory. */
  readonly ulongSize: 4 | 8;
  readonly littleEndian: boolean;
}

const LAYOUTS: ReadonlyMap<number, ArchLayout> = new Map([
  [ARCH_LE64, { code: ARCH_LE64, ulongSize: 8, littleEndian: true }],
  [ARCH_LE32, { code: ARCH_LE32, ulongSize: 4, littleEndian: true }],
  [ARCH_BE64, { code: ARCH_BE64, ulongSize: 8, littleEndian: false }],
  [ARCH_BE32, { code: ARCH_BE32, ulongSize: 4, littleEndian: false }],
]);

export function archLayout(code: number): ArchLayout | undefined {
  return LAYOUTS.get(code);
}

/** The daemon's own layout: the backend modules run in this process. */
export const NATIVE_ARCH: ArchLayout = (() => {
  const le = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
  const is64 = process.arch === 'x64' || process.arch === 'arm64' || process.arch === 'ppc64' || process.arch === 's390x';
  const code = le ? (is64 ? ARCH_LE64 : ARCH_LE32) : is64 ? ARCH_BE64 : ARCH_BE32;
  return LAYOUTS.get(code)!;
})();

/** Reads one CK_ULONG in layout `a`; ~0 becomes -1. */
export function readULong(buf: Buffer, off: number, a: ArchLayout): number {
  if (a.ulongSize === 8) {
    const v = a.littleEndian ? buf.readBigUInt64LE(off) : buf.readBigUInt64BE(off);
    // ~0UL stays recognisable; other values above 2^53 are not PKCS#11 numbers.
    return v === 0xffffffffffffffffn ? -1 : Number(v);
  }
  const v = a.littleEndian ? buf.readUInt32LE(off) : buf.readUInt32BE(off);
  return v === 0xffffffff ? -1 : v;
}

/** Writes one CK_ULONG in layout `a`; -1 is ~0. */
export function writeULong(buf: Buffer, off: number, v: number, a: ArchLayout): void {
  if (a.ulongSize === 8) {
    const b = v < 0 ? 0xffffffffffffffffn : BigInt(v);
    if (a.littleEndian) buf.writeBigUInt64LE(b, off);
    else buf.writeBigUInt64BE(b, off);
  } else {
    const w = v < 0 ? 0xffffffff : v >>> 0;
    if (a.littleEndian) buf.writeUInt32LE(w, off);
    else buf.writeUInt32BE(w, off);
  }
}

function sameLayout(a: ArchLayout, b: ArchLayout): boolean {
  return a.ulongSize === b.ulongSize && a.littleEndian === b.littleEndian;
}

/**
 * Re-encodes an array of CK_ULONGs from one layout to another. A value whose
 * length is not a whole number of CK_ULONGs is returned unchanged.
 */
export function convertULongArray(value: Buffer, from: ArchLayout, to: ArchLayout): Buffer {
  if (sameLayout(from, to) || value.length % from.ulongSize !== 0) return value;
  const n = value.length / from.ulongSize;
  const out = Buffer.alloc(n * to.ulongSize);
  for (let i = 0; i < n; i++) writeULong(out, i * to.ulongSize, readULong(value, i * from.ulongSize, from), to);
  return out;
}

/**
 * Why an attribute value cannot be carried: its length does not fit its
 * shape in the sender's layout, or it holds the sender's pointers.
 */
export class AttributeShapeError extends ProxyError {
  readonly code = 'ATTRIBUTE_SHAPE';
  constructor(
    readonly type: number,
    readonly detail: string,
  ) {
    super(`attribute ${ATTRIBUTE_NAMES.get(type) ?? '0x' + type.toString(16)}: ${detail}`);
    this.name = 'AttributeShapeError';
  }
}

/** True for shapes whose bytes depend on the CK_ULONG layout. */
function ulongShaped(shape: AttrShape): boolean {
  return shape === ATTR_SHAPE.ULONG || shape === ATTR_SHAPE.ULONGS;
}

/**
 * Length, in layout `to`, of an attribute value that is `len` bytes in
 * layout `from` (as convertAttributeValue re-encodes it). -1
 * (CK_UNAVAILABLE_INFORMATION) and lengths that are no whole number of
 * CK_ULONGs stay as they are.
 */
export function convertAttributeLength(type: number, len: number, from: ArchLayout, to: ArchLayout): number {
  if (len < 0 || sameLayout(from, to) || !ulongShaped(attributeShape(type)) || len % from.ulongSize !== 0) return len;
  return (len / from.ulongSize) * to.ulongSize;
}

/**
 * Size, in layout `to`, of a C_GetAttributeValue output buffer of `len`
 * bytes in layout `from`: room for as many whole CK_ULONGs. A 32-bit
 * caller's 4-byte CKA_CLASS buffer is an 8-byte one for a 64-bit module; a
 * 6-byte buffer for CKA_ALLOWED_MECHANISMS holds one mechanism.
 */
export function convertAttributeCapacity(type: number, len: number, from: ArchLayout, to: ArchLayout): number {
  if (len < 0 || sameLayout(from, to) || !ulongShaped(attributeShape(type))) return len;
  return Math.floor(len / from.ulongSize) * to.ulongSize;
}

/**
 * Checks a value sent by a client against its type's shape: a CK_ULONG is
 * exactly one CK_ULONG of the client's layout, a CK_ULONG array a whole
 * number of them, a nested template (CK_ATTRIBUTE array) is never carried as
 * bytes since its pValue members are addresses in the client's memory
 * (only the empty template has none). Throws AttributeShapeError.
 */
export function checkAttributeValue(type: number, value: Buffer, from: ArchLayout): void {
  const shape = attributeShape(type);
  if (shape === ATTR_SHAPE.ULONG && value.length !== from.ulongSize) {
    throw new AttributeShapeError(type, `a CK_ULONG is ${from.ulongSize} bytes, got ${value.length}`);
  }
  if (shape === ATTR_SHAPE.ULONGS && value.length % from.ulongSize !== 0) {
    throw new AttributeShapeError(type, `${value.length} bytes is not a whole number of ${from.ulongSize}-byte CK_ULONGs`);
  }
  if (shape === ATTR_SHAPE.TEMPLATE && value.length !== 0) {
    throw new AttributeShapeError(type, 'a nested template holds pointers into the client\'s memory');
  }
}

/** Re-encodes an attribute value's CK_ULONGs (per its shape) from layout `from` to `to`; other shapes pass as they are. */
export function convertAttributeValue(type: number, value: Buffer, from: ArchLayout, to: ArchLayout): Buffer {
  if (sameLayout(from, to) || !ulongShaped(attributeShape(type))) return value;
  return convertULongArray(value, from, to);
}

/**
 * CK_ULONG attribute value as the daemon's module writes it (little-endian:
 * 8 bytes, or 4 from a 32-bit layout); undefined for any other length.
 */
export function attributeULong(b: Buffer | null | undefined): number | undefined {
  if (!b) return undefined;
  if (b.length === 8) return Number(b.readBigUInt64LE(0));
  if (b.length === 4) return b.readUInt32LE(0);
  return undefined;
}
