import { createHash } from 'node:crypto';
import * as p from 'pkcs11js';
import { ModuleProcess, OUR_CLIENT } from './helpers/module-process';
import { createKeyTemplate, startPoolDaemon, waitFor } from './helpers/pool';
import type { PoolDaemon } from './helpers/pool';
import type { SoftHsmStore } from './helpers/softhsm';

/**
 * What a client in the middle of work sees when a pool member fails: our C
 * client (loaded by pkcs11js in a child process) against the daemon, pool
 * `pool` over m0 (primary) and m1 (standby), both holding the same keys.
 */
const DATA = Buffer.from('pool failover test data');
const SHA256 = createHash('sha256').update(DATA).digest();

let template: SoftHsmStore;
beforeAll(() => {
  template = createKeyTemplate();
});
afterAll(() => template.cleanup());

let d: PoolDaemon;
let c: ModuleProcess;
let session: Buffer;

async function upState(alias: string): Promise<number | undefined> {
  return (await d.metrics()).get(`pkcs11proxyd_pool_member_up{member=${alias},pool=pool,token=pkcs11:token=bench}`);
}

async function find(label: string, cls: number): Promise<Buffer> {
  await c.must('C_FindObjectsInit', session, [{ type: p.CKA_LABEL, value: label }, { type: p.CKA_CLASS, value: cls }]);
  const found = await c.must<Buffer[]>('C_FindObjects', session, 2);
  await c.must('C_FindObjectsFinal', session);
  expect(found).toHaveLength(1);
  return found[0];
}

async function open(pool: string): Promise<void> {
  d = await startPoolDaemon(template, { pool });
  c = await ModuleProcess.start(OUR_CLIENT, d.env());
  await c.must('C_Initialize');
  const slots = await c.must<Buffer[]>('C_GetSlotList', true);
  expect(slots).toHaveLength(1);
  session = await c.must<Buffer>('C_OpenSession', slots[0], p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION);
  await c.must('C_Login', session, p.CKU_USER, '1234');
}

async function close(): Promise<void> {
  await c?.stop();
  for (const m of d?.members ?? []) m.faults.heal();
  await d?.stop();
}

// Probes stay out of the way (long interval) unless a test shortens them; a member that goes down stays down.
beforeEach(() => open('strategy = "primary-standby" probe_interval_ms = 60000 retry_base_ms = 60000 call_timeout_ms = 300'));
afterEach(close);

test('multi-part digest whose member fails after C_DigestUpdate: CKR_DEVICE_ERROR, then the operation is gone; a one-shot digest moves to the standby', async () => {
  await c.must('C_DigestInit', session, { mechanism: p.CKM_SHA256 });
  await c.must('C_DigestUpdate', session, DATA);
  d.members[0].faults.fail('*', p.CKR_DEVICE_ERROR);
  expect((await c.call('C_DigestFinal', session, Buffer.alloc(32))).rv).toBe(p.CKR_DEVICE_ERROR);
  expect((await c.call('C_DigestFinal', session, Buffer.alloc(32))).rv).toBe(p.CKR_OPERATION_NOT_INITIALIZED);
  expect(await upState('m0')).toBe(0);
  // The same session goes on, on m1.
  await c.must('C_DigestInit', session, { mechanism: p.CKM_SHA256 });
  expect(await c.must<Buffer>('C_Digest', session, DATA, Buffer.alloc(32))).toEqual(SHA256);
});

test('multi-part operation on a member that goes down in between (token removed): the next part answers CKR_DEVICE_ERROR', async () => {
  await c.must('C_DigestInit', session, { mechanism: p.CKM_SHA256 });
  await c.must('C_DigestUpdate', session, DATA);
  d.members[0].faults.removeToken();
  // Any call reaching m0 finds it gone: an attribute read (replayed on m1) marks it down.
  const key = await find('bench-aes', p.CKO_SECRET_KEY);
  expect(await upState('m0')).toBe(0);
  const label = await c.must<Array<{ type: number; value: Buffer }>>('C_GetAttributeValue', session, key, [{ type: p.CKA_LABEL }]);
  expect(label[0].value.toString()).toBe('bench-aes');
  expect((await c.call('C_DigestUpdate', session, DATA)).rv).toBe(p.CKR_DEVICE_ERROR);
  expect((await c.call('C_DigestFinal', session, Buffer.alloc(32))).rv).toBe(p.CKR_OPERATION_NOT_INITIALIZED);
});

