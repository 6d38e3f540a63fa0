import { Pkcs11Passthrough } from '../../generated/pkcs11_rpc';
import type { C_LoadModule_args, CallName, Pkcs11Calls, px_rv } from '../../generated/pkcs11_rpc';
import { CKR_ARGUMENTS_BAD, CKR_CRYPTOKI_ALREADY_INITIALIZED, CKR_CRYPTOKI_NOT_INITIALIZED, CKR_OK } from '../../pkcs11/constants';
import { Pkcs11Error } from '../../pkcs11/errors';
import type { ConnectionState } from '../connection-state';
import { installGeneric, invoke } from './generic';

/** Calls allowed before C_Initialize: the connection preamble. */
const PREAMBLE: ReadonlySet<CallName> = new Set<CallName>(['C_SetupArch', 'C_LoadModule', 'C_Initialize']);

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
  ) {
    super(next);
    installGeneric(this, ConnectionLayer.prototype, (name, conn, args) => {
      if (!conn.initialized && !PREAMBLE.has(name)) throw new Pkcs11Error(CKR_CRYPTOKI_NOT_INITIALIZED);
      return invoke(this.next, name, conn, args);
    });
  }

  /** An unknown alias is refused rather than mapped to the default: fail closed. */
  async C_LoadModule(conn: ConnectionState, a: C_LoadModule_args): Promise<px_rv> {
    const alias = a.alias.toString('utf8').replace(/\0+$/, '');
    if (conn.initialized) return CKR_CRYPTOKI_ALREADY_INITIALIZED;
    if (alias !== '' && !this.aliases.has(alias)) return CKR_ARGUMENTS_BAD;
    conn.moduleAlias = alias === '' ? this.defaultAlias : alias;
    return CKR_OK;
  }

  async C_Initialize(conn: ConnectionState): Promise<px_rv> {
    if (conn.initialized) return CKR_CRYPTOKI_ALREADY_INITIALIZED;
    if (conn.moduleAlias === null) conn.moduleAlias = this.defaultAlias;
    conn.initialized = true;
    return CKR_OK;
  }

  async C_Finalize(conn: ConnectionState): Promise<px_rv> {
    if (!conn.initialized) return CKR_CRYPTOKI_NOT_INITIALIZED;
    conn.initialized = false;
    await this.next.C_Finalize(conn);
    return CKR_OK;
  }
}

