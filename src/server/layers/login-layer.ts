import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { Pkcs11Passthrough } from '../../generated/pkcs11_rpc';
import type {
  C_CloseAllSessions_args,
  C_CloseSession_args,
  C_FindObjectsInit_args,
  C_FindObjects_args,
  C_FindObjects_ret,
  C_GetSessionInfo_args,
  C_GetSessionInfo_ret,
  C_Login_args,
  C_Logout_args,
  C_OpenSession_args,
  C_OpenSession_ret,
  C_SetPIN_args,
  CallName,
  MaybePromise,
  Pkcs11Calls,
  px_rv,
  px_session_args,
} from '../../generated/pkcs11_rpc';
import {
  CKA_PRIVATE,
  CKF_RW_SESSION,
  CKR_OK,
  CKR_PIN_INCORRECT,
  CKR_SESSION_HANDLE_INVALID,
  CKR_USER_ALREADY_LOGGED_IN,
  CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
  CKR_USER_NOT_LOGGED_IN,
  CKS_RO_PUBLIC_SESSION,
  CKS_RO_USER_FUNCTIONS,
  CKS_RW_PUBLIC_SESSION,
  CKS_RW_SO_FUNCTIONS,
  CKS_RW_USER_FUNCTIONS,
  CKU_CONTEXT_SPECIFIC,
  CKU_SO,
} from '../../pkcs11/constants';
import { Pkcs11Error } from '../../pkcs11/errors';
import type { Application, ConnectionState } from '../dispatch/connection-state';
import { installGeneric, invoke, settle, then } from './generic';
import { aliasOf } from './router-layer';
import { onModuleReset } from '../../bindings/backend';
import { OBJECT_ARG_FIELDS, OBJECT_RESULT_FIELDS } from './object-fields';

/**
 * Login state of one token (backend alias + slot) in this process, shared by
 * all its applications. Invariants: `userType !== null` iff the module is
 * (or may still be) logged in; `holders` not empty implies `userType !==
 * null`. Holders empty with `userType` set means the module refused or has
 * not yet confirmed C_Logout: everyone is an outsider.
 */
interface TokenLogin {
  userType: number | null;
  holders: Set<Application>;
  /** HMAC of the PIN that logged the module in; set iff userType !== null. */
  pinTag: Buffer | null;
  /** Every open module session on the token, all connections. */
  sessions: Set<number>;
  /** Set while the module's C_Logout runs; logins wait for it. */
  logout: Promise<void> | null;
}

interface ConnLogin {
  /** Module session → token key. */
  sessions: Map<number, string>;
  /** Token key → number of this application's sessions on it. */
  perToken: Map<string, number>;
  /** Sessions whose search must return nothing (private-only search by a public connection). */
  emptySearch: Set<number>;
}

const STATE = Symbol('login');

/**
 * Virtual login. PKCS#11 login is per token per application, and all clients
 * of this process are one application to the module. So:
 * - the first C_Login logs the module in; a later client with the same user
 *   type must present the same PIN (checked against an HMAC kept in memory)
 *   and then shares the login; another user type gets
 *   CKR_USER_ANOTHER_ALREADY_LOGGED_IN;
 * - C_Logout, C_Finalize or a disconnect releases only the caller's share;
 *   the module is logged out when the last holder leaves;
 * - while the module is logged in, a connection that did not log in sees
 *   public session states and cannot find, use or create private objects.
 * Closing a client's last session on a token ends its share (as the spec
 * says of an application's last session).
 */
export class LoginLayer extends Pkcs11Passthrough<ConnectionState> {
  private readonly tokens = new Map<string, TokenLogin>();
  private readonly pinKey = randomBytes(32);

  constructor(
    next: Pkcs11Calls<ConnectionState>,
    private readonly defaultAlias: string,
  ) {
    super(next);
    installGeneric(this, LoginLayer.prototype, (name, conn, args) => this.guarded(name, conn, args));
    onModuleReset((alias) => this.forgetModule(alias));
  }

