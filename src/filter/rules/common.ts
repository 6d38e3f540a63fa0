import { CALL_FIELDS, PROCEDURES } from '../../generated/pkcs11_rpc';
import type { CallName, px_attribute } from '../../generated/pkcs11_rpc';
import type { AliasRule } from '../../config/filter-config';
import type { StrPattern } from '../../config/str-regex';
import type { FoundFilter, Hook, HookAnswer, HookCall } from '../hooks';

const ERROR_RET = new Map(PROCEDURES.map((p) => [p.name, p.errorRet]));

/**
 * A refusal by a pkcs11proxyd rule: the call's error result, and the rule
 * (`key (file:line:col)`) the filter layer logs for it.
 */
export function refusal(call: HookCall, rv: number, rule: string): HookAnswer {
  const f = ERROR_RET.get(call.name);
  return { ret: f ? f(rv) : rv, rule } as HookAnswer;
}

/** One compiled rule: the hook, the calls it is attached to, its key and position. */
export interface RuleHook {
  readonly calls: readonly CallName[];
  readonly hook: Hook;
  readonly key: string;
  readonly where: string;
}

export interface RuleFoundFilter {
  readonly filter: FoundFilter;
  readonly key: string;
  readonly where: string;
}

export interface CompiledRules {
  readonly hooks: RuleHook[];
  readonly found: RuleFoundFilter[];
}

/** The rules of `rules` whose alias pattern matches `alias`. */
export function matching<T>(rules: ReadonlyArray<AliasRule<T>>, alias: string): Array<AliasRule<T>> {
  return rules.filter((r) => r.alias.regex.test(alias));
}

/** Version 3 call names with a field of this role. */
export function callsWith(role: 'mechanism' | 'object' | 'template'): CallName[] {
  return PROCEDURES.map((p) => p.name).filter((n) => !n.startsWith('px_') && CALL_FIELDS[n].args[role].length > 0);
}

/** The first value of attribute `type` in a template, undefined when absent. */
export function templateValue(t: readonly px_attribute[], type: number): Buffer | undefined {
  for (const a of t) if (a.type === type) return a.value;
  return undefined;
}

export function anyMatch(patterns: readonly StrPattern[], s: string): StrPattern | undefined {
  return patterns.find((p) => p.regex.test(s));
}

/** `key (file:line:col)` for logs. */
export function ruleName(key: string, where: string): string {
  return `${key} (${where})`;
}
