import { spawnSync } from 'node:child_process';
import path from 'node:path';
import * as p from 'pkcs11js';
import { faultyModule } from './helpers/faulty-module';
import type { FaultyModule } from './helpers/faulty-module';
import { ModuleProcess } from './helpers/module-process';
import { createSoftHsm } from './helpers/softhsm';
import type { SoftHsmStore } from './helpers/softhsm';

// The fault-injection wrapper's process-level actions, each in a process of its own (a crash or a hang
// must not reach jest's), over a real SoftHSM2 token.
const CKF_TOKEN_PRESENT = 0x1;
let store: SoftHsmStore;
let faulty: FaultyModule;

beforeEach(() => {
  store = createSoftHsm(['faulty']);
  faulty = faultyModule(path.join(store.dir, 'module'), store.conf);
});
afterEach(() => store.cleanup());

/** Runs C_Initialize, opens a session on the first token and calls C_GenerateRandom `n` times in a fresh process. */
function randomLoop(n: number): { status: number | null; signal: NodeJS.Signals | null; done: number } {
  const script = `
    const p = require(process.env.PKCS11JS);
    const m = new p.PKCS11();
    m.load(process.env.MODULE);
    m.C_Initialize();
    const s = m.C_OpenSession(m.C_GetSlotList(true)[0], p.CKF_SERIAL_SESSION);
    for (let i = 0; i < ${n}; i++) { m.C_GenerateRandom(s, Buffer.alloc(8)); process.stdout.write('.'); }
    m.C_Finalize();`;
  const r = spawnSync(process.execPath, ['-e', script], {
    env: { ...process.env, MODULE: faulty.path, PKCS11JS: require.resolve('pkcs11js') },
    encoding: 'utf8',
    timeout: 30000,
  });
  return { status: r.status, signal: r.signal, done: r.stdout.length };
}

test('without a fault the loop completes', () => {
  expect(randomLoop(3)).toEqual({ status: 0, signal: null, done: 3 });
});

test('crash kills the calling process with SIGSEGV, after N calls when asked', () => {
  faulty.crash('C_GenerateRandom', { after: 2 });
  expect(randomLoop(5)).toEqual({ status: null, signal: 'SIGSEGV', done: 2 });
});

test('abort kills the calling process with SIGABRT', () => {
  faulty.abort('C_GenerateRandom');
  expect(randomLoop(5)).toEqual({ status: null, signal: 'SIGABRT', done: 0 });
});

test('a function-specific CK_RV precedes a "*" fault', () => {
  faulty.crash('*', { after: 100 });
  faulty.fail('C_GenerateRandom', p.CKR_DEVICE_ERROR);
  const r = randomLoop(1);
  expect(r.done).toBe(0);
  expect(r.status).not.toBe(0);
  expect(r.signal).toBeNull();
});

describe('in a module process', () => {
  let mp: ModuleProcess;
  let session: number;
  let slot: Buffer;
  beforeEach(async () => {
    mp = await ModuleProcess.start(faulty.path, store.env);
    await mp.must('C_Initialize');
    slot = (await mp.must<Buffer[]>('C_GetSlotList', true))[0];
    session = await mp.must<number>('C_OpenSession', slot, p.CKF_SERIAL_SESSION);
  });
  afterEach(async () => mp.stop());

  test('hang blocks the call until the line is released, then the call reaches the module', async () => {
    faulty.hang('C_GetSessionInfo');
    let answered = false;
    const pending = mp.call('C_GetSessionInfo', session).then((a) => ((answered = true), a));
    // The call is blocked: a later check of the state still sees it unanswered, and the process is alive.
    await new Promise((r) => setTimeout(r, 200));
    expect(answered).toBe(false);
    faulty.release('C_GetSessionInfo');
    const a = await pending;
    expect(a.rv).toBe(p.CKR_OK);
  });

  test('removed: no token present, slot calls CKR_TOKEN_NOT_PRESENT, session calls CKR_DEVICE_REMOVED; insert undoes it', async () => {
    faulty.removeToken();
    expect(await mp.must('C_GetSlotList', true)).toEqual([]);
    expect((await mp.must<Buffer[]>('C_GetSlotList', false)).length).toBeGreaterThan(0);
    expect((await mp.must<{ flags: number }>('C_GetSlotInfo', slot)).flags & CKF_TOKEN_PRESENT).toBe(0);
    expect((await mp.call('C_GetTokenInfo', slot)).rv).toBe(p.CKR_TOKEN_NOT_PRESENT);
    expect((await mp.call('C_OpenSession', slot, p.CKF_SERIAL_SESSION)).rv).toBe(p.CKR_TOKEN_NOT_PRESENT);
    expect((await mp.call('C_GetSessionInfo', session)).rv).toBe(p.CKR_DEVICE_REMOVED);
    faulty.insertToken();
    expect((await mp.call('C_GetSessionInfo', session)).rv).toBe(p.CKR_OK);
    expect((await mp.must<{ flags: number }>('C_GetSlotInfo', slot)).flags & CKF_TOKEN_PRESENT).toBe(CKF_TOKEN_PRESENT);
  });

  test('fail with "after N": the first N calls reach the module', async () => {
    faulty.fail('C_GetSessionInfo', p.CKR_DEVICE_ERROR, { after: 2 });
    const rvs = [];
    for (let i = 0; i < 4; i++) rvs.push((await mp.call('C_GetSessionInfo', session)).rv);
    expect(rvs).toEqual([p.CKR_OK, p.CKR_OK, p.CKR_DEVICE_ERROR, p.CKR_DEVICE_ERROR]);
  });
});
