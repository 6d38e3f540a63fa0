import fs from 'node:fs';
import path from 'node:path';
import * as p from 'pkcs11js';
import { bool, bytes, query, ulong } from './helpers/attrs';
import { startDaemon } from './helpers/daemon';
import { faultyModule } from './helpers/faulty-module';
import { startInProcess } from './helpers/in-process';
import type { Pkcs11Caller } from './helpers/in-process';
import { P11Client } from './helpers/p11-client';
import { createSoftHsm } from './helpers/softhsm';
import type { SoftHsmStore } from './helpers/softhsm';

// Two token stores, each served by a module instance of its own (alias "a" and "b").
const RW = p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION;
let stores: SoftHsmStore[] = [];
let modules: Array<{ alias: string; path: string }> = [];

beforeEach(() => {
  stores = [createSoftHsm(['token-a']), createSoftHsm(['token-b'])];
  modules = [
    { alias: 'a', path: faultyModule(path.join(stores[0].dir, 'module'), stores[0].conf).path },
    { alias: 'b', path: faultyModule(path.join(stores[1].dir, 'module'), stores[1].conf).path },
  ];
});
afterEach(() => {
  for (const s of stores) s.cleanup();
});

async function session(c: Pkcs11Caller): Promise<number> {
  const slot = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList[0];
  const r = await c.call('C_OpenSession', { slotID: slot, flags: RW });
  expect(r.rv).toBe(p.CKR_OK);
  return r.session;
}

function dataObject(label: string) {
  return [ulong(p.CKA_CLASS, p.CKO_DATA), bool(p.CKA_TOKEN, false), bool(p.CKA_PRIVATE, false), bytes(p.CKA_LABEL, label)];
}

async function find(c: Pkcs11Caller, s: number, label: string): Promise<number[]> {
  expect(await c.call('C_FindObjectsInit', { session: s, template: [bytes(p.CKA_LABEL, label)] })).toBe(p.CKR_OK);
  const r = await c.call('C_FindObjects', { session: s, maxObjectCount: 16 });
  expect(await c.call('C_FindObjectsFinal', { session: s })).toBe(p.CKR_OK);
  return r.objects;
}

/**
 * Finding 3: X's session object on module a must stay X's alone when Y, on
 * module b, creates a session object (the fresh module instances number
 * sessions and objects alike) and closes its session.
 */
async function sessionObjectsStayWithTheirBackend(open: (alias: string) => Promise<Pkcs11Caller>): Promise<void> {
  const x = await open('a');
  const y = await open('b');
  const z = await open('a');
  // Same steps on both modules, so both give the same numbers.
  const xs = await session(x);
  const ys = await session(y);
  expect((await x.call('C_CreateObject', { session: xs, template: dataObject('mine') })).rv).toBe(p.CKR_OK);
  expect((await y.call('C_CreateObject', { session: ys, template: dataObject('mine') })).rv).toBe(p.CKR_OK);
  const zs = await session(z);
  expect(await find(x, xs, 'mine')).toHaveLength(1);
  expect(await find(z, zs, 'mine')).toEqual([]);
  expect(await y.call('C_CloseSession', { session: ys })).toBe(p.CKR_OK);
  expect(await find(z, zs, 'mine')).toEqual([]);
  expect(await find(x, xs, 'mine')).toHaveLength(1);
  for (const c of [x, y, z]) await c.close();
}

/** Handles given for module a are unknown to an application on module b, and after a switch of module. */
async function handlesStayWithTheirBackend(open: (alias: string) => Promise<Pkcs11Caller>): Promise<void> {
  const x = await open('a');
  const y = await open('b');
  const xs = await session(x);
  const ys = await session(y);
  const obj = await x.call('C_CreateObject', { session: xs, template: dataObject('x') });
  expect(obj.rv).toBe(p.CKR_OK);
  expect((await y.call('C_GetSessionInfo', { session: xs })).rv).toBe(p.CKR_SESSION_HANDLE_INVALID);
  expect((await y.call('C_GetAttributeValue', { session: ys, object: obj.object, template: [query(p.CKA_LABEL)] })).rv).toBe(
    p.CKR_OBJECT_HANDLE_INVALID,
  );
  expect(await y.call('C_DestroyObject', { session: ys, object: obj.object })).toBe(p.CKR_OBJECT_HANDLE_INVALID);
  // x moves to module b: its handles of module a are gone.
  expect(await x.call('C_Finalize', undefined as never)).toBe(p.CKR_OK);
  expect(await x.call('C_LoadModule', { alias: Buffer.from('b') })).toBe(p.CKR_OK);
  expect(await x.call('C_Initialize', undefined as never)).toBe(p.CKR_OK);
  expect((await x.call('C_GetSessionInfo', { session: xs })).rv).toBe(p.CKR_SESSION_HANDLE_INVALID);
  const xb = await session(x);
  expect((await x.call('C_GetAttributeValue', { session: xb, object: obj.object, template: [query(p.CKA_LABEL)] })).rv).toBe(
    p.CKR_OBJECT_HANDLE_INVALID,
  );
  // Each alias shows its own token.
  const label = async (c: Pkcs11Caller) => {
    const slot = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList[0];
    return (await c.call('C_GetTokenInfo', { slotID: slot })).info.label.toString().trim();
  };
  expect(await label(x)).toBe('token-b');
  const x2 = await open('a');
  expect(await label(x2)).toBe('token-a');
  for (const c of [x, x2, y]) await c.close();
}

describe('in process', () => {
  let stack: ReturnType<typeof startInProcess>;
  beforeEach(() => {
    stack = startInProcess(modules);
  });
  afterEach(() => stack.finalize());

  test('a session object is visible only to its creator, whatever happens on another module', async () => {
    await sessionObjectsStayWithTheirBackend((alias) => stack.open(alias));
  });
  test('a handle of one module is invalid for an application on another', async () => {
    await handlesStayWithTheirBackend((alias) => stack.open(alias));
  });
});

describe('daemon', () => {
  test('a session object is visible only to its creator, and handles stay with their module', async () => {
    const d = await startDaemon({ modules });
    try {
      expect(fs.existsSync(d.socketPath)).toBe(true);
      const open = (alias: string) => P11Client.open({ path: d.socketPath }, alias);
      await sessionObjectsStayWithTheirBackend(open);
      await handlesStayWithTheirBackend(open);
    } finally {
      await d.stop();
    }
  });
});
