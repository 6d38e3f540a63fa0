/**
 * Connection limits: admission (total connections, connections per source,
 * new-connection rate per source) and the idle timeout.
 *
 * Admission runs where connections are accepted: in the primary with worker
 * processes, in the RpcServer with `-workers 0`. The primary sees every
 * connection of every worker, so its counts are global; a worker tells it
 * when a connection it took has closed (handover.ts `closed`), and a worker
 * that dies releases all of its connections at once.
 *
 * A source is what the kernel says about the peer before any byte is read:
 * the uid for a Unix socket (SO_PEERCRED), the address for TCP and TLS. A TLS
 * client certificate is known only after the handshake, which the worker
 * terminates; certificate identities are therefore not counted here (several
 * certificates behind one address share that address's limits).
 *
 * Every refusal is logged with its reason and audited (`limit` event). A
 * flood of refusals is reported once per source and limit per
 * REFUSAL_REPORT_WINDOW_MS, then as one summary with the count.
 */
import { DEFAULT_MAX_CONNECTIONS } from '../../config/server-schema';
import { audit } from '../audit';
import type { ConnectionAdmission, PeerIdentity, RpcLogger } from './types';

/** Admission limits (processor keys, ours); 0 turns a limit off. */
export interface AdmissionLimits {
  /** max_connections: connections open at once, all sources together. */
  maxConnections: number;
  /** max_connections_per_source: connections open at once from one uid or one address. */
  maxConnectionsPerSource: number;
  /** connection_rate_per_source: new connections per second from one source (token bucket refill). */
  connectionRatePerSource: number;
  /** connection_burst_per_source: new connections one source may open at once (bucket size). */
  connectionBurstPerSource: number;
}

export const DEFAULT_ADMISSION_LIMITS: Readonly<AdmissionLimits> = Object.freeze({
  maxConnections: DEFAULT_MAX_CONNECTIONS,
  maxConnectionsPerSource: 0,
  connectionRatePerSource: 0,
  connectionBurstPerSource: 0,
});

/** The bucket size used when connection_burst_per_source is not set. */
export function defaultBurst(rate: number): number {
  return Math.max(1, Math.ceil(rate));
}

const REFUSAL_REPORT_WINDOW_MS = 10_000;
/** Buckets kept before full ones (sources that went quiet) are swept. */
const BUCKET_SWEEP_SIZE = 4096;

export type AdmissionLimitName = 'max_connections' | 'max_connections_per_source' | 'connection_rate_per_source';

/**
 * The source key of a peer: `uid:N` for Unix sockets, `address:A` for TCP and
 * TLS (an IPv4-mapped IPv6 address counts as the IPv4 address).
 */
export function sourceOf(peer: PeerIdentity): string {
  if (peer.transport === 'unix') return `uid:${peer.uid}`;
  const a = peer.address.startsWith('::ffff:') && peer.address.includes('.') ? peer.address.slice(7) : peer.address;
  return `address:${a}`;
}

/** An admitted connection's share of the counts; release() is idempotent. */
export interface AdmissionTicket {
  readonly source: string;
  release(): void;
}

interface Bucket {
  tokens: number;
  /** ms (performance.now) of the last refill. */
  at: number;
}

export type AdmissionResult =
  | { ok: true; ticket: AdmissionTicket }
  | { ok: false; limit: AdmissionLimitName; source: string; reason: string };

/** Counts open connections per source and meters new ones; one instance per accepting process. */
export class AdmissionControl implements ConnectionAdmission {
  private total = 0;
  private readonly perSource = new Map<string, number>();
  private readonly buckets = new Map<string, Bucket>();
  private readonly reports = new Map<string, { until: number; suppressed: number }>();
  private readonly burst: number;

  constructor(
    readonly limits: AdmissionLimits,
    private readonly log: RpcLogger,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.burst = limits.connectionBurstPerSource > 0 ? limits.connectionBurstPerSource : defaultBurst(limits.connectionRatePerSource);
  }

  get openConnections(): number {
    return this.total;
  }

  /** Connections open from `source` (a sourceOf() key). */
  openFrom(source: string): number {
    return this.perSource.get(source) ?? 0;
  }

  /**
   * Admits a new connection or says which limit refuses it. The rate is
   * metered first: an attempt refused by a count still spends its token, so
   * a source retrying against a full limit is slowed down too.
   */
  admit(peer: PeerIdentity): AdmissionResult {
    const source = sourceOf(peer);
    const l = this.limits;
    if (l.connectionRatePerSource > 0 && !this.takeToken(source)) {
      return this.refused('connection_rate_per_source', source,
        `more than ${l.connectionRatePerSource} new connections per second (burst ${this.burst}) from ${source}`);
    }
    if (l.maxConnections > 0 && this.total >= l.maxConnections) {
      return this.refused('max_connections', source, `${this.total} connections open (max_connections ${l.maxConnections})`);
    }
    const open = this.perSource.get(source) ?? 0;
    if (l.maxConnectionsPerSource > 0 && open >= l.maxConnectionsPerSource) {
      return this.refused('max_connections_per_source', source,
        `${open} connections open from ${source} (max_connections_per_source ${l.maxConnectionsPerSource})`);
    }
    this.total += 1;
    this.perSource.set(source, open + 1);
    let released = false;
    return {
      ok: true,
      ticket: {
        source,
        release: () => {
          if (released) return;
          released = true;
          this.total -= 1;
          const n = (this.perSource.get(source) ?? 1) - 1;
          if (n <= 0) this.perSource.delete(source);
          else this.perSource.set(source, n);
        },
      },
    };
  }

