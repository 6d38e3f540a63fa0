import crypto from 'node:crypto';
import * as p from 'pkcs11js';
import {
  PX_MP_AES_CBC_ENCRYPT_DATA,
  PX_MP_AES_CTR,
  PX_MP_CCM,
  PX_MP_DES_CBC_ENCRYPT_DATA,
  PX_MP_ECDH1_DERIVE,
  PX_MP_EDDSA,
  PX_MP_GCM,
  PX_MP_KEY_DERIVATION_STRING_DATA,
  PX_MP_NONE,
  PX_MP_RAW,
  PX_MP_RSA_PKCS_OAEP,
  PX_MP_RSA_PKCS_PSS,
  PX_MP_ULONG,
  PKCS11_PROG,
  PKCS11_V3,
  PROCEDURES_BY_VERSION,
  xdrDecode,
  xdrEncode,
} from '../../src/generated/pkcs11_rpc';
import type { px_attribute, px_mech_param, px_mechanism_typed } from '../../src/generated/pkcs11_rpc';
import { V3_CALL_OF_TYPED } from '../../src/server/layers/object-fields';
import { bool, bytes, mech, P256, readULong, ulong } from './helpers/attrs';
import { startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { P11Client } from './helpers/p11-client';
import { waitFor } from './helpers/pool';
import { USER_PIN } from './helpers/softhsm';

/**
 * Every mechanism SoftHSM2 2.6.1 lists, through the real daemon, with real
 * data checked against node:crypto where it implements the algorithm.
 * Mechanisms whose parameter structs hold pointers go through the typed
 * procedures (73..84); the others through both forms where it matters.
 */

// Numbers pkcs11js 2.1.7 does not export (PKCS#11 3.0 values).
const CKM_EC_EDWARDS_KEY_PAIR_GEN = 0x1055;
const CKM_EDDSA = 0x1057;
const CKK_EC_EDWARDS = 0x40;
const CKM_AES_CCM = 0x1088;
const CKZ_DATA_SPECIFIED = 1;
/** DER OID 1.3.101.112 (Ed25519). */
const ED25519 = Buffer.from('06032b6570', 'hex');
const RW = p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION;

/**
 * SoftHSM's mechanism list grouped by the test that covers it. A mechanism
 * the module lists but this table lacks fails the first test, so a new
 * SoftHSM mechanism is noticed.
 */
const FAMILIES: Readonly<Record<string, readonly number[]>> = {
  'AES ciphers': [p.CKM_AES_KEY_GEN, p.CKM_AES_ECB, p.CKM_AES_CBC, p.CKM_AES_CBC_PAD, p.CKM_AES_CTR, p.CKM_AES_GCM],
  'AES MAC': [p.CKM_AES_CMAC],
  'AES key wrap': [p.CKM_AES_KEY_WRAP, p.CKM_AES_KEY_WRAP_PAD],
  'derive by encryption': [
    p.CKM_AES_ECB_ENCRYPT_DATA,
    p.CKM_AES_CBC_ENCRYPT_DATA,
    p.CKM_DES_ECB_ENCRYPT_DATA,
    p.CKM_DES_CBC_ENCRYPT_DATA,
    p.CKM_DES3_ECB_ENCRYPT_DATA,
    p.CKM_DES3_CBC_ENCRYPT_DATA,
  ],
  'DES and triple DES': [
    p.CKM_DES_KEY_GEN,
    p.CKM_DES2_KEY_GEN,
    p.CKM_DES3_KEY_GEN,
    p.CKM_DES_ECB,
    p.CKM_DES_CBC,
    p.CKM_DES_CBC_PAD,
    p.CKM_DES3_ECB,
    p.CKM_DES3_CBC,
    p.CKM_DES3_CBC_PAD,
    p.CKM_DES3_CMAC,
  ],
  'generic secret': [p.CKM_GENERIC_SECRET_KEY_GEN],
  digests: [p.CKM_MD5, p.CKM_SHA_1, p.CKM_SHA224, p.CKM_SHA256, p.CKM_SHA384, p.CKM_SHA512],
  HMAC: [p.CKM_MD5_HMAC, p.CKM_SHA_1_HMAC, p.CKM_SHA224_HMAC, p.CKM_SHA256_HMAC, p.CKM_SHA384_HMAC, p.CKM_SHA512_HMAC],
  RSA: [
    p.CKM_RSA_PKCS_KEY_PAIR_GEN,
    p.CKM_RSA_PKCS,
    p.CKM_RSA_X_509,
    p.CKM_MD5_RSA_PKCS,
    p.CKM_SHA1_RSA_PKCS,
    p.CKM_SHA224_RSA_PKCS,
    p.CKM_SHA256_RSA_PKCS,
    p.CKM_SHA384_RSA_PKCS,
    p.CKM_SHA512_RSA_PKCS,
  ],
  'RSA OAEP': [p.CKM_RSA_PKCS_OAEP],
  'RSA PSS': [
    p.CKM_RSA_PKCS_PSS,
    p.CKM_SHA1_RSA_PKCS_PSS,
    p.CKM_SHA224_RSA_PKCS_PSS,
    p.CKM_SHA256_RSA_PKCS_PSS,
    p.CKM_SHA384_RSA_PKCS_PSS,
    p.CKM_SHA512_RSA_PKCS_PSS,
  ],
  ECDSA: [p.CKM_EC_KEY_PAIR_GEN, p.CKM_ECDSA],
  ECDH: [p.CKM_ECDH1_DERIVE],
  EdDSA: [CKM_EC_EDWARDS_KEY_PAIR_GEN, CKM_EDDSA],
  DH: [p.CKM_DH_PKCS_PARAMETER_GEN, p.CKM_DH_PKCS_KEY_PAIR_GEN, p.CKM_DH_PKCS_DERIVE],
  DSA: [
    p.CKM_DSA_PARAMETER_GEN,
    p.CKM_DSA_KEY_PAIR_GEN,
    p.CKM_DSA,
    p.CKM_DSA_SHA1,
    p.CKM_DSA_SHA224,
    p.CKM_DSA_SHA256,
    p.CKM_DSA_SHA384,
    p.CKM_DSA_SHA512,
  ],
};

/**
 * Listed by SoftHSM2 but refused by SoftHSM2 itself when used: single DES
 * needs OpenSSL's legacy provider, which Debian's OpenSSL 3 does not load.
 * The proxy returns the module's answer unchanged.
 */
const MODULE_REFUSES: ReadonlyMap<number, number> = new Map([
  [p.CKM_DES_ECB, p.CKR_MECHANISM_INVALID],
  [p.CKM_DES_CBC, p.CKR_MECHANISM_INVALID],
  [p.CKM_DES_CBC_PAD, p.CKR_MECHANISM_INVALID],
  [p.CKM_DES_CBC_ENCRYPT_DATA, p.CKR_MECHANISM_INVALID],
]);

/**
 * CK_KEY_DERIVATION_STRING_DATA is { pData, ulLen }: pkcs11js has no builder
 * for it and copies a Buffer parameter as bytes, so the daemon cannot put a
 * pointer to the data in its own memory. It answers CKR_MECHANISM_PARAM_INVALID.
 */
const PROXY_CANNOT: ReadonlyMap<number, number> = new Map([
  [p.CKM_AES_ECB_ENCRYPT_DATA, p.CKR_MECHANISM_PARAM_INVALID],
  [p.CKM_DES_ECB_ENCRYPT_DATA, p.CKR_MECHANISM_PARAM_INVALID],
  [p.CKM_DES3_ECB_ENCRYPT_DATA, p.CKR_MECHANISM_PARAM_INVALID],
]);

let d: RunningDaemon;
let c: P11Client;
let slot: number;
let session: number;
let listed: number[];

function typed(mechanism: number, param: px_mech_param = { tag: PX_MP_NONE }): px_mechanism_typed {
  return { mechanism, param };
}
const raw = (mechanism: number, b: Buffer): px_mechanism_typed => typed(mechanism, { tag: PX_MP_RAW, value: b });
const none = (mechanism: number): px_mechanism_typed => typed(mechanism);

function expectOk(rv: number, what: string): void {
  if (rv !== p.CKR_OK) throw new Error(`${what}: CK_RV 0x${rv.toString(16)}`);
}

async function encrypt(key: number, m: px_mechanism_typed, data: Buffer): Promise<Buffer> {
  expectOk(await c.call('px_EncryptInitTyped', { session, mechanism: m, key }), 'px_EncryptInitTyped');
  const r = await c.call('C_Encrypt', { session, data });
  expectOk(r.rv, 'C_Encrypt');
  return r.data;
}
async function decrypt(key: number, m: px_mechanism_typed, data: Buffer): Promise<Buffer> {
  expectOk(await c.call('px_DecryptInitTyped', { session, mechanism: m, key }), 'px_DecryptInitTyped');
  const r = await c.call('C_Decrypt', { session, data });
  expectOk(r.rv, 'C_Decrypt');
  return r.data;
}
async function sign(key: number, m: px_mechanism_typed, data: Buffer): Promise<Buffer> {
  expectOk(await c.call('px_SignInitTyped', { session, mechanism: m, key }), 'px_SignInitTyped');
  const r = await c.call('C_Sign', { session, data });
  expectOk(r.rv, 'C_Sign');
  return r.data;
}
async function verify(key: number, m: px_mechanism_typed, data: Buffer, signature: Buffer): Promise<number> {
  expectOk(await c.call('px_VerifyInitTyped', { session, mechanism: m, key }), 'px_VerifyInitTyped');
  return c.call('C_Verify', { session, data, signature });
}
async function generateKey(m: px_mechanism_typed, template: px_attribute[]): Promise<number> {
  const r = await c.call('px_GenerateKeyTyped', { session, mechanism: m, template });
  expectOk(r.rv, 'px_GenerateKeyTyped');
  return r.object;
}
async function generateKeyPair(m: px_mechanism_typed, publicKeyTemplate: px_attribute[], privateKeyTemplate: px_attribute[]) {
  const r = await c.call('px_GenerateKeyPairTyped', { session, mechanism: m, publicKeyTemplate, privateKeyTemplate });
  expectOk(r.rv, 'px_GenerateKeyPairTyped');
  return r;
}
async function derive(baseKey: number, m: px_mechanism_typed, template: px_attribute[]): Promise<{ rv: number; object: number }> {
  return c.call('px_DeriveKeyTyped', { session, mechanism: m, baseKey, template });
}
async function attr(object: number, type: number): Promise<Buffer> {
  const q = await c.call('C_GetAttributeValue', { session, object, template: [{ type, value: Buffer.alloc(0), valueLen: 0 }] });
  expectOk(q.rv, 'C_GetAttributeValue (size)');
  const len = q.template[0].valueLen;
  const r = await c.call('C_GetAttributeValue', { session, object, template: [{ type, value: Buffer.alloc(len), valueLen: len }] });
  expectOk(r.rv, 'C_GetAttributeValue');
  return r.template[0].value;
}

const session0 = [bool(p.CKA_TOKEN, false)];
/** A session secret key usable for everything, readable so results can be checked with node:crypto. */
const openSecret = (extra: px_attribute[] = []): px_attribute[] => [
  ...session0,
  bool(p.CKA_ENCRYPT, true),
  bool(p.CKA_DECRYPT, true),
  bool(p.CKA_SIGN, true),
  bool(p.CKA_VERIFY, true),
  bool(p.CKA_WRAP, true),
  bool(p.CKA_UNWRAP, true),
  bool(p.CKA_DERIVE, true),
  bool(p.CKA_EXTRACTABLE, true),
  bool(p.CKA_SENSITIVE, false),
  ...extra,
];
const aesKey = (len = 32): Promise<number> => generateKey(none(p.CKM_AES_KEY_GEN), openSecret([ulong(p.CKA_VALUE_LEN, len)]));
/** Template of a derived or unwrapped secret key. */
const secretOut = (keyType: number, extra: px_attribute[] = []): px_attribute[] => [
  ulong(p.CKA_CLASS, p.CKO_SECRET_KEY),
  ulong(p.CKA_KEY_TYPE, keyType),
  ...openSecret(extra),
];

/** node:crypto check of an RSA-PSS signature. */
function pssVerifies(alg: string, data: Buffer, key: crypto.KeyObject, saltLength: number, sig: Buffer): boolean {
  return crypto.verify(alg, data, { key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength }, sig);
}

/** node:crypto public key from a PKCS#11 RSA public key object. */
async function rsaPublic(pub: number): Promise<crypto.KeyObject> {
  const n = await attr(pub, p.CKA_MODULUS);
  const e = await attr(pub, p.CKA_PUBLIC_EXPONENT);
  return crypto.createPublicKey({ key: { kty: 'RSA', n: n.toString('base64url'), e: e.toString('base64url') }, format: 'jwk' });
}

/** CKA_EC_POINT is a DER OCTET STRING around the point (short form length for the curves used here). */
function unwrapOctetString(der: Buffer): Buffer {
  expect(der[0]).toBe(0x04);
  return der.subarray(2, 2 + der[1]);
}

beforeAll(async () => {
  d = await startDaemon({ tokens: ['mech'] });
  c = await P11Client.open({ path: d.socketPath });
  slot = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 8 })).slotList[0];
  const s = await c.call('C_OpenSession', { slotID: slot, flags: RW });
  session = s.session;
  expectOk(await c.call('C_Login', { session, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) }), 'C_Login');
  const q = await c.call('C_GetMechanismList', { slotID: slot, count: 0 });
  listed = (await c.call('C_GetMechanismList', { slotID: slot, count: q.count })).mechanismList;
});

