import { type CkName, ck } from './constants';

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

/**
 * Attribute types whose value is one CK_ULONG (or, for CKA_ALLOWED_MECHANISMS,
 * an array of them) and so depends on the peer's layout.
 */
export const ULONG_ATTRIBUTES: ReadonlySet<number> = new Set(
  (
    [
    'CKA_CLASS', 'CKA_CERTIFICATE_TYPE', 'CKA_CERTIFICATE_CATEGORY', 'CKA_JAVA_MIDP_SECURITY_DOMAIN',
    'CKA_NAME_HASH_ALGORITHM', 'CKA_KEY_TYPE', 'CKA_MODULUS_BITS', 'CKA_PRIME_BITS', 'CKA_SUBPRIME_BITS',
    'CKA_VALUE_BITS', 'CKA_VALUE_LEN', 'CKA_KEY_GEN_MECHANISM', 'CKA_HW_FEATURE_TYPE', 'CKA_PIXEL_X',
    'CKA_PIXEL_Y', 'CKA_RESOLUTION', 'CKA_CHAR_ROWS', 'CKA_CHAR_COLUMNS', 'CKA_BITS_PER_PIXEL',
    'CKA_MECHANISM_TYPE', 'CKA_OTP_FORMAT', 'CKA_OTP_LENGTH', 'CKA_OTP_TIME_INTERVAL',
    'CKA_OTP_CHALLENGE_REQUIREMENT', 'CKA_OTP_TIME_REQUIREMENT', 'CKA_OTP_COUNTER_REQUIREMENT',
    'CKA_OTP_PIN_REQUIREMENT', 'CKA_AUTH_PIN_FLAGS', 'CKA_ALLOWED_MECHANISMS',
    ] as const satisfies readonly CkName[]
  ).map((n) => ck[n]),
);

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
 * length is not a whole number of CK_ULONGs is returned unchanged: the
 * backend will reject it as it would for a local caller.
 */
export function convertULongArray(value: Buffer, from: ArchLayout, to: ArchLayout): Buffer {
  if (sameLayout(from, to) || value.length % from.ulongSize !== 0) return value;
  const n = value.length / from.ulongSize;
  const out = Buffer.alloc(n * to.ulongSize);
  for (let i = 0; i < n; i++) writeULong(out, i * to.ulongSize, readULong(value, i * from.ulongSize, from), to);
  return out;
}

/** Length an attribute value of `len` bytes in layout `from` has in layout `to`. */
export function convertAttributeLength(type: number, len: number, from: ArchLayout, to: ArchLayout): number {
  if (len < 0 || !ULONG_ATTRIBUTES.has(type) || sameLayout(from, to) || len % from.ulongSize !== 0) return len;
  return (len / from.ulongSize) * to.ulongSize;
}

export function convertAttributeValue(type: number, value: Buffer, from: ArchLayout, to: ArchLayout): Buffer {
  if (!ULONG_ATTRIBUTES.has(type)) return value;
  return convertULongArray(value, from, to);
}
