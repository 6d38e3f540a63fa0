/**
 * Allow-lists beside Caml Crush's block-lists (allowed_mechanisms,
 * allowed_functions) and deny patterns for labels and ids (denied_labels,
 * denied_ids).
 */
import { CALL_FIELDS, isPromise } from '../../generated/pkcs11_rpc';
import type { C_GetMechanismInfo_args, C_GetMechanismList_args, C_GetMechanismList_ret, CallName, px_attribute } from '../../generated/pkcs11_rpc';
import { PKCS11_FUNCTION_NAMES } from '../../config/filter-names';
import type { BeyondRules } from '../../config/filter-config';
import type { StrPattern } from '../../config/str-regex';
import { CKR_OK, ck } from '../../pkcs11/constants';
import { then } from '../../server/layers/generic';
import type { HookCall } from '../hooks';
import { anyMatch, callsWith, matching, refusal, ruleName } from './common';
import type { CompiledRules } from './common';

const CKA_LABEL = ck.CKA_LABEL;
const CKA_ID = ck.CKA_ID;
const LABEL_AND_ID: readonly number[] = [CKA_LABEL, CKA_ID];
/** Creation and relabelling calls: their templates may not give a denied label or id. */
const TEMPLATE_CALLS: readonly CallName[] = ['C_CreateObject', 'C_CopyObject', 'C_GenerateKey', 'C_GenerateKeyPair', 'C_UnwrapKey', 'C_DeriveKey', 'C_SetAttributeValue'];

export function compileAllowedMechanisms(r: BeyondRules, alias: string, out: CompiledRules): void {
  const rules = matching(r.allowedMechanisms, alias);
  if (rules.length === 0) return;
  const allowed = new Set(rules.flatMap((x) => x.value));
  const rule = ruleName('allowed_mechanisms', rules.map((x) => x.where).join(', '));
  out.hooks.push({
    calls: callsWith('mechanism'),
    key: 'allowed_mechanisms',
    where: rules[0].where,
    hook: (call: HookCall) => {
      for (const f of CALL_FIELDS[call.procedure].args.mechanism) {
        if (!allowed.has(f.get(call.args as never).mechanism)) return refusal(call, ck.CKR_MECHANISM_INVALID, rule);
      }
      return undefined;
    },
  });
  out.hooks.push({
    calls: ['C_GetMechanismInfo'],
    key: 'allowed_mechanisms',
    where: rules[0].where,
    hook: (call) => (allowed.has((call.args as C_GetMechanismInfo_args).type) ? undefined : refusal(call, ck.CKR_MECHANISM_INVALID, rule)),
  });
  // The list the client sees is filtered, so the count it is told is that of the filtered list.
  out.hooks.push({
    calls: ['C_GetMechanismList'],
    key: 'allowed_mechanisms',
    where: rules[0].where,
    hook: (call) => {
      const req = call.args as C_GetMechanismList_args;
      const keep = (m: number): boolean => allowed.has(m) && !call.policy.forbiddenMechanisms.has(m);
      return then(call.next.C_GetMechanismList(call.conn, { slotID: req.slotID, count: 0 }), (sized) => {
        if (sized.rv !== CKR_OK) return { ret: sized };
        return then(call.next.C_GetMechanismList(call.conn, { slotID: req.slotID, count: sized.count }), (full) => {
          if (full.rv !== CKR_OK) return { ret: full };
          const list = full.mechanismList.filter(keep);
          let ret: C_GetMechanismList_ret;
          if (req.count === 0) ret = { rv: CKR_OK, mechanismList: [], count: list.length };
          else if (req.count < list.length) ret = { rv: ck.CKR_BUFFER_TOO_SMALL, mechanismList: [], count: list.length };
          else ret = { rv: CKR_OK, mechanismList: list, count: list.length };
          return { ret };
        });
      });
    },
  });
}