test('single-part work in flight moves to the standby: C_DigestInit + C_Digest, C_GetAttributeValue, C_GenerateRandom, C_FindObjects half-way', async () => {
  // The primary is probed often, so that it is back (and first choice again) before each case.
  await close();
  await open('strategy = "primary-standby" probe_interval_ms = 50 retry_base_ms = 20 retry_max_ms = 50 call_timeout_ms = 300');
  const key = await find('bench-aes', p.CKO_SECRET_KEY);
  const cases: Array<[string, () => Promise<void>]> = [
    ['C_Digest', async () => {
      await c.must('C_DigestInit', session, { mechanism: p.CKM_SHA256 });
      expect(await c.must<Buffer>('C_Digest', session, DATA, Buffer.alloc(32))).toEqual(SHA256);
    }],
    ['C_GetAttributeValue', async () => {
      const attrs = await c.must<Array<{ type: number; value: Buffer }>>('C_GetAttributeValue', session, key, [{ type: p.CKA_LABEL }, { type: p.CKA_ID }]);
      expect(attrs.map((a) => a.value.toString('hex'))).toEqual([Buffer.from('bench-aes').toString('hex'), '23']);
    }],
    ['C_GenerateRandom', async () => {
      expect(await c.must<Buffer>('C_GenerateRandom', session, Buffer.alloc(32))).toHaveLength(32);
    }],
    ['C_FindObjects', async () => {
      // The primary answers the first part of the search, then fails: the standby finishes it without repeating an object.
      d.members[0].faults.release('C_FindObjects');
      await c.must('C_FindObjectsInit', session, []);
      const first = await c.must<Buffer[]>('C_FindObjects', session, 2);
      expect(first).toHaveLength(2);
      d.members[0].faults.fail('C_FindObjects', p.CKR_DEVICE_ERROR);
      const rest = await c.must<Buffer[]>('C_FindObjects', session, 100);
      await c.must('C_FindObjectsFinal', session);
      const all = [...first, ...rest].map((h) => h.toString('hex'));
      // bench-ec and bench-rsa (public and private), bench-aes, wrap-aes, data-aes.
      expect(all).toHaveLength(7);
      expect(new Set(all).size).toBe(7);
    }],
  ];
  for (const [fn, run] of cases) {
    d.members[0].faults.heal();
    await waitFor('m0 up', () => upState('m0'), (v) => v === 1);
    const onM1 = await d.memberCalls('m1', fn);
    d.members[0].faults.fail(fn, p.CKR_DEVICE_ERROR);
    await run();
    expect({ fn, m1: (await d.memberCalls('m1', fn)) > onM1 }).toEqual({ fn, m1: true });
  }
});

test('the primary failing at C_Sign: the one-shot signature is replayed on the standby (logged in there with the pool PIN) and verifies', async () => {
  const priv = await find('bench-ec', p.CKO_PRIVATE_KEY);
  const pub = await find('bench-ec', p.CKO_PUBLIC_KEY);
  const digest = createHash('sha256').update(DATA).digest();
  d.members[0].faults.fail('C_Sign', p.CKR_DEVICE_ERROR);
  await c.must('C_SignInit', session, { mechanism: p.CKM_ECDSA }, priv);
  const sig = await c.must<Buffer>('C_Sign', session, digest, Buffer.alloc(128));
  expect(sig).toHaveLength(64);
  expect(await d.memberCalls('m1', 'C_Login')).toBeGreaterThanOrEqual(1);
  await c.must('C_VerifyInit', session, { mechanism: p.CKM_ECDSA }, pub);
  expect(await c.must<boolean>('C_Verify', session, digest, sig)).toBe(true);
});

