import * as p from 'pkcs11js';
import { startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { ModuleProcess, OUR_CLIENT } from './helpers/module-process';
import { pkcs11Tool } from './helpers/pkcs11-tool';
import { createKeyTemplate, createMember } from './helpers/pool';
import type { Member } from './helpers/pool';
import { SOFTHSM_MODULE } from './helpers/softhsm';
import { ck } from '../../src/pkcs11/constants';
import type { SoftHsmStore } from './helpers/softhsm';

/**
 * slot_nat: one alias listing the tokens of two different modules (SoftHSM2
 * itself on the daemon's store, and the fault-injection wrapper over a copy
 * of SoftHSM2 on another store) through the real daemon and our C client.
 */
let template: SoftHsmStore;
let member: Member;
let d: RunningDaemon;
beforeAll(async () => {
  template = createKeyTemplate();
  member = createMember(template, 'other');
  d = await startDaemon({
    tokens: ['alpha', 'beta'],
    modules: [
      { alias: 'softhsm', path: SOFTHSM_MODULE },
      { alias: 'other', path: member.faults.path },
      { alias: 'direct', path: SOFTHSM_MODULE },
    ],
    filterExtra: 'slot_nat = { nat = ["softhsm", "other"] }',
  });
});
afterAll(async () => {
  await d?.stop();
  member?.store.cleanup();
  template?.cleanup();
});

const env = (alias: string): NodeJS.ProcessEnv => ({ ...d.hsm.env, PKCS11PROXY_SOCKET_PATH: d.socketPath, PKCS11PROXY_LIBNAME: alias });

test('the tokens of both modules side by side, renumbered 0..n-1 in alias order; each usable through its slot', async () => {
  const c = await ModuleProcess.start(OUR_CLIENT, env('nat'));
  let labels: string[];
  try {
    await c.must('C_Initialize');
    const slots = await c.must<Buffer[]>('C_GetSlotList', true);
    expect(slots.map((h) => h.readUInt32LE(0))).toEqual([0, 1, 2, 3, 4]);
    labels = [];
    for (const h of slots) labels.push((await c.must<{ label: string }>('C_GetTokenInfo', h)).label.trim());
  } finally {
    await c.stop();
  }
  // SoftHSM2 lists its tokens in memory order, then one empty slot: compare per module as sets.
  expect(new Set(labels.slice(0, 3))).toEqual(new Set(['alpha', 'beta', '']));
  expect(labels.slice(3)).toEqual(['bench', '']);
  // The keys of the wrapped store, found and used through its virtual slot.
  const s = pkcs11Tool(OUR_CLIENT, ['--token-label', 'bench', '--login', '--pin', '1234', '--sign', '--mechanism', 'ECDSA', '--id', '21', '--input-file', '/dev/null'], env('nat'));
  expect(s.status).toBe(0);
  const o = pkcs11Tool(OUR_CLIENT, ['--token-label', 'alpha', '--login', '--pin', '1234', '-O'], env('nat'));
  expect(o.status).toBe(0);
  expect(o.out).not.toMatch(/bench-ec/);
});

test('sessions and objects keep to their module: a handle of one module in a session of the other is invalid', async () => {
  const c = await ModuleProcess.start(OUR_CLIENT, env('nat'));
  try {
    await c.must('C_Initialize');
    const slots = await c.must<Buffer[]>('C_GetSlotList', true);
    const label = async (h: Buffer): Promise<string> => (await c.must<{ label: string }>('C_GetTokenInfo', h)).label.trim();
    let alphaSlot: Buffer | null = null;
    for (const h of slots.slice(0, 3)) if ((await label(h)) === 'alpha') alphaSlot = h;
    expect(await label(slots[3])).toBe('bench');
    const alpha = await c.must<Buffer>('C_OpenSession', alphaSlot!, p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION);
    const bench = await c.must<Buffer>('C_OpenSession', slots[3], p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION);
    // Login is per token: logging in to one slot does not log in the other.
    await c.must('C_Login', bench, p.CKU_USER, '1234');
    expect((await c.must<{ slotID: Buffer; state: number }>('C_GetSessionInfo', bench)).state).toBe(ck.CKS_RW_USER_FUNCTIONS);
    expect((await c.must<{ slotID: Buffer; state: number }>('C_GetSessionInfo', alpha)).state).toBe(ck.CKS_RW_PUBLIC_SESSION);
    await c.must('C_FindObjectsInit', bench, [{ type: p.CKA_LABEL, value: 'bench-aes' }]);
    const [key] = await c.must<Buffer[]>('C_FindObjects', bench, 2);
    await c.must('C_FindObjectsFinal', bench);
    await c.must('C_EncryptInit', bench, { mechanism: p.CKM_AES_ECB }, key);
    expect(await c.must<Buffer>('C_Encrypt', bench, Buffer.alloc(16), Buffer.alloc(32))).toHaveLength(16);
    expect((await c.call('C_EncryptInit', alpha, { mechanism: p.CKM_AES_ECB }, key)).rv).toBe(p.CKR_KEY_HANDLE_INVALID);
    const info = await c.must<{ slotID: Buffer }>('C_GetSessionInfo', bench);
    expect(info.slotID.readUInt32LE(0)).toBe(3);
  } finally {
    await c.stop();
  }
});

test('an alias listed by a slot NAT is reserved; an unlisted one is not', () => {
  expect(pkcs11Tool(OUR_CLIENT, ['-L'], env('other')).status).not.toBe(0);
  expect(pkcs11Tool(OUR_CLIENT, ['-L'], env('direct')).status).toBe(0);
});
