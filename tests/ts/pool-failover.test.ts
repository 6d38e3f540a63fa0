import * as p from 'pkcs11js';
import { pkcs11Tool } from './helpers/pkcs11-tool';
import { CLIENT, createKeyTemplate, runBench, startPoolDaemon, waitFor } from './helpers/pool';
import type { PoolDaemon } from './helpers/pool';
import type { SoftHsmStore } from './helpers/softhsm';

/**
 * Pools through the real daemon, our C client (bench/c/bench.c processes,
 * pkcs11-tool) and two SoftHSM2 stores holding the same keys, each behind
 * the fault-injection wrapper.
 */
let template: SoftHsmStore;
beforeAll(() => {
  template = createKeyTemplate();
});
afterAll(() => template.cleanup());

describe('pool of two members', () => {
  let d: PoolDaemon;
  afterEach(async () => {
    await d?.stop();
  });

  test('one slot with the pool token; the members\' aliases are reserved', async () => {
    d = await startPoolDaemon(template, { pool: 'slot_id = 7' });
    const l = pkcs11Tool(CLIENT, ['-L'], d.env());
    expect(l.status).toBe(0);
    expect(l.out).toMatch(/Slot 0 \(0x7\)/);
    expect(l.out).toMatch(/token label\s*: bench/);
    expect(l.out).toMatch(/token manufacturer\s*: pkcs11proxyd/);
    expect(l.out.match(/^Slot /gm)).toHaveLength(1);
    // ECDSA over the pool: pkcs11-tool finds the key by label (C_FindObjects) and signs.
    const s = pkcs11Tool(CLIENT, ['--login', '--pin', '1234', '--sign', '--mechanism', 'ECDSA', '--id', '21', '--input-file', '/dev/null'], d.env());
    expect({ status: s.status, out: s.status === 0 ? '' : s.out }).toEqual({ status: 0, out: '' });
    const m0 = pkcs11Tool(CLIENT, ['-L'], d.env('m0'));
    expect(m0.status).not.toBe(0);
  });

  test('round-robin spreads signatures evenly; 4 clients, C_Sign failing on one member mid-loop: no client sees a failure', async () => {
    d = await startPoolDaemon(template, { pool: 'strategy = "round-robin" probe_interval_ms = 60000 retry_base_ms = 60000' });
    const spread = await runBench(d.env(), 'ecdsa', 1, 4);
    expect(spread.status).toBe('ok');
    const [a, b] = [await d.memberCalls('m0', 'C_Sign'), await d.memberCalls('m1', 'C_Sign')];
    expect(a + b).toBeGreaterThanOrEqual(Number(spread.fields.ops));
    expect(Math.abs(a - b)).toBeLessThanOrEqual(8);

    // From m0's 50th C_Sign on, m0 fails: the signatures in flight there are replayed on m1.
    d.members[0].faults.fail('C_Sign', p.CKR_DEVICE_ERROR, { after: 50 });
    const before = await d.memberCalls('m1', 'C_Sign');
    const r = await runBench(d.env(), 'ecdsa', 2, 4);
    expect({ status: r.status, out: r.status === 'ok' ? '' : `${r.out}\n${d.daemon.output()}` }).toEqual({ status: 'ok', out: '' });
    expect(Number(r.fields.ops)).toBeGreaterThan(100);
    const m = await d.metrics();
    expect(m.get('pkcs11proxyd_pool_member_up{member=m0,pool=pool,token=pkcs11:token=bench}')).toBe(0);
    expect(m.get('pkcs11proxyd_pool_member_up{member=m1,pool=pool,token=pkcs11:token=bench}')).toBe(1);
    expect((await d.memberCalls('m1', 'C_Sign')) - before).toBeGreaterThanOrEqual(Number(r.fields.ops) - 50);
  });

  test('a member whose token is removed is down until it is back, then re-admitted and used again', async () => {
    d = await startPoolDaemon(template, { pool: 'strategy = "primary-standby" probe_interval_ms = 50 retry_base_ms = 20 retry_max_ms = 100' });
    const up = async (alias: string): Promise<number | undefined> => (await d.metrics()).get(`pkcs11proxyd_pool_member_up{member=${alias},pool=pool,token=pkcs11:token=bench}`);
    await waitFor('both members up', async () => [await up('m0'), await up('m1')], (v) => v[0] === 1 && v[1] === 1);
    d.members[0].faults.removeToken();
    await waitFor('m0 down', () => up('m0'), (v) => v === 0);
    // Primary down: the standby signs.
    const before = await d.memberCalls('m1', 'C_Sign');
    expect((await runBench(d.env(), 'ecdsa', 0.3, 1)).status).toBe('ok');
    expect(await d.memberCalls('m1', 'C_Sign')).toBeGreaterThan(before);
    d.members[0].faults.insertToken();
    await waitFor('m0 re-admitted', () => up('m0'), (v) => v === 1);
    const m0 = await d.memberCalls('m0', 'C_Sign');
    const m1 = await d.memberCalls('m1', 'C_Sign');
    expect((await runBench(d.env(), 'ecdsa', 0.3, 1)).status).toBe('ok');
    expect(await d.memberCalls('m0', 'C_Sign')).toBeGreaterThan(m0);
    expect(await d.memberCalls('m1', 'C_Sign')).toBe(m1);
  });

  test('members in helper processes: kill -9 of one helper in the middle of a signing loop from 4 clients: 0 failed signatures; the member comes back', async () => {
    d = await startPoolDaemon(template, { isolation: 'mode = "helper" call_timeout_ms = 5000', pool: 'probe_interval_ms = 100 retry_base_ms = 50 retry_max_ms = 200' });
    const pid = await d.helperPid('m0');
    const run = runBench(d.env(), 'ecdsa', 3, 4);
    await waitFor('signatures on m0', () => d.memberCalls('m0', 'C_Sign'), (n) => n >= 100);
    process.kill(pid, 'SIGKILL');
    const r = await run;
    expect({ status: r.status, out: r.status === 'ok' ? '' : r.out }).toEqual({ status: 'ok', out: '' });
    const states = () => d.audit().filter((e) => e.event === 'pool_member_state' && e.member === 'm0').map((e) => e.state);
    await waitFor('m0 down and up again', states, (v) => v.length >= 3);
    expect(states().slice(0, 3)).toEqual(['up', 'down', 'up']);
    const before = await d.memberCalls('m0', 'C_Sign');
    expect((await runBench(d.env(), 'ecdsa', 0.5, 2)).status).toBe('ok');
    expect(await d.memberCalls('m0', 'C_Sign')).toBeGreaterThan(before);
  });

  test('members in helper processes: a hung C_Sign times out (pool call_timeout_ms) and the signature is made by the other member', async () => {
    d = await startPoolDaemon(template, { isolation: 'mode = "helper" call_timeout_ms = 10000', pool: 'strategy = "primary-standby" call_timeout_ms = 300 probe_interval_ms = 60000 retry_base_ms = 60000' });
    d.members[0].faults.hang('C_Sign');
    const r = await runBench(d.env(), 'ecdsa', 0.5, 1);
    expect({ status: r.status, out: r.status === 'ok' ? '' : `${r.out}\n${d.daemon.output()}` }).toEqual({ status: 'ok', out: '' });
    expect(Number(r.fields.ops)).toBeGreaterThan(10);
    expect(await d.memberCalls('m0', 'C_Sign')).toBe(1);
    expect(await d.memberCalls('m1', 'C_Sign')).toBeGreaterThanOrEqual(Number(r.fields.ops));
    d.members[0].faults.heal();
  });
});
