/**
 * CryptokiX sticky attributes (Caml Crush `sticky_attributes_patch`): once a
 * key holds one of these values it keeps it. Without this, a wrap-only key
 * could be turned into a wrap-then-decrypt key in two steps that each pass
 * the conflicting-attributes rule (clear CKA_WRAP, then set CKA_DECRYPT), and
 * a sensitive key could be made readable.
 */
import { isPromise } from '../../generated/pkcs11_rpc';
import type { CallName, MaybePromise } from '../../generated/pkcs11_rpc';
import { ck } from '../../pkcs11/constants';
import type { ActionContext, ActionDefinition, Hook, HookAnswer, HookCall } from '../hooks';
import type { AttributeValues } from '../object-attributes';
import { attr, objectView, objectsOf, recover, refusal, says, saysOtherThan, sessionOf, templateView, templatesOf, typesOf } from './attributes';
import type { BoolAttr, BoolView } from './attributes';

/** Values that cannot be left once held. */
const STICKY: readonly BoolAttr[] = [
  attr(ck.CKA_WRAP, true),
  attr(ck.CKA_UNWRAP, true),
  attr(ck.CKA_DECRYPT, true),
  attr(ck.CKA_ENCRYPT, true),
  attr(ck.CKA_SENSITIVE, true),
  attr(ck.CKA_EXTRACTABLE, false),
  attr(ck.CKA_ALWAYS_SENSITIVE, true),
  attr(ck.CKA_NEVER_EXTRACTABLE, true),
];

/** Added by do_segregate_usage. */
const SEGREGATION_STICKY: readonly BoolAttr[] = [
  attr(ck.CKA_SIGN, true),
  attr(ck.CKA_VERIFY, true),
  attr(ck.CKA_SIGN_RECOVER, true),
  attr(ck.CKA_VERIFY_RECOVER, true),
];

export function stickyValues(segregate: boolean): readonly BoolAttr[] {
  return segregate ? [...STICKY, ...SEGREGATION_STICKY] : STICKY;
}

/** True when `changes` would move an attribute away from a sticky value `current` holds. */
export function leavesSticky(sticky: readonly BoolAttr[], current: BoolView, changes: BoolView): boolean {
  for (const s of sticky) if (says(current, s) && saysOtherThan(changes, s)) return true;
  return false;
}

const TRIGGERS: ReadonlySet<CallName> = new Set<CallName>(['C_CopyObject', 'C_SetAttributeValue']);

/**
 * C_SetAttributeValue and C_CopyObject (the template of the copy against the
 * source object) may not leave a sticky value. The object's values are read
 * from the token now. Refusal: CKR_ATTRIBUTE_VALUE_INVALID, also when the
 * object cannot be read.
 */
export const stickyAttributesPatch: ActionDefinition = {
  triggers: TRIGGERS,
  compile(ctx: ActionContext): Hook {
    const sticky = stickyValues(ctx.segregateUsage);
    const types = typesOf(sticky);
    const typeSet = new Set(types);
    const invalid = ck.CKR_ATTRIBUTE_VALUE_INVALID;
    return (call: HookCall): MaybePromise<HookAnswer> => {
      const changes = templateView(templatesOf(call), typeSet);
      return recover(
        () => {
          const r = call.objects.read(call.conn, sessionOf(call), objectsOf(call)[0], types);
          const judge = (v: AttributeValues): HookAnswer => (leavesSticky(sticky, objectView(v, types), changes) ? refusal(call, invalid) : undefined);
          return isPromise(r) ? r.then(judge) : judge(r);
        },
        () => refusal(call, invalid),
      );
    };
  },
};
