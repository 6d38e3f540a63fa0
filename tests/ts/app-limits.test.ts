import path from 'node:path';
import * as p from 'pkcs11js';
import { bool, bytes, ulong } from './helpers/attrs';
import { startDaemon } from './helpers/daemon';
import { faultyModule } from './helpers/faulty-module';
import { startInProcess } from './helpers/in-process';
import type { InProcessStack, Pkcs11Caller } from './helpers/in-process';
import { P11Client } from './helpers/p11-client';
import { createSoftHsm } from './helpers/softhsm';
import type { SoftHsmStore } from './helpers/softhsm';
import { DEFAULT_APP_LIMITS } from '../../src/server/settings';

const RW = p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION;

function dataObject(label: string, valueBytes: number, token = false) {
  return [
    ulong(p.CKA_CLASS, p.CKO_DATA),
    bool(p.CKA_TOKEN, token),
    bool(p.CKA_PRIVATE, false),
    bytes(p.CKA_LABEL, label),
    bytes(p.CKA_VALUE, Buffer.alloc(valueBytes, 7)),
  ];
}

async function firstSlot(c: Pkcs11Caller): Promise<number> {
  return (await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList[0];
}

describe('per-application limits, in process', () => {
  let store: SoftHsmStore;
  let stack: InProcessStack;
  beforeEach(() => {
    store = createSoftHsm(['limits']);
    // A module instance of its own (no faults injected): SoftHSM2 reads its configuration once per process.
    stack = startInProcess([{ alias: 'softhsm', path: faultyModule(path.join(store.dir, 'module'), store.conf).path }], {
      ...DEFAULT_APP_LIMITS,
      maxSessions: 3,
      maxSessionObjectBytes: 100 * 1024,
    });
  });
  afterEach(() => {
    stack.finalize();
    store.cleanup();
  });

  test('sessions beyond the limit answer CKR_SESSION_COUNT, per application', async () => {
    const c = await stack.open();
    const slot = await firstSlot(c);
    const s: number[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await c.call('C_OpenSession', { slotID: slot, flags: RW });
      expect(r.rv).toBe(p.CKR_OK);
      s.push(r.session);
    }
    expect((await c.call('C_OpenSession', { slotID: slot, flags: RW })).rv).toBe(p.CKR_SESSION_COUNT);
    // Another application has its own allowance.
    const other = await stack.open();
    expect((await other.call('C_OpenSession', { slotID: slot, flags: RW })).rv).toBe(p.CKR_OK);
    expect(await c.call('C_CloseSession', { session: s[0] })).toBe(p.CKR_OK);
    expect((await c.call('C_OpenSession', { slotID: slot, flags: RW })).rv).toBe(p.CKR_OK);
    await c.close();
    await other.close();
  });

  test('session-object bytes beyond the limit answer CKR_DEVICE_MEMORY until released', async () => {
    const c = await stack.open();
    const slot = await firstSlot(c);
    const s = (await c.call('C_OpenSession', { slotID: slot, flags: RW })).session;
    const first = await c.call('C_CreateObject', { session: s, template: dataObject('big-1', 60 * 1024) });
    expect(first.rv).toBe(p.CKR_OK);
    expect((await c.call('C_CreateObject', { session: s, template: dataObject('big-2', 60 * 1024) })).rv).toBe(p.CKR_DEVICE_MEMORY);
    // A copy counts the bytes of what it copies.
    expect((await c.call('C_CopyObject', { session: s, object: first.object, template: [] })).rv).toBe(p.CKR_DEVICE_MEMORY);
    // Growing an object by C_SetAttributeValue counts too.
    expect(await c.call('C_SetAttributeValue', { session: s, object: first.object, template: [bytes(p.CKA_LABEL, Buffer.alloc(60 * 1024, 0x41))] })).toBe(
      p.CKR_DEVICE_MEMORY,
    );
    // Token objects are not session objects.
    expect((await c.call('C_CreateObject', { session: s, template: dataObject('token', 60 * 1024, true) })).rv).toBe(p.CKR_OK);
    expect(await c.call('C_DestroyObject', { session: s, object: first.object })).toBe(p.CKR_OK);
    expect((await c.call('C_CreateObject', { session: s, template: dataObject('big-2', 60 * 1024) })).rv).toBe(p.CKR_OK);
    // Closing the session gives its objects' bytes back.
    expect(await c.call('C_CloseSession', { session: s })).toBe(p.CKR_OK);
    const s2 = (await c.call('C_OpenSession', { slotID: slot, flags: RW })).session;
    expect((await c.call('C_CreateObject', { session: s2, template: dataObject('big-3', 60 * 1024) })).rv).toBe(p.CKR_OK);
    await c.close();
  });

  test('C_GenerateRandom beyond the default cap (1 MiB) answers CKR_ARGUMENTS_BAD', async () => {
    const c = await stack.open();
    const s = (await c.call('C_OpenSession', { slotID: await firstSlot(c), flags: RW })).session;
    const ok = await c.call('C_GenerateRandom', { session: s, length: DEFAULT_APP_LIMITS.maxRandomLength });
    expect(ok.rv).toBe(p.CKR_OK);
    expect(ok.data.length).toBe(DEFAULT_APP_LIMITS.maxRandomLength);
    // Produced in slices: the slices differ (not one slice repeated).
    expect(ok.data.subarray(0, 64).equals(ok.data.subarray(65536, 65536 + 64))).toBe(false);
    expect((await c.call('C_GenerateRandom', { session: s, length: DEFAULT_APP_LIMITS.maxRandomLength + 1 })).rv).toBe(p.CKR_ARGUMENTS_BAD);
    await c.close();
  });
});

describe('limits through the daemon', () => {
  test('max_random_length and max_sessions_per_app are honoured', async () => {
    const d = await startDaemon({ processorExtra: 'max_random_length = 4096; max_sessions_per_app = 2;' });
    try {
      const c = await P11Client.open({ path: d.socketPath });
      const slot = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList[0];
      const s = (await c.call('C_OpenSession', { slotID: slot, flags: RW })).session;
      expect((await c.call('C_GenerateRandom', { session: s, length: 4096 })).rv).toBe(p.CKR_OK);
      expect((await c.call('C_GenerateRandom', { session: s, length: 4097 })).rv).toBe(p.CKR_ARGUMENTS_BAD);
      expect((await c.call('C_OpenSession', { slotID: slot, flags: RW })).rv).toBe(p.CKR_OK);
      expect((await c.call('C_OpenSession', { slotID: slot, flags: RW })).rv).toBe(p.CKR_SESSION_COUNT);
      await c.close();
    } finally {
      await d.stop();
    }
  });
});
