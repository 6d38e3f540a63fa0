import * as p from 'pkcs11js';
import { ModuleProcess, OUR_CLIENT } from './helpers/module-process';
import { createKeyTemplate, runBench, startPoolDaemon, waitFor } from './helpers/pool';
import type { PoolDaemon } from './helpers/pool';
import type { SoftHsmStore } from './helpers/softhsm';

/**
 * Load spread per strategy, measured as the C_Sign calls each member
 * received (pkcs11proxyd_pool_member_calls_total), with 4 C client
 * processes signing in a loop (bench/c/bench.c over our client).
 */
let template: SoftHsmStore;
beforeAll(() => {
  template = createKeyTemplate();
});
afterAll(() => template.cleanup());

let d: PoolDaemon;
afterEach(async () => {
  for (const m of d?.members ?? []) m.faults.heal();
  await d?.stop();
});

test('round-robin with weights [3, 1]: three signatures on m0 for one on m1', async () => {
  d = await startPoolDaemon(template, { pool: 'strategy = "round-robin" weights = [3, 1]' });
  const r = await runBench(d.env(), 'ecdsa', 1, 4);
  expect(r.status).toBe('ok');
  const [a, b] = [await d.memberCalls('m0', 'C_Sign'), await d.memberCalls('m1', 'C_Sign')];
  expect(a + b).toBeGreaterThanOrEqual(Number(r.fields.ops));
  expect(b).toBeGreaterThan(0);
  expect(Math.abs(a - 3 * b)).toBeLessThanOrEqual(12);
});

test('primary-standby: every signature on the primary while it is up', async () => {
  d = await startPoolDaemon(template, { pool: 'strategy = "primary-standby"' });
  expect((await runBench(d.env(), 'ecdsa', 0.5, 4)).status).toBe('ok');
  expect(await d.memberCalls('m0', 'C_Sign')).toBeGreaterThan(0);
  expect(await d.memberCalls('m1', 'C_Sign')).toBe(0);
});

test('least-outstanding (members in helper processes): while one member is busy with a slow call, new work goes to the other', async () => {
  d = await startPoolDaemon(template, { isolation: 'mode = "helper" call_timeout_ms = 60000', pool: 'strategy = "least-outstanding" call_timeout_ms = 60000' });
  const busy = await ModuleProcess.start(OUR_CLIENT, d.env());
  try {
    await busy.must('C_Initialize');
    const [slot] = await busy.must<Buffer[]>('C_GetSlotList', true);
    const s = await busy.must<Buffer>('C_OpenSession', slot, p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION);
    await busy.must('C_Login', s, p.CKU_USER, '1234');
    const find = async (label: string): Promise<Buffer> => {
      await busy.must('C_FindObjectsInit', s, [{ type: p.CKA_LABEL, value: label }]);
      const [h] = await busy.must<Buffer[]>('C_FindObjects', s, 1);
      await busy.must('C_FindObjectsFinal', s);
      return h;
    };
    const wrapping = await find('wrap-aes');
    const data = await find('data-aes');
    // Whichever member gets the wrap holds it (the wrapper blocks it) until healed.
    for (const m of d.members) m.faults.hang('C_WrapKey');
    const wrap = busy.call<Buffer>('C_WrapKey', s, { mechanism: p.CKM_AES_KEY_WRAP }, wrapping, data, Buffer.alloc(64));
    const wrapsOn = async (alias: string) => (await d.memberCalls(alias, 'C_WrapKey')) + (await d.memberCalls(alias, 'px_WrapKeyTyped'));
    const [w0, w1] = await waitFor('the wrap at a member', async () => [await wrapsOn('m0'), await wrapsOn('m1')], ([x, y]) => x + y === 1);
    const [slow, free] = w0 === 1 ? ['m0', 'm1'] : ['m1', 'm0'];
    expect(w0 + w1).toBe(1);
    // One client at a time: the free member has no call in flight at each pick, the slow one has one.
    const r = await runBench(d.env(), 'ecdsa', 0.5, 1);
    expect(r.status).toBe('ok');
    expect({ slow: await d.memberCalls(slow, 'C_Sign'), free: (await d.memberCalls(free, 'C_Sign')) >= Number(r.fields.ops) }).toEqual({ slow: 0, free: true });
    for (const m of d.members) m.faults.heal();
    const done = await wrap;
    expect(done.rv).toBe(p.CKR_OK);
    expect(done.ok).toHaveLength(24);
  } finally {
    // The hung call returns once healed; only then can the client process stop.
    for (const m of d.members) m.faults.heal();
    await busy.stop();
  }
});
