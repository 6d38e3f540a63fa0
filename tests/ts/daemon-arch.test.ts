import * as p from 'pkcs11js';
import { startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { P11Client } from './helpers/p11-client';
import { bool, mech, query } from './helpers/attrs';
import { USER_PIN } from './helpers/softhsm';

/**
 * A client declaring a 32-bit (or big-endian) CK_ULONG layout sends and
 * receives CK_ULONG attribute values in that layout; the daemon converts.
 */
let d: RunningDaemon;
beforeAll(async () => {
  d = await startDaemon();
});
afterAll(async () => {
  await d?.stop();
});

const u32le = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
};
const u32be = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v);
  return b;
};

test.each([
  ['little-endian 32-bit', 2, u32le, (b: Buffer) => b.readUInt32LE()],
  ['big-endian 32-bit', 4, u32be, (b: Buffer) => b.readUInt32BE()],
] as const)('%s client: CKA_VALUE_LEN in, CKA_CLASS / CKA_KEY_TYPE out', async (_n, arch, enc, dec) => {
  const c = await P11Client.connect({ path: d.socketPath });
  expect(await c.call('C_SetupArch', { arch })).toBe(1);
  expect(await c.call('C_LoadModule', { alias: Buffer.from('softhsm') })).toBe(p.CKR_OK);
  expect(await c.call('C_Initialize', undefined)).toBe(p.CKR_OK);
  const slot = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList[0];
  const s = (await c.call('C_OpenSession', { slotID: slot, flags: 6 })).session;
  expect(await c.call('C_Login', { session: s, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) })).toBe(p.CKR_OK);
  const k = await c.call('C_GenerateKey', {
    session: s,
    mechanism: mech(p.CKM_AES_KEY_GEN),
    template: [{ type: p.CKA_VALUE_LEN, value: enc(24), valueLen: 4 }, bool(p.CKA_TOKEN, false)],
  });
  expect(k.rv).toBe(p.CKR_OK);
  const sizes = await c.call('C_GetAttributeValue', { session: s, object: k.object, template: [query(p.CKA_CLASS), query(p.CKA_VALUE_LEN)] });
  expect(sizes.template.map((a) => a.valueLen)).toEqual([4, 4]);
  const v = await c.call('C_GetAttributeValue', {
    session: s,
    object: k.object,
    template: [
      { type: p.CKA_CLASS, value: Buffer.alloc(4), valueLen: 4 },
      { type: p.CKA_KEY_TYPE, value: Buffer.alloc(4), valueLen: 4 },
      { type: p.CKA_VALUE_LEN, value: Buffer.alloc(4), valueLen: 4 },
    ],
  });
  expect(v.rv).toBe(p.CKR_OK);
  expect(v.template.map((a) => dec(a.value))).toEqual([p.CKO_SECRET_KEY, p.CKK_AES, 24]);
  await c.close();
});