  /**
   * The module of `alias` restarted (helper process): it is logged out and its sessions are gone.
   * Sessions the connections still name answer CKR_SESSION_HANDLE_INVALID from the backend.
   */
  private forgetModule(alias: string): void {
    for (const [key, t] of this.tokens) {
      if (!key.startsWith(`${alias}\u0000`)) continue;
      t.userType = null;
      t.pinTag = null;
      t.holders.clear();
      t.sessions.clear();
    }
  }

  private conn(conn: ConnectionState): ConnLogin {
    return conn.stateFor(STATE, () => ({ sessions: new Map(), perToken: new Map(), emptySearch: new Set() }));
  }

  private tokenKey(conn: ConnectionState, slotID: number): string {
    return `${aliasOf(conn, this.defaultAlias)}\u0000${slotID}`;
  }

  private token(key: string): TokenLogin {
    let t = this.tokens.get(key);
    if (!t) {
      t = { userType: null, holders: new Set(), pinTag: null, sessions: new Set(), logout: null };
      this.tokens.set(key, t);
    }
    return t;
  }

  private tokenOfSession(conn: ConnectionState, session: number): TokenLogin {
    const key = this.conn(conn).sessions.get(session);
    if (key === undefined) throw new Pkcs11Error(CKR_SESSION_HANDLE_INVALID);
    return this.token(key);
  }

  private tag(pin: Buffer): Buffer {
    return createHmac('sha256', this.pinKey).update(pin).digest();
  }

  /** True when the module is logged in by others but not for this connection. */
  private isOutsider(conn: ConnectionState, t: TokenLogin): boolean {
    return t.userType !== null && !t.holders.has(conn.app);
  }

  /**
   * Ends the caller's share of the token's login. When it was the last
   * share the module is logged out, and until it confirms, the token stays
   * guarded: everyone is an outsider. If the module refuses, the module is
   * still logged in, so the login record stays (others stay outsiders); with
   * `keepShare` (an explicit C_Logout) the caller keeps its share, and the
   * module's CK_RV is returned.
   */
  private async release(conn: ConnectionState, t: TokenLogin, keepShare: boolean): Promise<number> {
    if (!t.holders.delete(conn.app) || t.holders.size > 0 || t.userType === null) return CKR_OK;
    const any = t.sessions.values().next();
    if (any.done) {
      // No session left: the module logged the process out with the last one.
      t.userType = null;
      t.pinTag = null;
      return CKR_OK;
    }
    const run = settle(() => this.next.C_Logout(conn, { session: any.value }));
    t.logout = run.then(() => undefined);
    let rv: number;
    try {
      rv = await run;
    } finally {
      t.logout = null;
    }
    if (rv === CKR_OK || rv === CKR_USER_NOT_LOGGED_IN) {
      if (t.holders.size === 0) {
        t.userType = null;
        t.pinTag = null;
      }
      return CKR_OK;
    }
    if (keepShare) t.holders.add(conn.app);
    return rv;
  }

  C_OpenSession(conn: ConnectionState, a: C_OpenSession_args): MaybePromise<C_OpenSession_ret> {
    return then(this.next.C_OpenSession(conn, a), (r) => {
      if (r.rv === CKR_OK) {
        const key = this.tokenKey(conn, a.slotID);
        const c = this.conn(conn);
        c.sessions.set(r.session, key);
        c.perToken.set(key, (c.perToken.get(key) ?? 0) + 1);
        this.token(key).sessions.add(r.session);
      }
      return r;
    });
  }

  C_CloseSession(conn: ConnectionState, a: C_CloseSession_args): MaybePromise<px_rv> {
    const c = this.conn(conn);
    const key = c.sessions.get(a.session);
    return then(this.next.C_CloseSession(conn, a), (rv) => {
      if (key === undefined) return rv;
      c.sessions.delete(a.session);
      c.emptySearch.delete(a.session);
      const left = (c.perToken.get(key) ?? 1) - 1;
      if (left > 0) c.perToken.set(key, left);
      else c.perToken.delete(key);
      const t = this.token(key);
      t.sessions.delete(a.session);
      if (t.sessions.size === 0) {
        // The module logs the application out with its last session.
        t.userType = null;
        t.pinTag = null;
        t.holders.clear();
      } else if (left === 0) {
        return this.release(conn, t, false).then(() => rv);
      }
      return rv;
    });
  }

