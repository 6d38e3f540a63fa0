import * as p from 'pkcs11js';
import { alive, ecKey, helperDaemon, helpersOf, openSession, openWhenServed, sign, waitUntil } from './helpers/helper-procs';
import type { HelperDaemon, Session } from './helpers/helper-procs';
import { USER_PIN } from './helpers/softhsm';

// A module that crashes, aborts or hangs in helper mode (module_isolation "helper") costs only its
// helper: the call gets CKR_DEVICE_ERROR, the worker (same pid) keeps serving its other connections,
// the other aliases and, once the helper is restarted, the same alias. In the worker, each of these
// faults kills the worker or blocks it: the checks on the worker pid and on the other aliases fail.

const HELPER = 'mode = "helper" call_timeout_ms = 1500';

let h: HelperDaemon;
beforeEach(async () => {
  // "a" and "b" run in helpers, "c" in the worker.
  h = await helperDaemon({ a: HELPER, b: HELPER, c: null }, { workers: 1 });
});
afterEach(async () => h.stop());

interface Setup {
  worker: number;
  a: Session;
  b: Session;
  c: Session;
  key: number;
  helperA: number;
}

async function setUp(): Promise<Setup> {
  const worker = h.server();
  const a = await openSession(h.d, 'a', true);
  const b = await openSession(h.d, 'b', true);
  const c = await openSession(h.d, 'c', true);
  const key = await ecKey(a);
  expect(await sign(a, key)).toBe(p.CKR_OK);
  const helperA = await h.helperPid('a');
  expect(helpersOf(worker).sort()).toEqual([helperA, await h.helperPid('b')].sort());
  return { worker, a, b, c, key, helperA };
}

/** What must hold after alias a's helper died: same worker, b and c served, a served again by a new helper. */
async function othersServed(x: Setup): Promise<void> {
  await waitUntil('the old helper gone', () => !alive(x.helperA));
  expect(h.server()).toBe(x.worker);
  // Connections of the worker on the other aliases, opened before the fault, carry on.
  expect((await x.b.c.call('C_GetSessionInfo', { session: x.b.s })).rv).toBe(p.CKR_OK);
  expect((await x.c.c.call('C_GetSessionInfo', { session: x.c.s })).rv).toBe(p.CKR_OK);
  h.aliases.a.faulty.heal();
  const again = await openWhenServed(h.d, 'a', true);
  const helperA = await h.helperPid('a');
  expect(helperA).not.toBe(x.helperA);
  expect(helpersOf(x.worker)).toContain(helperA);
  expect(await sign(again, await ecKey(again))).toBe(p.CKR_OK);
  // Sessions of the dead helper are gone; the connection that saw the fault is still usable.
  expect((await x.a.c.call('C_GetSessionInfo', { session: x.a.s })).rv).toBe(p.CKR_SESSION_HANDLE_INVALID);
  expect(await x.a.c.call('C_CloseSession', { session: x.a.s })).toBe(p.CKR_SESSION_HANDLE_INVALID);
  const reopened = await x.a.c.call('C_OpenSession', { slotID: x.a.slot, flags: p.CKF_SERIAL_SESSION });
  expect(reopened.rv).toBe(p.CKR_OK);
  // Its login died with the helper: it logs in again (not CKR_USER_ALREADY_LOGGED_IN) and can sign.
  expect(await x.a.c.call('C_Login', { session: reopened.session, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) })).toBe(p.CKR_OK);
  expect(await sign({ ...x.a, s: reopened.session }, await ecKey({ ...x.a, s: reopened.session }))).toBe(p.CKR_OK);
  expect(h.server()).toBe(x.worker);
}

test('a segfault in the module: CKR_DEVICE_ERROR for the call, the worker and the other aliases carry on, the alias is restarted', async () => {
  const x = await setUp();
  h.aliases.a.faulty.crash('C_Sign');
  expect(await sign(x.a, x.key)).toBe(p.CKR_DEVICE_ERROR);
  const exited = await waitUntil('the exit event', () => {
    const e = h.audit().filter((l) => l.event === 'module_helper' && l.state === 'exited');
    return e.length > 0 ? e : undefined;
  });
  expect(exited).toEqual([expect.objectContaining({ alias: 'a', pid: x.helperA, signal: 'SIGSEGV' })]);
  await othersServed(x);
});

