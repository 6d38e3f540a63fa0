/**
 * template_rules (defaults, forced and refused values on creation
 * templates) and hidden_attributes (never revealed by C_GetAttributeValue).
 */
import { attributeULong } from '../../pkcs11/arch';
import { CALL_FIELDS, isPromise } from '../../generated/pkcs11_rpc';
import type { C_CopyObject_args, C_GetAttributeValue_args, C_GetAttributeValue_ret, CallName, px_attribute } from '../../generated/pkcs11_rpc';
import type { AttributeSelector, BeyondRules, TemplateRule } from '../../config/filter-config';
import { attributeShape, ATTR_SHAPE } from '../../generated/attribute-shapes';
import { CK_UNAVAILABLE_INFORMATION_WIRE, CKR_OK, ck } from '../../pkcs11/constants';
import { then } from '../../server/layers/generic';
import type { HookAnswer, HookCall } from '../hooks';
import { matching, refusal, ruleName, templateValue } from './common';
import type { CompiledRules } from './common';

const CKA_CLASS = ck.CKA_CLASS;
const CKA_KEY_TYPE = ck.CKA_KEY_TYPE;
const CLASS_AND_TYPE: readonly number[] = [CKA_CLASS, CKA_KEY_TYPE];
const EMPTY = Buffer.alloc(0);

/** Key type a generation mechanism makes, for templates that do not name it. */
const KEY_TYPE_OF_MECHANISM: ReadonlyMap<number, number> = new Map([
  [ck.CKM_AES_KEY_GEN, ck.CKK_AES],
  [ck.CKM_DES_KEY_GEN, ck.CKK_DES],
  [ck.CKM_DES2_KEY_GEN, ck.CKK_DES2],
  [ck.CKM_DES3_KEY_GEN, ck.CKK_DES3],
  [ck.CKM_GENERIC_SECRET_KEY_GEN, ck.CKK_GENERIC_SECRET],
  [ck.CKM_RSA_PKCS_KEY_PAIR_GEN, ck.CKK_RSA],
  [ck.CKM_RSA_X9_31_KEY_PAIR_GEN, ck.CKK_RSA],
  [ck.CKM_EC_KEY_PAIR_GEN, ck.CKK_EC],
  [ck.CKM_EC_EDWARDS_KEY_PAIR_GEN, ck.CKK_EC_EDWARDS],
  [ck.CKM_DSA_KEY_PAIR_GEN, ck.CKK_DSA],
  [ck.CKM_DH_PKCS_KEY_PAIR_GEN, ck.CKK_DH],
]);

/** Calls whose templates create objects, and the class of the object each template field makes when the template names none. */
const CREATION: ReadonlyMap<CallName, Readonly<Record<string, number | null>>> = new Map<CallName, Record<string, number | null>>([
  ['C_CreateObject', { template: null }],
  ['C_GenerateKey', { template: ck.CKO_SECRET_KEY }],
  ['C_GenerateKeyPair', { publicKeyTemplate: ck.CKO_PUBLIC_KEY, privateKeyTemplate: ck.CKO_PRIVATE_KEY }],
  // Unwrapped and derived objects are keys; without CKA_CLASS they are taken as secret keys (rules for secret keys apply).
  ['C_UnwrapKey', { template: ck.CKO_SECRET_KEY }],
  ['C_DeriveKey', { template: ck.CKO_SECRET_KEY }],
  ['C_CopyObject', { template: null }],
]);

function sameValue(attr: number, a: Buffer, b: Buffer): boolean {
  const shape = attributeShape(attr);
  if (shape === ATTR_SHAPE.BOOL) return (a.length > 0 && a[0] !== 0) === (b.length > 0 && b[0] !== 0);
  if (shape === ATTR_SHAPE.ULONG) return attributeULong(a) === attributeULong(b);
  return a.equals(b);
}

const applies = (r: { cls: number | null; keyType: number | null }, cls: number | undefined, keyType: number | undefined): boolean =>
  (r.cls === null || r.cls === cls) && (r.keyType === null || r.keyType === keyType);

/**
 * The template after the rules, or a refusal. Per attribute the first rule
 * that applies and holds decides (see filter-schema.ts template_rules).
 */
function applyRules(
  byAttribute: ReadonlyMap<number, readonly TemplateRule[]>,
  t: readonly px_attribute[],
  cls: number | undefined,
  keyType: number | undefined,
  copy: boolean,
): { template: px_attribute[] | null } | { refused: TemplateRule } {
  let out: px_attribute[] | null = null;
  for (const [attr, list] of byAttribute) {
    const given = templateValue(t, attr);
    // A copy keeps the source's values, which met the rules when it was made: only what the template changes is judged.
    if (copy && given === undefined) continue;
    for (const r of list) {
      if (!applies(r, cls, keyType)) continue;
      const equal = given !== undefined && sameValue(attr, given, r.value);
      if (r.op === 'allow' || r.op === 'refuse') {
        if (!equal) continue;
        if (r.op === 'refuse') return { refused: r };
        break;
      }
      if (r.op === 'default' && given !== undefined) continue;
      if (equal) break;
      out ??= [...t];
      out = out.filter((a) => a.type !== attr);
      out.push({ type: attr, value: r.value, valueLen: r.value.length });
      break;
    }
  }
  return { template: out };
}

