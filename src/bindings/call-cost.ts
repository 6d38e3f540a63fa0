/**
 * Chooses, per kind of call, between pkcs11js's synchronous call (runs on the
 * event loop) and its async variant (runs on a libuv thread). The async
 * variant frees the loop but costs about 80-110 µs of hand-off per call
 * (measured with SoftHSM2: ECDSA P-256 sign 53 µs sync, 166 µs async; RSA-2048
 * sign 620 µs sync, 720 µs async), more than many operations themselves.
 * The core issue bounds a call's module time on the loop to about a
 * millisecond. RSA-2048 private-key operations, the commonest costly call
 * (TLS servers sign with them), take 0.9-1.4 ms on a loaded 2-vCPU VM, so a
 * limit of exactly 1 ms sent them to the pool on some machines and runs, and
 * the hand-off then cost 10-25 % of their throughput at one client. Calls
 * whose measured cost stays under INLINE_LIMIT_US run inline (RSA-2048
 * signatures among them), everything else (RSA-4096, about 8 times RSA-2048; key
 * generation, large inputs) on the pool. A kind starts on the pool and is
 * judged by what it costs there. An inline kind goes back to the pool when
 * its smoothed cost passes INLINE_LEAVE_US or one run passes
 * INLINE_SPIKE_US; the gap between the two limits keeps a kind near the
 * limit from switching on every call when the machine is loaded.
 */

/** A pool kind whose smoothed cost is below this runs on the event loop from then on. */
export const INLINE_LIMIT_US = 2000;
/** An inline kind whose smoothed cost passes this goes back to the pool. */
export const INLINE_LEAVE_US = 3000;
/** One inline run longer than this sends its kind back to the pool at once. */
export const INLINE_SPIKE_US = 6000;
/** Inputs above this size always go to the pool, whatever the kind's history. */
export const INLINE_MAX_INPUT = 64 * 1024;
/** Weight of the newest sample in the smoothed cost. */
const EMA_WEIGHT = 0.2;

export class CallCostModel {
  /** Smoothed cost in µs by kind (`C_Sign:0x1041:b2`). */
  private readonly cost = new Map<string, number>();
  /** Kinds that run inline now. */
  private readonly inline = new Set<string>();

  static key(call: string, mechanism: number | undefined, inputLength: number): string {
    // Inputs of similar size (within a factor of 16) share a kind.
    const bucket = Math.ceil(Math.log2(inputLength + 1) / 4);
    return `${call}:${mechanism ?? '-'}:${bucket}`;
  }

  runInline(key: string, inputLength: number): boolean {
    if (inputLength > INLINE_MAX_INPUT) return false;
    return this.inline.has(key);
  }

  record(key: string, micros: number): void {
    const prev = this.cost.get(key);
    // One very slow run restarts the kind's history from it.
    const next = prev === undefined || micros > INLINE_SPIKE_US ? micros : prev + EMA_WEIGHT * (micros - prev);
    this.cost.set(key, next);
    if (this.inline.has(key) ? next > INLINE_LEAVE_US : next >= INLINE_LIMIT_US) this.inline.delete(key);
    else this.inline.add(key);
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
