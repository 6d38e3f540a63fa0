/**
 * The few DER forms the Parsec backend converts between PKCS#11 attributes
 * and PSA key formats: PSA exports an RSA public key as RSAPublicKey
 * (RFC 8017 A.1.1) and an EC public key as the uncompressed point; PKCS#11
 * carries CKA_EC_POINT as a DER OCTET STRING and CKA_EC_PARAMS as a named
 * curve OID. Every reader checks lengths against the input: these bytes come
 * from the service or the client.
 */
import { Pkcs11Error } from '../../pkcs11/errors';
import { ck } from '../../pkcs11/constants';

function len(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

export function tlv(tag: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([tag]), len(body.length), body]);
}

/** DER INTEGER of an unsigned big-endian magnitude. */
export function derUInt(magnitude: Buffer): Buffer {
  let i = 0;
  while (i < magnitude.length - 1 && magnitude[i] === 0) i++;
  let m = magnitude.subarray(i);
  if (m.length === 0) m = Buffer.from([0]);
  if (m[0] & 0x80) m = Buffer.concat([Buffer.from([0]), m]);
  return tlv(0x02, m);
}

export const derSequence = (...items: Buffer[]): Buffer => tlv(0x30, Buffer.concat(items));
export const derOctetString = (b: Buffer): Buffer => tlv(0x04, b);

/** One TLV at `off`: its tag, body and end. Throws `err` when the input is short or the length malformed. */
export function readTlv(b: Buffer, off: number, err: number): { tag: number; body: Buffer; end: number } {
  if (off + 2 > b.length) throw new Pkcs11Error(err);
  const tag = b[off];
  let n = b[off + 1];
  let p = off + 2;
  if (n & 0x80) {
    const k = n & 0x7f;
    if (k === 0 || k > 4 || p + k > b.length) throw new Pkcs11Error(err);
    n = 0;
    for (let i = 0; i < k; i++) n = n * 256 + b[p + i];
    p += k;
  }
  if (p + n > b.length) throw new Pkcs11Error(err);
  return { tag, body: b.subarray(p, p + n), end: p + n };
}

/** Strips the sign byte DER puts before a magnitude whose top bit is set. */
function magnitude(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  return b.subarray(i);
}

/** RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER } -> magnitudes. */
export function parseRsaPublicKey(der: Buffer): { modulus: Buffer; exponent: Buffer } {
  const E = ck.CKR_DEVICE_ERROR;
  const seq = readTlv(der, 0, E);
  if (seq.tag !== 0x30 || seq.end !== der.length) throw new Pkcs11Error(E);
  const n = readTlv(seq.body, 0, E);
  const e = readTlv(seq.body, n.end, E);
  if (n.tag !== 0x02 || e.tag !== 0x02 || e.end !== seq.body.length) throw new Pkcs11Error(E);
  return { modulus: magnitude(n.body), exponent: magnitude(e.body) };
}

export function rsaPublicKeyDer(modulus: Buffer, exponent: Buffer): Buffer {
  return derSequence(derUInt(modulus), derUInt(exponent));
}

/** RSAPrivateKey (RFC 8017 A.1.2), version 0 (two primes). */
export function rsaPrivateKeyDer(parts: readonly Buffer[]): Buffer {
  return derSequence(derUInt(Buffer.from([0])), ...parts.map(derUInt));
}

/** Named curves PSA and PKCS#11 share: PSA family and bits <-> DER OID of CKA_EC_PARAMS. */
export interface NamedCurve {
  readonly name: string;
  /** psa_key_attributes.KeyType.EccFamily */
  readonly family: number;
  readonly bits: number;
  readonly oid: Buffer;
}

const SECP_R1 = 2;
const SECP_K1 = 1;
const BRAINPOOL_P_R1 = 7;
const oid = (hex: string): Buffer => Buffer.from(hex, 'hex');

export const CURVES: readonly NamedCurve[] = [
  { name: 'secp256r1', family: SECP_R1, bits: 256, oid: oid('06082a8648ce3d030107') },
  { name: 'secp384r1', family: SECP_R1, bits: 384, oid: oid('06052b81040022') },
  { name: 'secp521r1', family: SECP_R1, bits: 521, oid: oid('06052b81040023') },
  { name: 'secp256k1', family: SECP_K1, bits: 256, oid: oid('06052b8104000a') },
  { name: 'brainpoolP256r1', family: BRAINPOOL_P_R1, bits: 256, oid: oid('06092b2403030208010107') },
  { name: 'brainpoolP384r1', family: BRAINPOOL_P_R1, bits: 384, oid: oid('06092b240303020801010b') },
  { name: 'brainpoolP512r1', family: BRAINPOOL_P_R1, bits: 512, oid: oid('06092b240303020801010d') },
];

export function curveOfParams(params: Buffer): NamedCurve | undefined {
  return CURVES.find((c) => c.oid.equals(params));
}

export function curveOf(family: number, bits: number): NamedCurve | undefined {
  return CURVES.find((c) => c.family === family && c.bits === bits);
}

/** CKA_EC_POINT as a client sends it: a DER OCTET STRING around the point, or (as some do) the bare point. */
export function ecPointOf(value: Buffer, bits: number): Buffer {
  const size = 1 + 2 * Math.ceil(bits / 8);
  if (value.length === size && value[0] === 0x04) return value;
  const t = readTlv(value, 0, ck.CKR_ATTRIBUTE_VALUE_INVALID);
  if (t.tag !== 0x04 || t.end !== value.length || t.body.length !== size || t.body[0] !== 0x04) {
    throw new Pkcs11Error(ck.CKR_ATTRIBUTE_VALUE_INVALID);
  }
  return t.body;
}

/** DigestInfo prefixes (RFC 8017 9.2 note 1) by hash name: CKM_RSA_PKCS signs DigestInfo bytes. */
export const DIGEST_INFO_PREFIX: ReadonlyMap<string, Buffer> = new Map([
  ['sha1', Buffer.from('3021300906052b0e03021a05000414', 'hex')],
  ['sha224', Buffer.from('302d300d06096086480165030402040500041c', 'hex')],
  ['sha256', Buffer.from('3031300d060960864801650304020105000420', 'hex')],
  ['sha384', Buffer.from('3041300d060960864801650304020205000430', 'hex')],
  ['sha512', Buffer.from('3051300d060960864801650304020305000440', 'hex')],
]);