afterAll(async () => {
  await c?.close();
  await d?.stop();
});

test('every mechanism SoftHSM2 lists belongs to a family tested here', () => {
  const known = new Set(Object.values(FAMILIES).flat());
  const unknown = listed.filter((m) => !known.has(m)).map((m) => `0x${m.toString(16)}`);
  expect(unknown).toEqual([]);
  expect(listed.length).toBe(known.size);
});

describe('AES', () => {
  test('ECB, CBC, CBC-PAD, CTR, GCM round trips match node:crypto', async () => {
    const k = await aesKey();
    const kv = await attr(k, p.CKA_VALUE);
    const block = crypto.randomBytes(64);
    const text = Buffer.from('a message of forty-two bytes, not aligned');
    const iv = crypto.randomBytes(16);
    const node = (alg: string, ivv: Buffer | null, data: Buffer, pad: boolean) => {
      const ci = crypto.createCipheriv(alg, kv, ivv);
      ci.setAutoPadding(pad);
      return Buffer.concat([ci.update(data), ci.final()]);
    };

    const ecb = await encrypt(k, none(p.CKM_AES_ECB), block);
    expect(ecb).toEqual(node('aes-256-ecb', null, block, false));
    expect(await decrypt(k, none(p.CKM_AES_ECB), ecb)).toEqual(block);

    const cbc = await encrypt(k, raw(p.CKM_AES_CBC, iv), block);
    expect(cbc).toEqual(node('aes-256-cbc', iv, block, false));
    expect(await decrypt(k, raw(p.CKM_AES_CBC, iv), cbc)).toEqual(block);

    // The same IV through version 3 and through the typed RAW kind.
    const pad = await encrypt(k, raw(p.CKM_AES_CBC_PAD, iv), text);
    expect(pad).toEqual(node('aes-256-cbc', iv, text, true));
    expectOk(await c.call('C_DecryptInit', { session, mechanism: mech(p.CKM_AES_CBC_PAD, iv), key: k }), 'C_DecryptInit');
    expect((await c.call('C_Decrypt', { session, data: pad })).data).toEqual(text);

    const cb = Buffer.concat([crypto.randomBytes(12), Buffer.from([0, 0, 0, 1])]);
    const ctrMech = typed(p.CKM_AES_CTR, { tag: PX_MP_AES_CTR, value: { counterBits: 32, cb } });
    const ctr = await encrypt(k, ctrMech, text);
    expect(ctr).toEqual(node('aes-256-ctr', cb, text, false));
    expect(await decrypt(k, ctrMech, ctr)).toEqual(text);

    const nonce = crypto.randomBytes(12);
    const aad = Buffer.from('header');
    const gcmMech = typed(p.CKM_AES_GCM, { tag: PX_MP_GCM, value: { iv: nonce, ivBits: 96, aad, tagBits: 128 } });
    const gcm = await encrypt(k, gcmMech, text);
    const g = crypto.createCipheriv('aes-256-gcm', kv, nonce);
    g.setAAD(aad);
    const want = Buffer.concat([g.update(text), g.final(), g.getAuthTag()]);
    expect(gcm).toEqual(want);
    expect(await decrypt(k, gcmMech, gcm)).toEqual(text);
    // A different AAD fails the tag check (SoftHSM2 reports that as CKR_GENERAL_ERROR).
    const other = typed(p.CKM_AES_GCM, { tag: PX_MP_GCM, value: { iv: nonce, ivBits: 96, aad: Buffer.from('other'), tagBits: 128 } });
    expectOk(await c.call('px_DecryptInitTyped', { session, mechanism: other, key: k }), 'px_DecryptInitTyped');
    expect((await c.call('C_Decrypt', { session, data: gcm })).rv).toBe(p.CKR_GENERAL_ERROR);
    // No AAD and a 96-bit tag.
    const short = typed(p.CKM_AES_GCM, { tag: PX_MP_GCM, value: { iv: nonce, ivBits: 96, aad: Buffer.alloc(0), tagBits: 96 } });
    const gs = await encrypt(k, short, text);
    expect(gs.length).toBe(text.length + 12);
    expect(await decrypt(k, short, gs)).toEqual(text);
  });

  test('CCM is built for the module (SoftHSM2 does not implement it)', async () => {
    const k = await aesKey();
    const m = typed(CKM_AES_CCM, { tag: PX_MP_CCM, value: { dataLen: 16, nonce: Buffer.alloc(12, 1), aad: Buffer.alloc(0), macLen: 16 } });
    expect(await c.call('px_EncryptInitTyped', { session, mechanism: m, key: k })).toBe(p.CKR_MECHANISM_INVALID);
  });

  test('CMAC sign and verify; a changed message fails', async () => {
    const k = await aesKey(16);
    const msg = Buffer.from('cmac me');
    const mac = await sign(k, none(p.CKM_AES_CMAC), msg);
    expect(mac.length).toBe(16);
    expect(await verify(k, none(p.CKM_AES_CMAC), msg, mac)).toBe(p.CKR_OK);
    expect(await verify(k, none(p.CKM_AES_CMAC), Buffer.from('cmac mE'), mac)).toBe(p.CKR_SIGNATURE_INVALID);
  });

  test('key wrap (RFC 3394) and key wrap with padding (RFC 5649) match node:crypto; unwrap restores the key', async () => {
    const kek = await aesKey();
    const kekValue = await attr(kek, p.CKA_VALUE);
    const target = await aesKey(24);
    const targetValue = await attr(target, p.CKA_VALUE);
    for (const [m, alg] of [
      [p.CKM_AES_KEY_WRAP, 'id-aes256-wrap'],
      [p.CKM_AES_KEY_WRAP_PAD, 'id-aes256-wrap-pad'],
    ] as const) {
      const w = await c.call('px_WrapKeyTyped', { session, mechanism: none(m), wrappingKey: kek, key: target });
      expect(w.rv).toBe(p.CKR_OK);
      // Default IVs of RFC 3394 and RFC 5649.
      const iv = Buffer.from(alg === 'id-aes256-wrap' ? 'a6a6a6a6a6a6a6a6' : 'a65959a6', 'hex');
      const ci = crypto.createCipheriv(alg, kekValue, iv);
      expect(w.data).toEqual(Buffer.concat([ci.update(targetValue), ci.final()]));
      const u = await c.call('px_UnwrapKeyTyped', {
        session,
        mechanism: none(m),
        unwrappingKey: kek,
        wrappedKey: w.data,
        template: secretOut(p.CKK_AES),
      });
      expect(u.rv).toBe(p.CKR_OK);
      expect(await attr(u.object, p.CKA_VALUE)).toEqual(targetValue);
    }
    // An explicit IV is a raw parameter; SoftHSM2 does not implement it and says so.
    const iv = Buffer.from('a6a6a6a6a6a6a6a6', 'hex');
    expect((await c.call('px_WrapKeyTyped', { session, mechanism: raw(p.CKM_AES_KEY_WRAP, iv), wrappingKey: kek, key: target })).rv).toBe(
      p.CKR_ARGUMENTS_BAD,
    );
    expect((await c.call('C_WrapKey', { session, mechanism: mech(p.CKM_AES_KEY_WRAP, iv), wrappingKey: kek, key: target })).rv).toBe(
      p.CKR_ARGUMENTS_BAD,
    );
  });
});

