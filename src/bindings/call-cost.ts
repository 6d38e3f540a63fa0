/**
 * Chooses, per kind of call, between pkcs11js's synchronous call (runs on the
 * event loop) and its async variant (runs on a libuv thread). The async
 * variant frees the loop but costs about 110 µs of hand-off per call
 * (measured with SoftHSM2: ECDSA P-256 sign 53 µs sync, 166 µs async), more
 * than many operations themselves. So calls whose measured cost stays under
 * INLINE_LIMIT_US run inline, everything else (RSA private-key operations,
 * key generation, large inputs) on the pool. A kind starts on the pool and
 * is judged by what it costs there; an inline run that turns out slow sends
 * the kind back to the pool.
 */

/** A kind of call whose smoothed cost is below this runs on the event loop. */
export const INLINE_LIMIT_US = 300;
/** Inputs above this size always go to the pool, whatever the kind's history. */
export const INLINE_MAX_INPUT = 64 * 1024;
/** Weight of the newest sample in the smoothed cost. */
const EMA_WEIGHT = 0.2;

export class CallCostModel {
  /** Smoothed cost in µs by kind (`C_Sign:0x1041:b2`). */
  private readonly cost = new Map<string, number>();

  static key(call: string, mechanism: number | undefined, inputLength: number): string {
    // Inputs of similar size (within a factor of 16) share a kind.
    const bucket = Math.ceil(Math.log2(inputLength + 1) / 4);
    return `${call}:${mechanism ?? '-'}:${bucket}`;
  }

  runInline(key: string, inputLength: number): boolean {
    if (inputLength > INLINE_MAX_INPUT) return false;
    const c = this.cost.get(key);
    return c !== undefined && c < INLINE_LIMIT_US;
  }

  record(key: string, micros: number): void {
    const prev = this.cost.get(key);
    // One slow inline run is enough to send the kind back to the pool.
    const next = prev === undefined || micros > INLINE_LIMIT_US * 3 ? micros : prev + EMA_WEIGHT * (micros - prev);
    this.cost.set(key, next);
  }

  /**
   * Runs `sync` inline or `async` on the pool as the kind's history says,
   * and learns from the time it took. Inline, the result (or the error) comes
   * without a promise.
   */
  run<T>(key: string, inputLength: number, sync: () => T, async: () => Promise<T>): T | Promise<T> {
    const t0 = process.hrtime.bigint();
    const learn = (): void => this.record(key, Number(process.hrtime.bigint() - t0) / 1000);
    if (this.runInline(key, inputLength)) {
      try {
        return sync();
      } finally {
        learn();
      }
    }
    let p: Promise<T>;
    try {
      p = async();
    } catch (e) {
      learn();
      throw e;
    }
    return p.finally(learn);
  }
}
