import { isPromise, Pkcs11Passthrough } from '../../generated/pkcs11_rpc';
import type {
  C_CopyObject_args,
  C_CreateObject_args,
  C_DeriveKey_args,
  C_DestroyObject_args,
  C_GenerateKey_args,
  C_GenerateKeyPair_args,
  C_GenerateKeyPair_ret,
  C_UnwrapKey_args,
  CallName,
  MaybePromise,
  Pkcs11Calls,
  px_DeriveKeyTyped_args,
  px_GenerateKeyPairTyped_args,
  px_GenerateKeyTyped_args,
  px_object_ret,
  px_rv,
  px_UnwrapKeyTyped_args,
} from '../../generated/pkcs11_rpc';
import { CKR_OK, ck, constantName } from '../../pkcs11/constants';
import { ObjectAttributes, ulongOf } from '../../filter/object-attributes';
import type { AttributeValues } from '../../filter/object-attributes';
import { audit } from '../audit';
import { connectionFields } from '../audit-fields';
import type { ConnectionState } from '../dispatch/connection-state';

/**
 * Attributes an event names: all public by the spec (readable on a sensitive
 * key). Never CKA_VALUE or any other value attribute.
 */
const PUBLIC_TYPES: readonly number[] = [ck.CKA_CLASS, ck.CKA_KEY_TYPE, ck.CKA_LABEL, ck.CKA_ID, ck.CKA_TOKEN];
/** Longest label or id (in bytes) an event carries; longer ones are cut and flagged. */
const MAX_PUBLIC_BYTES = 256;

/** The public description of an object, read from the token: class, key type, label (text), id (hex), token. */
function describe(v: AttributeValues | null): Record<string, string | boolean | null> {
  if (v === null) return { class: null };
  const cls = ulongOf(v, ck.CKA_CLASS);
  const kt = ulongOf(v, ck.CKA_KEY_TYPE);
  const label = v.get(ck.CKA_LABEL);
  const id = v.get(ck.CKA_ID);
  const token = v.get(ck.CKA_TOKEN);
  return {
    class: cls === undefined ? null : constantName('CKO_', cls),
    key_type: kt === undefined ? null : constantName('CKK_', kt),
    label: label ? label.subarray(0, MAX_PUBLIC_BYTES).toString('utf8') : null,
    id: id ? id.subarray(0, MAX_PUBLIC_BYTES).toString('hex') : null,
    token: token && token.length > 0 ? token[0] !== 0 : null,
  };
}

/**
 * Audit trail of object life cycle: `object_created` for every object a call
 * makes (key generation, import, copy, unwrap, derive), `object_destroyed`
 * for C_DestroyObject. Sits below the filter (refused calls never get here;
 * the filter emits `call_refused`) and above the handle layer: handles are
 * the client's virtual numbers, and the layer's own attribute reads go
 * through the handle, ownership and login rules. Only in the stack when an
 * audit sink is configured (stack.ts); every other call passes straight
 * through the base class.
 *
 * An event names the object by its public attributes read back from the
 * token after the call (so defaults the module filled in are included), never
 * from the template's values and never CKA_VALUE. A read that fails leaves
 * `class: null`; the event is still written.
 */
export class AuditLayer extends Pkcs11Passthrough<ConnectionState> {
  private readonly objects: ObjectAttributes;

  constructor(next: Pkcs11Calls<ConnectionState>) {
    super(next);
    this.objects = new ObjectAttributes(next);
  }

  private created(conn: ConnectionState, call: CallName, session: number, object: number, extra: Record<string, number | string> = {}): MaybePromise<void> {
    const emit = (v: AttributeValues | null): void =>
      audit({ event: 'object_created', ...connectionFields(conn), call, session, object, ...extra, ...describe(v) });
    let r: MaybePromise<AttributeValues>;
    try {
      r = this.objects.read(conn, session, object, PUBLIC_TYPES);
    } catch {
      return emit(null);
    }
    return isPromise(r) ? r.then(emit, () => emit(null)) : emit(r);
  }

  private one<A extends { session: number }>(call: CallName, conn: ConnectionState, a: A, r: MaybePromise<px_object_ret>, extra?: (a: A) => Record<string, number | string>): MaybePromise<px_object_ret> {
    const after = (ret: px_object_ret): MaybePromise<px_object_ret> => {
      if (ret.rv !== CKR_OK) return ret;
      const done = this.created(conn, call, a.session, ret.object, extra?.(a));
      return isPromise(done) ? done.then(() => ret) : ret;
    };
    return isPromise(r) ? r.then(after) : after(r);
  }

