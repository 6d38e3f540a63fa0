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
import type { AuthzTable, LoginThrottle } from './authz';
import { CALL_FIELDS, PROCEDURES } from '../generated/pkcs11_rpc';
import type { CallName } from '../generated/pkcs11_rpc';
import { V3_CALL_OF_TYPED } from '../server/layers/object-fields';
import { invalidAt } from '../config/validate';
import type { FilterConfig, ProfileMapEntry } from '../config/filter-config';
import { compileStrPattern } from '../config/str-regex';
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

/**
 * Where each static rule of a policy is written, as `key (file:line:col)`,
 * for refusal logs: the first rule (in file order) that forbids a mechanism
 * or function or removes a padding kind, the rules of the label and id
 * lists, the rule that decided a yes/no key.
 */
export interface RulePositions {
  readonly mechanisms: ReadonlyMap<number, string>;
  readonly functions: ReadonlyMap<CallName, string>;
  readonly padding: ReadonlyMap<PaddingKind, string>;
  readonly labels: string;
  readonly ids: string;
  readonly roSessions: string;
  readonly admin: string;
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
  /** Where the static rules above are written (refusal logs). */
  readonly ruleAt: RulePositions;
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
  /** filter.conf `debug`: refusals are logged at 1 and up, checks passed at 2, the compiled policy at start at 3. */
  readonly debug: number;
  /**
   * Prefix of the filter's log lines: filter.conf `log_subchannel`, `filter`
   * without it. pkcs11proxyd has one logger; Caml Crush's Netplex subchannel
   * (a separate log output) becomes this tag on the same output.
   */
  readonly logTag: string;
  /** Policies of the `default` profile (the top-level rules). */
  readonly byAlias: ReadonlyMap<string, AliasPolicy>;
  /** Policies per profile name, `default` included (rules/index.ts); absent: only byAlias. */
  readonly profiles?: ReadonlyMap<string, ReadonlyMap<string, AliasPolicy>>;
  /** filter.conf profile_map: client identity -> profile name, first match wins. */
  readonly profileMap?: readonly ProfileMapEntry[];
  /** filter.conf authorization (src/filter/authz.ts); absent or null: everyone may load every alias. */
  readonly authz?: AuthzTable | null;
  /** filter.conf login_throttle; absent or null: no throttling. */
  readonly loginThrottle?: LoginThrottle | null;
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
  for (const alias of cfg.aliases) {
    /** The rules whose alias pattern matches, with their index in the file's list. */
    const matches = <T extends { alias: StrPattern }>(rules: readonly T[]): Array<[T, number]> =>
      rules.flatMap((r, i): Array<[T, number]> => (r.alias.regex.test(alias) ? [[r, i]] : []));
    const at = (key: string, pointer: string): string => `${key} (${pos(pointer)})`;
    const mechanismAt = new Map<number, string>();
    for (const [r, i] of matches(cfg.forbiddenMechanisms)) {
      r.mechanisms.forEach((m, k) => {
        if (!mechanismAt.has(m)) mechanismAt.set(m, at('forbidden_mechanisms', `/forbidden_mechanisms/${i}/1/${k}`));
      });
    }
    const functionAt = new Map<CallName, string>();
    for (const [r, i] of matches(cfg.forbiddenFunctions)) {
      r.functions.forEach((f, k) => {
        if (!functionAt.has(f as CallName)) functionAt.set(f as CallName, at('forbidden_functions', `/forbidden_functions/${i}/1/${k}`));
      });
    }
    const labelRules = matches(cfg.allowedLabels);
    const idRules = matches(cfg.allowedIds);
    const paddingAt = new Map<PaddingKind, string>();
    for (const [r, i] of matches(cfg.removePaddingOracles)) {
      r.operations.forEach((op, k) => {
        for (const kind of op === 'all' ? ALL_PADDING : [op]) {
          if (!paddingAt.has(kind)) paddingAt.set(kind, at('remove_padding_oracles', `/remove_padding_oracles/${i}/1/${k}`));
        }
      });
    }
    /** yes/no keys: the first rule whose alias pattern matches decides (Caml Crush's get_associated_list); none: no. */
    const firstSays = (key: string, rules: ReadonlyArray<{ alias: StrPattern; v: boolean }>): { v: boolean; at: string } => {
      const i = rules.findIndex((r) => r.alias.regex.test(alias));
      return i < 0 ? { v: false, at: '' } : { v: rules[i].v, at: at(key, `/${key}/${i}`) };
    };
    const ro = firstSays('enforce_ro_sessions', cfg.enforceRoSessions.map((r) => ({ alias: r.alias, v: r.enforce })));
    const admin = firstSays('forbid_admin_operations', cfg.forbidAdminOperations.map((r) => ({ alias: r.alias, v: r.forbid })));
    const listAt = (key: string, rules: ReadonlyArray<[unknown, number]>): string =>
      rules.length === 0 ? '' : `${key} (${rules.map(([, i]) => pos(`/${key}/${i}`)).join(', ')})`;

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
      forbiddenMechanisms: new Set(mechanismAt.keys()),
      forbiddenFunctions: new Set(functionAt.keys()),
      allowedLabels: labelRules.length ? Object.freeze(labelRules.flatMap(([r]) => r.labels.map(bytewise))) : null,
      allowedIds: idRules.length ? Object.freeze(idRules.flatMap(([r]) => r.ids)) : null,
      enforceRoSessions: ro.v,
      forbidAdminOperations: admin.v,
      paddingOracleOps: new Set(paddingAt.keys()),
      ruleAt: Object.freeze({
        mechanisms: mechanismAt, functions: functionAt, padding: paddingAt,
        labels: listAt('allowed_labels', labelRules), ids: listAt('allowed_ids', idRules), roSessions: ro.at, admin: admin.at,
      }),
      pre,
      post,
      foundFilters: Object.freeze(found),
    };
    const active = activeCalls(base);
    byAlias.set(alias, Object.freeze({ ...base, active, passThrough: active.size === 0 }));
  }
  return Object.freeze({ generation: ++generations, file: cfg.file, debug: cfg.debug, logTag: cfg.logSubchannel ?? 'filter', byAlias });
}

