/**
 * CryptokiX conflicting attributes (Caml Crush `conflicting_attributes_patch`
 * and `conflicting_attributes_patch_on_existing_objects`): a key may not hold
 * two roles that together let a client read a secret, e.g. CKA_WRAP and
 * CKA_DECRYPT (wrap a key, decrypt the blob) or CKA_UNWRAP and CKA_ENCRYPT
 * (encrypt a known key, unwrap it as a key of known value).
 */
import { CALL_FIELDS, isPromise } from '../../generated/pkcs11_rpc';
import { Pkcs11Error } from '../../pkcs11/errors';
import { then } from '../../server/layers/generic';
import type { CallName, MaybePromise } from '../../generated/pkcs11_rpc';
import { ck } from '../../pkcs11/constants';
import type { ActionContext, ActionDefinition, FoundFilter, Hook, HookAnswer, HookCall } from '../hooks';
import type { AttributeValues } from '../object-attributes';
import {
  attr, firstAnswer, mergedView, objectView, objectsOf, recover, refusal, says, sessionOf, templateView, templatesOf, typesOf,
} from './attributes';
import type { BoolAttr, BoolView } from './attributes';

type Pair = readonly [BoolAttr, BoolAttr];

const T = true;
const F = false;

/** Pairs no key may hold together (CryptokiX, as Caml Crush lists them). */
const CONFLICTS: readonly Pair[] = [
  [attr(ck.CKA_WRAP, T), attr(ck.CKA_DECRYPT, T)],
  [attr(ck.CKA_UNWRAP, T), attr(ck.CKA_ENCRYPT, T)],
  [attr(ck.CKA_SENSITIVE, F), attr(ck.CKA_EXTRACTABLE, F)],
  [attr(ck.CKA_SENSITIVE, F), attr(ck.CKA_ALWAYS_SENSITIVE, T)],
  [attr(ck.CKA_EXTRACTABLE, T), attr(ck.CKA_NEVER_EXTRACTABLE, T)],
  [attr(ck.CKA_WRAP, T), attr(ck.CKA_SENSITIVE, F)],
  [attr(ck.CKA_WRAP, T), attr(ck.CKA_ALWAYS_SENSITIVE, F)],
];

/** Added by do_segregate_usage: encryption keys are not signature keys, and neither wraps. */
const SEGREGATION_CONFLICTS: readonly Pair[] = [
  [attr(ck.CKA_ENCRYPT, T), attr(ck.CKA_SIGN, T)],
  [attr(ck.CKA_ENCRYPT, T), attr(ck.CKA_SIGN_RECOVER, T)],
  [attr(ck.CKA_DECRYPT, T), attr(ck.CKA_VERIFY, T)],
  [attr(ck.CKA_DECRYPT, T), attr(ck.CKA_VERIFY_RECOVER, T)],
  [attr(ck.CKA_ENCRYPT, T), attr(ck.CKA_VERIFY, T)],
  [attr(ck.CKA_ENCRYPT, T), attr(ck.CKA_VERIFY_RECOVER, T)],
  [attr(ck.CKA_DECRYPT, T), attr(ck.CKA_SIGN, T)],
  [attr(ck.CKA_DECRYPT, T), attr(ck.CKA_SIGN_RECOVER, T)],
  [attr(ck.CKA_ENCRYPT, T), attr(ck.CKA_WRAP, T)],
  [attr(ck.CKA_DECRYPT, T), attr(ck.CKA_UNWRAP, T)],
];

/** The conflict rules of one policy, compiled once. */
class Conflicts {
  readonly pairs: readonly Pair[];
  /** Every type some pair names: what is read from objects. */
  readonly types: readonly number[];
  readonly typeSet: ReadonlySet<number>;

  constructor(segregate: boolean) {
    this.pairs = segregate ? [...CONFLICTS, ...SEGREGATION_CONFLICTS] : CONFLICTS;
    this.types = typesOf(this.pairs.flat());
    this.typeSet = new Set(this.types);
  }

  /** True when `view` holds both attributes of some pair. */
  found(view: BoolView): boolean {
    for (const [a, b] of this.pairs) if (says(view, a) && says(view, b)) return true;
    return false;
  }

  /**
   * True when an object's values (null: they could not be read) conflict; an
   * unreadable object counts as conflicting. Reads the values directly (no
   * view is built): this runs on every use of a key.
   */
  object(values: AttributeValues | null): boolean {
    if (values === null) return true;
    for (const [a, b] of this.pairs) if (holds(values, a) && holds(values, b)) return true;
    return false;
  }
}

/** True when an object's value of `a.type` may be `a.value` (a value that is not one byte may be either). */
function holds(values: AttributeValues, a: BoolAttr): boolean {
  const v = values.get(a.type);
  if (v === undefined || v === null) return false;
  return v.length !== 1 || (v[0] !== 0) === a.value;
}