  private pair(call: CallName, conn: ConnectionState, session: number, r: MaybePromise<C_GenerateKeyPair_ret>): MaybePromise<C_GenerateKeyPair_ret> {
    const after = async (ret: C_GenerateKeyPair_ret): Promise<C_GenerateKeyPair_ret> => {
      if (ret.rv !== CKR_OK) return ret;
      await this.created(conn, call, session, ret.publicKey, { pair: 'public', other: ret.privateKey });
      await this.created(conn, call, session, ret.privateKey, { pair: 'private', other: ret.publicKey });
      return ret;
    };
    return isPromise(r) ? r.then(after) : after(r);
  }

  C_GenerateKey(conn: ConnectionState, a: C_GenerateKey_args): MaybePromise<px_object_ret> {
    return this.one('C_GenerateKey', conn, a, this.next.C_GenerateKey(conn, a), (x) => ({ mechanism: constantName('CKM_', x.mechanism.mechanism) }));
  }
  px_GenerateKeyTyped(conn: ConnectionState, a: px_GenerateKeyTyped_args): MaybePromise<px_object_ret> {
    return this.one('px_GenerateKeyTyped', conn, a, this.next.px_GenerateKeyTyped(conn, a));
  }
  C_GenerateKeyPair(conn: ConnectionState, a: C_GenerateKeyPair_args): MaybePromise<C_GenerateKeyPair_ret> {
    return this.pair('C_GenerateKeyPair', conn, a.session, this.next.C_GenerateKeyPair(conn, a));
  }
  px_GenerateKeyPairTyped(conn: ConnectionState, a: px_GenerateKeyPairTyped_args): MaybePromise<C_GenerateKeyPair_ret> {
    return this.pair('px_GenerateKeyPairTyped', conn, a.session, this.next.px_GenerateKeyPairTyped(conn, a));
  }
  C_CreateObject(conn: ConnectionState, a: C_CreateObject_args): MaybePromise<px_object_ret> {
    return this.one('C_CreateObject', conn, a, this.next.C_CreateObject(conn, a));
  }
  C_CopyObject(conn: ConnectionState, a: C_CopyObject_args): MaybePromise<px_object_ret> {
    return this.one('C_CopyObject', conn, a, this.next.C_CopyObject(conn, a), (x) => ({ source: x.object }));
  }
  C_UnwrapKey(conn: ConnectionState, a: C_UnwrapKey_args): MaybePromise<px_object_ret> {
    return this.one('C_UnwrapKey', conn, a, this.next.C_UnwrapKey(conn, a), (x) => ({ unwrapping_key: x.unwrappingKey, mechanism: constantName('CKM_', x.mechanism.mechanism) }));
  }
  px_UnwrapKeyTyped(conn: ConnectionState, a: px_UnwrapKeyTyped_args): MaybePromise<px_object_ret> {
    return this.one('px_UnwrapKeyTyped', conn, a, this.next.px_UnwrapKeyTyped(conn, a), (x) => ({ unwrapping_key: x.unwrappingKey }));
  }
  C_DeriveKey(conn: ConnectionState, a: C_DeriveKey_args): MaybePromise<px_object_ret> {
    return this.one('C_DeriveKey', conn, a, this.next.C_DeriveKey(conn, a), (x) => ({ base_key: x.baseKey, mechanism: constantName('CKM_', x.mechanism.mechanism) }));
  }
  px_DeriveKeyTyped(conn: ConnectionState, a: px_DeriveKeyTyped_args): MaybePromise<px_object_ret> {
    return this.one('px_DeriveKeyTyped', conn, a, this.next.px_DeriveKeyTyped(conn, a), (x) => ({ base_key: x.baseKey }));
  }

  /** The object is described before it goes (afterwards nothing can be read); the event says how the call ended. */
  C_DestroyObject(conn: ConnectionState, a: C_DestroyObject_args): MaybePromise<px_rv> {
    const destroy = (v: AttributeValues | null): MaybePromise<px_rv> => {
      const emit = (rv: number): number => {
        if (rv === CKR_OK) audit({ event: 'object_destroyed', ...connectionFields(conn), call: 'C_DestroyObject', session: a.session, object: a.object, ...describe(v) });
        return rv;
      };
      const r = this.next.C_DestroyObject(conn, a);
      return isPromise(r) ? r.then(emit) : emit(r);
    };
    let read: MaybePromise<AttributeValues>;
    try {
      read = this.objects.read(conn, a.session, a.object, PUBLIC_TYPES);
    } catch {
      return destroy(null);
    }
    return isPromise(read) ? read.then(destroy, () => destroy(null)) : destroy(read);
  }
}
