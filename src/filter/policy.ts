/**
 * filter.conf compiled into one immutable policy per module alias. Built
 * once per process (and again on reload); a call reads its application's
 * bound policy, never searches the configuration.
 *
 * Combination rules (Caml Crush's, see filter-schema.ts): DENY lists
 * (forbidden_mechanisms, forbidden_functions, remove_padding_oracles) add up
 * over every rule whose alias pattern matches; ALLOW lists (allowed_labels,
 * allowed_ids) are the union of the patterns of the matching rules, and an
 * alias no rule matches is not filtered; yes/no keys take the first matching
 * rule; hooks run in declaration order, pre before the static checks, post
 * after them, and the first hook that answers wins.
 */
import { CALL_FIELDS, PROCEDURES } from '../generated/pkcs11_rpc';
import type { CallName } from '../generated/pkcs11_rpc';
import { V3_CALL_OF_TYPED } from '../server/layers/object-fields';
import { invalidAt } from '../config/validate';
import type { FilterConfig, ProfileMapEntry } from '../config/filter-config';
import type { StrPattern } from '../config/str-regex';
import type { PaddingOperation } from '../config/filter-names';
import type { FoundFilter, Hook } from './hooks';
import { ACTIONS } from './actions';

/** The operation kinds of remove_padding_oracles, `all` expanded. */
export type PaddingKind = Exclude<PaddingOperation, 'all'>;

export interface BoundHook {
  readonly hook: Hook;
  /** Action name and `file:line:col`, for refusal logs. */
  readonly action: string;
  readonly where: string;
}

export interface BoundFoundFilter {
  readonly filter: FoundFilter;
  readonly action: string;
  readonly where: string;
}

/** Everything the filter enforces for one module alias. Frozen. */
export interface AliasPolicy {
  readonly alias: string;
  /** Mechanisms hidden from lists and refused with CKR_MECHANISM_INVALID. */
  readonly forbiddenMechanisms: ReadonlySet<number>;
  /** Version 3 call names answered CKR_FUNCTION_NOT_SUPPORTED. */
  readonly forbiddenFunctions: ReadonlySet<CallName>;
  /** CKA_LABEL patterns (full match); null: labels are not filtered. */
  readonly allowedLabels: readonly StrPattern[] | null;
  /** Patterns over the lowercase hex of CKA_ID (full match); null: ids are not filtered. */
  readonly allowedIds: readonly StrPattern[] | null;
  readonly enforceRoSessions: boolean;
  readonly forbidAdminOperations: boolean;
  /** Operations for which padding-oracle mechanisms are refused. */
  readonly paddingOracleOps: ReadonlySet<PaddingKind>;
  /** Hooks by version 3 call name, in declaration order. */
  readonly pre: ReadonlyMap<CallName, readonly BoundHook[]>;
  readonly post: ReadonlyMap<CallName, readonly BoundHook[]>;
  /** Filters of C_FindObjects answers (actions attached to C_FindObjects), in declaration order. */
  readonly foundFilters: readonly BoundFoundFilter[];
  /** Procedure names (typed ones included) some rule or hook looks at; the others pass straight through. */
  readonly active: ReadonlySet<CallName>;
  /** True when no rule applies: the layer passes calls through without looking at them. */
  readonly passThrough: boolean;
  /** Profile this policy belongs to (rules/index.ts); absent: `default`. */
  readonly profile?: string;
  /** Shadow mode: the same policy enforcing, run as a dry run; refusals are logged, the call goes down as asked. */
  readonly shadow?: AliasPolicy;
}

/** The compiled filter of one process. */
export interface CompiledFilter {
  /** Changes on every reload; an application bound to another generation rebinds. */
  readonly generation: number;
  readonly file: string;
  /** filter.conf `debug`: refusals are logged at 1 and up. */
  readonly debug: number;
  /** Policies of the `default` profile (the top-level rules). */
  readonly byAlias: ReadonlyMap<string, AliasPolicy>;
  /** Policies per profile name, `default` included (rules/index.ts); absent: only byAlias. */
  readonly profiles?: ReadonlyMap<string, ReadonlyMap<string, AliasPolicy>>;
  /** filter.conf profile_map: client identity -> profile name, first match wins. */
  readonly profileMap?: readonly ProfileMapEntry[];
}