describe('derivation by encryption', () => {
  test('AES_CBC_ENCRYPT_DATA and DES3_CBC_ENCRYPT_DATA derive the encryption of the data', async () => {
    const base = await aesKey();
    const baseValue = await attr(base, p.CKA_VALUE);
    const iv = crypto.randomBytes(16);
    const data = crypto.randomBytes(32);
    const m = typed(p.CKM_AES_CBC_ENCRYPT_DATA, { tag: PX_MP_AES_CBC_ENCRYPT_DATA, value: { iv, data } });
    const r = await derive(base, m, secretOut(p.CKK_GENERIC_SECRET, [ulong(p.CKA_VALUE_LEN, 32)]));
    expect(r.rv).toBe(p.CKR_OK);
    const ci = crypto.createCipheriv('aes-256-cbc', baseValue, iv).setAutoPadding(false);
    expect(await attr(r.object, p.CKA_VALUE)).toEqual(Buffer.concat([ci.update(data), ci.final()]));

    const des3 = await generateKey(none(p.CKM_DES3_KEY_GEN), openSecret());
    const des3Value = await attr(des3, p.CKA_VALUE);
    const iv8 = crypto.randomBytes(8);
    const data24 = crypto.randomBytes(24);
    const dm = typed(p.CKM_DES3_CBC_ENCRYPT_DATA, { tag: PX_MP_DES_CBC_ENCRYPT_DATA, value: { iv: iv8, data: data24 } });
    const dr = await derive(des3, dm, secretOut(p.CKK_GENERIC_SECRET, [ulong(p.CKA_VALUE_LEN, 24)]));
    expect(dr.rv).toBe(p.CKR_OK);
    const dci = crypto.createCipheriv('des-ede3-cbc', des3Value, iv8).setAutoPadding(false);
    expect(await attr(dr.object, p.CKA_VALUE)).toEqual(Buffer.concat([dci.update(data24), dci.final()]));
  });

  test('CK_KEY_DERIVATION_STRING_DATA cannot be handed to pkcs11js: CKR_MECHANISM_PARAM_INVALID, the session goes on', async () => {
    const aes = await aesKey();
    const des3 = await generateKey(none(p.CKM_DES3_KEY_GEN), openSecret());
    const des = await generateKey(none(p.CKM_DES_KEY_GEN), openSecret());
    const data = { tag: PX_MP_KEY_DERIVATION_STRING_DATA, value: Buffer.alloc(16, 3) } as const;
    for (const [m, key] of [
      [p.CKM_AES_ECB_ENCRYPT_DATA, aes],
      [p.CKM_DES3_ECB_ENCRYPT_DATA, des3],
      [p.CKM_DES_ECB_ENCRYPT_DATA, des],
    ] as const) {
      expect((await derive(key, typed(m, data), secretOut(p.CKK_GENERIC_SECRET, [ulong(p.CKA_VALUE_LEN, 16)]))).rv).toBe(PROXY_CANNOT.get(m));
    }
    // The empty form has no pointer to carry; the module judges it.
    const empty = typed(p.CKM_AES_ECB_ENCRYPT_DATA, { tag: PX_MP_KEY_DERIVATION_STRING_DATA, value: Buffer.alloc(0) });
    expect((await derive(aes, empty, secretOut(p.CKK_GENERIC_SECRET, [ulong(p.CKA_VALUE_LEN, 16)]))).rv).toBe(p.CKR_MECHANISM_PARAM_INVALID);
    expect((await c.call('C_GetSessionInfo', { session })).rv).toBe(p.CKR_OK);
  });
});

