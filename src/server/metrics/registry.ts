import { collectDefaultMetrics, Registry } from 'prom-client';
import type { Metric, MetricObjectWithValues, MetricValue } from 'prom-client';
import { PROCEDURES } from '../../generated/pkcs11_rpc';
import type { CallName } from '../../generated/pkcs11_rpc';
import { rvName } from '../../pkcs11/constants';

/** Procedure names in a fixed order: a call's counters live at its index. */
export const PROCEDURE_NAMES: readonly CallName[] = [...new Set(PROCEDURES.map((p) => p.name))];
export const PROCEDURE_INDEX: ReadonlyMap<CallName, number> = new Map(PROCEDURE_NAMES.map((n, i) => [n, i]));

/** Upper bounds (seconds) of the call latency histogram: 50 µs (a cached call) to 10 s (RSA key generation). */
export const LATENCY_BUCKETS: readonly number[] = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const NB = LATENCY_BUCKETS.length + 1;

type Aggregator = 'sum' | 'max' | 'min' | 'average' | 'first' | 'omit';
type Json = MetricObjectWithValues<MetricValue<string>> & { aggregator: Aggregator };

/**
 * A metric whose values are computed at scrape time from this module's plain
 * counters, in prom-client's JSON form, so that prom-client renders it and
 * `AggregatorRegistry.aggregate` sums it over worker processes like its own.
 */
function scraped(name: string, help: string, type: 'counter' | 'gauge' | 'histogram', values: () => Array<MetricValue<string> & { metricName?: string }>): Metric {
  const m = {
    name,
    help,
    type,
    aggregator: 'sum' as Aggregator,
    get: (): Promise<Json> => Promise.resolve({ name, help, type, aggregator: 'sum', values: values() } as unknown as Json),
    reset: () => undefined,
  };
  return m as unknown as Metric;
}

/**
 * This process's counters. The hot path (metrics layer) only adds to typed
 * arrays indexed by procedure and bucket and to a per-procedure map of
 * error CK_RVs; label strings are made at scrape time.
 */
export class ProcessMetrics {
  readonly registry = new Registry();
  /** Calls answered CKR_OK, by procedure index. */
  readonly ok = new Float64Array(PROCEDURE_NAMES.length);
  /** Calls answered another CK_RV: procedure index → CK_RV → count. */
  readonly errors: Array<Map<number, number>> = PROCEDURE_NAMES.map(() => new Map());
  /** Latency histogram, non-cumulative: [procedure * NB + bucket]; the last bucket of each row is +Inf. */
  readonly buckets = new Float64Array(PROCEDURE_NAMES.length * NB);
  readonly durationSum = new Float64Array(PROCEDURE_NAMES.length);
  connectionsOpen = 0;
  connectionsTotal = 0;
  sessionsOpen = 0;
  /** Filter refusals by `call \0 rule \0 rv`. */
  readonly refusals = new Map<string, number>();
  /** Primary only: ready workers and restarts. */
  workersReady = 0;
  workerRestarts = 0;

