/**
 * AES-CMAC (NIST SP 800-38B, RFC 4493) over Node's AES block cipher. The
 * wrapping format's authentication tag; test vectors in
 * tests/ts/filter-wrapping.test.ts.
 */
import crypto from 'node:crypto';

const BLOCK = 16;
/** R_128 of SP 800-38B: the low byte of the reduction constant for a 128-bit block. */
const RB = 0x87;

/** AES in ECB mode, no padding: the bare block cipher, for whole blocks. */
function blockCipher(key: Buffer): (block: Buffer) => Buffer {
  const cipher = `aes-${key.length * 8}-ecb`;
  return (block) => {
    const c = crypto.createCipheriv(cipher, key, null);
    c.setAutoPadding(false);
    return Buffer.concat([c.update(block), c.final()]);
  };
}

/** Doubling in GF(2^128): shift left one bit, reduce by RB when the top bit falls out. */
function double(b: Buffer): Buffer {
  const out = Buffer.alloc(BLOCK);
  for (let i = 0; i < BLOCK; i++) out[i] = ((b[i] << 1) | (i + 1 < BLOCK ? b[i + 1] >> 7 : 0)) & 0xff;
  if (b[0] & 0x80) out[BLOCK - 1] ^= RB;
  return out;
}

/**
 * The 16-byte AES-CMAC of `message` under `key` (16, 24 or 32 bytes).
 * Throws a RangeError for another key length.
 */
export function aesCmac(key: Buffer, message: Buffer): Buffer {
  if (key.length !== 16 && key.length !== 24 && key.length !== 32) throw new RangeError(`AES-CMAC key of ${key.length} bytes`);
  const enc = blockCipher(key);
  const k1 = double(enc(Buffer.alloc(BLOCK)));
  const k2 = double(k1);
  const n = Math.max(1, Math.ceil(message.length / BLOCK));
  const complete = message.length > 0 && message.length % BLOCK === 0;
  // Last block: XOR K1 when complete, else padded with 0x80 00.. and XOR K2.
  const last = Buffer.alloc(BLOCK);
  const tail = message.subarray((n - 1) * BLOCK);
  tail.copy(last);
  if (!complete) last[tail.length] = 0x80;
  const sub = complete ? k1 : k2;
  for (let i = 0; i < BLOCK; i++) last[i] ^= sub[i];
  // CBC-MAC with a zero IV over the first n-1 blocks then the last: one AES-CBC pass.
  const c = crypto.createCipheriv(`aes-${key.length * 8}-cbc`, key, Buffer.alloc(BLOCK));
  c.setAutoPadding(false);
  const body = Buffer.concat([message.subarray(0, (n - 1) * BLOCK), last]);
  const out = Buffer.concat([c.update(body), c.final()]);
  return out.subarray(out.length - BLOCK);
}

/** Constant-time comparison of a received tag with the expected one. */
export function cmacEqual(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}
