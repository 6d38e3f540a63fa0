import path from 'node:path';
import * as p from 'pkcs11js';
import { faultyModule } from './helpers/faulty-module';
import { startInProcess } from './helpers/in-process';
import type { InProcessClient, InProcessStack, Pkcs11Caller } from './helpers/in-process';
import { createSoftHsm, SO_PIN, USER_PIN } from './helpers/softhsm';
import type { SoftHsmStore } from './helpers/softhsm';
import { DEFAULT_APP_LIMITS } from '../../src/server/settings';

const RW = p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION;

function p99(samples: number[]): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))];
}

/**
 * Opens `n` sessions on `slot` from `heavy` (pipelined), then disconnects it
 * while `probe` times C_GetSessionInfo on its own session, until the
 * disconnect (the application's implicit C_Finalize) has finished. Returns
 * the probe's latencies (ms) meanwhile.
 */
async function releaseWhileProbing(heavy: InProcessClient, probe: Pkcs11Caller, slot: number, probeSession: number, n: number, deadlineMs: number): Promise<number[]> {
  for (let done = 0; done < n; ) {
    const batch = Math.min(1000, n - done);
    const rs = await Promise.all(Array.from({ length: batch }, () => heavy.call('C_OpenSession', { slotID: slot, flags: RW })));
    for (const r of rs) expect(r.rv).toBe(p.CKR_OK);
    done += batch;
  }
  let released = false;
  const closing = heavy.close().then(() => (released = true));
  const lat: number[] = [];
  const deadline = Date.now() + deadlineMs;
  while (!released) {
    const t0 = performance.now();
    expect((await probe.call('C_GetSessionInfo', { session: probeSession })).rv).toBe(p.CKR_OK);
    lat.push(performance.now() - t0);
    if (Date.now() > deadline) throw new Error(`sessions not released within ${deadlineMs} ms`);
    // A socket client's next call arrives in a later event-loop turn; so does the probe's.
    await new Promise((resolve) => setImmediate(resolve));
  }
  await closing;
  return lat;
}

describe('releasing many sessions, in process', () => {
  let store: SoftHsmStore;
  let stack: InProcessStack;
  beforeEach(() => {
    store = createSoftHsm(['heavy', 'probe']);
    stack = startInProcess([{ alias: 'softhsm', path: faultyModule(path.join(store.dir, 'module'), store.conf).path }], {
      ...DEFAULT_APP_LIMITS,
      maxSessions: 60_000,
    });
  });
  afterEach(() => {
    stack.finalize();
    store.cleanup();
  });

  async function slots(c: Pkcs11Caller): Promise<{ heavy: number; probe: number }> {
    const list = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList;
    const label = async (slotID: number) => (await c.call('C_GetTokenInfo', { slotID })).info.label.toString().trim();
    const heavy = (await label(list[0])) === 'heavy' ? list[0] : list[1];
    return { heavy, probe: heavy === list[0] ? list[1] : list[0] };
  }

  test('an application that leaves with 50k sessions is released in linear time, other calls served meanwhile', async () => {
    // The probe works on the other token: the leaving application holds
    // every session of its token, and the module closes them in one call.
    const probe = await stack.open();
    const { heavy, probe: probeSlot } = await slots(probe);
    const ps = (await probe.call('C_OpenSession', { slotID: probeSlot, flags: RW })).session;
    // Linear: opening and releasing end within seconds (before: minutes, N^2 scans on the event loop).
    const t0 = Date.now();
    const lat = await releaseWhileProbing(await stack.open(), probe, heavy, ps, 50_000, 30_000);
    expect(Date.now() - t0).toBeLessThan(25_000);
    // Our part yields every CLOSE_SLICE_MS; the one long turn left is the
    // module's own C_CloseAllSessions over 50k sessions (60-220 ms measured on
    // SoftHSM2 2.6.1), so the bound here is on the worst stall, not the p99.
    expect(Math.max(...lat)).toBeLessThan(500);
    expect(lat.filter((x) => x < 50).length).toBeGreaterThanOrEqual(lat.length - 1);
    expect(process.memoryUsage().rss / 2 ** 20).toBeLessThan(600);
    // The module closed them: a new application finds the token logged out.
    const next = await stack.open();
    const s = (await next.call('C_OpenSession', { slotID: heavy, flags: RW })).session;
    expect(await next.call('C_Login', { session: s, userType: p.CKU_SO, pin: Buffer.from(SO_PIN) })).toBe(p.CKR_OK);
    await next.close();
    await probe.close();
  }, 120_000);

  test('sessions sharing a token with another application are closed in slices (5k, p99 < 50 ms)', async () => {
    const probe = await stack.open();
    const { heavy: slot } = await slots(probe);
    const ps = (await probe.call('C_OpenSession', { slotID: slot, flags: RW })).session;
    const leaving = await stack.open();
    // The leaving application holds an SO login: the probe cannot log in as user until it is released.
    const ls = (await leaving.call('C_OpenSession', { slotID: slot, flags: RW })).session;
    expect(await leaving.call('C_Login', { session: ls, userType: p.CKU_SO, pin: Buffer.from(SO_PIN) })).toBe(p.CKR_OK);
    expect(await probe.call('C_Login', { session: ps, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) })).toBe(p.CKR_USER_ANOTHER_ALREADY_LOGGED_IN);
    const lat = await releaseWhileProbing(leaving, probe, slot, ps, 5_000, 60_000);
    expect(p99(lat)).toBeLessThan(50);
    expect(await probe.call('C_Login', { session: ps, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) })).toBe(p.CKR_OK);
    await probe.close();
  }, 120_000);
});