  constructor(worker: number | null) {
    const r = this.registry;
    // Per-process runtime metrics (heap, event-loop lag, ...), summed over processes by the aggregation.
    collectDefaultMetrics({ register: r, prefix: 'pkcs11proxyd_' });
    r.registerMetric(
      scraped('pkcs11proxyd_calls_total', 'PKCS#11 calls answered, by procedure and CK_RV.', 'counter', () => {
        const out: Array<MetricValue<string>> = [];
        PROCEDURE_NAMES.forEach((procedure, i) => {
          if (this.ok[i] > 0) out.push({ labels: { procedure, rv: 'CKR_OK' }, value: this.ok[i] });
          for (const [rv, n] of this.errors[i]) out.push({ labels: { procedure, rv: rvName(rv) }, value: n });
        });
        return out;
      }),
    );
    r.registerMetric(
      scraped('pkcs11proxyd_call_errors_total', 'PKCS#11 calls answered with a CK_RV other than CKR_OK, by procedure.', 'counter', () => {
        const out: Array<MetricValue<string>> = [];
        PROCEDURE_NAMES.forEach((procedure, i) => {
          let n = 0;
          for (const c of this.errors[i].values()) n += c;
          if (n > 0) out.push({ labels: { procedure }, value: n });
        });
        return out;
      }),
    );
    r.registerMetric(
      scraped('pkcs11proxyd_call_duration_seconds', 'Time from a call entering the layer stack to its result, by procedure.', 'histogram', () => {
        const out: Array<MetricValue<string> & { metricName: string }> = [];
        PROCEDURE_NAMES.forEach((procedure, i) => {
          let cum = 0;
          for (let b = 0; b < NB; b++) cum += this.buckets[i * NB + b];
          if (cum === 0) return;
          cum = 0;
          for (let b = 0; b < NB; b++) {
            cum += this.buckets[i * NB + b];
            const le = b < LATENCY_BUCKETS.length ? String(LATENCY_BUCKETS[b]) : '+Inf';
            out.push({ metricName: 'pkcs11proxyd_call_duration_seconds_bucket', labels: { procedure, le }, value: cum });
          }
          out.push({ metricName: 'pkcs11proxyd_call_duration_seconds_sum', labels: { procedure }, value: this.durationSum[i] });
          out.push({ metricName: 'pkcs11proxyd_call_duration_seconds_count', labels: { procedure }, value: cum });
        });
        return out;
      }),
    );
    r.registerMetric(scraped('pkcs11proxyd_connections', 'Client connections open.', 'gauge', () => [{ labels: {}, value: this.connectionsOpen }]));
    r.registerMetric(scraped('pkcs11proxyd_connections_total', 'Client connections served since start.', 'counter', () => [{ labels: {}, value: this.connectionsTotal }]));
    r.registerMetric(scraped('pkcs11proxyd_sessions', 'PKCS#11 sessions open by clients.', 'gauge', () => [{ labels: {}, value: this.sessionsOpen }]));
    r.registerMetric(
      scraped('pkcs11proxyd_refusals_total', 'Calls the filter refused, by call, rule (key and file:line:col) and CK_RV.', 'counter', () =>
        [...this.refusals].map(([k, value]) => {
          const [call, rule, rv] = k.split('\0');
          return { labels: { call, rule, rv }, value };
        }),
      ),
    );
    if (worker === null) {
      r.registerMetric(scraped('pkcs11proxyd_workers', 'Worker processes ready to serve.', 'gauge', () => [{ labels: {}, value: this.workersReady }]));
      r.registerMetric(scraped('pkcs11proxyd_worker_restarts_total', 'Worker processes restarted after dying.', 'counter', () => [{ labels: {}, value: this.workerRestarts }]));
    }
  }

  /** One call's outcome; `seconds` its latency. No allocation when rv is CKR_OK. */
  observe(i: number, rv: number, seconds: number): void {
    if (rv === 0) this.ok[i] += 1;
    else {
      const m = this.errors[i];
      m.set(rv, (m.get(rv) ?? 0) + 1);
    }
    let b = 0;
    while (b < LATENCY_BUCKETS.length && seconds > LATENCY_BUCKETS[b]) b++;
    this.buckets[i * NB + b] += 1;
    this.durationSum[i] += seconds;
  }
}

let current: ProcessMetrics | null = null;

/** This process's metrics, null when no metrics endpoint is configured. */
export function processMetrics(): ProcessMetrics | null {
  return current;
}

export function enableMetrics(worker: number | null): ProcessMetrics {
  current ??= new ProcessMetrics(worker);
  return current;
}

/** A filter refusal (FilterLayer.refusal), counted by rule. */
export function countRefusal(call: string, rule: string, rv: number): void {
  if (current === null) return;
  const k = `${call}\0${rule}\0${rvName(rv)}`;
  current.refusals.set(k, (current.refusals.get(k) ?? 0) + 1);
}