const CREATION_TRIGGERS: ReadonlySet<CallName> = new Set<CallName>([
  'C_CreateObject', 'C_CopyObject', 'C_UnwrapKey', 'C_GenerateKey', 'C_GenerateKeyPair', 'C_DeriveKey', 'C_SetAttributeValue',
]);

/**
 * `conflicting_attributes_patch`: the template of a new key, fused for
 * C_GenerateKeyPair, may not name a conflicting pair; C_SetAttributeValue
 * may not make the object's current values (read from the token now)
 * conflict. C_CopyObject is checked like C_SetAttributeValue, on the source
 * object's values with the template applied: a copy is a new object with
 * those attributes (Caml Crush looks at the copy template alone). Refusal:
 * CKR_ATTRIBUTE_VALUE_INVALID, also when the object cannot be read.
 */
export const conflictingAttributesPatch: ActionDefinition = {
  triggers: CREATION_TRIGGERS,
  compile(ctx: ActionContext): Hook {
    const rules = new Conflicts(ctx.segregateUsage);
    const invalid = ck.CKR_ATTRIBUTE_VALUE_INVALID;
    return (call: HookCall): MaybePromise<HookAnswer> => {
      const changes = templateView(templatesOf(call), rules.typeSet);
      if (call.name !== 'C_SetAttributeValue' && call.name !== 'C_CopyObject') {
        return rules.found(changes) ? refusal(call, invalid) : undefined;
      }
      const object = objectsOf(call)[0];
      return recover(
        () => {
          const r = call.objects.read(call.conn, sessionOf(call), object, rules.types);
          const judge = (v: AttributeValues): HookAnswer =>
            rules.found(mergedView(objectView(v, rules.types), changes)) ? refusal(call, invalid) : undefined;
          return isPromise(r) ? r.then(judge) : judge(r);
        },
        () => refusal(call, invalid),
      );
    };
  },
};

const EXISTING_TRIGGERS: ReadonlySet<CallName> = new Set<CallName>([
  'C_EncryptInit', 'C_DecryptInit', 'C_SignInit', 'C_SignRecoverInit', 'C_VerifyInit', 'C_VerifyRecoverInit',
  'C_DeriveKey', 'C_DigestKey', 'C_WrapKey', 'C_UnwrapKey', 'C_FindObjects',
]);

/**
 * `conflicting_attributes_patch_on_existing_objects`: a key whose attributes
 * conflict (created before the filter, or by another path) is not used: the
 * key of *Init, C_DigestKey and C_DeriveKey, the unwrapping key, both keys of
 * C_WrapKey. Refusal: CKR_OBJECT_HANDLE_INVALID, also when the key cannot be
 * read. On C_FindObjects such objects are left out of the answer. Values come
 * from the per-application cache: the rules that limit attribute changes run
 * on the modifying calls with fresh reads.
 */
export const conflictingAttributesPatchOnExistingObjects: ActionDefinition = {
  triggers: EXISTING_TRIGGERS,
  compile(ctx: ActionContext): Hook {
    const rules = new Conflicts(ctx.segregateUsage);
    const invalid = ck.CKR_OBJECT_HANDLE_INVALID;
    const refuse = (call: HookCall): HookAnswer => refusal(call, invalid);
    return (call: HookCall): MaybePromise<HookAnswer> => {
      const f = CALL_FIELDS[call.procedure].args;
      const args = call.args as never;
      const session = f.session.length > 0 ? (f.session[0].get(args) as number) : 0;
      const fields = f.object;
      // Written out (no closure per call): the cache answers at once on the hot path.
      for (let i = 0; i < fields.length; i++) {
        let v: MaybePromise<AttributeValues>;
        try {
          v = call.objects.cached(call.conn, session, fields[i].get(args) as number, rules.types);
        } catch (e) {
          if (e instanceof Pkcs11Error) return refuse(call);
          throw e;
        }
        if (isPromise(v)) {
          const handles = fields.slice(i).map((x) => x.get(args) as number);
          return firstAnswer(handles.length, (j) =>
            recover(
              () => then(j === 0 ? v : call.objects.cached(call.conn, session, handles[j], rules.types), (x) => (rules.object(x) ? refuse(call) : undefined)),
              () => refuse(call),
            ),
          );
        }
        if (rules.object(v)) return refuse(call);
      }
      return undefined;
    };
  },
  compileFoundFilter(ctx: ActionContext): FoundFilter {
    const rules = new Conflicts(ctx.segregateUsage);
    return (call: HookCall, found: readonly number[]): MaybePromise<readonly number[]> => {
      const session = sessionOf(call);
      const kept: number[] = [];
      const step = (i: number): MaybePromise<readonly number[]> => {
        for (; i < found.length; i++) {
          const h = found[i];
          const v = recover<AttributeValues | null>(() => call.objects.cached(call.conn, session, h, rules.types), () => null);
          if (isPromise(v)) {
            const k = i;
            return v.then((x) => {
              if (!rules.object(x)) kept.push(h);
              return step(k + 1);
            });
          }
          if (!rules.object(v)) kept.push(h);
        }
        return kept;
      };
      return step(0);
    };
  },
};