  /**
   * Reached only when the caller holds every session this process has on
   * the token (the handle layer closes others' sessions one by one): the
   * module closed them all and logged the token out.
   */
  C_CloseAllSessions(conn: ConnectionState, a: C_CloseAllSessions_args): MaybePromise<px_rv> {
    return then(this.next.C_CloseAllSessions(conn, a), (rv) => {
      if (rv !== CKR_OK) return rv;
      const key = this.tokenKey(conn, a.slotID);
      const t = this.token(key);
      const c = this.conn(conn);
      for (const s of t.sessions) {
        c.sessions.delete(s);
        c.emptySearch.delete(s);
      }
      c.perToken.delete(key);
      t.sessions.clear();
      t.userType = null;
      t.pinTag = null;
      t.holders.clear();
      return rv;
    });
  }

  async C_Login(conn: ConnectionState, a: C_Login_args): Promise<px_rv> {
    const t = this.tokenOfSession(conn, a.session);
    if (a.userType === CKU_CONTEXT_SPECIFIC) return this.next.C_Login(conn, a);
    if (t.holders.has(conn.app)) {
      return t.userType === a.userType ? CKR_USER_ALREADY_LOGGED_IN : CKR_USER_ANOTHER_ALREADY_LOGGED_IN;
    }
    while (t.logout) await t.logout;
    if (t.userType === null) {
      const rv = await this.next.C_Login(conn, a);
      if (rv === CKR_OK) {
        t.userType = a.userType;
        t.pinTag = this.tag(a.pin);
        t.holders.add(conn.app);
      }
      return rv;
    }
    if (t.userType !== a.userType) return CKR_USER_ANOTHER_ALREADY_LOGGED_IN;
    if (!t.pinTag || !timingSafeEqual(t.pinTag, this.tag(a.pin))) return CKR_PIN_INCORRECT;
    t.holders.add(conn.app);
    return CKR_OK;
  }

  async C_Logout(conn: ConnectionState, a: C_Logout_args): Promise<px_rv> {
    const t = this.tokenOfSession(conn, a.session);
    if (!t.holders.has(conn.app)) return CKR_USER_NOT_LOGGED_IN;
    return this.release(conn, t, true);
  }

  C_SetPIN(conn: ConnectionState, a: C_SetPIN_args): MaybePromise<px_rv> {
    const t = this.tokenOfSession(conn, a.session);
    return then(this.next.C_SetPIN(conn, a), (rv) => {
      if (rv === CKR_OK && t.holders.has(conn.app)) t.pinTag = this.tag(a.newPin);
      return rv;
    });
  }

  C_GetSessionInfo(conn: ConnectionState, a: C_GetSessionInfo_args): MaybePromise<C_GetSessionInfo_ret> {
    const t = this.tokenOfSession(conn, a.session);
    return then(this.next.C_GetSessionInfo(conn, a), (r) => {
      if (r.rv !== CKR_OK) return r;
      const rw = (r.info.flags & CKF_RW_SESSION) !== 0;
      let state: number;
      if (!t.holders.has(conn.app)) state = rw ? CKS_RW_PUBLIC_SESSION : CKS_RO_PUBLIC_SESSION;
      else if (t.userType === CKU_SO) state = CKS_RW_SO_FUNCTIONS;
      else state = rw ? CKS_RW_USER_FUNCTIONS : CKS_RO_USER_FUNCTIONS;
      return { rv: r.rv, info: { slotID: r.info.slotID, state, flags: r.info.flags, deviceError: r.info.deviceError } };
    });
  }

