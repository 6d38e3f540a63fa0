/**
 * Caml Crush `sanitize_creation_templates_patch`: a key's creation template
 * gets safe values for the attributes it leaves out, instead of the token's
 * defaults (which on many tokens give a key every role and leave it
 * readable).
 */
import type { CallName, MaybePromise, px_attribute } from '../../generated/pkcs11_rpc';
import { ck } from '../../pkcs11/constants';
import type { ActionDefinition, Hook, HookAnswer, HookCall } from '../hooks';
import { attr, refusal, templateUlong, templatesOf, withTemplates } from './attributes';
import type { BoolAttr } from './attributes';

const F = false;
const T = true;

/** Values added, by object class, when the template does not name the type (wrapping_format_patch adds them to unwrap templates too). */
export const SANITIZED_DEFAULTS: ReadonlyMap<number, readonly BoolAttr[]> = new Map([
  [ck.CKO_SECRET_KEY, [
    attr(ck.CKA_WRAP, F), attr(ck.CKA_UNWRAP, F), attr(ck.CKA_ENCRYPT, F), attr(ck.CKA_DECRYPT, F), attr(ck.CKA_SIGN, F),
    attr(ck.CKA_VERIFY, F), attr(ck.CKA_SENSITIVE, T), attr(ck.CKA_EXTRACTABLE, F), attr(ck.CKA_DERIVE, F), attr(ck.CKA_PRIVATE, T),
  ]],
  [ck.CKO_PRIVATE_KEY, [
    attr(ck.CKA_UNWRAP, F), attr(ck.CKA_DECRYPT, F), attr(ck.CKA_SIGN, F), attr(ck.CKA_SIGN_RECOVER, F), attr(ck.CKA_SENSITIVE, T),
    attr(ck.CKA_EXTRACTABLE, F), attr(ck.CKA_DERIVE, F), attr(ck.CKA_PRIVATE, T),
  ]],
  [ck.CKO_PUBLIC_KEY, [
    attr(ck.CKA_WRAP, F), attr(ck.CKA_ENCRYPT, F), attr(ck.CKA_VERIFY, F), attr(ck.CKA_VERIFY_RECOVER, F), attr(ck.CKA_DERIVE, F),
  ]],
]);

const BOOL_VALUE = [Buffer.from([0]), Buffer.from([1])];

/** `template` with the defaults of `cls` it does not name appended; the same array when nothing is added or `cls` is not a key. */
function sanitized(template: readonly px_attribute[], cls: number): readonly px_attribute[] {
  const defaults = SANITIZED_DEFAULTS.get(cls);
  if (defaults === undefined) return template;
  const named = new Set(template.map((a) => a.type));
  const added = defaults.filter((d) => !named.has(d.type));
  if (added.length === 0) return template;
  return [...template, ...added.map((d) => ({ type: d.type, value: BOOL_VALUE[d.value ? 1 : 0], valueLen: 1 }))];
}

const TRIGGERS: ReadonlySet<CallName> = new Set<CallName>([
  'C_CreateObject', 'C_CopyObject', 'C_GenerateKey', 'C_GenerateKeyPair', 'C_DeriveKey', 'C_UnwrapKey',
]);

/**
 * C_GenerateKey: secret key defaults; C_GenerateKeyPair: public and private
 * key defaults; C_CreateObject, C_UnwrapKey, C_DeriveKey: the defaults of the
 * template's CKA_CLASS, and a template without one is refused with
 * CKR_TEMPLATE_INCOMPLETE. C_CopyObject is accepted and left alone (as Caml
 * Crush does): a copy takes the source object's values, not defaults. The
 * call goes on with the new template through the later hooks and rules
 * (Caml Crush calls the module from the hook, skipping them).
 */
export const sanitizeCreationTemplatesPatch: ActionDefinition = {
  triggers: TRIGGERS,
  compile(): Hook {
    return (call: HookCall): MaybePromise<HookAnswer> => {
      const templates = templatesOf(call);
      let out: readonly (readonly px_attribute[])[];
      switch (call.name) {
        case 'C_CopyObject':
          return undefined;
        case 'C_GenerateKey':
          out = [sanitized(templates[0], ck.CKO_SECRET_KEY)];
          break;
        case 'C_GenerateKeyPair':
          out = [sanitized(templates[0], ck.CKO_PUBLIC_KEY), sanitized(templates[1], ck.CKO_PRIVATE_KEY)];
          break;
        default: {
          const cls = templateUlong(templates[0], ck.CKA_CLASS);
          if (cls === undefined || Number.isNaN(cls)) return refusal(call, ck.CKR_TEMPLATE_INCOMPLETE);
          out = [sanitized(templates[0], cls)];
        }
      }
      return out.every((t, i) => t === templates[i]) ? undefined : { args: withTemplates(call, out as px_attribute[][]) };
    };
  },
};