test('an abort in the module: the same', async () => {
  const x = await setUp();
  h.aliases.a.faulty.abort('C_GetSessionInfo');
  expect((await x.a.c.call('C_GetSessionInfo', { session: x.a.s })).rv).toBe(p.CKR_DEVICE_ERROR);
  await othersServed(x);
});

test('a hang: CKR_DEVICE_ERROR after call_timeout_ms, the helper is killed, the others are served meanwhile', async () => {
  const x = await setUp();
  h.aliases.a.faulty.hang('C_Sign');
  const t0 = Date.now();
  let answered = false;
  const hung = sign(x.a, x.key).then((rv) => {
    answered = true;
    return rv;
  });
  // While a's call hangs, the worker serves the other aliases.
  for (let i = 0; i < 5; i++) {
    expect((await x.b.c.call('C_GetSessionInfo', { session: x.b.s })).rv).toBe(p.CKR_OK);
    expect((await x.c.c.call('C_GetSessionInfo', { session: x.c.s })).rv).toBe(p.CKR_OK);
  }
  expect(answered).toBe(false);
  expect(await hung).toBe(p.CKR_DEVICE_ERROR);
  expect(Date.now() - t0).toBeGreaterThanOrEqual(1400);
  // Killed by the worker: the control line still hangs every C_Sign.
  const exited = await waitUntil('the exit event', () => {
    const e = h.audit().filter((l) => l.event === 'module_helper' && l.state === 'exited');
    return e.length > 0 ? e : undefined;
  });
  expect(exited).toEqual([expect.objectContaining({ alias: 'a', pid: x.helperA, signal: 'SIGKILL' })]);
  await othersServed(x);
});

test('kill -9 of a helper: its call in flight answers CKR_DEVICE_ERROR at once, a new helper serves the alias', async () => {
  const x = await setUp();
  h.aliases.a.faulty.hang('C_Sign');
  const t0 = Date.now();
  const inFlight = sign(x.a, x.key);
  // The call is in the helper (hung) once C_SignInit answered and C_Sign went out; kill it before the timeout.
  await waitUntil('C_Sign in flight', async () => {
    const r = await x.b.c.call('C_GetSessionInfo', { session: x.b.s });
    return r.rv === p.CKR_OK && Date.now() - t0 > 200;
  });
  process.kill(x.helperA, 'SIGKILL');
  expect(await inFlight).toBe(p.CKR_DEVICE_ERROR);
  expect(Date.now() - t0).toBeLessThan(1400);
  await othersServed(x);
});

test('a helper that keeps dying is restarted with growing delays, and serves once the module recovers', async () => {
  const x = await setUp();
  // Every start dies in C_Initialize: a crash loop.
  h.aliases.a.faulty.crash('C_Initialize');
  process.kill(x.helperA, 'SIGKILL');
  const exits = await waitUntil('four deaths in a row', () => {
    const e = h.audit().filter((l) => l.event === 'module_helper' && l.alias === 'a' && l.state === 'exited');
    return e.length >= 4 ? e : undefined;
  }, 20_000);
  const delays = exits.map((e) => e.restart_in_ms!);
  // Doubling with +-25% jitter: each delay is longer than the one before.
  for (let i = 1; i < delays.length; i++) expect(delays[i]).toBeGreaterThan(delays[i - 1]);
  expect(exits.slice(1).every((e) => e.signal === 'SIGSEGV')).toBe(true);
  // Meanwhile the alias answers CKR_DEVICE_ERROR or, for the old session, CKR_SESSION_HANDLE_INVALID; the worker is the same.
  expect([p.CKR_DEVICE_ERROR, p.CKR_SESSION_HANDLE_INVALID]).toContain((await x.a.c.call('C_GetSessionInfo', { session: x.a.s })).rv);
  await othersServed(x);
});