describe('DES and triple DES', () => {
  test('key generation; DES3 ECB/CBC/CBC-PAD match node:crypto; DES3 CMAC', async () => {
    const des2 = await generateKey(none(p.CKM_DES2_KEY_GEN), openSecret());
    expect((await attr(des2, p.CKA_VALUE)).length).toBe(16);
    const k = await generateKey(none(p.CKM_DES3_KEY_GEN), openSecret());
    const kv = await attr(k, p.CKA_VALUE);
    const iv = crypto.randomBytes(8);
    const block = crypto.randomBytes(32);
    const text = Buffer.from('not a multiple of eight');
    const node = (alg: string, ivv: Buffer | null, data: Buffer, pad: boolean) => {
      const ci = crypto.createCipheriv(alg, kv, ivv).setAutoPadding(pad);
      return Buffer.concat([ci.update(data), ci.final()]);
    };
    expect(await encrypt(k, none(p.CKM_DES3_ECB), block)).toEqual(node('des-ede3-ecb', null, block, false));
    expect(await encrypt(k, raw(p.CKM_DES3_CBC, iv), block)).toEqual(node('des-ede3-cbc', iv, block, false));
    const pad = await encrypt(k, raw(p.CKM_DES3_CBC_PAD, iv), text);
    expect(pad).toEqual(node('des-ede3-cbc', iv, text, true));
    expect(await decrypt(k, raw(p.CKM_DES3_CBC_PAD, iv), pad)).toEqual(text);
    const mac = await sign(k, none(p.CKM_DES3_CMAC), text);
    expect(await verify(k, none(p.CKM_DES3_CMAC), text, mac)).toBe(p.CKR_OK);
  });

  test('single DES: keys are generated, the ciphers are refused by the module itself', async () => {
    const k = await generateKey(none(p.CKM_DES_KEY_GEN), openSecret());
    expect((await attr(k, p.CKA_VALUE)).length).toBe(8);
    for (const m of [p.CKM_DES_ECB, p.CKM_DES_CBC, p.CKM_DES_CBC_PAD]) {
      const param = m === p.CKM_DES_ECB ? none(m) : raw(m, Buffer.alloc(8));
      expect(await c.call('px_EncryptInitTyped', { session, mechanism: param, key: k })).toBe(MODULE_REFUSES.get(m));
    }
    const dm = typed(p.CKM_DES_CBC_ENCRYPT_DATA, { tag: PX_MP_DES_CBC_ENCRYPT_DATA, value: { iv: Buffer.alloc(8), data: Buffer.alloc(8, 1) } });
    expect((await derive(k, dm, secretOut(p.CKK_GENERIC_SECRET, [ulong(p.CKA_VALUE_LEN, 8)]))).rv).toBe(
      MODULE_REFUSES.get(p.CKM_DES_CBC_ENCRYPT_DATA),
    );
  });
});

