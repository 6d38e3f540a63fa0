import { Pkcs11Passthrough } from '../../generated/pkcs11_rpc';
import type { C_LoadModule_args, CallName, MaybePromise, Pkcs11Calls, px_GetAppToken_ret, px_JoinApp_args, px_rv } from '../../generated/pkcs11_rpc';
import { CKR_ARGUMENTS_BAD, CKR_CRYPTOKI_ALREADY_INITIALIZED, CKR_CRYPTOKI_NOT_INITIALIZED, CKR_GENERAL_ERROR, CKR_OK, ck } from '../../pkcs11/constants';
import { Pkcs11Error } from '../../pkcs11/errors';
import type { AppRegistry, ConnectionState } from '../dispatch/connection-state';
import { installGeneric, invoke, then } from './generic';

/** Calls allowed before C_Initialize: the connection preamble. */
const PREAMBLE: ReadonlySet<CallName> = new Set<CallName>(['C_SetupArch', 'C_LoadModule', 'C_Initialize', 'px_JoinApp', 'px_GetAppToken']);

/**
 * Per-connection Cryptoki life cycle: C_LoadModule picks the backend,
 * C_Initialize/C_Finalize are the client's own (they never initialize or
 * finalize the shared module), and every other call needs C_Initialize.
 */
export class ConnectionLayer extends Pkcs11Passthrough<ConnectionState> {
  constructor(
    next: Pkcs11Calls<ConnectionState>,
    /** Aliases of the configured modules; '' selects the default. */
    private readonly aliases: ReadonlySet<string>,
    private readonly defaultAlias: string,
    private readonly apps: AppRegistry,
    /** Configured aliases whose module could not be loaded (serve.ts). */
    private readonly unavailable: ReadonlySet<string> = new Set(),
  ) {
    super(next);
    installGeneric(this, ConnectionLayer.prototype, (name, conn, args) => {
      if (!conn.initialized && !PREAMBLE.has(name)) throw new Pkcs11Error(CKR_CRYPTOKI_NOT_INITIALIZED);
      return invoke(this.next, name, conn, args);
    });
  }

  /** An unknown alias is refused rather than mapped to the default: fail closed. */
  C_LoadModule(conn: ConnectionState, a: C_LoadModule_args): px_rv {
    const alias = a.alias.toString('utf8').replace(/\0+$/, '');
    if (conn.initialized) return CKR_CRYPTOKI_ALREADY_INITIALIZED;
    const chosen = alias === '' ? this.defaultAlias : alias;
    // Caml Crush's answer when the aliased library cannot be loaded: the call was valid, it could not be done.
    // The alias stays chosen so a C_Initialize that follows fails too instead of falling back to the default.
    if (this.unavailable.has(chosen)) {
      conn.moduleAlias = chosen;
      return ck.CKR_FUNCTION_FAILED;
    }
    if (alias !== '' && !this.aliases.has(alias)) return CKR_ARGUMENTS_BAD;
    conn.moduleAlias = chosen;
    return CKR_OK;
  }

  C_Initialize(conn: ConnectionState): px_rv {
    if (conn.initialized) return CKR_CRYPTOKI_ALREADY_INITIALIZED;
    if (conn.moduleAlias === null) conn.moduleAlias = this.defaultAlias;
    // No module behind the alias (the default one, without C_LoadModule): stay uninitialized, as Caml Crush does.
    if (this.unavailable.has(conn.moduleAlias)) return CKR_GENERAL_ERROR;
    conn.initialized = true;
    return CKR_OK;
  }

  /** Publishes the caller's application so its other connections can join it. */
  px_GetAppToken(conn: ConnectionState): px_GetAppToken_ret {
    return { rv: CKR_OK, token: this.apps.publish(conn.app) };
  }

  /**
   * Binds this connection to a published application. Only a fresh
   * connection may join: its own (empty) application is dropped.
   */
  px_JoinApp(conn: ConnectionState, a: px_JoinApp_args): px_rv {
    const own = conn.app;
    if (own.initialized || own.layerState.size > 0 || own.token !== null) return CKR_CRYPTOKI_ALREADY_INITIALIZED;
    const app = this.apps.find(a.token);
    if (!app) return CKR_CRYPTOKI_NOT_INITIALIZED;
    own.connections -= 1;
    conn.app = app;
    app.connections += 1;
    return CKR_OK;
  }

  C_Finalize(conn: ConnectionState): MaybePromise<px_rv> {
    if (!conn.initialized) return CKR_CRYPTOKI_NOT_INITIALIZED;
    conn.initialized = false;
    return then(this.next.C_Finalize(conn), () => CKR_OK);
  }
}

