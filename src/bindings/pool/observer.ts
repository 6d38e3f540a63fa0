import type { Metric, MetricObjectWithValues, MetricValue } from 'prom-client';
import { audit } from '../../server/audit';
import type { Logger } from '../../server/log';
import { processMetrics } from '../../server/metrics/registry';
import type { PoolMember } from './member';

/** What a pool reports: member state changes and anomalies (calls sent are counted in PoolMember.calls). */
export interface PoolObserver {
  memberState(pool: { readonly alias: string }, m: PoolMember): void;
  warn(pool: { readonly alias: string }, m: PoolMember, message: string): void;
}

interface ObservedPool {
  readonly alias: string;
  readonly members: readonly PoolMember[];
}

/** Pools of this process whose members the metrics list. */
const observed = new Set<ObservedPool>();
let registered = false;

type Json = MetricObjectWithValues<MetricValue<string>> & { aggregator: 'sum' };

/** A metric computed at scrape time, in prom-client's JSON form (see metrics/registry.ts). */
function scraped(name: string, help: string, type: 'counter' | 'gauge', values: () => Array<MetricValue<string>>): Metric {
  const m = {
    name,
    help,
    type,
    aggregator: 'sum',
    get: (): Promise<Json> => Promise.resolve({ name, help, type, aggregator: 'sum', values: values() } as unknown as Json),
    reset: () => undefined,
  };
  return m as unknown as Metric;
}

function labels(pool: ObservedPool, m: PoolMember): Record<string, string> {
  return { pool: pool.alias, member: m.alias, token: m.uri.source };
}

/**
 * Registers the pool metrics once per process (when metrics are on):
 * pkcs11proxyd_pool_member_up{pool,member,token} (1 up, 0 down; summed over
 * workers: the number of workers that see the member up) and
 * pkcs11proxyd_pool_member_calls_total{pool,member,token,procedure} (calls
 * the pool sent to the member's module).
 */
function registerMetrics(): void {
  const pm = processMetrics();
  if (pm === null || registered) return;
  registered = true;
  pm.registry.registerMetric(
    scraped('pkcs11proxyd_pool_member_up', 'Pool members up (1) or down (0), summed over worker processes.', 'gauge', () =>
      [...observed].flatMap((p) => p.members.map((m) => ({ labels: labels(p, m), value: m.state === 'up' ? 1 : 0 }))),
    ),
  );
  pm.registry.registerMetric(
    scraped('pkcs11proxyd_pool_member_calls_total', 'PKCS#11 calls a pool sent to a member module, by procedure.', 'counter', () =>
      [...observed].flatMap((p) => p.members.flatMap((m) => [...m.calls].map(([procedure, value]) => ({ labels: { ...labels(p, m), procedure }, value })))),
    ),
  );
}

/**
 * The daemon's observer: state changes go to the log (warn when a member
 * goes down, info when it comes back), to the audit trail
 * (`pool_member_state`) and to the metrics.
 */
export function daemonPoolObserver(log: Logger | null): PoolObserver & { watch(pool: ObservedPool): void } {
  return {
    watch(pool) {
      observed.add(pool);
      registerMetrics();
    },
    memberState(pool, m) {
      const what = m.state === 'up' ? `up (slot ${m.slotID})` : `down: ${m.reason}`;
      log?.(m.state === 'up' ? 'info' : 'warn', `pool '${pool.alias}': member '${m.alias}' ${m.uri.source} is ${what}`);
      audit({ event: 'pool_member_state', pool: pool.alias, member: m.alias, token: m.uri.source, state: m.state, reason: m.reason || undefined });
    },
    warn(pool, m, message) {
      log?.('warn', `pool '${pool.alias}': ${message}`);
    },
  };
}
