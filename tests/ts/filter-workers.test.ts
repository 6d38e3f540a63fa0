/**
 * The filter's attribute cache across worker processes: a change made by an
 * application on one worker reaches the caches of the others (the primary
 * relays it), so a use path there judges the object as the token now has it.
 */
import * as p from 'pkcs11js';
import { bool, bytes, mech, ulong } from './helpers/attrs';
import { startDaemon } from './helpers/daemon';
import { P11Client } from './helpers/p11-client';
import { USER_PIN } from './helpers/softhsm';

const RW = p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION;

async function openLoggedIn(socketPath: string): Promise<{ c: P11Client; s: number }> {
  const c = await P11Client.open({ path: socketPath });
  const slot = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList[0];
  const s = (await c.call('C_OpenSession', { slotID: slot, flags: RW })).session;
  expect(await c.call('C_Login', { session: s, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) })).toBe(p.CKR_OK);
  return { c, s };
}

async function findOne(c: P11Client, s: number, label: string): Promise<number> {
  expect(await c.call('C_FindObjectsInit', { session: s, template: [bytes(p.CKA_LABEL, label)] })).toBe(p.CKR_OK);
  const r = await c.call('C_FindObjects', { session: s, maxObjectCount: 4 });
  expect(await c.call('C_FindObjectsFinal', { session: s })).toBe(p.CKR_OK);
  expect(r.objects).toHaveLength(1);
  return r.objects[0];
}

test('a key made sensitive through another worker is refused by dangerous_sensitive_keys_paranoid on this one at once', async () => {
  const d = await startDaemon({
    workers: 2,
    filterExtra: 'filter_actions_post = [(".*", [(C_EncryptInit, dangerous_sensitive_keys_paranoid)])]',
  });
  try {
    // Connections are dealt round-robin: x on one worker, y on the other.
    const x = await openLoggedIn(d.socketPath);
    const y = await openLoggedIn(d.socketPath);
    const created = await x.c.call('C_CreateObject', {
      session: x.s,
      template: [
        ulong(p.CKA_CLASS, p.CKO_SECRET_KEY), ulong(p.CKA_KEY_TYPE, p.CKK_AES), bool(p.CKA_TOKEN, true), bool(p.CKA_ENCRYPT, true),
        bool(p.CKA_SENSITIVE, false), bool(p.CKA_EXTRACTABLE, true), bytes(p.CKA_VALUE, Buffer.alloc(16, 3)), bytes(p.CKA_LABEL, 'shared'),
      ],
    });
    expect(created.rv).toBe(p.CKR_OK);
    const encryptInit = () => x.c.call('C_EncryptInit', { session: x.s, mechanism: mech(p.CKM_AES_ECB), key: created.object });
    // Not sensitive: usable; x's worker now holds the key's attributes in its cache.
    expect(await encryptInit()).toBe(p.CKR_OK);
    expect((await x.c.call('C_Encrypt', { session: x.s, data: Buffer.alloc(16) })).rv).toBe(p.CKR_OK);

    const k = await findOne(y.c, y.s, 'shared');
    expect(await y.c.call('C_SetAttributeValue', { session: y.s, object: k, template: [bool(p.CKA_SENSITIVE, true)] })).toBe(p.CKR_OK);

    // Sensitive now, never always sensitive: its value may be known. The relayed change reaches x's worker
    // over IPC, an instant after y's answer.
    const end = Date.now() + 5000;
    let rv = await encryptInit();
    while (rv === p.CKR_OK && Date.now() < end) {
      expect((await x.c.call('C_Encrypt', { session: x.s, data: Buffer.alloc(16) })).rv).toBe(p.CKR_OK);
      rv = await encryptInit();
    }
    expect(rv).toBe(p.CKR_OBJECT_HANDLE_INVALID);
    await x.c.close();
    await y.c.close();
  } finally {
    await d.stop();
  }
});
