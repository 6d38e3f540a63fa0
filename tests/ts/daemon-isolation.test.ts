import * as p from 'pkcs11js';
import { startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { P11Client } from './helpers/p11-client';
import { bool, bytes, ecKeyPairTemplates, mech, query, ulong } from './helpers/attrs';
import { USER_PIN } from './helpers/softhsm';

const RW = p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION;
const CKS_RW_PUBLIC_SESSION = 2;
const CKS_RW_USER_FUNCTIONS = 3;

let d: RunningDaemon;
let slot: number;

beforeAll(async () => {
  d = await startDaemon({ env: { PKCS11PROXYD_LOG: 'debug' } });
  const c = await P11Client.open({ path: d.socketPath });
  slot = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList[0];
  await c.close();
});
afterAll(async () => {
  await d?.stop();
});

async function openLoggedIn(): Promise<{ c: P11Client; s: number }> {
  const c = await P11Client.open({ path: d.socketPath });
  const s = (await c.call('C_OpenSession', { slotID: slot, flags: RW })).session;
  return { c, s };
}

async function waitFor(cond: () => Promise<boolean>): Promise<void> {
  // Polls an observable condition (the daemon's cleanup runs after the socket closes), bounded.
  for (let i = 0; i < 200; i++) {
    if (await cond()) return;
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('condition not reached');
}

async function findLabel(c: P11Client, session: number, label: string): Promise<number[]> {
  expect(await c.call('C_FindObjectsInit', { session, template: [bytes(p.CKA_LABEL, label)] })).toBe(p.CKR_OK);
  const r = await c.call('C_FindObjects', { session, maxObjectCount: 100 });
  expect(await c.call('C_FindObjectsFinal', { session })).toBe(p.CKR_OK);
  return r.objects;
}

test('a connection cannot use another connection\'s session or object handles', async () => {
  const a = await openLoggedIn();
  const b = await openLoggedIn();
  const obj = await a.c.call('C_CreateObject', {
    session: a.s,
    template: [bytes(p.CKA_LABEL, 'a-data'), bool(p.CKA_TOKEN, false), bool(p.CKA_PRIVATE, false), ulong(p.CKA_CLASS, p.CKO_DATA)],
  });
  expect(obj.rv).toBe(p.CKR_OK);
  expect((await b.c.call('C_GetSessionInfo', { session: a.s })).rv).toBe(p.CKR_SESSION_HANDLE_INVALID);
  expect(await b.c.call('C_CloseSession', { session: a.s })).toBe(p.CKR_SESSION_HANDLE_INVALID);
  const r = await b.c.call('C_GetAttributeValue', { session: b.s, object: obj.object, template: [query(p.CKA_LABEL)] });
  expect(r.rv).toBe(p.CKR_OBJECT_HANDLE_INVALID);
  expect(await b.c.call('C_DestroyObject', { session: b.s, object: obj.object })).toBe(p.CKR_OBJECT_HANDLE_INVALID);
  // The module shows session objects to every session of the process; the daemon does not.
  expect(await findLabel(b.c, b.s, 'a-data')).toHaveLength(0);
  expect(await findLabel(a.c, a.s, 'a-data')).toEqual([obj.object]);
  // Same for objects made through the typed-parameter extension.
  const k = await a.c.call('px_GenerateKeyTyped', {
    session: a.s,
    mechanism: { mechanism: p.CKM_AES_KEY_GEN, param: { tag: 1 } },
    template: [ulong(p.CKA_VALUE_LEN, 16), bool(p.CKA_TOKEN, false), bool(p.CKA_PRIVATE, false), bytes(p.CKA_LABEL, 'a-key')],
  });
  expect(k.rv).toBe(p.CKR_OK);
  expect(await findLabel(b.c, b.s, 'a-key')).toHaveLength(0);
  expect(await findLabel(a.c, a.s, 'a-key')).toEqual([k.object]);
  // Still intact for its owner.
  expect((await a.c.call('C_GetAttributeValue', { session: a.s, object: obj.object, template: [query(p.CKA_LABEL)] })).rv).toBe(p.CKR_OK);
  await a.c.close();
  await b.c.close();
});


test('disconnect closes the connection\'s sessions on the module', async () => {
  const a = await openLoggedIn();
  const second = await a.c.call('C_OpenSession', { slotID: slot, flags: RW });
  expect(second.rv).toBe(p.CKR_OK);
  const id = (await a.c.call('C_GetSessionInfo', { session: a.s })).rv === p.CKR_OK;
  expect(id).toBe(true);
  a.c.raw.destroy();
  // The module answered CKR_OK to closing both sessions (daemon debug log).
  await waitFor(async () => /released: closed 2 of 2 module sessions/.test(d.output()));
});

describe('shared login', () => {
  test('second client must present the same PIN; logouts release only their share', async () => {
    const a = await openLoggedIn();
    const b = await openLoggedIn();
    expect(await a.c.call('C_Login', { session: a.s, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) })).toBe(p.CKR_OK);
    // b did not log in: it sees a public session even though the module is logged in.
    expect((await b.c.call('C_GetSessionInfo', { session: b.s })).info.state).toBe(CKS_RW_PUBLIC_SESSION);
    // a creates a private key pair; b cannot find the private key.
    const kp = await a.c.call('C_GenerateKeyPair', { session: a.s, mechanism: mech(p.CKM_EC_KEY_PAIR_GEN), ...ecKeyPairTemplates('shared', true) });
    expect(kp.rv).toBe(p.CKR_OK);
    await b.c.call('C_FindObjectsInit', { session: b.s, template: [bytes(p.CKA_LABEL, 'shared')] });
    const found = await b.c.call('C_FindObjects', { session: b.s, maxObjectCount: 10 });
    await b.c.call('C_FindObjectsFinal', { session: b.s });
    expect(found.objects).toHaveLength(1); // the public key only
    // b cannot create private objects while not logged in.
    const gen = await b.c.call('C_GenerateKeyPair', { session: b.s, mechanism: mech(p.CKM_EC_KEY_PAIR_GEN), ...ecKeyPairTemplates('b-key') });
    expect(gen.rv).toBe(p.CKR_USER_NOT_LOGGED_IN);

    expect(await b.c.call('C_Login', { session: b.s, userType: p.CKU_USER, pin: Buffer.from('9999') })).toBe(p.CKR_PIN_INCORRECT);
    expect(await b.c.call('C_Login', { session: b.s, userType: p.CKU_SO, pin: Buffer.from('123456') })).toBe(
      p.CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
    );
    expect(await b.c.call('C_Login', { session: b.s, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) })).toBe(p.CKR_OK);
    expect((await b.c.call('C_GetSessionInfo', { session: b.s })).info.state).toBe(CKS_RW_USER_FUNCTIONS);

    // a logs out: b keeps its login and can sign with the private key.
    expect(await a.c.call('C_Logout', { session: a.s })).toBe(p.CKR_OK);
    expect((await a.c.call('C_GetSessionInfo', { session: a.s })).info.state).toBe(CKS_RW_PUBLIC_SESSION);
    await b.c.call('C_FindObjectsInit', { session: b.s, template: [bytes(p.CKA_LABEL, 'shared'), bool(p.CKA_SIGN, true)] });
    const privs = await b.c.call('C_FindObjects', { session: b.s, maxObjectCount: 10 });
    await b.c.call('C_FindObjectsFinal', { session: b.s });
    expect(privs.objects).toHaveLength(1);
    expect(await b.c.call('C_SignInit', { session: b.s, mechanism: mech(p.CKM_ECDSA), key: privs.objects[0] })).toBe(p.CKR_OK);
    expect((await b.c.call('C_Sign', { session: b.s, data: Buffer.alloc(32, 1) })).rv).toBe(p.CKR_OK);

    // C_Finalize of one client does not finalize or log out the other.
    expect(await a.c.call('C_Finalize', undefined)).toBe(p.CKR_OK);
    expect((await b.c.call('C_GetSessionInfo', { session: b.s })).info.state).toBe(CKS_RW_USER_FUNCTIONS);
    // b leaves by disconnecting; a new client finds the module logged out:
    // an SO login succeeds only then (over a user login it is CKR_USER_ANOTHER_ALREADY_LOGGED_IN).
    b.c.raw.destroy();
    const e = await openLoggedIn();
    await waitFor(async () => (await e.c.call('C_Login', { session: e.s, userType: p.CKU_SO, pin: Buffer.from('123456') })) === p.CKR_OK);
    expect((await e.c.call('C_GetSessionInfo', { session: e.s })).info.state).toBe(4);
    expect(await e.c.call('C_Logout', { session: e.s })).toBe(p.CKR_OK);
    await e.c.close();
    await a.c.close();
  });
});

test('slow crypto on one connection does not stall another', async () => {
  const a = await openLoggedIn();
  const b = await openLoggedIn();
  // RSA 4096 key generation runs in the libuv pool; b's cheap calls proceed meanwhile.
  const gen = a.c.call('C_GenerateKeyPair', {
    session: a.s,
    mechanism: mech(p.CKM_RSA_PKCS_KEY_PAIR_GEN),
    publicKeyTemplate: [{ type: p.CKA_MODULUS_BITS, value: Buffer.from([0, 16, 0, 0, 0, 0, 0, 0]), valueLen: 8 }, bool(p.CKA_TOKEN, false)],
    privateKeyTemplate: [bool(p.CKA_TOKEN, false), bool(p.CKA_PRIVATE, false)],
  });
  let done = false;
  void gen.then(() => (done = true));
  let cheap = 0;
  while (!done && cheap < 20) {
    expect((await b.c.call('C_GetSessionInfo', { session: b.s })).rv).toBe(p.CKR_OK);
    cheap++;
  }
  expect(cheap).toBe(20);
  expect((await gen).rv).toBe(p.CKR_OK);
  await a.c.close();
  await b.c.close();
});