  private takeToken(source: string): boolean {
    const t = this.now();
    let b = this.buckets.get(source);
    if (b === undefined) {
      if (this.buckets.size >= BUCKET_SWEEP_SIZE) this.sweepBuckets(t);
      b = { tokens: this.burst, at: t };
      this.buckets.set(source, b);
    } else {
      b.tokens = Math.min(this.burst, b.tokens + ((t - b.at) / 1000) * this.limits.connectionRatePerSource);
      b.at = t;
    }
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** Drops the buckets that have refilled: a new one starts full, which is the same state. */
  private sweepBuckets(t: number): void {
    for (const [k, b] of this.buckets) {
      if (b.tokens + ((t - b.at) / 1000) * this.limits.connectionRatePerSource >= this.burst) this.buckets.delete(k);
    }
  }

  private refused(limit: AdmissionLimitName, source: string, reason: string): AdmissionResult {
    reportLimit(this.log, this.reports, this.now(), { limit, source, reason, action: 'connection refused' });
    return { ok: false, limit, source, reason };
  }
}

/**
 * Logs (warn) and audits one limit hit. Within REFUSAL_REPORT_WINDOW_MS of a
 * report for the same limit and source, further hits are only counted; the
 * next report after the window carries that count as `suppressed`.
 */
function reportLimit(
  log: RpcLogger,
  reports: Map<string, { until: number; suppressed: number }>,
  t: number,
  e: { limit: string; source: string; reason: string; action: string },
): void {
  const key = `${e.limit} ${e.source}`;
  const r = reports.get(key);
  if (r !== undefined && t < r.until) {
    r.suppressed += 1;
    return;
  }
  const suppressed = r?.suppressed ?? 0;
  if (reports.size >= BUCKET_SWEEP_SIZE) {
    for (const [k, v] of reports) if (t >= v.until) reports.delete(k);
  }
  reports.set(key, { until: t + REFUSAL_REPORT_WINDOW_MS, suppressed: 0 });
  const more = suppressed > 0 ? ` (${suppressed} more since the last report)` : '';
  log('warn', `limit ${e.limit}: ${e.action}: ${e.reason}${more}`);
  audit({ event: 'limit', limit: e.limit, source: e.source, action: e.action, reason: e.reason, suppressed });
}

/**
 * The idle timeout of one connection: idle means no call in flight and none
 * received. The timer is armed once per period and re-armed for the time
 * left, so a busy connection costs one clock read per call, not a timer.
 */
export class IdleWatch {
  private last: number;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;

  /**
   * `busy()` says whether a call is in flight or a reply unsent; `expire()`
   * closes the connection (called once, after the watch stopped itself).
   */
  constructor(
    readonly timeoutMs: number,
    private readonly busy: () => boolean,
    private readonly expire: () => void,
  ) {
    this.last = performance.now();
    this.arm(timeoutMs);
  }

  /** A call arrived or was answered. */
  touch(): void {
    this.last = performance.now();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private arm(ms: number): void {
    this.timer = setTimeout(() => this.check(), Math.max(1, Math.ceil(ms)));
    this.timer.unref();
  }

  private check(): void {
    this.timer = null;
    if (this.stopped) return;
    const left = this.last + this.timeoutMs - performance.now();
    if (this.busy() || left > 0) {
      this.arm(left > 0 ? left : this.timeoutMs);
      return;
    }
    this.stop();
    this.expire();
  }
}

/** Log and audit a connection closed for idling (one per connection: no suppression). */
export function reportIdleClose(log: RpcLogger, tag: string, source: string, timeoutMs: number): void {
  const reason = `no call for ${timeoutMs / 1000} s (idle_timeout_s)`;
  log('info', `${tag}: closing: ${reason}`);
  audit({ event: 'limit', limit: 'idle_timeout_s', source, action: 'connection closed', reason, suppressed: 0 });
}

/**
 * Audits a call refused by a per-application limit (max_sessions_per_app,
 * max_session_object_bytes_per_app, max_random_length); the caller answers
 * the CK_RV named here.
 */
export function auditCallLimit(limit: string, call: string, rv: string, who: { connection?: number; app?: number; alias: string }): void {
  audit({ event: 'limit', limit, action: 'call refused', call, rv, ...who });
}
