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
 *
 * A pool run's time is wall time to its completion, so it also holds the
 * wait for a pool thread and for the event loop to take the completion. Under
 * load (4 clients, RSA-2048 on 2 vCPUs) those waits alone keep the measured
 * cost above the entry limit, and a kind that one stall sent to the pool
 * would stay there, paying the hand-off and 8 pool threads contending for 2
 * cores (measured: 2.5 ms of server CPU per RSA signature instead of 1.7).
 * So a pool kind whose fastest pool run since its last probe is under
 * PROBE_MAX_US is run inline once per PROBE_INTERVAL_MS: that run's time is
 * the module's own, and decides. A probe costs the loop at most about
 * PROBE_MAX_US once a second, what INLINE_SPIKE_US already tolerates. For
 * the same reason pool runs that finish after their kind went inline are
 * not counted.
 *
 * An inline run's wall time holds the time the thread was preempted, which
 * on a loaded machine (pool threads of the same worker signing for other
 * connections) doubles an RSA-2048 signature and would fail every probe.
 * With a thread clock (native/p11call threadUsage), a probe and a run of a
 * kind costing at least half the entry limit are measured by the thread's
 * CPU time when the thread never blocked during the call, and by wall time
 * when it did (a module waiting on a network HSM or a lock holds the loop
 * all that time). Cheaper kinds keep plain wall time: two more system calls
 * would cost more than they tell.
 */

/** A pool kind whose smoothed cost is below this runs on the event loop from then on. */
export const INLINE_LIMIT_US = 2000;
/** An inline kind whose smoothed cost passes this goes back to the pool. */
export const INLINE_LEAVE_US = 3000;
/** One inline run longer than this sends its kind back to the pool at once. */
export const INLINE_SPIKE_US = 6000;
/** Inputs above this size always go to the pool, whatever the kind's history. */
export const INLINE_MAX_INPUT = 64 * 1024;
/** A pool kind is probed inline only when a pool run of it took less than this. */
export const PROBE_MAX_US = INLINE_SPIKE_US;
/** At most one inline probe per kind per this many milliseconds. */
export const PROBE_INTERVAL_MS = 1000;
/** Weight of the newest sample in the smoothed cost. */
const EMA_WEIGHT = 0.2;

interface Kind {
  /** Smoothed cost in µs. */
  cost: number;
  /** Runs inline now. */
  inline: boolean;
  /** Fastest pool run (µs) since the last probe. */
  poolMin: number;
  /** When the last probe started (ms, the model's clock). */
  lastProbe: number;
}

/** Writes the calling thread's CPU time (µs) to out[0] and its voluntary context switches to out[1]. */
export type ThreadUsage = (out: Float64Array) => void;

export class CallCostModel {
  /** By kind (`C_Sign:0x1041:b2`). */
  private readonly kinds = new Map<string, Kind>();
  private readonly before = new Float64Array(2);
  private readonly after = new Float64Array(2);

  /** `now` is the probe clock in milliseconds; `threadUsage` the thread clock, if there is one. */
  constructor(
    private readonly threadUsage: ThreadUsage | null = null,
    private readonly now: () => number = () => performance.now(),
  ) {}

  static key(call: string, mechanism: number | undefined, inputLength: number): string {
    // Inputs of similar size (within a factor of 16) share a kind.
    const bucket = Math.ceil(Math.log2(inputLength + 1) / 4);
    return `${call}:${mechanism ?? '-'}:${bucket}`;
  }

  /** Whether the next call of this kind runs inline; true for a due probe, which it then counts as started. */
  runInline(key: string, inputLength: number): boolean {
    if (inputLength > INLINE_MAX_INPUT) return false;
    const k = this.kinds.get(key);
    if (k === undefined) return false;
    if (k.inline) return true;
    if (k.poolMin >= PROBE_MAX_US) return false;
    const t = this.now();
    if (t - k.lastProbe < PROBE_INTERVAL_MS) return false;
    k.lastProbe = t;
    k.poolMin = Infinity;
    return true;
  }

  /** Learns from one run of `micros`, made inline or on the pool. */
  record(key: string, micros: number, ranInline: boolean): void {
    let k = this.kinds.get(key);
    if (k === undefined) {
      k = { cost: micros, inline: false, poolMin: Infinity, lastProbe: -Infinity };
      this.kinds.set(key, k);
    } else if (ranInline && !k.inline) {
      // A probe: the module's own time, without pool or loop waits.
      if (micros < INLINE_LIMIT_US) {
        k.inline = true;
        k.cost = micros;
      }
      return;
    } else if (!ranInline && k.inline) {
      // A pool run that was under way when the kind went inline: its waits say nothing of the module.
      return;
    } else {
      // One very slow run restarts the kind's history from it.
      k.cost = micros > INLINE_SPIKE_US ? micros : k.cost + EMA_WEIGHT * (micros - k.cost);
    }
    if (!ranInline) k.poolMin = Math.min(k.poolMin, micros);
    if (!k.inline) {
      k.inline = k.cost < INLINE_LIMIT_US;
    } else if (k.cost > INLINE_LEAVE_US) {
      // Measured slow inline just now: older pool runs say nothing, and a probe waits its interval.
      k.inline = false;
      k.poolMin = Infinity;
      k.lastProbe = this.now();
    }
  }

  /**
   * Runs `sync` inline or `async` on the pool as the kind's history says,
   * and learns from the time it took. Inline, the result (or the error) comes
   * without a promise.
   */
  run<T>(key: string, inputLength: number, sync: () => T, async: () => Promise<T>): T | Promise<T> {
    const inline = this.runInline(key, inputLength);
    const t0 = process.hrtime.bigint();
    const learn = (): void => this.record(key, Number(process.hrtime.bigint() - t0) / 1000, inline);
    if (inline) {
      // A probe, or a kind near the limit, is timed by the thread clock; a cheap kind by wall time alone.
      const k = this.kinds.get(key)!;
      const tu = k.inline && k.cost < INLINE_LIMIT_US / 2 ? null : this.threadUsage;
      tu?.(this.before);
      try {
        return sync();
      } finally {
        if (tu === null) {
          learn();
        } else {
          const wall = Number(process.hrtime.bigint() - t0) / 1000;
          tu(this.after);
          const cpu = this.after[0] - this.before[0];
          const blocked = this.after[1] !== this.before[1] || this.before[0] < 0 || this.after[0] < 0;
          this.record(key, blocked ? wall : Math.min(wall, cpu), true);
        }
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
