/**
 * Argument limits: largest C_GenerateRandom, largest template, smallest RSA
 * modulus and allowed curves of generated key pairs. The strictest matching
 * rule of a numeric limit applies.
 */
import { attributeULong } from '../../pkcs11/arch';
import { CALL_FIELDS } from '../../generated/pkcs11_rpc';
import type { C_GenerateKeyPair_args, C_GenerateRandom_args, px_attribute } from '../../generated/pkcs11_rpc';
import type { AliasRule, BeyondRules } from '../../config/filter-config';
import { ck } from '../../pkcs11/constants';
import { callsWith, matching, refusal, ruleName, templateValue } from './common';
import type { CompiledRules } from './common';

const RSA_GEN: ReadonlySet<number> = new Set([ck.CKM_RSA_PKCS_KEY_PAIR_GEN, ck.CKM_RSA_X9_31_KEY_PAIR_GEN]);
const EC_GEN: ReadonlySet<number> = new Set([ck.CKM_EC_KEY_PAIR_GEN, ck.CKM_EC_EDWARDS_KEY_PAIR_GEN]);

function strictest(rules: Array<AliasRule<number>>, pick: (a: number, b: number) => boolean): AliasRule<number> | undefined {
  let best: AliasRule<number> | undefined;
  for (const r of rules) if (best === undefined || pick(r.value, best.value)) best = r;
  return best;
}

export function compileLimits(r: BeyondRules, alias: string, out: CompiledRules): void {
  const random = strictest(matching(r.maxRandomLength, alias), (a, b) => a < b);
  if (random) {
    const rule = ruleName('max_random_length', random.where);
    out.hooks.push({
      calls: ['C_GenerateRandom'],
      key: 'max_random_length',
      where: random.where,
      hook: (call) => ((call.args as C_GenerateRandom_args).length > random.value ? refusal(call, ck.CKR_ARGUMENTS_BAD, rule) : undefined),
    });
  }
  const size = strictest(matching(r.maxTemplateAttributes, alias), (a, b) => a < b);
  if (size) {
    const rule = ruleName('max_template_attributes', size.where);
    out.hooks.push({
      calls: callsWith('template'),
      key: 'max_template_attributes',
      where: size.where,
      hook: (call) => {
        for (const f of CALL_FIELDS[call.procedure].args.template) {
          if ((f.get(call.args as never) as px_attribute[]).length > size.value) return refusal(call, ck.CKR_ARGUMENTS_BAD, rule);
        }
        return undefined;
      },
    });
  }
  const rsa = strictest(matching(r.minRsaModulusBits, alias), (a, b) => a > b);
  if (rsa) {
    const rule = ruleName('min_rsa_modulus_bits', rsa.where);
    out.hooks.push({
      calls: ['C_GenerateKeyPair'],
      key: 'min_rsa_modulus_bits',
      where: rsa.where,
      hook: (call) => {
        const a = call.args as C_GenerateKeyPair_args;
        if (!RSA_GEN.has(a.mechanism.mechanism)) return undefined;
        const bits = attributeULong(templateValue(a.publicKeyTemplate, ck.CKA_MODULUS_BITS));
        return bits === undefined || bits < rsa.value ? refusal(call, ck.CKR_ATTRIBUTE_VALUE_INVALID, rule) : undefined;
      },
    });
  }
  const curveRules = matching(r.allowedEcCurves, alias);
  if (curveRules.length > 0) {
    const allowed = curveRules.flatMap((x) => x.value.map((c) => c.der));
    const rule = ruleName('allowed_ec_curves', curveRules.map((x) => x.where).join(', '));
    out.hooks.push({
      calls: ['C_GenerateKeyPair'],
      key: 'allowed_ec_curves',
      where: curveRules[0].where,
      hook: (call) => {
        const a = call.args as C_GenerateKeyPair_args;
        if (!EC_GEN.has(a.mechanism.mechanism)) return undefined;
        // Either template may carry the parameters; every one given must be allowed, and one must be given.
        const given = [templateValue(a.publicKeyTemplate, ck.CKA_EC_PARAMS), templateValue(a.privateKeyTemplate, ck.CKA_EC_PARAMS)].filter(
          (v): v is Buffer => v !== undefined,
        );
        const ok = given.length > 0 && given.every((v) => allowed.some((d) => d.equals(v)));
        return ok ? undefined : refusal(call, ck.CKR_ATTRIBUTE_VALUE_INVALID, rule);
      },
    });
  }
}
