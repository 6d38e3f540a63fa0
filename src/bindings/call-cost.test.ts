import { CallCostModel, INLINE_LEAVE_US, INLINE_LIMIT_US, INLINE_MAX_INPUT, INLINE_SPIKE_US } from './call-cost';

describe('CallCostModel', () => {
  test('an unknown kind goes to the pool; a cheap one then runs inline', () => {
    const m = new CallCostModel();
    const k = CallCostModel.key('C_Sign', 0x1041, 32);
    expect(m.runInline(k, 32)).toBe(false);
    m.record(k, 160);
    expect(m.runInline(k, 32)).toBe(true);
  });

  test('an expensive kind stays on the pool', () => {
    const m = new CallCostModel();
    const k = CallCostModel.key('C_Sign', 1, 32);
    m.record(k, INLINE_LIMIT_US + 500); // e.g. RSA-4096
    expect(m.runInline(k, 32)).toBe(false);
  });

  test('one slow inline run sends the kind back to the pool', () => {
    const m = new CallCostModel();
    const k = CallCostModel.key('C_Encrypt', 0x1082, 4096);
    m.record(k, 100);
    expect(m.runInline(k, 4096)).toBe(true);
    m.record(k, INLINE_SPIKE_US + 1);
    expect(m.runInline(k, 4096)).toBe(false);
  });

  test('an RSA-2048 signature runs inline, also on a machine where it takes over a millisecond', () => {
    for (const onPool of [720, 1400]) {
      const m = new CallCostModel();
      const k = CallCostModel.key('C_Sign', 1, 32);
      m.record(k, onPool); // on the pool: the module time and the hand-off
      expect(m.runInline(k, 32)).toBe(true);
    }
  });

  test('an inline kind near the limit stays inline until it passes the leave limit', () => {
    const m = new CallCostModel();
    const k = CallCostModel.key('C_Sign', 1, 32);
    m.record(k, INLINE_LIMIT_US - 100);
    for (let i = 0; i < 20; i++) m.record(k, INLINE_LIMIT_US + 200);
    expect(m.runInline(k, 32)).toBe(true);
    for (let i = 0; i < 40; i++) m.record(k, INLINE_LEAVE_US + 500);
    expect(m.runInline(k, 32)).toBe(false);
    // Back on the pool, it returns only below the entry limit.
    for (let i = 0; i < 40; i++) m.record(k, INLINE_LIMIT_US + 200);
    expect(m.runInline(k, 32)).toBe(false);
  });

  test('large inputs never run inline and sizes are separate kinds', () => {
    const m = new CallCostModel();
    const small = CallCostModel.key('C_Digest', 0x250, 100);
    const big = CallCostModel.key('C_Digest', 0x250, 1 << 20);
    expect(small).not.toBe(big);
    m.record(big, 10);
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
});
