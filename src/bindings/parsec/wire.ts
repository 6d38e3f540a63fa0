/**
 * Parsec wire protocol 1.0 (parallaxsecond/parsec-book, parsec_client/wire_protocol.md):
 * a fixed 36-byte little-endian packed header, then `body_len` bytes of body
 * (protobuf), then `auth_len` bytes of authentication. Requests and responses
 * share the layout; `status` is 0 in a request.
 */
import { ProxyError } from '../../errors';

export const PARSEC_MAGIC = 0x5ec0a710;
/** The header after magic and hdr_size: 36 - 4 - 2. */
export const PARSEC_HDR_SIZE = 30;
export const PARSEC_HEADER_LENGTH = 36;
export const PARSEC_VERSION_MAJ = 1;
export const PARSEC_VERSION_MIN = 0;
/** content_type and accept_type: the only body type of the protocol. */
export const PARSEC_CONTENT_PROTOBUF = 0;

/** Provider ids (parsec-interface requests::ProviderId). */
export const Provider = {
  Core: 0,
  MbedCrypto: 1,
  Pkcs11: 2,
  Tpm: 3,
  TrustedService: 4,
  CryptoAuthLib: 5,
} as const;

/** Opcodes (parsec-interface requests::Opcode). */
export const Opcode = {
  Ping: 0x01,
  PsaGenerateKey: 0x02,
  PsaDestroyKey: 0x03,
  PsaSignHash: 0x04,
  PsaVerifyHash: 0x05,
  PsaImportKey: 0x06,
  PsaExportPublicKey: 0x07,
  ListProviders: 0x08,
  ListOpcodes: 0x09,
  PsaAsymmetricEncrypt: 0x0a,
  PsaAsymmetricDecrypt: 0x0b,
  PsaExportKey: 0x0c,
  PsaGenerateRandom: 0x0d,
  ListAuthenticators: 0x0e,
  PsaHashCompute: 0x0f,
  PsaHashCompare: 0x10,
  PsaSignMessage: 0x18,
  PsaVerifyMessage: 0x19,
  ListKeys: 0x1a,
  ListClients: 0x1b,
  DeleteClient: 0x1c,
  CanDoCrypto: 0x20,
} as const;
export type OpcodeName = keyof typeof Opcode;

/** auth_type values (parsec-interface requests::AuthType). */
export const AuthType = {
  NoAuth: 0,
  Direct: 1,
  Jwt: 2,
  UnixPeerCredentials: 3,
  JwtSvid: 4,
} as const;

export interface ParsecHeader {
  provider: number;
  session: bigint;
  contentType: number;
  acceptType: number;
  authType: number;
  bodyLength: number;
  authLength: number;
  opcode: number;
  status: number;
}

/** A response that does not follow the wire protocol. */
export class ParsecProtocolError extends ProxyError {
  readonly code = 'PARSEC_PROTOCOL';
}

/** One request: header, body, auth, as one buffer. */
export function encodeRequest(h: Omit<ParsecHeader, 'bodyLength' | 'authLength' | 'status'>, body: Uint8Array, auth: Uint8Array): Buffer {
  if (body.length > 0xffffffff) throw new ParsecProtocolError(`request body of ${body.length} bytes exceeds u32`);
  if (auth.length > 0xffff) throw new ParsecProtocolError(`authentication of ${auth.length} bytes exceeds u16`);
  const b = Buffer.alloc(PARSEC_HEADER_LENGTH + body.length + auth.length);
  b.writeUInt32LE(PARSEC_MAGIC, 0);
  b.writeUInt16LE(PARSEC_HDR_SIZE, 4);
  b.writeUInt8(PARSEC_VERSION_MAJ, 6);
  b.writeUInt8(PARSEC_VERSION_MIN, 7);
  b.writeUInt16LE(0, 8); // flags
  b.writeUInt8(h.provider, 10);
  b.writeBigUInt64LE(h.session, 11);
  b.writeUInt8(h.contentType, 19);
  b.writeUInt8(h.acceptType, 20);
  b.writeUInt8(h.authType, 21);
  b.writeUInt32LE(body.length, 22);
  b.writeUInt16LE(auth.length, 26);
  b.writeUInt32LE(h.opcode, 28);
  b.writeUInt16LE(0, 32); // status
  // 34, 35: reserved, zero
  b.set(body, PARSEC_HEADER_LENGTH);
  b.set(auth, PARSEC_HEADER_LENGTH + body.length);
  return b;
}

/** The header at the start of `b` (at least PARSEC_HEADER_LENGTH bytes); checks magic, size and version. */
export function decodeHeader(b: Buffer): ParsecHeader {
  if (b.length < PARSEC_HEADER_LENGTH) throw new ParsecProtocolError(`short header: ${b.length} bytes`);
  const magic = b.readUInt32LE(0);
  if (magic !== PARSEC_MAGIC) throw new ParsecProtocolError(`bad magic 0x${magic.toString(16)}`);
  const hdrSize = b.readUInt16LE(4);
  if (hdrSize !== PARSEC_HDR_SIZE) throw new ParsecProtocolError(`bad hdr_size ${hdrSize}`);
  const maj = b.readUInt8(6);
  const min = b.readUInt8(7);
  if (maj !== PARSEC_VERSION_MAJ || min !== PARSEC_VERSION_MIN) {
    throw new ParsecProtocolError(`unsupported wire protocol version ${maj}.${min}`);
  }
  return {
    provider: b.readUInt8(10),
    session: b.readBigUInt64LE(11),
    contentType: b.readUInt8(19),
    acceptType: b.readUInt8(20),
    authType: b.readUInt8(21),
    bodyLength: b.readUInt32LE(22),
    authLength: b.readUInt16LE(26),
    opcode: b.readUInt32LE(28),
    status: b.readUInt16LE(32),
  };
}
