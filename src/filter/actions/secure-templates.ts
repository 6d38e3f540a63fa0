/**
 * CryptokiX secure templates (Caml Crush `secure_templates_patch`, its
 * "patchset 2"): a key gets one controlled set of roles when it enters the
 * token and keeps it. Generated keys are wrap/unwrap keys or encrypt/decrypt
 * keys (with do_segregate_usage also sign/verify keys), always sensitive;
 * imported keys (created, unwrapped, derived, copied) may not wrap or
 * decrypt; a key's roles and CKA_SENSITIVE cannot change afterwards.
 */
import { isPromise } from '../../generated/pkcs11_rpc';
import type { CallName, MaybePromise } from '../../generated/pkcs11_rpc';
import { ck } from '../../pkcs11/constants';
import type { ActionContext, ActionDefinition, Hook, HookAnswer, HookCall } from '../hooks';
import type { AttributeValues } from '../object-attributes';
import { ulongOf } from '../object-attributes';
import {
  attr, isKeyClass, objectView, objectsOf, recover, refusal, saysOtherThan, sessionOf, templateUlong, templateView, templatesOf, typesOf,
} from './attributes';
import type { BoolAttr, BoolView } from './attributes';
import { leavesSticky } from './sticky-attributes';

const F = false;
const T = true;
const NO_SIGNATURE: readonly BoolAttr[] = [
  attr(ck.CKA_SIGN, F), attr(ck.CKA_SIGN_RECOVER, F), attr(ck.CKA_VERIFY, F), attr(ck.CKA_VERIFY_RECOVER, F),
];
const SENSITIVE = attr(ck.CKA_SENSITIVE, T);

/** Templates a generated key must agree with (one of them). */
function generationTemplates(segregate: boolean): readonly (readonly BoolAttr[])[] {
  const wrapping = [attr(ck.CKA_ENCRYPT, F), attr(ck.CKA_DECRYPT, F)];
  const encryption = [attr(ck.CKA_WRAP, F), attr(ck.CKA_UNWRAP, F)];
  if (!segregate) return [[...wrapping, SENSITIVE], [...encryption, SENSITIVE]];
  return [
    [...wrapping, ...NO_SIGNATURE, SENSITIVE],
    [...encryption, ...NO_SIGNATURE, SENSITIVE],
    [...encryption, attr(ck.CKA_ENCRYPT, F), attr(ck.CKA_DECRYPT, F), SENSITIVE],
  ];
}

/** Templates an imported key (created, unwrapped, derived, copied) must agree with (one of them). */
function importTemplates(segregate: boolean): readonly (readonly BoolAttr[])[] {
  const base = [attr(ck.CKA_WRAP, F), attr(ck.CKA_DECRYPT, F)];
  if (!segregate) return [[...base, SENSITIVE]];
  return [
    [...base, ...NO_SIGNATURE, SENSITIVE],
    [...base, attr(ck.CKA_ENCRYPT, F), SENSITIVE],
  ];
}

/** Attributes of a key that C_SetAttributeValue may not change (either way). */
function frozen(segregate: boolean): readonly BoolAttr[] {
  const types = [ck.CKA_WRAP, ck.CKA_UNWRAP, ck.CKA_DECRYPT, ck.CKA_ENCRYPT, ck.CKA_SENSITIVE];
  if (segregate) types.push(ck.CKA_SIGN, ck.CKA_VERIFY, ck.CKA_SIGN_RECOVER, ck.CKA_VERIFY_RECOVER);
  return types.flatMap((t) => [attr(t, T), attr(t, F)]);
}

/** A template agrees with a secure template when it names none of its attributes with another value (unnamed ones are free). */
function agreesWithOne(view: BoolView, secure: readonly (readonly BoolAttr[])[]): boolean {
  return secure.some((s) => s.every((a) => !saysOtherThan(view, a)));
}

const TRIGGERS: ReadonlySet<CallName> = new Set<CallName>([
  'C_SetAttributeValue', 'C_GenerateKey', 'C_GenerateKeyPair', 'C_CreateObject', 'C_CopyObject', 'C_UnwrapKey', 'C_DeriveKey',
]);

/**
 * Refusals (as Caml Crush): a template outside the secure set,
 * CKR_TEMPLATE_INCONSISTENT (C_CreateObject and C_CopyObject only for keys);
 * a change of a frozen attribute of a key, CKR_ATTRIBUTE_READ_ONLY; the class
 * of the object cannot be read, CKR_GENERAL_ERROR; its other attributes,
 * CKR_ATTRIBUTE_VALUE_INVALID. Objects are read from the token now.
 */
export const secureTemplatesPatch: ActionDefinition = {
  triggers: TRIGGERS,
  compile(ctx: ActionContext): Hook {
    const seg = ctx.segregateUsage;
    const generation = generationTemplates(seg);
    const imports = importTemplates(seg);
    const frozenAttrs = frozen(seg);
    const frozenTypes = typesOf(frozenAttrs);
    const templateTypes = new Set([...typesOf(generation.flat()), ...typesOf(imports.flat()), ...frozenTypes]);
    const inconsistent = ck.CKR_TEMPLATE_INCONSISTENT;

    /** Reads the object's class (error: CKR_GENERAL_ERROR) and, for a key, `types` too (error: CKR_ATTRIBUTE_VALUE_INVALID). */
    const readKey = (call: HookCall, types: readonly number[], judge: (v: AttributeValues | null) => HookAnswer): MaybePromise<HookAnswer> => {
      const session = sessionOf(call);
      const object = objectsOf(call)[0];
      return recover(
        () => {
          const r = call.objects.read(call.conn, session, object, [ck.CKA_CLASS]);
          const byClass = (c: AttributeValues): MaybePromise<HookAnswer> => {
            if (!isKeyClass(ulongOf(c, ck.CKA_CLASS))) return judge(null);
            if (types.length === 0) return judge(c);
            return recover(
              () => {
                const v = call.objects.read(call.conn, session, object, types);
                return isPromise(v) ? v.then(judge) : judge(v);
              },
              () => refusal(call, ck.CKR_ATTRIBUTE_VALUE_INVALID),
            );
          };
          return isPromise(r) ? r.then(byClass) : byClass(r);
        },
        () => refusal(call, ck.CKR_GENERAL_ERROR),
      );
    };

    return (call: HookCall): MaybePromise<HookAnswer> => {
      const templates = templatesOf(call);
      const view = templateView(templates, templateTypes);
      switch (call.name) {
        case 'C_SetAttributeValue':
          return readKey(call, frozenTypes, (v) =>
            v !== null && leavesSticky(frozenAttrs, objectView(v, frozenTypes), view) ? refusal(call, ck.CKR_ATTRIBUTE_READ_ONLY) : undefined,
          );
        case 'C_GenerateKey':
        case 'C_GenerateKeyPair':
          return agreesWithOne(view, generation) ? undefined : refusal(call, inconsistent);
        default: {
          if (agreesWithOne(view, imports)) return undefined;
          if (call.name === 'C_CreateObject') {
            const cls = templateUlong(templates[0], ck.CKA_CLASS);
            // A malformed class may still make a key: refuse it as one.
            return cls === undefined || (!Number.isNaN(cls) && !isKeyClass(cls)) ? undefined : refusal(call, inconsistent);
          }
          if (call.name === 'C_CopyObject') return readKey(call, [], (v) => (v === null ? undefined : refusal(call, inconsistent)));
          return refusal(call, inconsistent);
        }
      }
    };
  },
};
