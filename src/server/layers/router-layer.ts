import type { Backend, BackendContext } from '../../bindings/backend';
import { CALL_INVOKERS, PROCEDURES } from '../../generated/pkcs11_rpc';
import type { CallName, Pkcs11Calls } from '../../generated/pkcs11_rpc';
import { CKR_GENERAL_ERROR } from '../../pkcs11/constants';
import { Pkcs11Error } from '../../pkcs11/errors';
import type { ConnectionState } from '../dispatch/connection-state';
import { identityKey } from '../../filter/identity';

/**
 * Bottom layer: sends each call to the backend of the application's alias,
 * with a BackendContext instead of the connection state. Handles arriving
 * here are that backend's own numbers; the handle layer above keeps, with
 * every virtual handle, the alias it belongs to.
 */
export class RouterLayer {
  constructor(
    private readonly backends: ReadonlyMap<string, Backend>,
    private readonly defaultAlias: string,
  ) {
    for (const name of new Set<CallName>(PROCEDURES.map((p) => p.name))) {
      const invoker = CALL_INVOKERS[name];
      Object.defineProperty(this, name, {
        value: (conn: ConnectionState, args: unknown) => {
          const ctx = this.context(conn);
          const b = this.backends.get(ctx.alias);
          // Aliases are checked at C_LoadModule; an unknown one here is a daemon bug.
          if (!b) throw new Pkcs11Error(CKR_GENERAL_ERROR);
          return invoker(b, ctx, args);
        },
        enumerable: false,
        writable: false,
      });
    }
  }

  /** The application's context, built once per alias it uses. */
  context(conn: ConnectionState): BackendContext {
    const app = conn.app;
    const alias = app.moduleAlias ?? this.defaultAlias;
    let ctx = app.backendContext;
    if (ctx === null || ctx.alias !== alias || ctx.identity !== identityKeyOf(conn)) {
      ctx = Object.freeze({ appId: app.id, alias, identity: identityKeyOf(conn) });
      app.backendContext = ctx;
    }
    return ctx;
  }

  /** The stack sees the router through the common call interface. */
  asCalls(): Pkcs11Calls<ConnectionState> {
    return this as unknown as Pkcs11Calls<ConnectionState>;
  }
}

const identityKeys = new WeakMap<ConnectionState, string>();

/** The connection's identity key, computed once per connection (its identity never changes). */
function identityKeyOf(conn: ConnectionState): string {
  let k = identityKeys.get(conn);
  if (k === undefined) {
    k = identityKey(conn.identity);
    identityKeys.set(conn, k);
  }
  return k;
}

/** Alias of the backend the application's calls go to. */
export function aliasOf(conn: ConnectionState, defaultAlias: string): string {
  return conn.app.moduleAlias ?? defaultAlias;
}
