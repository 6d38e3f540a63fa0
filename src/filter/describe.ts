/**
 * The effective compiled policy as text, for `pkcs11proxyd -check-filter`:
 * what the daemon enforces per module alias after Caml Crush's combination
 * rules (policy.ts), with the filter.conf position of every hook. Never
 * prints wrapping_format_key.
 */
import { ck } from '../pkcs11/constants';
import type { AliasPolicy, BoundHook, CompiledFilter } from './policy';
import { describeIdentityPattern } from './identity';

/** A configured module whose library cannot be loaded, with why. */
export interface ModuleProbe {
  readonly alias: string;
  readonly path: string;
  /** null: the library loads. */
  readonly error: string | null;
  /** module_isolation "helper": the module runs in helper processes. */
  readonly helper?: boolean;
}

let mechanismNames: Map<number, string> | undefined;

/** CKM_* name of a mechanism number (the first name in constant order for aliases), else its hex. */
export function mechanismName(m: number): string {
  if (!mechanismNames) {
    mechanismNames = new Map();
    for (const [name, value] of Object.entries(ck)) {
      if (name.startsWith('CKM_') && typeof value === 'number' && !mechanismNames.has(value)) mechanismNames.set(value, name);
    }
  }
  return mechanismNames.get(m) ?? `0x${m.toString(16)}`;
}

const list = (xs: readonly string[]): string => (xs.length ? xs.join(', ') : '(none)');

function hookLines(title: string, hooks: ReadonlyMap<string, readonly BoundHook[]>): string[] {
  if (hooks.size === 0) return [`  ${title}: (none)`];
  const out = [`  ${title}:`];
  for (const [call, bound] of hooks) {
    out.push(`    ${call}: ${bound.map((h) => `${h.action} (${h.where})`).join(', ')}`);
  }
  return out;
}

/** One alias's policy, indented under a heading line. */
export function describeAliasPolicy(p: AliasPolicy, heading: string): string[] {
  const out = [heading];
  if (p.passThrough) out.push('  pass-through: no rule applies, calls go straight to the module');
  if (p.shadow) out.push('  SHADOW MODE: refusals below are logged, not enforced');
  out.push(`  forbidden mechanisms: ${list([...p.forbiddenMechanisms].sort((a, b) => a - b).map(mechanismName))}`);
  out.push(`  forbidden functions: ${list([...p.forbiddenFunctions].sort())}`);
  out.push(`  allowed labels: ${p.allowedLabels === null ? 'any (not filtered)' : list(p.allowedLabels.map((l) => JSON.stringify(l.source)))}`);
  out.push(`  allowed ids: ${p.allowedIds === null ? 'any (not filtered)' : list(p.allowedIds.map((l) => JSON.stringify(l.source)))}`);
  out.push(`  enforce RO sessions: ${p.enforceRoSessions ? 'yes' : 'no'}`);
  out.push(`  forbid admin operations: ${p.forbidAdminOperations ? 'yes' : 'no'}`);
  out.push(`  padding oracles removed at: ${list([...p.paddingOracleOps])}`);
  out.push(...hookLines('pre hooks', p.pre));
  out.push(...hookLines('post hooks', p.post));
  out.push(`  found-object filters (C_FindObjects): ${list(p.foundFilters.map((f) => `${f.action} (${f.where})`))}`);
  return out;
}

/**
 * The whole report: modules (loadable or not), then the policy of each
 * alias, then each named profile's policies and the profile map.
 */
export function describeFilter(f: CompiledFilter, modules: readonly ModuleProbe[]): string[] {
  const out = [`filter ${f.file}: valid`, `debug = ${f.debug}`, 'modules:'];
  modules.forEach((m, i) => {
    const refusal = m.helper ? 'its calls answer CKR_DEVICE_ERROR (helper retried with backoff)' : 'C_LoadModule for it answers CKR_FUNCTION_FAILED';
    const state = m.error === null ? 'loads' : `CANNOT BE LOADED (${m.error}); ${refusal}`;
    out.push(`  ${m.alias}${i === 0 ? ' (default)' : ''} -> ${m.path}${m.helper ? ' (helper process)' : ''}: ${state}`);
  });
  for (const [alias, p] of f.byAlias) out.push(...describeAliasPolicy(p, `alias ${alias}:`));
  for (const [name, byAlias] of f.profiles ?? []) {
    if (byAlias === f.byAlias) continue;
    for (const [alias, p] of byAlias) out.push(...describeAliasPolicy(p, `profile ${name}, alias ${alias}:`));
  }
  if (f.profileMap?.length) {
    out.push('profile map (first match decides; none: default):');
    for (const e of f.profileMap) out.push(`  ${describeIdentityPattern(e.identity)} -> ${e.profile} (${e.where})`);
  }
  return out;
}