test('a hung member call times out (call_timeout_ms): C_WrapKey is answered by the standby', async () => {
  const wrapping = await find('wrap-aes', p.CKO_SECRET_KEY);
  const data = await find('data-aes', p.CKO_SECRET_KEY);
  d.members[0].faults.hang('C_WrapKey');
  const t0 = Date.now();
  const wrapped = await c.must<Buffer>('C_WrapKey', session, { mechanism: p.CKM_AES_KEY_WRAP }, wrapping, data, Buffer.alloc(64));
  expect(wrapped).toHaveLength(24);
  expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
  expect(await upState('m0')).toBe(0);
  // Our client sends C_WrapKey as its typed-mechanism form.
  expect((await d.memberCalls('m1', 'C_WrapKey')) + (await d.memberCalls('m1', 'px_WrapKeyTyped'))).toBe(1);
});

test('token objects are not created through a pool; session objects are, on one member, and are usable there', async () => {
  const aes = (token: boolean) => [
    { type: p.CKA_CLASS, value: p.CKO_SECRET_KEY },
    { type: p.CKA_KEY_TYPE, value: p.CKK_AES },
    { type: p.CKA_TOKEN, value: token },
    { type: p.CKA_ENCRYPT, value: true },
    { type: p.CKA_VALUE, value: Buffer.alloc(16, 7) },
  ];
  expect((await c.call('C_CreateObject', session, aes(true))).rv).toBe(p.CKR_FUNCTION_NOT_SUPPORTED);
  expect((await c.call('C_GenerateKey', session, { mechanism: p.CKM_AES_KEY_GEN }, [{ type: p.CKA_TOKEN, value: true }, { type: p.CKA_VALUE_LEN, value: 16 }])).rv).toBe(
    p.CKR_FUNCTION_NOT_SUPPORTED,
  );
  const tokenKey = await find('bench-aes', p.CKO_SECRET_KEY);
  expect((await c.call('C_DestroyObject', session, tokenKey)).rv).toBe(p.CKR_FUNCTION_NOT_SUPPORTED);
  const k = await c.must<Buffer>('C_CreateObject', session, aes(false));
  await c.must('C_EncryptInit', session, { mechanism: p.CKM_AES_ECB }, k);
  const ct = await c.must<Buffer>('C_Encrypt', session, Buffer.alloc(16), Buffer.alloc(32));
  expect(ct).toHaveLength(16);
  // Its member fails: the session object is gone with it; replaying would use another key.
  d.members[0].faults.fail('C_EncryptInit', p.CKR_DEVICE_ERROR);
  expect((await c.call('C_EncryptInit', session, { mechanism: p.CKM_AES_ECB }, k)).rv).toBe(p.CKR_DEVICE_ERROR);
  expect((await c.call('C_EncryptInit', session, { mechanism: p.CKM_AES_ECB }, k)).rv).toBe(p.CKR_OBJECT_HANDLE_INVALID);
});

test('round-robin: session objects made on both members are all found by one search', async () => {
  await close();
  await open('strategy = "round-robin"');
  const made: string[] = [];
  for (let i = 0; i < 4; i++) {
    const h = await c.must<Buffer>('C_CreateObject', session, [
      { type: p.CKA_CLASS, value: p.CKO_DATA },
      { type: p.CKA_TOKEN, value: false },
      { type: p.CKA_LABEL, value: 'sess' },
      { type: p.CKA_VALUE, value: Buffer.from([i]) },
    ]);
    made.push(h.toString('hex'));
  }
  // Consecutive creations alternate between the members.
  expect([await d.memberCalls('m0', 'C_CreateObject'), await d.memberCalls('m1', 'C_CreateObject')]).toEqual([2, 2]);
  await c.must('C_FindObjectsInit', session, [{ type: p.CKA_LABEL, value: 'sess' }]);
  const found = await c.must<Buffer[]>('C_FindObjects', session, 10);
  await c.must('C_FindObjectsFinal', session);
  expect(new Set(found.map((h) => h.toString('hex')))).toEqual(new Set(made));
  expect(found).toHaveLength(4);
});
