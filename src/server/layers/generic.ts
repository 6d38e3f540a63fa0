import { CALL_INVOKERS, isPromise, PROCEDURES } from '../../generated/pkcs11_rpc';
import { rvOf } from '../../pkcs11/errors';
import type { CallName, MaybePromise, Pkcs11Calls } from '../../generated/pkcs11_rpc';
import type { ConnectionState } from '../dispatch/connection-state';

export type GenericHandler = (name: CallName, conn: ConnectionState, args: unknown) => MaybePromise<unknown>;

/**
 * Gives every call that `layer`'s class does not define itself the same
 * generic implementation. Layers that rewrite by field name (handles,
 * architecture, tracing) override the few calls with special meaning and let
 * this cover the rest, so a procedure added to rpc/pkcs11.x is handled
 * without touching the layer.
 */
export function installGeneric(layer: object, proto: object, handler: GenericHandler): void {
  const names = new Set(PROCEDURES.map((p) => p.name));
  for (const name of names) {
    if (Object.prototype.hasOwnProperty.call(proto, name)) continue;
    Object.defineProperty(layer, name, {
      value: (conn: ConnectionState, args: unknown) => handler(name, conn, args),
      enumerable: false,
      writable: false,
    });
  }
}

/** Calls `name` on the next layer down. */
export function invoke(next: Pkcs11Calls<ConnectionState>, name: CallName, conn: ConnectionState, args: unknown): MaybePromise<unknown> {
  return CALL_INVOKERS[name](next, conn, args);
}

/**
 * Runs a call of the layer below for its CK_RV alone: a thrown or rejected
 * PKCS#11 error becomes its CK_RV, so cleanup paths need no try/catch.
 */
export async function settle(call: () => MaybePromise<number>): Promise<number> {
  try {
    return await call();
  } catch (e) {
    return rvOf(e);
  }
}

/**
 * `f` applied to a call's result: at once when the result is there (no
 * promise made), after it settles when it is a promise. A rejection or a
 * synchronous throw skips `f`, as an `await` would.
 */
export function then<T, U>(r: MaybePromise<T>, f: (v: T) => MaybePromise<U>): MaybePromise<U> {
  return isPromise(r) ? r.then(f) : f(r);
}
