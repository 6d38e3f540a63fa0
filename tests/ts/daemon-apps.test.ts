import * as p from 'pkcs11js';
import { startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { P11Client } from './helpers/p11-client';
import { bool, bytes, ulong } from './helpers/attrs';
import { USER_PIN } from './helpers/softhsm';

/**
 * px_GetAppToken / px_JoinApp: several connections of one client library
 * form one PKCS#11 application — shared sessions, handles, session objects
 * and login — even when the daemon spreads connections over two workers.
 */
const RW = p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION;
let d: RunningDaemon;
beforeAll(async () => {
  d = await startDaemon({ workers: 2 });
});
afterAll(async () => {
  await d?.stop();
});

async function join(token: Buffer): Promise<{ c: P11Client; rv: number }> {
  const c = await P11Client.connect({ path: d.socketPath });
  const rv = await c.call('px_JoinApp', { token });
  await c.call('C_SetupArch', { arch: 1 });
  return { c, rv };
}

async function findLabel(c: P11Client, session: number, label: string): Promise<number[]> {
  await c.call('C_FindObjectsInit', { session, template: [bytes(p.CKA_LABEL, label)] });
  const r = await c.call('C_FindObjects', { session, maxObjectCount: 10 });
  await c.call('C_FindObjectsFinal', { session });
  return r.objects;
}

test('joined connections share sessions, handles, session objects and login', async () => {
  const a = await P11Client.open({ path: d.socketPath });
  const t = await a.call('px_GetAppToken', undefined);
  expect(t.rv).toBe(p.CKR_OK);
  expect(t.token.length).toBe(17);
  expect((await a.call('px_GetAppToken', undefined)).token).toEqual(t.token);
  const slot = (await a.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList[0];
  const s = (await a.call('C_OpenSession', { slotID: slot, flags: RW })).session;
  expect(await a.call('C_Login', { session: s, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) })).toBe(p.CKR_OK);
  const obj = await a.call('C_CreateObject', {
    session: s,
    template: [ulong(p.CKA_CLASS, p.CKO_DATA), bool(p.CKA_TOKEN, false), bool(p.CKA_PRIVATE, true), bytes(p.CKA_LABEL, 'app-obj')],
  });
  expect(obj.rv).toBe(p.CKR_OK);

  // Enough joins that both workers would be picked by round robin without routing.
  const joined = [];
  for (let i = 0; i < 4; i++) {
    const j = await join(t.token);
    expect(j.rv).toBe(p.CKR_OK);
    joined.push(j.c);
    expect((await j.c.call('C_GetSessionInfo', { session: s })).info.state).toBe(3); // CKS_RW_USER_FUNCTIONS
    expect(await findLabel(j.c, s, 'app-obj')).toEqual([obj.object]);
    const s2 = await j.c.call('C_OpenSession', { slotID: slot, flags: RW });
    expect(await findLabel(j.c, s2.session, 'app-obj')).toEqual([obj.object]);
  }

  // A stranger (its own application) sees neither.
  const stranger = await P11Client.open({ path: d.socketPath });
  expect((await stranger.call('C_GetSessionInfo', { session: s })).rv).toBe(p.CKR_SESSION_HANDLE_INVALID);

  // The first connection leaving does not end the application.
  await a.close();
  expect((await joined[0].call('C_GetSessionInfo', { session: s })).rv).toBe(p.CKR_OK);
  for (const c of joined) await c.close();
  // Last one gone: the token is dead.
  let rv = p.CKR_OK;
  for (let i = 0; i < 100 && rv === p.CKR_OK; i++) {
    const late = await join(t.token);
    rv = late.rv;
    await late.c.close();
  }
  expect(rv).toBe(p.CKR_CRYPTOKI_NOT_INITIALIZED);
  await stranger.close();
});

test('join is refused with an unknown token or after C_Initialize', async () => {
  const j = await join(Buffer.from('00112233445566778899aabbccddeeff00', 'hex'));
  expect(j.rv).toBe(p.CKR_CRYPTOKI_NOT_INITIALIZED);
  await j.c.close();
  const a = await P11Client.open({ path: d.socketPath });
  const t = await a.call('px_GetAppToken', undefined);
  expect(await a.call('px_JoinApp', { token: t.token })).toBe(p.CKR_CRYPTOKI_ALREADY_INITIALIZED);
  await a.close();
});
