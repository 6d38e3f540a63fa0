/**
 * pkcs11proxyd's rules beyond Caml Crush, compiled into the alias policies
 * of each profile as built-in hooks (run before filter_actions_pre, in the
 * order: functions, limits, mechanisms, objects, templates, hidden
 * attributes). A policy is compiled once per process and reload.
 */
import { PROCEDURES } from '../../generated/pkcs11_rpc';
import type { CallName } from '../../generated/pkcs11_rpc';
import type { BeyondRules, FilterConfig } from '../../config/filter-config';
import { loadFilterConfig, parseFilterConfig } from '../../config/filter-config';
import { V3_CALL_OF_TYPED } from '../../server/layers/object-fields';
import { compileFilter, INVALIDATING_CALLS } from '../policy';
import type { AliasPolicy, BoundFoundFilter, BoundHook, CompiledFilter } from '../policy';
import type { CompiledRules } from './common';
import { compileAllowedFunctions, compileAllowedMechanisms, compileDeniedObjects } from './lists';
import { compileLimits } from './limits';
import { compileHiddenAttributes, compileTemplateRules } from './templates';

export const DEFAULT_PROFILE = 'default';

/** Loads, validates and compiles a filter.conf: Caml Crush's options, then the profiles. Throws ConfigError. */
export function loadCompiledFilter(file: string): CompiledFilter {
  const cfg = loadFilterConfig(file);
  return compileProfiles(cfg, compileFilter(cfg));
}

/** As loadCompiledFilter, from text already read (a reload compiles the same bytes in every worker). */
export function compileFilterText(text: string, file: string): CompiledFilter {
  return compileFilterConfig(parseFilterConfig(text, file));
}

/** The policy of a parsed filter.conf (a reload also checks the parsed backends: serve.ts compileReload). */
export function compileFilterConfig(cfg: FilterConfig): CompiledFilter {
  return compileProfiles(cfg, compileFilter(cfg));
}

/** A profile's rules over the top level's (filter-schema.ts: a key it sets replaces, DENY lists add up, its template rules first). */
function mergeRules(top: BeyondRules, own: BeyondRules): BeyondRules {
  const pick = <K extends keyof BeyondRules>(key: K, file: string): BeyondRules[K] => (own.keys.has(file) ? own[key] : top[key]);
  return {
    shadow: own.shadow,
    keys: new Set([...top.keys, ...own.keys]),
    templateRules: [...own.templateRules, ...top.templateRules],
    hiddenAttributes: [...top.hiddenAttributes, ...own.hiddenAttributes],
    deniedLabels: [...top.deniedLabels, ...own.deniedLabels],
    deniedIds: [...top.deniedIds, ...own.deniedIds],
    allowedMechanisms: pick('allowedMechanisms', 'allowed_mechanisms'),
    allowedFunctions: pick('allowedFunctions', 'allowed_functions'),
    maxRandomLength: pick('maxRandomLength', 'max_random_length'),
    maxTemplateAttributes: pick('maxTemplateAttributes', 'max_template_attributes'),
    minRsaModulusBits: pick('minRsaModulusBits', 'min_rsa_modulus_bits'),
    allowedEcCurves: pick('allowedEcCurves', 'allowed_ec_curves'),
  };
}

function compileRules(r: BeyondRules, alias: string): CompiledRules {
  const out: CompiledRules = { hooks: [], found: [] };
  compileAllowedFunctions(r, alias, out);
  compileLimits(r, alias, out);
  compileAllowedMechanisms(r, alias, out);
  compileDeniedObjects(r, alias, out);
  compileTemplateRules(r, alias, out);
  compileHiddenAttributes(r, alias, out);
  return out;
}

/** `base` with the rules' hooks in front of its own pre hooks, `active` widened to the calls they look at. */
function extend(base: AliasPolicy, rules: CompiledRules, profile: string, shadow: boolean): AliasPolicy {
  const pre = new Map<CallName, BoundHook[]>();
  for (const h of rules.hooks) {
    for (const name of h.calls) {
      let l = pre.get(name);
      if (!l) pre.set(name, (l = []));
      l.push(Object.freeze({ hook: h.hook, action: h.key, where: h.where }));
    }
  }
  for (const [name, hooks] of base.pre) pre.set(name, [...(pre.get(name) ?? []), ...hooks]);
  const found: BoundFoundFilter[] = [...base.foundFilters, ...rules.found.map((f) => Object.freeze({ filter: f.filter, action: f.key, where: f.where }))];
  const active = new Set(base.active);
  const any = rules.hooks.length > 0 || rules.found.length > 0;
  for (const p of PROCEDURES) {
    const v3 = V3_CALL_OF_TYPED.get(p.name) ?? p.name;
    if (pre.has(v3) || (any && INVALIDATING_CALLS.has(v3)) || (found.length > 0 && v3 === 'C_FindObjects')) active.add(p.name);
  }
  const enforcing: AliasPolicy = Object.freeze({ ...base, pre, foundFilters: Object.freeze(found), active, passThrough: active.size === 0, profile });
  if (!shadow) return enforcing;
  // Shadow mode: the filter runs `enforcing` as a dry run, logs what it would refuse, and calls the module as asked.
  return Object.freeze({ ...enforcing, shadow: enforcing });
}

/**
 * The filter of `base` (Caml Crush's options, per alias) with the top-level
 * rules beyond them as the `default` profile, and one policy per alias for
 * each named profile.
 */
export function compileProfiles(cfg: FilterConfig, base: CompiledFilter): CompiledFilter {
  const profiles = new Map<string, ReadonlyMap<string, AliasPolicy>>();
  const blocks = [{ name: DEFAULT_PROFILE, rules: cfg.beyond }, ...cfg.profiles.map((p) => ({ name: p.name, rules: mergeRules(cfg.beyond, p.rules) }))];
  for (const { name, rules } of blocks) {
    const byAlias = new Map<string, AliasPolicy>();
    for (const [alias, policy] of base.byAlias) byAlias.set(alias, extend(policy, compileRules(rules, alias), name, rules.shadow));
    profiles.set(name, byAlias);
  }
  return Object.freeze({ ...base, byAlias: profiles.get(DEFAULT_PROFILE)!, profiles, profileMap: Object.freeze([...cfg.profileMap]), authz: cfg.authz, loginThrottle: cfg.loginThrottle });
}