describe('digests, generic secrets and HMAC', () => {
  test('every digest matches node:crypto (typed and version 3 forms)', async () => {
    const data = Buffer.from('The quick brown fox');
    for (const [m, alg] of [
      [p.CKM_MD5, 'md5'],
      [p.CKM_SHA_1, 'sha1'],
      [p.CKM_SHA224, 'sha224'],
      [p.CKM_SHA256, 'sha256'],
      [p.CKM_SHA384, 'sha384'],
      [p.CKM_SHA512, 'sha512'],
    ] as const) {
      const want = crypto.createHash(alg).update(data).digest();
      expectOk(await c.call('px_DigestInitTyped', { session, mechanism: none(m) }), 'px_DigestInitTyped');
      expect((await c.call('C_Digest', { session, data })).data).toEqual(want);
      expectOk(await c.call('C_DigestInit', { session, mechanism: mech(m) }), 'C_DigestInit');
      expect((await c.call('C_Digest', { session, data })).data).toEqual(want);
    }
  });

  test('generic secret key generation; every HMAC matches node:crypto', async () => {
    const k = await generateKey(none(p.CKM_GENERIC_SECRET_KEY_GEN), openSecret([ulong(p.CKA_VALUE_LEN, 64)]));
    const kv = await attr(k, p.CKA_VALUE);
    expect(kv.length).toBe(64);
    const data = Buffer.from('authenticate me');
    for (const [m, alg] of [
      [p.CKM_MD5_HMAC, 'md5'],
      [p.CKM_SHA_1_HMAC, 'sha1'],
      [p.CKM_SHA224_HMAC, 'sha224'],
      [p.CKM_SHA256_HMAC, 'sha256'],
      [p.CKM_SHA384_HMAC, 'sha384'],
      [p.CKM_SHA512_HMAC, 'sha512'],
    ] as const) {
      const mac = await sign(k, none(m), data);
      expect(mac).toEqual(crypto.createHmac(alg, kv).update(data).digest());
      expect(await verify(k, none(m), data, mac)).toBe(p.CKR_OK);
    }
  });
});

