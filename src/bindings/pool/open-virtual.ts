import type { Backend } from '../backend';
import type { Logger } from '../../server/log';
import { daemonPoolObserver } from './observer';
import { PoolBackend } from './pool-backend';
import type { VirtualAliasSpec } from './pool-spec';
import { SlotNatBackend } from './slot-nat-backend';

/**
 * Builds the pool and slot-NAT aliases out of the backends already opened,
 * in configuration order (pools first: a slot NAT may list a pool). A
 * virtual alias one of whose members could not be opened is not built and
 * is reported as unavailable (C_LoadModule answers CKR_FUNCTION_FAILED).
 */
export function openVirtualBackends(
  specs: readonly VirtualAliasSpec[],
  backends: Map<string, Backend>,
  log: Logger | null,
): Array<{ alias: string; reason: string }> {
  const unavailable: Array<{ alias: string; reason: string }> = [];
  const observer = daemonPoolObserver(log);
  const ordered = [...specs.filter((s) => s.kind === 'pool'), ...specs.filter((s) => s.kind === 'nat')];
  for (const spec of ordered) {
    const names = spec.kind === 'pool' ? spec.members.map((m) => m.alias) : spec.aliases;
    const missing = names.filter((a) => !backends.has(a));
    if (missing.length > 0) {
      unavailable.push({ alias: spec.name, reason: `member alias${missing.length > 1 ? 'es' : ''} ${missing.map((a) => `'${a}'`).join(', ')} could not be opened` });
      continue;
    }
    if (spec.kind === 'pool') {
      const pool = new PoolBackend(spec, backends, observer);
      observer.watch(pool);
      backends.set(spec.name, pool);
    } else {
      backends.set(spec.name, new SlotNatBackend(spec, backends, (msg) => log?.('warn', msg)).asBackend());
    }
  }
  return unavailable;
}