let generations = 0;

const ALL_PADDING: readonly PaddingKind[] = ['wrap', 'unwrap', 'encrypt', 'sign'];

/**
 * Compiles a loaded filter.conf. Throws ConfigInvalidError (file:line:col)
 * for an action that is not implemented or cannot apply to its trigger:
 * a policy is enforced whole or the daemon does not start.
 */
export function compileFilter(cfg: FilterConfig): CompiledFilter {
  const byAlias = new Map<string, AliasPolicy>();
  const pos = (pointer: string): string => {
    const p = cfg.sourceMap.get(pointer)?.value;
    return p ? `${cfg.file}:${p.line}:${p.column}` : cfg.file;
  };
  for (const { alias } of cfg.modules) {
    const matches = <T extends { alias: StrPattern }>(rules: readonly T[]): T[] => rules.filter((r) => r.alias.regex.test(alias));
    const mechanisms = new Set<number>();
    for (const r of matches(cfg.forbiddenMechanisms)) for (const m of r.mechanisms) mechanisms.add(m);
    const functions = new Set<CallName>();
    for (const r of matches(cfg.forbiddenFunctions)) for (const f of r.functions) functions.add(f as CallName);
    const labelRules = matches(cfg.allowedLabels);
    const idRules = matches(cfg.allowedIds);
    const padding = new Set<PaddingKind>();
    for (const r of matches(cfg.removePaddingOracles)) {
      for (const op of r.operations) for (const k of op === 'all' ? ALL_PADDING : [op]) padding.add(k);
    }
    const firstSays = (rules: ReadonlyArray<{ alias: StrPattern; v: boolean }>): boolean => rules.find((r) => r.alias.regex.test(alias))?.v ?? false;

    const segregateUsage = [...cfg.filterActionsPre, ...cfg.filterActionsPost].some(
      (r) => r.alias.regex.test(alias) && r.actions.some((a) => a.action === 'do_segregate_usage'),
    );
    const found: BoundFoundFilter[] = [];
    const hooks = (key: 'filter_actions_pre' | 'filter_actions_post', rules: FilterConfig['filterActionsPre']): Map<CallName, BoundHook[]> => {
      const out = new Map<CallName, BoundHook[]>();
      rules.forEach((rule, i) => {
        if (!rule.alias.regex.test(alias)) return;
        rule.actions.forEach((a, j) => {
          const pointer = `/${key}/${i}/1/${j}/1`;
          const def = ACTIONS[a.action];
          const trigger = a.function as CallName;
          const refuse = (rule: string): never => {
            throw invalidAt(cfg.file, cfg.data, cfg.sourceMap, pointer, rule);
          };
          if (def === undefined) refuse(`action '${a.action}' is not enforced yet`);
          if (def!.triggers && !def!.triggers.has(trigger)) {
            refuse(`action '${a.action}' has no meaning for ${trigger} (it applies to ${[...def!.triggers].join(', ')})`);
          }
          const where = pos(pointer);
          const ctx = { action: a.action, trigger, wrappingFormatKey: cfg.wrappingFormatKey, segregateUsage, where };
          if (trigger === 'C_FindObjects' && def!.compileFoundFilter) {
            found.push(Object.freeze({ filter: def!.compileFoundFilter(ctx), action: a.action, where }));
            return;
          }
          const hook = def!.compile(ctx);
          let list = out.get(trigger);
          if (!list) out.set(trigger, (list = []));
          list.push(Object.freeze({ hook, action: a.action, where }));
        });
      });
      return out;
    };
    const pre = hooks('filter_actions_pre', cfg.filterActionsPre);
    const post = hooks('filter_actions_post', cfg.filterActionsPost);
    const base = {
      alias,
      forbiddenMechanisms: mechanisms,
      forbiddenFunctions: functions,
      allowedLabels: labelRules.length ? Object.freeze(labelRules.flatMap((r) => r.labels)) : null,
      allowedIds: idRules.length ? Object.freeze(idRules.flatMap((r) => r.ids)) : null,
      enforceRoSessions: firstSays(cfg.enforceRoSessions.map((r) => ({ alias: r.alias, v: r.enforce }))),
      forbidAdminOperations: firstSays(cfg.forbidAdminOperations.map((r) => ({ alias: r.alias, v: r.forbid }))),
      paddingOracleOps: padding,
      pre,
      post,
      foundFilters: Object.freeze(found),
    };
    const active = activeCalls(base);
    byAlias.set(alias, Object.freeze({ ...base, active, passThrough: active.size === 0 }));
  }
  return Object.freeze({ generation: ++generations, file: cfg.file, debug: cfg.debug, byAlias });
}

