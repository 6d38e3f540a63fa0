import { createHash } from 'node:crypto';
import * as p from 'pkcs11js';
import { startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { P11Client } from './helpers/p11-client';
import { bool, bytes, ecKeyPairTemplates, mech, query, readULong, ulong } from './helpers/attrs';
import { SO_PIN, USER_PIN } from './helpers/softhsm';

/**
 * Every procedure of program 4 version 3, driven through the real daemon in
 * front of a fresh SoftHSM2 store. Expected CK_RVs are SoftHSM2 2.6.1's own.
 */
const CKS_RW_PUBLIC_SESSION = 2;
const CKS_RW_USER_FUNCTIONS = 3;
const RW = p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION;

let d: RunningDaemon;
let c: P11Client;
let slot: number;
let session: number;

beforeAll(async () => {
  d = await startDaemon({ tokens: ['test'] });
  c = await P11Client.open({ path: d.socketPath });
  const sl = await c.call('C_GetSlotList', { tokenPresent: 1, count: 8 });
  slot = sl.slotList[0];
});

afterAll(async () => {
  await c?.close();
  await d?.stop();
});

describe('connection preamble', () => {
  test('C_SetupArch answers the daemon architecture; unknown codes are refused', async () => {
    const x = await P11Client.connect({ path: d.socketPath });
    expect(await x.call('C_SetupArch', { arch: 1 })).toBe(1);
    expect(await x.call('C_SetupArch', { arch: 9 })).toBe(5);
    await x.close();
  });

  test('calls before C_Initialize get CKR_CRYPTOKI_NOT_INITIALIZED; unknown module alias is refused', async () => {
    const x = await P11Client.connect({ path: d.socketPath });
    expect((await x.call('C_GetInfo', undefined)).rv).toBe(p.CKR_CRYPTOKI_NOT_INITIALIZED);
    expect(await x.call('C_LoadModule', { alias: Buffer.from('nope') })).toBe(p.CKR_ARGUMENTS_BAD);
    expect(await x.call('C_Initialize', undefined)).toBe(p.CKR_OK);
    expect(await x.call('C_Initialize', undefined)).toBe(p.CKR_CRYPTOKI_ALREADY_INITIALIZED);
    expect(await x.call('C_Finalize', undefined)).toBe(p.CKR_OK);
    expect(await x.call('C_Finalize', undefined)).toBe(p.CKR_CRYPTOKI_NOT_INITIALIZED);
    await x.close();
  });
});

describe('general, slot and token information', () => {
  test('C_GetInfo carries blank-padded fixed strings', async () => {
    const r = await c.call('C_GetInfo', undefined);
    expect(r.rv).toBe(p.CKR_OK);
    expect(r.info.manufacturerID.length).toBe(32);
    expect(r.info.manufacturerID.toString().trim()).toBe('SoftHSM');
    expect(r.info.cryptokiVersion.major[0]).toBe(2);
  });

  test('C_GetSlotList: length query, exact buffer, short buffer', async () => {
    const q = await c.call('C_GetSlotList', { tokenPresent: 0, count: 0 });
    expect(q.rv).toBe(p.CKR_OK);
    expect(q.count).toBe(2); // the token and SoftHSM's free slot
    expect(q.slotList).toEqual([]);
    const full = await c.call('C_GetSlotList', { tokenPresent: 0, count: 2 });
    expect(full.slotList).toHaveLength(2);
    const short = await c.call('C_GetSlotList', { tokenPresent: 0, count: 1 });
    expect(short.rv).toBe(p.CKR_BUFFER_TOO_SMALL);
    expect(short.count).toBe(2);
  });

  test('C_GetSlotInfo, C_GetTokenInfo, unknown slot', async () => {
    const si = await c.call('C_GetSlotInfo', { slotID: slot });
    expect(si.rv).toBe(p.CKR_OK);
    expect(si.info.slotDescription.length).toBe(64);
    const ti = await c.call('C_GetTokenInfo', { slotID: slot });
    expect(ti.info.label.toString()).toBe('test'.padEnd(32, ' '));
    expect(ti.info.flags & p.CKF_TOKEN_INITIALIZED).toBeTruthy();
    expect((await c.call('C_GetTokenInfo', { slotID: 0x7777 })).rv).toBe(p.CKR_SLOT_ID_INVALID);
  });

  test('C_GetMechanismList size query and C_GetMechanismInfo', async () => {
    const q = await c.call('C_GetMechanismList', { slotID: slot, count: 0 });
    expect(q.count).toBeGreaterThan(50);
    const l = await c.call('C_GetMechanismList', { slotID: slot, count: q.count });
    expect(l.mechanismList).toContain(p.CKM_ECDSA);
    expect((await c.call('C_GetMechanismList', { slotID: slot, count: 3 })).rv).toBe(p.CKR_BUFFER_TOO_SMALL);
    const mi = await c.call('C_GetMechanismInfo', { slotID: slot, type: p.CKM_ECDSA });
    expect(mi.rv).toBe(p.CKR_OK);
    expect(mi.info.flags & p.CKF_SIGN).toBeTruthy();
    expect((await c.call('C_GetMechanismInfo', { slotID: slot, type: 0x7ffffff0 })).rv).toBe(p.CKR_MECHANISM_INVALID);
  });

  test('C_WaitForSlotEvent, C_GetFunctionStatus, C_CancelFunction, operation state', async () => {
    expect((await c.call('C_WaitForSlotEvent', { flags: p.CKF_DONT_BLOCK })).rv).toBe(p.CKR_NO_EVENT);
    // A blocking wait would hold a worker: refused.
    expect((await c.call('C_WaitForSlotEvent', { flags: 0 })).rv).toBe(p.CKR_FUNCTION_NOT_SUPPORTED);
    const s = await c.call('C_OpenSession', { slotID: slot, flags: RW });
    expect(await c.call('C_GetFunctionStatus', { session: s.session })).toBe(p.CKR_FUNCTION_NOT_PARALLEL);
    expect(await c.call('C_CancelFunction', { session: s.session })).toBe(p.CKR_FUNCTION_NOT_PARALLEL);
    expect((await c.call('C_GetOperationState', { session: s.session })).rv).toBe(p.CKR_FUNCTION_NOT_SUPPORTED);
    expect(
      await c.call('C_SetOperationState', { session: s.session, operationState: Buffer.alloc(4), encryptionKey: 0, authenticationKey: 0 }),
    ).toBe(p.CKR_FUNCTION_NOT_SUPPORTED);
    expect(await c.call('C_CloseSession', { session: s.session })).toBe(p.CKR_OK);
  });
});

describe('sessions, login and crypto', () => {
  let pub: number;
  let priv: number;
  let aes: number;

  test('C_OpenSession, C_GetSessionInfo, C_Login', async () => {
    const s = await c.call('C_OpenSession', { slotID: slot, flags: RW });
    expect(s.rv).toBe(p.CKR_OK);
    session = s.session;
    expect((await c.call('C_GetSessionInfo', { session })).info.state).toBe(CKS_RW_PUBLIC_SESSION);
    expect(await c.call('C_Login', { session, userType: p.CKU_USER, pin: Buffer.from('0000') })).toBe(p.CKR_PIN_INCORRECT);
    expect(await c.call('C_Login', { session, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) })).toBe(p.CKR_OK);
    expect(await c.call('C_Login', { session, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) })).toBe(p.CKR_USER_ALREADY_LOGGED_IN);
    expect((await c.call('C_GetSessionInfo', { session })).info.state).toBe(CKS_RW_USER_FUNCTIONS);
  });

  test('C_GenerateRandom and C_SeedRandom', async () => {
    const r = await c.call('C_GenerateRandom', { session, length: 48 });
    expect(r.rv).toBe(p.CKR_OK);
    expect(r.data.length).toBe(48);
    expect(await c.call('C_SeedRandom', { session, seed: Buffer.from('entropy') })).toBe(p.CKR_OK);
  });

  test('C_GenerateKeyPair EC P-256, C_Sign / C_Verify single and multi-part', async () => {
    const kp = await c.call('C_GenerateKeyPair', { session, mechanism: mech(p.CKM_EC_KEY_PAIR_GEN), ...ecKeyPairTemplates('ec1') });
    expect(kp.rv).toBe(p.CKR_OK);
    pub = kp.publicKey;
    priv = kp.privateKey;
    const digest = Buffer.alloc(32, 7);
    expect(await c.call('C_SignInit', { session, mechanism: mech(p.CKM_ECDSA), key: priv })).toBe(p.CKR_OK);
    const sig = await c.call('C_Sign', { session, data: digest });
    expect(sig.rv).toBe(p.CKR_OK);
    expect(sig.data.length).toBe(64);
    expect(await c.call('C_VerifyInit', { session, mechanism: mech(p.CKM_ECDSA), key: pub })).toBe(p.CKR_OK);
    expect(await c.call('C_Verify', { session, data: digest, signature: sig.data })).toBe(p.CKR_OK);
    const bad = Buffer.from(sig.data);
    bad[5] ^= 1;
    expect(await c.call('C_VerifyInit', { session, mechanism: mech(p.CKM_ECDSA), key: pub })).toBe(p.CKR_OK);
    expect(await c.call('C_Verify', { session, data: digest, signature: bad })).toBe(p.CKR_SIGNATURE_INVALID);

    const rsa = await c.call('C_GenerateKeyPair', {
      session,
      mechanism: mech(p.CKM_RSA_PKCS_KEY_PAIR_GEN),
      publicKeyTemplate: [ulong(p.CKA_MODULUS_BITS, 1024), bool(p.CKA_TOKEN, false), bool(p.CKA_VERIFY, true)],
      privateKeyTemplate: [bool(p.CKA_TOKEN, false), bool(p.CKA_SIGN, true)],
    });
    expect(rsa.rv).toBe(p.CKR_OK);
    expect(await c.call('C_SignInit', { session, mechanism: mech(p.CKM_SHA256_RSA_PKCS), key: rsa.privateKey })).toBe(p.CKR_OK);
    expect(await c.call('C_SignUpdate', { session, data: Buffer.from('hello ') })).toBe(p.CKR_OK);
    expect(await c.call('C_SignUpdate', { session, data: Buffer.from('world') })).toBe(p.CKR_OK);
    const sf = await c.call('C_SignFinal', { session });
    expect(sf.data.length).toBe(128);
    expect(await c.call('C_VerifyInit', { session, mechanism: mech(p.CKM_SHA256_RSA_PKCS), key: rsa.publicKey })).toBe(p.CKR_OK);
    expect(await c.call('C_VerifyUpdate', { session, data: Buffer.from('hello world') })).toBe(p.CKR_OK);
    expect(await c.call('C_VerifyFinal', { session, signature: sf.data })).toBe(p.CKR_OK);
    // No operation active: the module's CK_RV comes back unchanged.
    expect((await c.call('C_Sign', { session, data: digest })).rv).toBe(p.CKR_OPERATION_NOT_INITIALIZED);
  });

  test('C_GenerateKey AES, C_Encrypt / C_Decrypt single and multi-part', async () => {
    const k = await c.call('C_GenerateKey', {
      session,
      mechanism: mech(p.CKM_AES_KEY_GEN),
      template: [ulong(p.CKA_VALUE_LEN, 32), bool(p.CKA_ENCRYPT, true), bool(p.CKA_DECRYPT, true), bool(p.CKA_WRAP, true), bool(p.CKA_UNWRAP, true), bool(p.CKA_EXTRACTABLE, true), bool(p.CKA_SENSITIVE, false), bool(p.CKA_TOKEN, false)],
    });
    expect(k.rv).toBe(p.CKR_OK);
    aes = k.object;
    const iv = Buffer.alloc(16, 1);
    const plain = Buffer.from('a'.repeat(100));
    expect(await c.call('C_EncryptInit', { session, mechanism: mech(p.CKM_AES_CBC_PAD, iv), key: aes })).toBe(p.CKR_OK);
    const ct = await c.call('C_Encrypt', { session, data: plain });
    expect(ct.data.length).toBe(112);
    expect(await c.call('C_DecryptInit', { session, mechanism: mech(p.CKM_AES_CBC_PAD, iv), key: aes })).toBe(p.CKR_OK);
    expect((await c.call('C_Decrypt', { session, data: ct.data })).data).toEqual(plain);

    expect(await c.call('C_EncryptInit', { session, mechanism: mech(p.CKM_AES_CBC_PAD, iv), key: aes })).toBe(p.CKR_OK);
    const u1 = await c.call('C_EncryptUpdate', { session, data: plain.subarray(0, 40) });
    const u2 = await c.call('C_EncryptUpdate', { session, data: plain.subarray(40) });
    const f = await c.call('C_EncryptFinal', { session });
    expect(Buffer.concat([u1.data, u2.data, f.data])).toEqual(ct.data);
    expect(await c.call('C_DecryptInit', { session, mechanism: mech(p.CKM_AES_CBC_PAD, iv), key: aes })).toBe(p.CKR_OK);
    const d1 = await c.call('C_DecryptUpdate', { session, data: ct.data });
    const d2 = await c.call('C_DecryptFinal', { session });
    expect(Buffer.concat([d1.data, d2.data])).toEqual(plain);
  });

  test('C_Digest single and multi-part, C_DigestKey', async () => {
    const want = createHash('sha256').update('abc').digest();
    expect(await c.call('C_DigestInit', { session, mechanism: mech(p.CKM_SHA256) })).toBe(p.CKR_OK);
    expect((await c.call('C_Digest', { session, data: Buffer.from('abc') })).data).toEqual(want);
    expect(await c.call('C_DigestInit', { session, mechanism: mech(p.CKM_SHA256) })).toBe(p.CKR_OK);
    expect(await c.call('C_DigestUpdate', { session, data: Buffer.from('a') })).toBe(p.CKR_OK);
    expect(await c.call('C_DigestUpdate', { session, data: Buffer.from('bc') })).toBe(p.CKR_OK);
    expect((await c.call('C_DigestFinal', { session })).data).toEqual(want);
    expect(await c.call('C_DigestInit', { session, mechanism: mech(p.CKM_SHA256) })).toBe(p.CKR_OK);
    expect(await c.call('C_DigestKey', { session, key: aes })).toBe(p.CKR_OK);
    expect((await c.call('C_DigestFinal', { session })).data.length).toBe(32);
  });

  test('empty input is data, not a NULL pointer (pkcs11test DigestTestVectors)', async () => {
    const empty = createHash('sha256').update('').digest();
    expect(await c.call('C_DigestInit', { session, mechanism: mech(p.CKM_SHA256) })).toBe(p.CKR_OK);
    expect(await c.call('C_Digest', { session, data: Buffer.alloc(0) })).toEqual({ rv: p.CKR_OK, data: empty });
    expect(await c.call('C_DigestInit', { session, mechanism: mech(p.CKM_SHA256) })).toBe(p.CKR_OK);
    expect(await c.call('C_DigestUpdate', { session, data: Buffer.alloc(0) })).toBe(p.CKR_OK);
    expect(await c.call('C_DigestUpdate', { session, data: Buffer.from('abc') })).toBe(p.CKR_OK);
    expect((await c.call('C_DigestFinal', { session })).data).toEqual(createHash('sha256').update('abc').digest());
  });

  test('dual-function and recover calls pass the module answer through', async () => {
    expect((await c.call('C_DigestEncryptUpdate', { session, data: Buffer.alloc(16) })).rv).toBe(p.CKR_FUNCTION_NOT_SUPPORTED);
    expect((await c.call('C_SignEncryptUpdate', { session, data: Buffer.alloc(16) })).rv).toBe(p.CKR_FUNCTION_NOT_SUPPORTED);
    expect((await c.call('C_DecryptDigestUpdate', { session, data: Buffer.alloc(16) })).rv).toBe(p.CKR_FUNCTION_NOT_SUPPORTED);
    expect((await c.call('C_DecryptVerifyUpdate', { session, data: Buffer.alloc(16) })).rv).toBe(p.CKR_FUNCTION_NOT_SUPPORTED);
    expect(await c.call('C_SignRecoverInit', { session, mechanism: mech(p.CKM_ECDSA), key: priv })).toBe(p.CKR_FUNCTION_NOT_SUPPORTED);
    expect((await c.call('C_SignRecover', { session, data: Buffer.alloc(16) })).rv).toBe(p.CKR_FUNCTION_NOT_SUPPORTED);
    expect(await c.call('C_VerifyRecoverInit', { session, mechanism: mech(p.CKM_ECDSA), key: pub })).toBe(p.CKR_FUNCTION_NOT_SUPPORTED);
    expect((await c.call('C_VerifyRecover', { session, data: Buffer.alloc(16) })).rv).toBe(p.CKR_FUNCTION_NOT_SUPPORTED);
  });

  test('C_GetAttributeValue: size query, value, sensitive, invalid type, short buffer', async () => {
    const q = await c.call('C_GetAttributeValue', { session, object: pub, template: [query(p.CKA_LABEL), query(p.CKA_EC_POINT)] });
    expect(q.rv).toBe(p.CKR_OK);
    expect(q.template[0].valueLen).toBe(3);
    expect(q.template[1].valueLen).toBe(67);
    const v = await c.call('C_GetAttributeValue', {
      session,
      object: pub,
      template: [{ type: p.CKA_LABEL, value: Buffer.alloc(3), valueLen: 3 }, { type: p.CKA_CLASS, value: Buffer.alloc(8), valueLen: 8 }],
    });
    expect(v.template[0].value.toString()).toBe('ec1');
    expect(readULong(v.template[1].value)).toBe(p.CKO_PUBLIC_KEY);
    const s = await c.call('C_GetAttributeValue', { session, object: priv, template: [query(p.CKA_LABEL), query(p.CKA_VALUE)] });
    expect(s.rv).toBe(p.CKR_ATTRIBUTE_SENSITIVE);
    expect(s.template[0].valueLen).toBe(3);
    expect(s.template[1].valueLen).toBe(-1);
    const inv = await c.call('C_GetAttributeValue', { session, object: pub, template: [query(p.CKA_MODULUS), query(p.CKA_LABEL)] });
    expect(inv.rv).toBe(p.CKR_ATTRIBUTE_TYPE_INVALID);
    expect(inv.template[0].valueLen).toBe(-1);
    expect(inv.template[1].valueLen).toBe(3);
    const small = await c.call('C_GetAttributeValue', { session, object: pub, template: [{ type: p.CKA_LABEL, value: Buffer.alloc(2), valueLen: 2 }] });
    expect(small.rv).toBe(p.CKR_BUFFER_TOO_SMALL);
    expect(small.template[0].valueLen).toBe(-1);
  });

  test('objects: create, find, set, copy, size, destroy', async () => {
    const o = await c.call('C_CreateObject', {
      session,
      template: [ulong(p.CKA_CLASS, p.CKO_DATA), bool(p.CKA_TOKEN, false), bytes(p.CKA_LABEL, 'data1'), bytes(p.CKA_VALUE, 'payload')],
    });
    expect(o.rv).toBe(p.CKR_OK);
    expect(await c.call('C_SetAttributeValue', { session, object: o.object, template: [bytes(p.CKA_LABEL, 'data2')] })).toBe(p.CKR_OK);
    expect(await c.call('C_FindObjectsInit', { session, template: [bytes(p.CKA_LABEL, 'data2')] })).toBe(p.CKR_OK);
    const f = await c.call('C_FindObjects', { session, maxObjectCount: 10 });
    expect(f.objects).toEqual([o.object]);
    expect(await c.call('C_FindObjectsFinal', { session })).toBe(p.CKR_OK);
    const cp = await c.call('C_CopyObject', { session, object: o.object, template: [bytes(p.CKA_LABEL, 'data3')] });
    expect(cp.rv).toBe(p.CKR_OK);
    expect(cp.object).not.toBe(o.object);
    const sz = await c.call('C_GetObjectSize', { session, object: o.object });
    expect([p.CKR_OK, p.CKR_FUNCTION_NOT_SUPPORTED]).toContain(sz.rv);
    expect(await c.call('C_DestroyObject', { session, object: cp.object })).toBe(p.CKR_OK);
    expect(await c.call('C_DestroyObject', { session, object: cp.object })).toBe(p.CKR_OBJECT_HANDLE_INVALID);
  });

  test('C_WrapKey / C_UnwrapKey with AES key wrap', async () => {
    const k2 = await c.call('C_GenerateKey', {
      session,
      mechanism: mech(p.CKM_AES_KEY_GEN),
      template: [ulong(p.CKA_VALUE_LEN, 16), bool(p.CKA_EXTRACTABLE, true), bool(p.CKA_TOKEN, false), bool(p.CKA_ENCRYPT, true)],
    });
    const w = await c.call('C_WrapKey', { session, mechanism: mech(p.CKM_AES_KEY_WRAP), wrappingKey: aes, key: k2.object });
    expect(w.rv).toBe(p.CKR_OK);
    expect(w.data.length).toBe(24);
    const u = await c.call('C_UnwrapKey', {
      session,
      mechanism: mech(p.CKM_AES_KEY_WRAP),
      unwrappingKey: aes,
      wrappedKey: w.data,
      template: [ulong(p.CKA_CLASS, p.CKO_SECRET_KEY), ulong(p.CKA_KEY_TYPE, p.CKK_AES), bool(p.CKA_TOKEN, false), bool(p.CKA_ENCRYPT, true)],
    });
    expect(u.rv).toBe(p.CKR_OK);
    expect((await c.call('C_WrapKey', { session, mechanism: mech(p.CKM_AES_KEY_WRAP), wrappingKey: 0x7777770, key: k2.object })).rv).toBe(
      p.CKR_WRAPPING_KEY_HANDLE_INVALID,
    );
  });

  test('C_DeriveKey with DH (parameter is the peer public value: no pointers)', async () => {
    // RFC 2409 Oakley group 2 (1024-bit MODP), generator 2.
    const prime = Buffer.from(
      'FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF',
      'hex',
    );
    const kp = await c.call('C_GenerateKeyPair', {
      session,
      mechanism: mech(p.CKM_DH_PKCS_KEY_PAIR_GEN),
      publicKeyTemplate: [bytes(p.CKA_PRIME, prime), bytes(p.CKA_BASE, Buffer.from([2])), bool(p.CKA_TOKEN, false)],
      privateKeyTemplate: [bool(p.CKA_DERIVE, true), bool(p.CKA_TOKEN, false)],
    });
    expect(kp.rv).toBe(p.CKR_OK);
    const pv = await c.call('C_GetAttributeValue', { session, object: kp.publicKey, template: [{ type: p.CKA_VALUE, value: Buffer.alloc(256), valueLen: 256 }] });
    const dk = await c.call('C_DeriveKey', {
      session,
      mechanism: mech(p.CKM_DH_PKCS_DERIVE, pv.template[0].value),
      baseKey: kp.privateKey,
      template: [ulong(p.CKA_CLASS, p.CKO_SECRET_KEY), ulong(p.CKA_KEY_TYPE, p.CKK_GENERIC_SECRET), ulong(p.CKA_VALUE_LEN, 32), bool(p.CKA_TOKEN, false)],
    });
    expect(dk.rv).toBe(p.CKR_OK);
  });

  test('C_SetPIN, C_Logout, C_InitPIN as SO, C_InitToken on the free slot', async () => {
    expect(await c.call('C_SetPIN', { session, oldPin: Buffer.from(USER_PIN), newPin: Buffer.from('4321') })).toBe(p.CKR_OK);
    expect(await c.call('C_SetPIN', { session, oldPin: Buffer.from('4321'), newPin: Buffer.from(USER_PIN) })).toBe(p.CKR_OK);
    expect(await c.call('C_Logout', { session })).toBe(p.CKR_OK);
    expect(await c.call('C_Logout', { session })).toBe(p.CKR_USER_NOT_LOGGED_IN);
    expect(await c.call('C_Login', { session, userType: p.CKU_SO, pin: Buffer.from(SO_PIN) })).toBe(p.CKR_OK);
    expect(await c.call('C_InitPIN', { session, pin: Buffer.from(USER_PIN) })).toBe(p.CKR_OK);
    expect(await c.call('C_Logout', { session })).toBe(p.CKR_OK);
    const all = await c.call('C_GetSlotList', { tokenPresent: 0, count: 8 });
    const free = all.slotList.find((s) => s !== slot)!;
    const label = Buffer.from('fresh'.padEnd(32, ' '));
    expect(await c.call('C_InitToken', { slotID: free, pin: Buffer.from(SO_PIN), label })).toBe(p.CKR_OK);
  });

  test('C_CloseAllSessions closes only this connection\'s sessions', async () => {
    const other = await P11Client.open({ path: d.socketPath });
    const os1 = await other.call('C_OpenSession', { slotID: slot, flags: RW });
    const mine = await c.call('C_OpenSession', { slotID: slot, flags: RW });
    expect(await c.call('C_CloseAllSessions', { slotID: slot })).toBe(p.CKR_OK);
    expect((await c.call('C_GetSessionInfo', { session: mine.session })).rv).toBe(p.CKR_SESSION_HANDLE_INVALID);
    expect((await c.call('C_GetSessionInfo', { session })).rv).toBe(p.CKR_SESSION_HANDLE_INVALID);
    expect((await other.call('C_GetSessionInfo', { session: os1.session })).rv).toBe(p.CKR_OK);
    await other.close();
  });

  test('C_CloseAllSessions on an unknown slot is CKR_SLOT_ID_INVALID and closes nothing', async () => {
    const mine = await c.call('C_OpenSession', { slotID: slot, flags: RW });
    expect(await c.call('C_CloseAllSessions', { slotID: 88888 })).toBe(p.CKR_SLOT_ID_INVALID);
    expect((await c.call('C_GetSessionInfo', { session: mine.session })).rv).toBe(p.CKR_OK);
  });
});
