import * as p from 'pkcs11js';
import type { px_attribute, px_mechanism } from '../../../src/generated/pkcs11_rpc';

/** Attribute builders in the native LE64 layout the test client declares with C_SetupArch(1). */
export function ulong(type: number, v: number): px_attribute {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return { type, value: b, valueLen: 8 };
}
export function bool(type: number, v: boolean): px_attribute {
  return { type, value: Buffer.from([v ? 1 : 0]), valueLen: 1 };
}
export function bytes(type: number, v: Buffer | string): px_attribute {
  const b = Buffer.isBuffer(v) ? v : Buffer.from(v);
  return { type, value: b, valueLen: b.length };
}
/** Size query: no value, caller's length 0. */
export function query(type: number, len = 0): px_attribute {
  return { type, value: Buffer.alloc(0), valueLen: len };
}
export function mech(mechanism: number, parameter: Buffer = Buffer.alloc(0)): px_mechanism {
  return { mechanism, parameter };
}
export function readULong(b: Buffer): number {
  return Number(b.readBigUInt64LE());
}
/** DER OID of prime256v1. */
export const P256 = Buffer.from('06082a8648ce3d030107', 'hex');

export const ecKeyPairTemplates = (label: string, token = false) => ({
  publicKeyTemplate: [ulong(p.CKA_CLASS, p.CKO_PUBLIC_KEY), bool(p.CKA_TOKEN, token), bool(p.CKA_VERIFY, true), bytes(p.CKA_EC_PARAMS, P256), bytes(p.CKA_LABEL, label)],
  privateKeyTemplate: [ulong(p.CKA_CLASS, p.CKO_PRIVATE_KEY), bool(p.CKA_TOKEN, token), bool(p.CKA_SIGN, true), bool(p.CKA_PRIVATE, true), bool(p.CKA_SENSITIVE, true), bytes(p.CKA_LABEL, label)],
});
