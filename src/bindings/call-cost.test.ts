import {
  CallCostModel,
  INLINE_LEAVE_US,
  INLINE_LIMIT_US,
  INLINE_MAX_INPUT,
  INLINE_SPIKE_US,
  PROBE_INTERVAL_MS,
  PROBE_MAX_US,
} from './call-cost';

/** A model on a clock the test moves. */
function model(): { m: CallCostModel; clock: { t: number } } {
  const clock = { t: 0 };
  return { m: new CallCostModel(null, () => clock.t), clock };
}

describe('CallCostModel', () => {
  test('an unknown kind goes to the pool; a cheap one then runs inline', () => {
    const m = new CallCostModel();
    const k = CallCostModel.key('C_Sign', 0x1041, 32);
    expect(m.runInline(k, 32)).toBe(false);
    m.record(k, 160, false);
    expect(m.runInline(k, 32)).toBe(true);
  });

  test('an expensive kind stays on the pool and is never probed inline', () => {
    const { m, clock } = model();
    const k = CallCostModel.key('C_Sign', 1, 32);
    for (let i = 0; i < 5; i++) {
      m.record(k, PROBE_MAX_US + 2000, false); // e.g. RSA-4096, key generation
      expect(m.runInline(k, 32)).toBe(false);
      clock.t += PROBE_INTERVAL_MS;
    }
  });

  test('a pool kind slowed by pool and loop waits is probed inline, and a fast probe keeps it there', () => {
    const { m } = model();
    const k = CallCostModel.key('C_Sign', 1, 32);
    // RSA-2048 under load: 1.5 ms of module time, 3-4 ms to its completion on the pool.
    for (const us of [3500, 3000, 4000, 3200]) m.record(k, us, false);
    expect(m.runInline(k, 32)).toBe(true); // the probe
    m.record(k, 1500, true);
    for (let i = 0; i < 3; i++) expect(m.runInline(k, 32)).toBe(true);
  });

  test('a pool run that finishes after its kind went inline does not send it back', () => {
    const { m } = model();
    const k = CallCostModel.key('C_Sign', 1, 32);
    m.record(k, INLINE_LIMIT_US + 1000, false);
    expect(m.runInline(k, 32)).toBe(true);
    m.record(k, 1500, true);
    m.record(k, INLINE_SPIKE_US + 3000, false); // started on the pool before the probe, waited there
    expect(m.runInline(k, 32)).toBe(true);
  });

  test('a slow probe leaves the kind on the pool until the next probe, one interval later', () => {
    const { m, clock } = model();
    const k = CallCostModel.key('C_Sign', 1, 32);
    m.record(k, INLINE_LIMIT_US + 1000, false);
    expect(m.runInline(k, 32)).toBe(true);
    m.record(k, INLINE_LIMIT_US + 500, true); // truly over the limit
    m.record(k, INLINE_LIMIT_US + 1000, false);
    expect(m.runInline(k, 32)).toBe(false);
    clock.t += PROBE_INTERVAL_MS - 1;
    expect(m.runInline(k, 32)).toBe(false);
    clock.t += 1;
    expect(m.runInline(k, 32)).toBe(true);
    // A probe needs a pool run since the last one, fast enough to be worth it.
    m.record(k, INLINE_LIMIT_US + 500, true);
    clock.t += PROBE_INTERVAL_MS;
    expect(m.runInline(k, 32)).toBe(false);
  });

  test('one slow inline run sends the kind back to the pool', () => {
    const m = new CallCostModel();
    const k = CallCostModel.key('C_Encrypt', 0x1082, 4096);
    m.record(k, 100, false);
    expect(m.runInline(k, 4096)).toBe(true);
    m.record(k, INLINE_SPIKE_US + 1, true);
    expect(m.runInline(k, 4096)).toBe(false);
  });

  test('an RSA-2048 signature runs inline, also on a machine where it takes over a millisecond', () => {
    for (const onPool of [720, 1400]) {
      const m = new CallCostModel();
      const k = CallCostModel.key('C_Sign', 1, 32);
      m.record(k, onPool, false); // on the pool: the module time and the hand-off
      expect(m.runInline(k, 32)).toBe(true);
    }
  });

  test('an inline kind near the limit stays inline until it passes the leave limit', () => {
    const { m, clock } = model();
    const k = CallCostModel.key('C_Sign', 1, 32);
    m.record(k, INLINE_LIMIT_US - 100, false);
    for (let i = 0; i < 20; i++) m.record(k, INLINE_LIMIT_US + 200, true);
    expect(m.runInline(k, 32)).toBe(true);
    for (let i = 0; i < 40; i++) m.record(k, INLINE_LEAVE_US + 500, true);
    expect(m.runInline(k, 32)).toBe(false);
    // Back on the pool, it returns only by a probe below the entry limit.
    for (let i = 0; i < 40; i++) m.record(k, INLINE_LIMIT_US + 200, false);
    expect(m.runInline(k, 32)).toBe(false); // a probe waits an interval after leaving
    clock.t += PROBE_INTERVAL_MS;
    expect(m.runInline(k, 32)).toBe(true); // the probe
    m.record(k, INLINE_LIMIT_US + 200, true);
    expect(m.runInline(k, 32)).toBe(false);
  });

  test('large inputs never run inline and sizes are separate kinds', () => {
    const m = new CallCostModel();
    const small = CallCostModel.key('C_Digest', 0x250, 100);
    const big = CallCostModel.key('C_Digest', 0x250, 1 << 20);
    expect(small).not.toBe(big);
    m.record(big, 10, false);
    expect(m.runInline(big, INLINE_MAX_INPUT + 1)).toBe(false);
  });

  test('run() uses the chosen path and records its time', async () => {
    const m = new CallCostModel();
    const k = 'x';
    let which = '';
    await m.run(k, 0, () => (which = 'sync'), async () => (which = 'async'));
    expect(which).toBe('async');
    await m.run(k, 0, () => (which = 'sync'), async () => (which = 'async'));
    expect(which).toBe('sync');
  });

  describe('with a thread clock', () => {
    /** A thread clock answering `cpu` µs and `switches` for each reading in turn. */
    function threadClock(readings: Array<[cpu: number, switches: number]>): (out: Float64Array) => void {
      return (out) => {
        const [cpu, switches] = readings.shift()!;
        out[0] = cpu;
        out[1] = switches;
      };
    }
    /** A synchronous call that holds the thread for `ms` of wall time. */
    const busy = (ms: number) => (): string => {
      const end = performance.now() + ms;
      while (performance.now() < end);
      return 'sync';
    };
    const slowOnPool = async (): Promise<string> => 'async';

    test('a probe preempted past the limit is judged by its CPU time and brings the kind inline', () => {
      const clock = { t: 0 };
      const m = new CallCostModel(threadClock([[10_000, 7], [11_500, 7]]), () => clock.t);
      const k = 'C_Sign:1:2';
      m.record(k, 3500, false); // RSA-2048 on a busy pool
      // Wall time over the entry limit, 1.5 ms of CPU, no blocking: the module's cost is 1.5 ms.
      expect(m.run(k, 32, busy(INLINE_LIMIT_US / 1000 + 0.5), slowOnPool)).toBe('sync');
      expect(m.runInline(k, 32)).toBe(true);
    });

    test('a probe that blocked is judged by its wall time', () => {
      const clock = { t: 0 };
      const m = new CallCostModel(threadClock([[10_000, 7], [10_100, 8]]), () => clock.t);
      const k = 'C_Sign:1:2';
      m.record(k, 3500, false);
      // Little CPU, but the thread waited (a network HSM, a lock): the loop was held all along.
      expect(m.run(k, 32, busy(INLINE_LIMIT_US / 1000 + 0.5), slowOnPool)).toBe('sync');
      expect(m.runInline(k, 32)).toBe(false);
    });

    test('cheap inline kinds are timed without the thread clock', () => {
      const m = new CallCostModel(() => {
        throw new Error('thread clock read');
      });
      const k = 'C_Sign:0x1041:2';
      m.record(k, 150, false);
      expect(m.run(k, 32, () => 'sync', slowOnPool)).toBe('sync');
    });
  });
});
