/**
 * Restart delay for a process that keeps dying. The delay doubles with each
 * death in a row, is capped, and carries random jitter so that workers that
 * died together do not restart in lock step. A death only counts as "in a
 * row" if the process had not stayed up for `stableMs`: becoming ready is
 * not enough (a worker that is ready and then crashes on its first call is
 * still in a crash loop).
 */
export interface BackoffOptions {
  /** First delay, ms. */
  baseMs: number;
  /** Largest delay, ms. */
  maxMs: number;
  /** Fraction of the delay drawn at random, in [0, 1]: delay * (1 - jitter/2 ... 1 + jitter/2). */
  jitter: number;
  /** Uptime after which the next death starts a new series, ms. */
  stableMs: number;
  /** Uniform in [0, 1); injectable for tests. */
  random?: () => number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 200, maxMs: 30_000, jitter: 0.5, stableMs: 60_000 };

export class Backoff {
  /** Deaths in the current series (0: none, or the last one ended a stable run). */
  private deaths = 0;
  private readonly random: () => number;

  constructor(private readonly o: BackoffOptions = DEFAULT_BACKOFF) {
    if (!(o.baseMs > 0) || !(o.maxMs >= o.baseMs)) throw new RangeError('backoff needs 0 < baseMs <= maxMs');
    if (!(o.jitter >= 0 && o.jitter <= 1)) throw new RangeError('backoff jitter must be in [0, 1]');
    if (!(o.stableMs >= 0)) throw new RangeError('backoff stableMs must be >= 0');
    this.random = o.random ?? Math.random;
  }

  /** Deaths in a row so far. */
  get count(): number {
    return this.deaths;
  }

  /**
   * Record a death after `uptimeMs` of life and answer the delay before the
   * next start, in ms (an integer).
   */
  died(uptimeMs: number): number {
    this.deaths = uptimeMs >= this.o.stableMs ? 1 : this.deaths + 1;
    const nominal = Math.min(this.o.maxMs, this.o.baseMs * 2 ** Math.min(this.deaths - 1, 30));
    const spread = nominal * this.o.jitter;
    const delay = nominal - spread / 2 + spread * this.random();
    return Math.max(1, Math.round(Math.min(this.o.maxMs, delay)));
  }
}
