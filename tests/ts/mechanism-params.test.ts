/**
 * Finding 2: mechanism parameters that arrive as raw bytes (Caml Crush's
 * version 3 procedures) never reach a module unless their shape is known to
 * hold no pointer. Driven through Caml Crush's own client library, which
 * copies CK_GCM_PARAMS and CK_ECDH1_DERIVE_PARAMS (pointers included) onto
 * the wire: on the old code the worker dereferenced the client's pointers
 * and died with SIGSEGV.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import path from 'node:path';
import { ck } from '../../src/pkcs11/constants';
import { startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { P11Client } from './helpers/p11-client';
import { USER_PIN } from './helpers/softhsm';

const CC_CLIENT = '/usr/lib/x86_64-linux-gnu/caml-crush/libp11clientunix.so';
const DRIVER_SRC = path.join(__dirname, '..', 'c', 'mech_param_driver.c');
const RW = ck.CKF_SERIAL_SESSION | ck.CKF_RW_SESSION;
const hex = (rv: number) => `0x${rv.toString(16)}`;

let d: RunningDaemon;
let driver: string;
beforeAll(async () => {
  d = await startDaemon({ workers: 1 });
  driver = path.join(d.hsm.dir, 'mech_param_driver');
  execFileSync('cc', ['-Wall', '-Wextra', '-Werror', '-I/usr/include/p11-kit-1', '-o', driver, DRIVER_SRC, '-ldl']);
});
afterAll(async () => {
  await d?.stop();
});

function workerPids(): number[] {
  const r = spawnSync('pgrep', ['-P', String(d.proc.pid)], { encoding: 'utf8' });
  return r.stdout.trim().split('\n').filter(Boolean).map(Number).sort();
}

async function openSession(): Promise<{ c: P11Client; s: number }> {
  const c = await P11Client.open({ path: d.socketPath });
  const slot = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList[0];
  const s = (await c.call('C_OpenSession', { slotID: slot, flags: RW })).session;
  return { c, s };
}

test("Caml Crush's client: AES-GCM and ECDH1-DERIVE get CKR_MECHANISM_PARAM_INVALID; the connection, the worker and other connections live on", async () => {
  const workers = workerPids();
  expect(workers).toHaveLength(1);
  const other = await openSession();
  expect((await other.c.call('C_GetSessionInfo', { session: other.s })).rv).toBe(ck.CKR_OK);

  const r = spawnSync(driver, [CC_CLIENT, USER_PIN], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...d.hsm.env, PKCS11PROXY_SOCKET_PATH: d.socketPath, PKCS11PROXY_LIBNAME: 'softhsm' },
  });
  expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
  const steps = new Map(r.stdout.trim().split('\n').map((l) => [l.split(' ')[0], l.split(' ').slice(1)]));
  expect(Object.fromEntries(steps)).toEqual({
    gcm_encrypt_init: [hex(ck.CKR_MECHANISM_PARAM_INVALID)],
    ecdh1_derive: [hex(ck.CKR_MECHANISM_PARAM_INVALID)],
    cbc_iv15_encrypt_init: [hex(ck.CKR_MECHANISM_PARAM_INVALID)],
    cbc_iv16_encrypt_init: ['0x0'],
    cbc_encrypt: ['0x0'],
    digest_init: ['0x0'],
    // SHA-256("abc")
    digest: ['0x0', 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'],
    hmac_keygen: ['0x0'],
    hmac_sign_init: ['0x0'],
    hmac_sign: ['0x0', '32'],
  });

  // No worker exited: the same process serves, and the other connection's session is intact.
  expect(workerPids()).toEqual(workers);
  expect((await other.c.call('C_GetSessionInfo', { session: other.s })).rv).toBe(ck.CKR_OK);
  await other.c.close();
});

describe('raw parameters over the version 3 procedures', () => {
  let c: P11Client;
  let s: number;
  beforeAll(async () => {
    ({ c, s } = await openSession());
  });
  afterAll(async () => {
    await c.close();
  });
  const digestInit = (mechanism: number, parameter: Buffer) => c.call('C_DigestInit', { session: s, mechanism: { mechanism, parameter } });

  it.each([
    ['a parameter for a mechanism that takes none', ck.CKM_SHA256, Buffer.alloc(8)],
    ['a CK_GCM_PARAMS-sized blob', ck.CKM_AES_GCM, Buffer.alloc(48)],
    ['a PSS struct of the wrong size', ck.CKM_SHA256_RSA_PKCS_PSS, Buffer.alloc(16)],
    ['a MAC_GENERAL length that is not one CK_ULONG', ck.CKM_SHA256_HMAC_GENERAL, Buffer.alloc(4)],
    ['a vendor mechanism not declared plain', 0x80001234, Buffer.from('vendor')],
  ])('%s: CKR_MECHANISM_PARAM_INVALID', async (_name, mech, param) => {
    expect(await digestInit(mech, param)).toBe(ck.CKR_MECHANISM_PARAM_INVALID);
  });

  it('an empty parameter reaches the module for any mechanism (it carries nothing to misread)', async () => {
    expect(await digestInit(0x80001234, Buffer.alloc(0))).toBe(ck.CKR_MECHANISM_INVALID);
    expect(await digestInit(ck.CKM_SHA256, Buffer.alloc(0))).toBe(ck.CKR_OK);
    const out = await c.call('C_Digest', { session: s, data: Buffer.from('abc') });
    expect(out.rv).toBe(ck.CKR_OK);
  });
});

test('plain_parameter_mechanisms lets a vendor mechanism\'s bytes through to the module', async () => {
  const v = await startDaemon({ workers: 0, processorExtra: 'plain_parameter_mechanisms = "0x80001234";' });
  try {
    const c = await P11Client.open({ path: v.socketPath });
    const slot = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList[0];
    const s = (await c.call('C_OpenSession', { slotID: slot, flags: RW })).session;
    // SoftHSM2 does not know the mechanism: its own answer shows the bytes reached it.
    expect(await c.call('C_DigestInit', { session: s, mechanism: { mechanism: 0x80001234, parameter: Buffer.from('vendor') } })).toBe(
      ck.CKR_MECHANISM_INVALID,
    );
    expect(await c.call('C_DigestInit', { session: s, mechanism: { mechanism: 0x80001235, parameter: Buffer.from('vendor') } })).toBe(
      ck.CKR_MECHANISM_PARAM_INVALID,
    );
    await c.close();
  } finally {
    await v.stop();
  }
});
