import path from 'node:path';
import * as p from 'pkcs11js';
import { bool, bytes, ulong } from './helpers/attrs';
import { faultyModule } from './helpers/faulty-module';
import type { FaultyModule } from './helpers/faulty-module';
import { startInProcess } from './helpers/in-process';
import type { InProcessStack, Pkcs11Caller } from './helpers/in-process';
import { createSoftHsm, SO_PIN, USER_PIN } from './helpers/softhsm';
import type { SoftHsmStore } from './helpers/softhsm';

// Finding 4, against the real SoftHSM2 behind the fault-injection wrapper.
const RW = p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION;
const CKS_RW_PUBLIC_SESSION = 2;
const CKS_RW_USER_FUNCTIONS = 3;

let store: SoftHsmStore;
let faulty: FaultyModule;
let stack: InProcessStack;

beforeEach(() => {
  store = createSoftHsm(['faulty']);
  faulty = faultyModule(path.join(store.dir, 'module'), store.conf);
  stack = startInProcess([{ alias: 'faulty', path: faulty.path }]);
});
afterEach(() => {
  stack.finalize();
  store.cleanup();
});

async function openSession(): Promise<{ c: Pkcs11Caller; s: number }> {
  const c = await stack.open();
  const slot = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList[0];
  const r = await c.call('C_OpenSession', { slotID: slot, flags: RW });
  expect(r.rv).toBe(p.CKR_OK);
  return { c, s: r.session };
}

async function find(c: Pkcs11Caller, s: number, label: string): Promise<number> {
  expect(await c.call('C_FindObjectsInit', { session: s, template: [bytes(p.CKA_LABEL, label)] })).toBe(p.CKR_OK);
  const r = await c.call('C_FindObjects', { session: s, maxObjectCount: 16 });
  expect(await c.call('C_FindObjectsFinal', { session: s })).toBe(p.CKR_OK);
  return r.objects.length;
}

const state = async (c: Pkcs11Caller, s: number) => (await c.call('C_GetSessionInfo', { session: s })).info.state;

async function privateTokenObject(c: Pkcs11Caller, s: number, label: string): Promise<void> {
  const template = [ulong(p.CKA_CLASS, p.CKO_DATA), bool(p.CKA_TOKEN, true), bool(p.CKA_PRIVATE, true), bytes(p.CKA_LABEL, label)];
  expect((await c.call('C_CreateObject', { session: s, template })).rv).toBe(p.CKR_OK);
}

test('a C_Logout the module refuses returns its CK_RV and outsiders stay outsiders', async () => {
  const x = await openSession();
  const z = await openSession();
  expect(await x.c.call('C_Login', { session: x.s, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) })).toBe(p.CKR_OK);
  await privateTokenObject(x.c, x.s, 'secret');
  expect(await find(z.c, z.s, 'secret')).toBe(0);

  faulty.fail('C_Logout', p.CKR_DEVICE_ERROR);
  expect(await x.c.call('C_Logout', { session: x.s })).toBe(p.CKR_DEVICE_ERROR);
  // The module is still logged in: z must still be an outsider, x still logged in.
  expect(await find(z.c, z.s, 'secret')).toBe(0);
  expect(await state(z.c, z.s)).toBe(CKS_RW_PUBLIC_SESSION);
  expect(await state(x.c, x.s)).toBe(CKS_RW_USER_FUNCTIONS);
  expect(await find(x.c, x.s, 'secret')).toBe(1);

  // x leaves while the module still refuses: nobody holds the login, everyone is an outsider.
  await x.c.close();
  expect(await find(z.c, z.s, 'secret')).toBe(0);
  // The SO cannot log in over the user login the module still has.
  expect(await z.c.call('C_Login', { session: z.s, userType: p.CKU_SO, pin: Buffer.from(SO_PIN) })).toBe(p.CKR_USER_ANOTHER_ALREADY_LOGGED_IN);

  // The module accepts again: a user joins with the right PIN, logs out, and the module is logged out.
  faulty.heal();
  expect(await z.c.call('C_Login', { session: z.s, userType: p.CKU_USER, pin: Buffer.from('0000') })).toBe(p.CKR_PIN_INCORRECT);
  expect(await z.c.call('C_Login', { session: z.s, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) })).toBe(p.CKR_OK);
  expect(await find(z.c, z.s, 'secret')).toBe(1);
  expect(await z.c.call('C_Logout', { session: z.s })).toBe(p.CKR_OK);
  expect(await z.c.call('C_Login', { session: z.s, userType: p.CKU_SO, pin: Buffer.from(SO_PIN) })).toBe(p.CKR_OK);
  await z.c.close();
});

test('a session object stays its creator\'s when the module cannot tell whether it is a token object', async () => {
  const x = await openSession();
  const z = await openSession();
  // The layer asks CKA_TOKEN after creating; the module fails that question.
  faulty.fail('C_GetAttributeValue', p.CKR_DEVICE_ERROR);
  const template = [ulong(p.CKA_CLASS, p.CKO_DATA), bool(p.CKA_TOKEN, false), bool(p.CKA_PRIVATE, false), bytes(p.CKA_LABEL, 'x-only')];
  expect((await x.c.call('C_CreateObject', { session: x.s, template })).rv).toBe(p.CKR_OK);
  faulty.heal();
  expect(await find(z.c, z.s, 'x-only')).toBe(0);
  expect(await find(x.c, x.s, 'x-only')).toBe(1);
  await x.c.close();
  await z.c.close();
});
