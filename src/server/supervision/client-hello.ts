/**
 * Routing key of a TLS connection, read from its cleartext ClientHello
 * without any key (RFC 8446 4.1.2, RFC 5246 7.4.1.2): the primary peeks it,
 * the worker terminates TLS.
 *
 * Wire fact: a client joining an application (px_JoinApp) offers, among its
 * ALPN protocols (RFC 7301), `pkcs11proxyd-worker.<N>`, N being the decimal
 * value of the first byte of the application token (the worker holding the
 * application). Only that byte travels in the clear; the token itself goes
 * inside TLS as the px_JoinApp argument. The daemon does not answer the ALPN
 * extension (no protocol is selected), so a client must not require it.
 */

export const JOIN_ALPN_PREFIX = 'pkcs11proxyd-worker.';

/** Largest ClientHello the primary assembles (several records allowed). */
export const CLIENT_HELLO_MAX = 16 * 1024;

const RECORD_HANDSHAKE = 22;
const HANDSHAKE_CLIENT_HELLO = 1;
const EXT_ALPN = 16;

export type HelloPeek =
  /** More bytes are needed. */
  | { kind: 'partial' }
  /** Not a ClientHello (or a malformed one): route anywhere, the worker's TLS stack refuses it. */
  | { kind: 'other' }
  | { kind: 'hello'; alpn: string[] };

/** Looks at the bytes received so far (from the first byte of the connection). */
export function peekClientHello(buf: Buffer): HelloPeek {
  // Reassemble the handshake message from consecutive handshake records.
  const parts: Buffer[] = [];
  let have = 0;
  let need = -1;
  let off = 0;
  while (need < 0 || have < need) {
    if (buf.length - off < 5) return buf.length >= CLIENT_HELLO_MAX ? { kind: 'other' } : { kind: 'partial' };
    if (buf[off] !== RECORD_HANDSHAKE || buf[off + 1] !== 3) return { kind: 'other' };
    const len = buf.readUInt16BE(off + 3);
    if (len === 0 || len > 16384 + 256) return { kind: 'other' };
    if (buf.length - off - 5 < len) return buf.length >= CLIENT_HELLO_MAX ? { kind: 'other' } : { kind: 'partial' };
    parts.push(buf.subarray(off + 5, off + 5 + len));
    have += len;
    off += 5 + len;
    if (need < 0 && have >= 4) {
      const head = Buffer.concat(parts);
      if (head[0] !== HANDSHAKE_CLIENT_HELLO) return { kind: 'other' };
      need = 4 + head.readUIntBE(1, 3);
      if (need > CLIENT_HELLO_MAX) return { kind: 'other' };
    }
  }
  const msg = Buffer.concat(parts).subarray(4, need);
  try {
    return { kind: 'hello', alpn: alpnOf(msg) };
  } catch {
    return { kind: 'other' };
  }
}

/** ALPN protocol names of a ClientHello body; throws RangeError when it is truncated. */
function alpnOf(b: Buffer): string[] {
  let p = 2 + 32; // legacy_version, random
  const skip = (lenBytes: number): void => {
    if (p + lenBytes > b.length) throw new RangeError('truncated');
    const n = b.readUIntBE(p, lenBytes);
    p += lenBytes + n;
    if (p > b.length) throw new RangeError('truncated');
  };
  skip(1); // legacy_session_id
  skip(2); // cipher_suites
  skip(1); // legacy_compression_methods
  if (p === b.length) return [];
  const extEnd = p + 2 + b.readUInt16BE(p);
  p += 2;
  if (extEnd > b.length) throw new RangeError('truncated');
  while (p + 4 <= extEnd) {
    const type = b.readUInt16BE(p);
    const len = b.readUInt16BE(p + 2);
    const start = p + 4;
    p = start + len;
    if (p > extEnd) throw new RangeError('truncated');
    if (type !== EXT_ALPN) continue;
    const out: string[] = [];
    let q = start + 2;
    const end = Math.min(start + 2 + b.readUInt16BE(start), p);
    while (q < end) {
      const n = b[q];
      out.push(b.toString('latin1', q + 1, q + 1 + n));
      q += 1 + n;
    }
    return out;
  }
  return [];
}

/** Worker index a ClientHello asks for, or null. */
export function joinWorkerOf(alpn: readonly string[]): number | null {
  for (const name of alpn) {
    if (!name.startsWith(JOIN_ALPN_PREFIX)) continue;
    const s = name.slice(JOIN_ALPN_PREFIX.length);
    if (/^(0|[1-9][0-9]{0,2})$/.test(s) && Number(s) <= 255) return Number(s);
  }
  return null;
}