describe('RSA', () => {
  let pub: number;
  let priv: number;
  let pubKey: crypto.KeyObject;

  beforeAll(async () => {
    const kp = await generateKeyPair(
      none(p.CKM_RSA_PKCS_KEY_PAIR_GEN),
      [...session0, ulong(p.CKA_MODULUS_BITS, 2048), bool(p.CKA_ENCRYPT, true), bool(p.CKA_VERIFY, true), bool(p.CKA_WRAP, true)],
      [...session0, bool(p.CKA_DECRYPT, true), bool(p.CKA_SIGN, true), bool(p.CKA_UNWRAP, true)],
    );
    pub = kp.publicKey;
    priv = kp.privateKey;
    pubKey = await rsaPublic(pub);
  });

  test('PKCS #1 v1.5 and raw X.509: encrypt/decrypt and sign/verify, checked by node:crypto', async () => {
    const msg = Buffer.from('secret');
    const ct = await encrypt(pub, none(p.CKM_RSA_PKCS), msg);
    expect(await decrypt(priv, none(p.CKM_RSA_PKCS), ct)).toEqual(msg);
    const nodeCt = crypto.publicEncrypt({ key: pubKey, padding: crypto.constants.RSA_PKCS1_PADDING }, msg);
    expect(await decrypt(priv, none(p.CKM_RSA_PKCS), nodeCt)).toEqual(msg);

    const block = Buffer.concat([Buffer.from([0]), crypto.randomBytes(255)]);
    const xct = await encrypt(pub, none(p.CKM_RSA_X_509), block);
    expect(xct).toEqual(crypto.publicEncrypt({ key: pubKey, padding: crypto.constants.RSA_NO_PADDING }, block));
    expect(await decrypt(priv, none(p.CKM_RSA_X_509), xct)).toEqual(block);

    const sig = await sign(priv, none(p.CKM_RSA_PKCS), msg);
    expect(crypto.publicDecrypt({ key: pubKey, padding: crypto.constants.RSA_PKCS1_PADDING }, sig)).toEqual(msg);
    expect(await verify(pub, none(p.CKM_RSA_PKCS), msg, sig)).toBe(p.CKR_OK);
    const xsig = await sign(priv, none(p.CKM_RSA_X_509), block);
    expect(crypto.publicEncrypt({ key: pubKey, padding: crypto.constants.RSA_NO_PADDING }, xsig)).toEqual(block);
    expect(await verify(pub, none(p.CKM_RSA_X_509), block, xsig)).toBe(p.CKR_OK);
  });

  test('hash-and-sign PKCS #1 v1.5 mechanisms verify with node:crypto', async () => {
    const data = Buffer.from('document');
    for (const [m, alg] of [
      [p.CKM_MD5_RSA_PKCS, 'md5'],
      [p.CKM_SHA1_RSA_PKCS, 'sha1'],
      [p.CKM_SHA224_RSA_PKCS, 'sha224'],
      [p.CKM_SHA256_RSA_PKCS, 'sha256'],
      [p.CKM_SHA384_RSA_PKCS, 'sha384'],
      [p.CKM_SHA512_RSA_PKCS, 'sha512'],
    ] as const) {
      const sig = await sign(priv, none(m), data);
      expect(crypto.verify(alg, data, pubKey, sig)).toBe(true);
      expect(await verify(pub, none(m), data, sig)).toBe(p.CKR_OK);
    }
  });

  test('PSS: typed parameters, every hash, verified by node:crypto', async () => {
    const data = Buffer.from('pss document');
    const hashes = [
      [p.CKM_SHA1_RSA_PKCS_PSS, p.CKM_SHA_1, p.CKG_MGF1_SHA1, 'sha1', 20],
      [p.CKM_SHA224_RSA_PKCS_PSS, p.CKM_SHA224, p.CKG_MGF1_SHA224, 'sha224', 28],
      [p.CKM_SHA256_RSA_PKCS_PSS, p.CKM_SHA256, p.CKG_MGF1_SHA256, 'sha256', 32],
      [p.CKM_SHA384_RSA_PKCS_PSS, p.CKM_SHA384, p.CKG_MGF1_SHA384, 'sha384', 48],
      [p.CKM_SHA512_RSA_PKCS_PSS, p.CKM_SHA512, p.CKG_MGF1_SHA512, 'sha512', 64],
    ] as const;
    for (const [m, hashAlg, mgf, alg, sLen] of hashes) {
      const pm = typed(m, { tag: PX_MP_RSA_PKCS_PSS, value: { hashAlg, mgf, sLen } });
      const sig = await sign(priv, pm, data);
      expect(pssVerifies(alg, data, pubKey, sLen, sig)).toBe(true);
      expect(await verify(pub, pm, data, sig)).toBe(p.CKR_OK);
      // Single-part CKM_RSA_PKCS_PSS signs a digest.
      const dm = typed(p.CKM_RSA_PKCS_PSS, { tag: PX_MP_RSA_PKCS_PSS, value: { hashAlg, mgf, sLen } });
      const dsig = await sign(priv, dm, crypto.createHash(alg).update(data).digest());
      expect(pssVerifies(alg, data, pubKey, sLen, dsig)).toBe(true);
    }
    // The version 3 raw form of the same pointer-free struct still works.
    const rawPss = Buffer.alloc(24);
    rawPss.writeBigUInt64LE(BigInt(p.CKM_SHA256), 0);
    rawPss.writeBigUInt64LE(BigInt(p.CKG_MGF1_SHA256), 8);
    rawPss.writeBigUInt64LE(32n, 16);
    expectOk(await c.call('C_SignInit', { session, mechanism: mech(p.CKM_SHA256_RSA_PKCS_PSS, rawPss), key: priv }), 'C_SignInit');
    const sig = await c.call('C_Sign', { session, data });
    expect(pssVerifies('sha256', data, pubKey, 32, sig.data)).toBe(true);
  });

  test('OAEP: typed parameters, node:crypto ciphertexts decrypt; a label is refused by SoftHSM2', async () => {
    const oaep = (sourceData: Buffer) =>
      typed(p.CKM_RSA_PKCS_OAEP, {
        tag: PX_MP_RSA_PKCS_OAEP,
        value: { hashAlg: p.CKM_SHA_1, mgf: p.CKG_MGF1_SHA1, source: CKZ_DATA_SPECIFIED, sourceData },
      });
    const msg = Buffer.from('oaep secret');
    const nodeCt = crypto.publicEncrypt({ key: pubKey, padding: crypto.constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' }, msg);
    expect(await decrypt(priv, oaep(Buffer.alloc(0)), nodeCt)).toEqual(msg);
    const ct = await encrypt(pub, oaep(Buffer.alloc(0)), msg);
    expect(ct.length).toBe(256);
    expect(await decrypt(priv, oaep(Buffer.alloc(0)), ct)).toEqual(msg);
    // SoftHSM2 requires pSourceData == NULL; the label reached it, and it says no.
    expect(await c.call('px_EncryptInitTyped', { session, mechanism: oaep(Buffer.from('label')), key: pub })).toBe(p.CKR_ARGUMENTS_BAD);
  });

  test('wrap and unwrap an AES key with PKCS #1 v1.5 and OAEP', async () => {
    const target = await aesKey();
    const value = await attr(target, p.CKA_VALUE);
    const oaep = typed(p.CKM_RSA_PKCS_OAEP, {
      tag: PX_MP_RSA_PKCS_OAEP,
      value: { hashAlg: p.CKM_SHA_1, mgf: p.CKG_MGF1_SHA1, source: CKZ_DATA_SPECIFIED, sourceData: Buffer.alloc(0) },
    });
    for (const m of [none(p.CKM_RSA_PKCS), oaep]) {
      const w = await c.call('px_WrapKeyTyped', { session, mechanism: m, wrappingKey: pub, key: target });
      expect(w.rv).toBe(p.CKR_OK);
      expect(w.data.length).toBe(256);
      const u = await c.call('px_UnwrapKeyTyped', {
        session,
        mechanism: m,
        unwrappingKey: priv,
        wrappedKey: w.data,
        template: secretOut(p.CKK_AES),
      });
      expect(u.rv).toBe(p.CKR_OK);
      expect(await attr(u.object, p.CKA_VALUE)).toEqual(value);
    }
  });
});

describe('elliptic curves', () => {
  const ecTemplates = (params: Buffer, pubUse: px_attribute[], privUse: px_attribute[]) => ({
    pub: [...session0, bytes(p.CKA_EC_PARAMS, params), ...pubUse],
    priv: [...session0, bool(p.CKA_SENSITIVE, true), ...privUse],
  });

  test('ECDSA P-256 signatures verify with node:crypto', async () => {
    const t = ecTemplates(P256, [bool(p.CKA_VERIFY, true)], [bool(p.CKA_SIGN, true)]);
    const kp = await generateKeyPair(none(p.CKM_EC_KEY_PAIR_GEN), t.pub, t.priv);
    const point = unwrapOctetString(await attr(kp.publicKey, p.CKA_EC_POINT));
    const key = crypto.createPublicKey({
      key: { kty: 'EC', crv: 'P-256', x: point.subarray(1, 33).toString('base64url'), y: point.subarray(33).toString('base64url') },
      format: 'jwk',
    });
    const data = Buffer.from('ecdsa document');
    const digest = crypto.createHash('sha256').update(data).digest();
    const sig = await sign(kp.privateKey, none(p.CKM_ECDSA), digest);
    expect(crypto.verify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, sig)).toBe(true);
    expect(await verify(kp.publicKey, none(p.CKM_ECDSA), digest, sig)).toBe(p.CKR_OK);
  });

  test('ECDH1_DERIVE on both sides gives the same AES key (compared by encrypting)', async () => {
    const t = ecTemplates(P256, [], [bool(p.CKA_DERIVE, true)]);
    const a = await generateKeyPair(none(p.CKM_EC_KEY_PAIR_GEN), t.pub, t.priv);
    const b = await generateKeyPair(none(p.CKM_EC_KEY_PAIR_GEN), t.pub, t.priv);
    const pa = unwrapOctetString(await attr(a.publicKey, p.CKA_EC_POINT));
    const pb = unwrapOctetString(await attr(b.publicKey, p.CKA_EC_POINT));
    const out = [ulong(p.CKA_CLASS, p.CKO_SECRET_KEY), ulong(p.CKA_KEY_TYPE, p.CKK_AES), ulong(p.CKA_VALUE_LEN, 32), ...session0,
      bool(p.CKA_ENCRYPT, true), bool(p.CKA_SENSITIVE, true), bool(p.CKA_EXTRACTABLE, false)];
    const ecdh = (publicData: Buffer) =>
      typed(p.CKM_ECDH1_DERIVE, { tag: PX_MP_ECDH1_DERIVE, value: { kdf: p.CKD_NULL, sharedData: Buffer.alloc(0), publicData } });
    const ka = await derive(a.privateKey, ecdh(pb), out);
    const kb = await derive(b.privateKey, ecdh(pa), out);
    expect(ka.rv).toBe(p.CKR_OK);
    expect(kb.rv).toBe(p.CKR_OK);
    const block = crypto.randomBytes(32);
    expect(await encrypt(ka.object, none(p.CKM_AES_ECB), block)).toEqual(await encrypt(kb.object, none(p.CKM_AES_ECB), block));
    // The other side's point matters: deriving with one's own point gives another key.
    const kc = await derive(a.privateKey, ecdh(pa), out);
    expect(await encrypt(kc.object, none(p.CKM_AES_ECB), block)).not.toEqual(await encrypt(ka.object, none(p.CKM_AES_ECB), block));
    // Shared data reaches the module (SoftHSM2 accepts only CKD_NULL without it).
    const withShared = typed(p.CKM_ECDH1_DERIVE, { tag: PX_MP_ECDH1_DERIVE, value: { kdf: p.CKD_NULL, sharedData: Buffer.from('x'), publicData: pb } });
    expect((await derive(a.privateKey, withShared, out)).rv).toBe(p.CKR_MECHANISM_PARAM_INVALID);
  });

  test('Ed25519 EdDSA signatures verify with node:crypto; CK_EDDSA_PARAMS without a context', async () => {
    const t = ecTemplates(ED25519, [bool(p.CKA_VERIFY, true)], [bool(p.CKA_SIGN, true)]);
    const kp = await generateKeyPair(none(CKM_EC_EDWARDS_KEY_PAIR_GEN), t.pub, t.priv);
    expect(readULong(await attr(kp.privateKey, p.CKA_KEY_TYPE))).toBe(CKK_EC_EDWARDS);
    const point = unwrapOctetString(await attr(kp.publicKey, p.CKA_EC_POINT));
    const key = crypto.createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: point.toString('base64url') }, format: 'jwk' });
    const data = Buffer.from('eddsa document');
    const sig = await sign(kp.privateKey, none(CKM_EDDSA), data);
    expect(crypto.verify(null, data, key, sig)).toBe(true);
    expect(await verify(kp.publicKey, none(CKM_EDDSA), data, sig)).toBe(p.CKR_OK);
    const pure = typed(CKM_EDDSA, { tag: PX_MP_EDDSA, value: { phFlag: false, contextData: Buffer.alloc(0) } });
    expect(crypto.verify(null, data, key, await sign(kp.privateKey, pure, data))).toBe(true);
    // A context needs a pointer pkcs11js cannot build.
    const ctx = typed(CKM_EDDSA, { tag: PX_MP_EDDSA, value: { phFlag: false, contextData: Buffer.from('ctx') } });
    expect(await c.call('px_SignInitTyped', { session, mechanism: ctx, key: kp.privateKey })).toBe(p.CKR_MECHANISM_PARAM_INVALID);
  });
});

