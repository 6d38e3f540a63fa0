import { Pkcs11Passthrough } from '../../generated/pkcs11_rpc';
import type { C_LoadModule_args, CallName, MaybePromise, Pkcs11Calls, px_GetAppToken_ret, px_JoinApp_args, px_rv } from '../../generated/pkcs11_rpc';
import { AUTHZ_REFUSED_RV } from '../../filter/authz';
import { authzEntryFor, describeIdentity, identityKey } from '../../filter/identity';
import type { CompiledFilter } from '../../filter/policy';
import { rvName } from '../../pkcs11/constants';
import { Pkcs11Error } from '../../pkcs11/errors';
import { audit } from '../audit';
import type { AppRegistry, Application, ConnectionState } from '../dispatch/connection-state';
import type { Logger } from '../log';
import { installGeneric, invoke } from './generic';
import { connectionFields } from '../audit-fields';

/** Calls a refused or unchecked connection may still make: they choose nothing and end nothing of others. */
const UNGUARDED: ReadonlySet<CallName> = new Set<CallName>(['C_SetupArch', 'C_Finalize', 'C_GetInfo']);

type Reason = 'no_entry' | 'alias_not_allowed' | 'join_identity_mismatch';

/**
 * Authorisation (filter.conf `authorization`, src/filter/authz.ts), above
 * the connection life cycle. With a table, a client whose identity matches
 * no entry, or names an alias its entry does not list, is refused at
 * C_LoadModule, at C_Initialize (the default alias without C_LoadModule),
 * and at any later call after a reload took its right away; a connection may
 * join (px_JoinApp) only an application published by the same identity.
 * Without a table every call passes through unchanged.
 */
export class AuthzLayer extends Pkcs11Passthrough<ConnectionState> {
  /** Filter generation whose table last allowed this connection's application and alias. */
  private readonly checked = new WeakMap<ConnectionState, number>();
  /** identityKey of the connection that published each application (px_GetAppToken). */
  private readonly owners = new WeakMap<Application, string>();

  constructor(
    next: Pkcs11Calls<ConnectionState>,
    /** The current compiled filter.conf (changes on SIGHUP). */
    private readonly filter: () => CompiledFilter,
    private readonly defaultAlias: string,
    private readonly apps: AppRegistry,
    private readonly log: Logger,
  ) {
    super(next);
    installGeneric(this, AuthzLayer.prototype, (name, conn, args) => {
      const f = this.filter();
      if (f.authz && conn.initialized && this.checked.get(conn) !== f.generation && !UNGUARDED.has(name)) {
        const rv = this.check(f, conn, name, conn.moduleAlias ?? this.defaultAlias);
        if (rv !== null) throw new Pkcs11Error(rv);
      }
      return invoke(this.next, name, conn, args);
    });
  }

  /** null when allowed (and remembered for this generation), else the CK_RV of the refusal (audited). */
  private check(f: CompiledFilter, conn: ConnectionState, call: CallName, alias: string): number | null {
    const entry = authzEntryFor(f, conn.identity);
    if (entry !== undefined && entry.aliases.has(alias)) {
      this.checked.set(conn, f.generation);
      return null;
    }
    this.checked.delete(conn);
    return this.refuse(conn, call, alias, entry === undefined ? 'no_entry' : 'alias_not_allowed', entry?.name);
  }

  private refuse(conn: ConnectionState, call: CallName, alias: string, reason: Reason, entry?: string): number {
    const rv = AUTHZ_REFUSED_RV;
    this.log('warn', `authorization: ${call} refused with ${rvName(rv)} (${reason}) for alias '${alias}', connection ${conn.id} (${describeIdentity(conn.identity)}, ${conn.peer})${entry ? `, entry '${entry}'` : ''}`);
    audit({
      event: 'authorization_refused',
      call,
      reason,
      entry: entry ?? null,
      rv: rvName(rv),
      ...connectionFields(conn),
      // The identity as authorization entries match it (spki:..., uid:...).
      identity_key: identityKey(conn.identity),
      alias,
    });
    return rv;
  }

  C_LoadModule(conn: ConnectionState, a: C_LoadModule_args): MaybePromise<px_rv> {
    const f = this.filter();
    if (!f.authz || conn.initialized) return this.next.C_LoadModule(conn, a);
    const written = a.alias.toString('utf8').replace(/\0+$/, '');
    const alias = written === '' ? this.defaultAlias : written;
    const rv = this.check(f, conn, 'C_LoadModule', alias);
    if (rv === null) return this.next.C_LoadModule(conn, a);
    // Chosen anyway, so a C_Initialize that follows is refused too instead of falling back to the default module.
    conn.moduleAlias = alias;
    return rv;
  }

  C_Initialize(conn: ConnectionState): MaybePromise<px_rv> {
    const f = this.filter();
    if (!f.authz || conn.initialized) return this.next.C_Initialize(conn);
    const rv = this.check(f, conn, 'C_Initialize', conn.moduleAlias ?? this.defaultAlias);
    return rv ?? this.next.C_Initialize(conn);
  }

  px_GetAppToken(conn: ConnectionState): MaybePromise<px_GetAppToken_ret> {
    if (!this.owners.has(conn.app)) this.owners.set(conn.app, identityKey(conn.identity));
    return this.next.px_GetAppToken(conn);
  }

  px_JoinApp(conn: ConnectionState, a: px_JoinApp_args): MaybePromise<px_rv> {
    const f = this.filter();
    if (f.authz) {
      const app = this.apps.find(a.token);
      const owner = app === undefined ? undefined : this.owners.get(app);
      if (app !== undefined && owner !== identityKey(conn.identity)) {
        return this.refuse(conn, 'px_JoinApp', app.moduleAlias ?? this.defaultAlias, 'join_identity_mismatch');
      }
    }
    return this.next.px_JoinApp(conn, a);
  }
}
