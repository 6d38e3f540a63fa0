import { Backoff } from './backoff';

const opts = { baseMs: 200, maxMs: 10_000, jitter: 0, stableMs: 60_000 };

test('the delay doubles with each death in a row and stops at the cap', () => {
  const b = new Backoff(opts);
  expect([1, 2, 3, 4, 5, 6, 7, 8].map(() => b.died(10))).toEqual([200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]);
  expect(b.count).toBe(8);
});

test('becoming ready does not reset the series; only a stable run does', () => {
  const b = new Backoff(opts);
  b.died(5);
  b.died(5_000);
  expect(b.died(59_999)).toBe(800);
  expect(b.died(60_000)).toBe(200);
  expect(b.count).toBe(1);
});

test('jitter spreads the delay around the nominal value, within the cap', () => {
  const lo = new Backoff({ ...opts, jitter: 0.5, random: () => 0 });
  const hi = new Backoff({ ...opts, jitter: 0.5, random: () => 0.999999 });
  expect(lo.died(0)).toBe(150);
  expect(hi.died(0)).toBe(250);
  for (let i = 0; i < 10; i++) hi.died(0);
  expect(hi.died(0)).toBe(10_000);
  const seen = new Set<number>();
  const r = new Backoff({ ...opts, jitter: 0.5 });
  for (let i = 0; i < 20; i++) {
    const d = r.died(0);
    seen.add(d);
    expect(d).toBeGreaterThan(0);
    expect(d).toBeLessThanOrEqual(10_000);
  }
  expect(seen.size).toBeGreaterThan(1);
});

test('bad options are refused', () => {
  expect(() => new Backoff({ ...opts, baseMs: 0 })).toThrow(RangeError);
  expect(() => new Backoff({ ...opts, maxMs: 100 })).toThrow(RangeError);
  expect(() => new Backoff({ ...opts, jitter: 2 })).toThrow(RangeError);
});