describe('finite field', () => {
  test('DH: parameter generation, two key pairs, both sides derive the same secret', async () => {
    const params = await generateKey(none(p.CKM_DH_PKCS_PARAMETER_GEN), [
      ulong(p.CKA_CLASS, p.CKO_DOMAIN_PARAMETERS),
      ulong(p.CKA_KEY_TYPE, p.CKK_DH),
      ulong(p.CKA_PRIME_BITS, 512),
      ...session0,
    ]);
    const prime = await attr(params, p.CKA_PRIME);
    const base = await attr(params, p.CKA_BASE);
    const pair = () =>
      generateKeyPair(
        none(p.CKM_DH_PKCS_KEY_PAIR_GEN),
        [...session0, bytes(p.CKA_PRIME, prime), bytes(p.CKA_BASE, base)],
        [...session0, bool(p.CKA_DERIVE, true)],
      );
    const a = await pair();
    const b = await pair();
    const out = secretOut(p.CKK_GENERIC_SECRET, [ulong(p.CKA_VALUE_LEN, 32)]);
    const ka = await derive(a.privateKey, raw(p.CKM_DH_PKCS_DERIVE, await attr(b.publicKey, p.CKA_VALUE)), out);
    const kb = await derive(b.privateKey, raw(p.CKM_DH_PKCS_DERIVE, await attr(a.publicKey, p.CKA_VALUE)), out);
    expect(ka.rv).toBe(p.CKR_OK);
    expect(kb.rv).toBe(p.CKR_OK);
    expect(await attr(ka.object, p.CKA_VALUE)).toEqual(await attr(kb.object, p.CKA_VALUE));
  });

  test('DSA: parameter generation, key pair, every DSA mechanism signs and verifies', async () => {
    const params = await generateKey(none(p.CKM_DSA_PARAMETER_GEN), [
      ulong(p.CKA_CLASS, p.CKO_DOMAIN_PARAMETERS),
      ulong(p.CKA_KEY_TYPE, p.CKK_DSA),
      ulong(p.CKA_PRIME_BITS, 1024),
      ...session0,
    ]);
    const domain = [p.CKA_PRIME, p.CKA_SUBPRIME, p.CKA_BASE];
    const values = await Promise.all(domain.map((t) => attr(params, t)));
    const kp = await generateKeyPair(
      none(p.CKM_DSA_KEY_PAIR_GEN),
      [...session0, bool(p.CKA_VERIFY, true), ...domain.map((t, i) => bytes(t, values[i]))],
      [...session0, bool(p.CKA_SIGN, true)],
    );
    const data = Buffer.from('dsa document');
    for (const m of [p.CKM_DSA_SHA1, p.CKM_DSA_SHA224, p.CKM_DSA_SHA256, p.CKM_DSA_SHA384, p.CKM_DSA_SHA512]) {
      const sig = await sign(kp.privateKey, none(m), data);
      expect(await verify(kp.publicKey, none(m), data, sig)).toBe(p.CKR_OK);
    }
    const digest = crypto.createHash('sha1').update(data).digest();
    const sig = await sign(kp.privateKey, none(p.CKM_DSA), digest);
    expect(sig.length).toBe(40);
    expect(await verify(kp.publicKey, none(p.CKM_DSA), digest, sig)).toBe(p.CKR_OK);
    const bad = Buffer.from(sig);
    bad[0] ^= 1;
    expect(await verify(kp.publicKey, none(p.CKM_DSA), digest, bad)).toBe(p.CKR_SIGNATURE_INVALID);
  });
});