export function compileAllowedFunctions(r: BeyondRules, alias: string, out: CompiledRules): void {
  const rules = matching(r.allowedFunctions, alias);
  if (rules.length === 0) return;
  const allowed = new Set<string>(rules.flatMap((x) => x.value));
  // C_LoadModule chooses the alias the policy belongs to: never refused here.
  const refused = PKCS11_FUNCTION_NAMES.filter((f) => f !== 'C_LoadModule' && !allowed.has(f)) as CallName[];
  const rule = ruleName('allowed_functions', rules.map((x) => x.where).join(', '));
  out.hooks.push({ calls: refused, key: 'allowed_functions', where: rules[0].where, hook: (call) => refusal(call, ck.CKR_FUNCTION_NOT_SUPPORTED, rule) });
}

export function compileDeniedObjects(r: BeyondRules, alias: string, out: CompiledRules): void {
  const labelRules = matching(r.deniedLabels, alias);
  const idRules = matching(r.deniedIds, alias);
  if (labelRules.length === 0 && idRules.length === 0) return;
  const labels = labelRules.flatMap((x) => x.value.map((p) => ({ p, where: x.where })));
  const ids = idRules.flatMap((x) => x.value.map((p) => ({ p, where: x.where })));
  /** The rule that denies an object with this label / id, or undefined. */
  const denies = (label: Buffer | null | undefined, id: Buffer | null | undefined): string | undefined => {
    const hit = (list: Array<{ p: StrPattern; where: string }>, s: string | undefined, key: string): string | undefined => {
      if (s === undefined) return undefined;
      const m = list.find((x) => anyMatch([x.p], s));
      return m ? ruleName(key, m.where) : undefined;
    };
    return hit(labels, label?.toString('utf8'), 'denied_labels') ?? hit(ids, id?.toString('hex'), 'denied_ids');
  };
  const where = (labelRules[0] ?? idRules[0]).where;
  out.hooks.push({
    calls: callsWith('object'),
    key: 'denied_labels/denied_ids',
    where,
    hook: (call) => {
      const f = CALL_FIELDS[call.procedure].args;
      const session = f.session.length > 0 ? f.session[0].get(call.args as never) : 0;
      const checks = f.object
        .map((field) => ({ field, handle: field.get(call.args as never) }))
        .filter((o) => !(o.handle === 0 && o.field.zeroAllowed));
      const step = (i: number): ReturnType<typeof refusal> | undefined | Promise<ReturnType<typeof refusal> | undefined> => {
        for (; i < checks.length; i++) {
          const { field, handle } = checks[i];
          const v = call.objects.cached(call.conn, session, handle, LABEL_AND_ID);
          const judge = (vals: ReadonlyMap<number, Buffer | null>): string | undefined => denies(vals.get(CKA_LABEL), vals.get(CKA_ID));
          if (isPromise(v)) {
            const k = i;
            return v.then((vals) => {
              const rule = judge(vals);
              return rule ? refusal(call, field.invalidRv, rule) : step(k + 1);
            });
          }
          const rule = judge(v);
          if (rule) return refusal(call, field.invalidRv, rule);
        }
        return undefined;
      };
      return step(0);
    },
  });
  out.hooks.push({
    calls: TEMPLATE_CALLS,
    key: 'denied_labels/denied_ids',
    where,
    hook: (call) => {
      for (const field of CALL_FIELDS[call.procedure].args.template) {
        const t = field.get(call.args as never) as px_attribute[];
        for (const a of t) {
          const rule = a.type === CKA_LABEL ? denies(a.value, undefined) : a.type === CKA_ID ? denies(undefined, a.value) : undefined;
          if (rule) return refusal(call, ck.CKR_ATTRIBUTE_VALUE_INVALID, rule);
        }
      }
      return undefined;
    },
  });
  out.found.push({
    key: 'denied_labels/denied_ids',
    where,
    filter: async (call, found) => {
      const session = (call.args as { session: number }).session;
      const kept: number[] = [];
      for (const h of found) {
        try {
          const v = await call.objects.cached(call.conn, session, h, LABEL_AND_ID);
          if (denies(v.get(CKA_LABEL), v.get(CKA_ID)) === undefined) kept.push(h);
        } catch {
          // An object whose label and id cannot be read is not shown (fail closed).
        }
      }
      return kept;
    },
  });
}