export function compileTemplateRules(r: BeyondRules, alias: string, out: CompiledRules): void {
  const matched = matching(r.templateRules, alias);
  if (matched.length === 0) return;
  const rules = matched.flatMap((x) => x.value);
  const byAttribute = new Map<number, TemplateRule[]>();
  for (const rule of rules) {
    let l = byAttribute.get(rule.attribute);
    if (!l) byAttribute.set(rule.attribute, (l = []));
    l.push(rule);
  }
  const rewrite = (call: HookCall, source: { cls?: number; keyType?: number }): HookAnswer => {
    const f = CALL_FIELDS[call.procedure];
    const defaults = CREATION.get(call.name)!;
    const mech = f.args.mechanism.length > 0 ? f.args.mechanism[0].get(call.args as never).mechanism : undefined;
    let args: unknown = null;
    for (const field of f.args.template) {
      const t = field.get(call.args as never);
      const cls = attributeULong(templateValue(t, CKA_CLASS)) ?? source.cls ?? defaults[field.name] ?? undefined;
      const keyType = attributeULong(templateValue(t, CKA_KEY_TYPE)) ?? source.keyType ?? (mech !== undefined ? KEY_TYPE_OF_MECHANISM.get(mech) : undefined);
      const res = applyRules(byAttribute, t, cls, keyType, call.name === 'C_CopyObject');
      if ('refused' in res) return refusal(call, ck.CKR_ATTRIBUTE_VALUE_INVALID, ruleName('template_rules', res.refused.where));
      if (res.template !== null) {
        args ??= f.copyArgs(call.args as never);
        field.set(args as never, res.template);
      }
    }
    return args === null ? undefined : { args };
  };
  out.hooks.push({
    calls: ['C_CreateObject', 'C_GenerateKey', 'C_GenerateKeyPair', 'C_UnwrapKey', 'C_DeriveKey'],
    key: 'template_rules',
    where: matched[0].where,
    hook: (call) => rewrite(call, {}),
  });
  out.hooks.push({
    calls: ['C_CopyObject'],
    key: 'template_rules',
    where: matched[0].where,
    // The copy has the source's class and key type; read fresh (a modifying path).
    hook: (call) => {
      const a = call.args as C_CopyObject_args;
      return then(call.objects.read(call.conn, a.session, a.object, CLASS_AND_TYPE), (v) =>
        rewrite(call, { cls: attributeULong(v.get(CKA_CLASS)), keyType: attributeULong(v.get(CKA_KEY_TYPE)) }),
      );
    },
  });
}

export function compileHiddenAttributes(r: BeyondRules, alias: string, out: CompiledRules): void {
  const matched = matching(r.hiddenAttributes, alias);
  if (matched.length === 0) return;
  const selectors: AttributeSelector[] = matched.flatMap((x) => x.value);
  const candidates = new Set(selectors.map((s) => s.attribute));
  out.hooks.push({
    calls: ['C_GetAttributeValue'],
    key: 'hidden_attributes',
    where: matched[0].where,
    hook: (call) => {
      const a = call.args as C_GetAttributeValue_args;
      // Most reads name no hidden attribute: answered without reading the object's class.
      if (!a.template.some((t) => candidates.has(t.type))) return undefined;
      const v = call.objects.cached(call.conn, a.session, a.object, CLASS_AND_TYPE);
      const decide = (vals: ReadonlyMap<number, Buffer | null>): HookAnswer | Promise<HookAnswer> => {
        const cls = attributeULong(vals.get(CKA_CLASS));
        const keyType = attributeULong(vals.get(CKA_KEY_TYPE));
        const hiding = new Map<number, AttributeSelector>();
        for (const s of selectors) if (!hiding.has(s.attribute) && applies(s, cls, keyType)) hiding.set(s.attribute, s);
        const hidden = a.template.filter((t) => hiding.has(t.type));
        if (hidden.length === 0) return undefined;
        const rule = ruleName('hidden_attributes', hidden.map((t) => hiding.get(t.type)!.where).join(', '));
        const rest = a.template.filter((t) => !hiding.has(t.type));
        return then(call.next.C_GetAttributeValue(call.conn, { session: a.session, object: a.object, template: rest }), (ret: C_GetAttributeValue_ret) => {
          let i = 0;
          const template = a.template.map((t) => (hiding.has(t.type) ? { type: t.type, value: EMPTY, valueLen: CK_UNAVAILABLE_INFORMATION_WIRE } : ret.template[i++] ?? t));
          // A per-attribute answer of the module (too small, sensitive, invalid type) stands; otherwise ours.
          const rv = ret.rv === CKR_OK ? ck.CKR_ATTRIBUTE_SENSITIVE : ret.rv;
          return { ret: { rv, template }, rule } as HookAnswer;
        });
      };
      return isPromise(v) ? v.then(decide) : decide(v);
    },
  });
}