describe('typed procedures: protocol behaviour', () => {
  test('each typed procedure mirrors a version 3 call: same argument fields, same result type', () => {
    const procs = [...PROCEDURES_BY_VERSION.get(PKCS11_V3)!.values()];
    const byName = new Map(procs.map((x) => [x.name, x]));
    /** Field names of an argument struct, from its shortest all-zero encoding. */
    const fields = (def: (typeof procs)[number]): string[] => {
      for (let len = 0; len <= 256; len += 4) {
        try {
          return Object.keys(xdrDecode(def.args, Buffer.alloc(len)) as object);
        } catch {
          // longer
        }
      }
      throw new Error(`no zero encoding for ${def.name}`);
    };
    const typedProcs = procs.filter((x) => x.name.endsWith('Typed'));
    expect(typedProcs.map((x) => x.proc)).toEqual(Array.from({ length: 12 }, (_, i) => 73 + i));
    expect([...V3_CALL_OF_TYPED.keys()].sort()).toEqual(typedProcs.map((x) => x.name).sort());
    for (const t of typedProcs) {
      const v3 = byName.get(V3_CALL_OF_TYPED.get(t.name)!)!;
      expect(fields(t)).toEqual(fields(v3));
      expect(t.ret).toBe(v3.ret);
    }
  });

  test('negative numbers in a typed struct are CKR_MECHANISM_PARAM_INVALID; a single CK_ULONG travels as PX_MP_ULONG', async () => {
    const k = await aesKey();
    const bad = typed(p.CKM_AES_GCM, { tag: PX_MP_GCM, value: { iv: Buffer.alloc(12), ivBits: 96, aad: Buffer.alloc(0), tagBits: -1 } });
    expect(await c.call('px_EncryptInitTyped', { session, mechanism: bad, key: k })).toBe(p.CKR_MECHANISM_PARAM_INVALID);
    // CKM_AES_CMAC_GENERAL is not in SoftHSM2's list: the module judges the mechanism, not the daemon.
    const general = typed(p.CKM_AES_CMAC_GENERAL, { tag: PX_MP_ULONG, value: 8 });
    expect(await c.call('px_SignInitTyped', { session, mechanism: general, key: k })).toBe(p.CKR_MECHANISM_INVALID);
  });

  test('an unknown kind is undecodable (GARBAGE_ARGS); the connection goes on', async () => {
    const def = [...PROCEDURES_BY_VERSION.get(PKCS11_V3)!.values()].find((x) => x.name === 'px_DigestInitTyped')!;
    const good = xdrEncode(def.args, { session, mechanism: none(p.CKM_SHA256) } as never);
    // session (8) + mechanism (8) + kind (4): the kind is the last word.
    const bad = Buffer.from(good);
    bad.writeUInt32BE(99, bad.length - 4);
    const reply = await c.raw.call({ xid: 0x7000, prog: PKCS11_PROG, vers: PKCS11_V3, proc: def.proc, args: bad });
    expect(reply.stat === 'accepted' && reply.acceptStat).toBe(4);
    const ok = await c.raw.call({ xid: 0x7001, prog: PKCS11_PROG, vers: PKCS11_V3, proc: def.proc, args: good });
    expect(ok.stat === 'accepted' && ok.acceptStat === 0 && xdrDecode(def.ret, ok.body)).toBe(p.CKR_OK);
    expect((await c.call('C_Digest', { session, data: Buffer.from('abc') })).data).toEqual(crypto.createHash('sha256').update('abc').digest());
  });

  test('a 32-bit client: RAW parameters are converted, typed numbers need no conversion', async () => {
    const x = await P11Client.connect({ path: d.socketPath });
    expect(await x.call('C_SetupArch', { arch: 2 })).toBe(1);
    expectOk(await x.call('C_LoadModule', { alias: Buffer.from('softhsm') }), 'C_LoadModule');
    expectOk(await x.call('C_Initialize', undefined), 'C_Initialize');
    const s = (await x.call('C_OpenSession', { slotID: slot, flags: RW })).session;
    expectOk(await x.call('C_Login', { session: s, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) }), 'C_Login');
    const u32 = (v: number) => {
      const b = Buffer.alloc(4);
      b.writeUInt32LE(v);
      return { value: b, valueLen: 4 };
    };
    const kp = await x.call('px_GenerateKeyPairTyped', {
      session: s,
      mechanism: none(p.CKM_RSA_PKCS_KEY_PAIR_GEN),
      publicKeyTemplate: [{ type: p.CKA_MODULUS_BITS, ...u32(1024) }, bool(p.CKA_TOKEN, false), bool(p.CKA_VERIFY, true)],
      privateKeyTemplate: [bool(p.CKA_TOKEN, false), bool(p.CKA_SIGN, true)],
    });
    expect(kp.rv).toBe(p.CKR_OK);
    // CK_RSA_PKCS_PSS_PARAMS in the 32-bit layout, as RAW.
    const pss32 = Buffer.concat([u32(p.CKM_SHA256).value, u32(p.CKG_MGF1_SHA256).value, u32(32).value]);
    const data = Buffer.from('from a 32-bit client');
    expectOk(await x.call('px_SignInitTyped', { session: s, mechanism: raw(p.CKM_SHA256_RSA_PKCS_PSS, pss32), key: kp.privateKey }), 'SignInit RAW');
    const sig = await x.call('C_Sign', { session: s, data });
    expect(sig.rv).toBe(p.CKR_OK);
    const typedPss = typed(p.CKM_SHA256_RSA_PKCS_PSS, { tag: PX_MP_RSA_PKCS_PSS, value: { hashAlg: p.CKM_SHA256, mgf: p.CKG_MGF1_SHA256, sLen: 32 } });
    expectOk(await x.call('px_VerifyInitTyped', { session: s, mechanism: typedPss, key: kp.publicKey }), 'VerifyInit typed');
    expect(await x.call('C_Verify', { session: s, data, signature: sig.data })).toBe(p.CKR_OK);
    await x.close();
  });

  test('-debug-pkcs11 shows typed parameters as kinds, numbers and lengths, never their bytes', async () => {
    const t = await startDaemon({ tokens: ['trace'], trace: true });
    try {
      const x = await P11Client.open({ path: t.socketPath });
      const sl = (await x.call('C_GetSlotList', { tokenPresent: 1, count: 8 })).slotList[0];
      const s = (await x.call('C_OpenSession', { slotID: sl, flags: RW })).session;
      expectOk(await x.call('C_Login', { session: s, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) }), 'C_Login');
      const k = await x.call('px_GenerateKeyTyped', {
        session: s,
        mechanism: none(p.CKM_AES_KEY_GEN),
        template: [ulong(p.CKA_VALUE_LEN, 16), bool(p.CKA_TOKEN, false), bool(p.CKA_ENCRYPT, true)],
      });
      const iv = Buffer.from('0123456789abcdef0123456789abcdef', 'hex').subarray(0, 12);
      const aad = Buffer.from('fedcba9876543210fedcba98', 'hex');
      const m = typed(p.CKM_AES_GCM, { tag: PX_MP_GCM, value: { iv, ivBits: 96, aad, tagBits: 128 } });
      expect(await x.call('px_EncryptInitTyped', { session: s, mechanism: m, key: k.object })).toBe(p.CKR_OK);
      await x.close();
      // The reply can reach the client before the daemon's trace line reaches its stderr pipe.
      const log = await waitFor('the px_EncryptInitTyped trace line', () => t.output(), (o) => o.includes('px_EncryptInitTyped('), 5000);
      expect(log).toContain('px_EncryptInitTyped(');
      expect(log).toContain('CKM_AES_GCM(GCM {iv=<12 bytes>, ivBits=96, aad=<12 bytes>, tagBits=128})');
      expect(log).toContain('CKM_AES_KEY_GEN(NONE)');
      expect(log).not.toContain(iv.toString('hex'));
      expect(log).not.toContain(aad.toString('hex'));
    } finally {
      await t.stop();
    }
  });
});