  C_FindObjectsInit(conn: ConnectionState, a: C_FindObjectsInit_args): MaybePromise<px_rv> {
    const t = this.tokenOfSession(conn, a.session);
    const c = this.conn(conn);
    c.emptySearch.delete(a.session);
    if (!this.isOutsider(conn, t)) return this.next.C_FindObjectsInit(conn, a);
    const priv = a.template.find((x) => x.type === CKA_PRIVATE);
    const request = {
      session: a.session,
      template: priv ? a.template : [...a.template, { type: CKA_PRIVATE, value: Buffer.from([0]), valueLen: 1 }],
    };
    return then(this.next.C_FindObjectsInit(conn, request), (rv) => {
      if (rv === CKR_OK && priv && priv.value.length > 0 && priv.value[0] !== 0) c.emptySearch.add(a.session);
      return rv;
    });
  }

  C_FindObjects(conn: ConnectionState, a: C_FindObjects_args): MaybePromise<C_FindObjects_ret> {
    return then(this.next.C_FindObjects(conn, a), (r) => {
      if (r.rv === CKR_OK && this.conn(conn).emptySearch.has(a.session)) return { rv: CKR_OK, objects: [], count: 0 };
      return r;
    });
  }

  C_FindObjectsFinal(conn: ConnectionState, a: px_session_args): MaybePromise<px_rv> {
    this.conn(conn).emptySearch.delete(a.session);
    return this.next.C_FindObjectsFinal(conn, a);
  }

  async C_Finalize(conn: ConnectionState): Promise<px_rv> {
    for (const t of this.tokens.values()) {
      if (t.holders.has(conn.app)) await this.release(conn, t, false);
    }
    const c = this.conn(conn);
    for (const [s, key] of c.sessions) this.token(key).sessions.delete(s);
    c.sessions.clear();
    c.perToken.clear();
    c.emptySearch.clear();
    return this.next.C_Finalize(conn);
  }

  private async isPrivate(conn: ConnectionState, session: number, object: number): Promise<boolean> {
    const r = await this.next.C_GetAttributeValue(conn, {
      session,
      object,
      template: [{ type: CKA_PRIVATE, value: Buffer.alloc(1), valueLen: 1 }],
    });
    const v = r.template[0]?.value;
    return r.rv === CKR_OK && v !== undefined && v.length > 0 && v[0] !== 0;
  }

  /** Object-using and object-creating calls by an outsider: private objects do not exist for it. */
  private guarded(name: CallName, conn: ConnectionState, args: unknown): MaybePromise<unknown> {
    const session = (args as { session?: unknown } | undefined)?.session;
    if (typeof session !== 'number') return invoke(this.next, name, conn, args);
    const t = this.tokenOfSession(conn, session);
    if (!this.isOutsider(conn, t)) return invoke(this.next, name, conn, args);
    return this.guardedOutsider(name, conn, args, session);
  }

  private async guardedOutsider(name: CallName, conn: ConnectionState, args: unknown, session: number): Promise<unknown> {
    const a = args as Record<string, unknown>;
    for (const [field, spec] of OBJECT_ARG_FIELDS) {
      const h = a[field];
      if (typeof h === 'number' && h !== 0 && (await this.isPrivate(conn, session, h))) throw new Pkcs11Error(spec.rv);
    }
    const r = await invoke(this.next, name, conn, args);
    if (r === null || typeof r !== 'object' || (r as { rv: number }).rv !== CKR_OK) return r;
    const created = OBJECT_RESULT_FIELDS.map((f) => (r as Record<string, unknown>)[f]).filter(
      (h): h is number => typeof h === 'number',
    );
    let leaked = false;
    for (const h of created) leaked = (await this.isPrivate(conn, session, h)) || leaked;
    if (!leaked) return r;
    for (const h of created) await settle(() => this.next.C_DestroyObject(conn, { session, object: h }));
    throw new Pkcs11Error(CKR_USER_NOT_LOGGED_IN);
  }
}