/** Calls that change what the filter may have cached about objects: they always pass through the filter when it is active. */
export const INVALIDATING_CALLS: ReadonlySet<CallName> = new Set<CallName>([
  'C_SetAttributeValue', 'C_CopyObject', 'C_DestroyObject', 'C_CloseSession', 'C_CloseAllSessions', 'C_Logout', 'C_Login', 'C_Finalize',
]);

/** Calls refused by forbid_admin_operations (Caml Crush: SO and context-specific logins). */
const ADMIN_CALLS: ReadonlySet<CallName> = new Set<CallName>(['C_Login']);

/** Calls whose templates create or relabel objects: checked against allowed_labels / allowed_ids. */
export const TEMPLATE_CALLS: ReadonlySet<CallName> = new Set<CallName>([
  'C_CreateObject', 'C_CopyObject', 'C_GenerateKey', 'C_GenerateKeyPair', 'C_UnwrapKey', 'C_DeriveKey', 'C_SetAttributeValue',
]);

function activeCalls(p: Omit<AliasPolicy, 'active' | 'passThrough'>): ReadonlySet<CallName> {
  const out = new Set<CallName>();
  const objects = p.allowedLabels !== null || p.allowedIds !== null;
  const mechanisms = p.forbiddenMechanisms.size > 0 || p.paddingOracleOps.size > 0;
  const anyHook = p.pre.size > 0 || p.post.size > 0 || p.foundFilters.length > 0;
  for (const proc of PROCEDURES) {
    const name = proc.name;
    const v3 = V3_CALL_OF_TYPED.get(name) ?? name;
    const f = CALL_FIELDS[name];
    if (
      p.pre.has(v3) || p.post.has(v3) || p.forbiddenFunctions.has(v3) ||
      (mechanisms && (f.args.mechanism.length > 0 || v3 === 'C_GetMechanismList' || v3 === 'C_GetMechanismInfo')) ||
      (objects && (f.args.object.length > 0 || TEMPLATE_CALLS.has(v3) || v3 === 'C_FindObjects')) ||
      (p.foundFilters.length > 0 && v3 === 'C_FindObjects') ||
      (p.enforceRoSessions && v3 === 'C_OpenSession') ||
      (p.forbidAdminOperations && ADMIN_CALLS.has(v3)) ||
      ((anyHook || objects) && INVALIDATING_CALLS.has(v3))
    ) {
      out.add(name);
    }
  }
  return out;
}

/** The policy of a configuration with no filter file: every alias passes through. */
export function passThroughFilter(aliases: Iterable<string>): CompiledFilter {
  const byAlias = new Map<string, AliasPolicy>();
  for (const alias of aliases) {
    byAlias.set(alias, Object.freeze({
      alias, forbiddenMechanisms: new Set<number>(), forbiddenFunctions: new Set<CallName>(), allowedLabels: null, allowedIds: null,
      enforceRoSessions: false, forbidAdminOperations: false, paddingOracleOps: new Set<PaddingKind>(),
      pre: new Map(), post: new Map(), foundFilters: [], active: new Set<CallName>(), passThrough: true,
    }));
  }
  return Object.freeze({ generation: ++generations, file: '', debug: 0, byAlias });
}