/**
 * A label pattern that matches the label's bytes as Caml Crush's Str does
 * (one byte per character): the label is tested in latin1, so the pattern's
 * own non-ASCII characters become their UTF-8 bytes.
 */
function bytewise(p: StrPattern): StrPattern {
  if (/^[\x00-\x7f]*$/.test(p.source)) return p;
  return { source: p.source, regex: compileStrPattern(Buffer.from(p.source, 'utf8').toString('latin1')).regex };
}

/** Calls that change what the filter may have cached about objects: they always pass through the filter when it is active. */
export const INVALIDATING_CALLS: ReadonlySet<CallName> = new Set<CallName>([
  'C_SetAttributeValue', 'C_CopyObject', 'C_DestroyObject', 'C_CloseSession', 'C_CloseAllSessions', 'C_Logout', 'C_Login', 'C_Finalize',
]);

/**
 * Calls refused by forbid_admin_operations. Caml Crush looks only at C_Login
 * (CKU_SO and CKU_CONTEXT_SPECIFIC answered CKR_USER_TYPE_INVALID). Its
 * documented purpose is a barrier against SO PIN guessing and SO tasks, but
 * C_InitToken takes the SO PIN without a C_Login and erases the token: Caml
 * Crush lets it through, we refuse it (CKR_FUNCTION_NOT_SUPPORTED). C_InitPIN
 * needs an SO session, refused at its C_Login; C_SetPIN outside an SO
 * session changes the user's own PIN and passes, as in Caml Crush.
 */
export const ADMIN_CALLS: ReadonlySet<CallName> = new Set<CallName>(['C_Login', 'C_InitToken']);

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
      ruleAt: { mechanisms: new Map(), functions: new Map(), padding: new Map(), labels: '', ids: '', roSessions: '', admin: '' },
      pre: new Map(), post: new Map(), foundFilters: [], active: new Set<CallName>(), passThrough: true,
    }));
  }
  return Object.freeze({ generation: ++generations, file: '', debug: 0, logTag: 'filter', byAlias });
}
