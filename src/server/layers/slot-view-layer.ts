import { PROCEDURES, Pkcs11Passthrough } from '../../generated/pkcs11_rpc';
import type * as rpc from '../../generated/pkcs11_rpc';
import type { TokenSelector } from '../../filter/authz';
import { tokenSelected } from '../../filter/authz';
import { authzEntryFor } from '../../filter/identity';
import type { CompiledFilter } from '../../filter/policy';
import { CKR_BUFFER_TOO_SMALL, CKR_OK, ck } from '../../pkcs11/constants';
import type { Application, ConnectionState } from '../dispatch/connection-state';
import { then } from './generic';

const CKR_SLOT_ID_INVALID = ck.CKR_SLOT_ID_INVALID;
const CKR_NO_EVENT = ck.CKR_NO_EVENT;

/** Module slots the application sees, in module order: client slot i is `slots[i]`. */
interface View {
  readonly generation: number;
  readonly alias: string | null;
  readonly slots: readonly number[];
}

/**
 * Slot/token view (filter.conf `authorization` entry `tokens`): an identity
 * sees only the slots whose token a selector picks, renumbered 0..n-1 in the
 * module's order; any other slot id is CKR_SLOT_ID_INVALID. Sits between the
 * filter (client slot numbers above) and the handle layer (module slot
 * numbers below). Overrides only the calls that carry a slot id. Without a
 * `tokens` list for the client's entry every call passes through unchanged.
 * The view is computed at the application's first slot call and again at
 * each C_GetSlotList and reload.
 */
export class SlotViewLayer extends Pkcs11Passthrough<ConnectionState> {
  private readonly views = new WeakMap<Application, View>();

  constructor(
    next: rpc.Pkcs11Calls<ConnectionState>,
    private readonly filter: () => CompiledFilter,
  ) {
    super(next);
  }

  private selectors(conn: ConnectionState): readonly TokenSelector[] | undefined {
    const f = this.filter();
    return f.authz ? authzEntryFor(f, conn.identity)?.tokens : undefined;
  }

  /** The module slots with a token `sel` picks. */
  private async build(conn: ConnectionState, sel: readonly TokenSelector[]): Promise<View> {
    const n = await this.next.C_GetSlotList(conn, { tokenPresent: 1, count: 0 });
    const all = n.rv === CKR_OK ? await this.next.C_GetSlotList(conn, { tokenPresent: 1, count: n.count }) : n;
    const slots: number[] = [];
    for (const slot of all.rv === CKR_OK ? all.slotList : []) {
      const t = await this.next.C_GetTokenInfo(conn, { slotID: slot });
      if (t.rv !== CKR_OK) continue;
      const str = (b: Buffer): string => b.toString('utf8');
      if (tokenSelected(sel, { label: str(t.info.label), serial: str(t.info.serialNumber), manufacturer: str(t.info.manufacturerID), model: str(t.info.model) })) slots.push(slot);
    }
    const view: View = { generation: this.filter().generation, alias: conn.moduleAlias, slots };
    this.views.set(conn.app, view);
    return view;
  }

  private view(conn: ConnectionState, sel: readonly TokenSelector[]): rpc.MaybePromise<View> {
    const v = this.views.get(conn.app);
    if (v !== undefined && v.generation === this.filter().generation && v.alias === conn.moduleAlias) return v;
    return this.build(conn, sel);
  }

  /** Runs `call` with the module slot of client slot `slotID`, or answers `invalid` for a slot outside the view. */
  private mapped<R>(conn: ConnectionState, slotID: number, invalid: (rv: number) => R, call: (moduleSlot: number) => rpc.MaybePromise<R>): rpc.MaybePromise<R> {
    const sel = this.selectors(conn);
    if (sel === undefined) return call(slotID);
    return then(this.view(conn, sel), (v) => (slotID >= 0 && slotID < v.slots.length ? call(v.slots[slotID]) : invalid(CKR_SLOT_ID_INVALID)));
  }

  C_GetSlotList(conn: ConnectionState, a: rpc.C_GetSlotList_args): rpc.MaybePromise<rpc.C_GetSlotList_ret> {
    const sel = this.selectors(conn);
    if (sel === undefined) return this.next.C_GetSlotList(conn, a);
    return this.build(conn, sel).then((v) => {
      const count = v.slots.length;
      if (a.count === 0) return { rv: CKR_OK, slotList: [], count };
      if (a.count < count) return { rv: CKR_BUFFER_TOO_SMALL, slotList: [], count };
      return { rv: CKR_OK, slotList: v.slots.map((_, i) => i), count };
    });
  }

  C_GetSlotInfo(conn: ConnectionState, a: rpc.C_GetSlotInfo_args): rpc.MaybePromise<rpc.C_GetSlotInfo_ret> {
    return this.mapped(conn, a.slotID, (rv) => this.errorRet('C_GetSlotInfo', rv) as rpc.C_GetSlotInfo_ret, (s) => this.next.C_GetSlotInfo(conn, { ...a, slotID: s }));
  }

  C_GetTokenInfo(conn: ConnectionState, a: rpc.C_GetTokenInfo_args): rpc.MaybePromise<rpc.C_GetTokenInfo_ret> {
    return this.mapped(conn, a.slotID, (rv) => this.errorRet('C_GetTokenInfo', rv) as rpc.C_GetTokenInfo_ret, (s) => this.next.C_GetTokenInfo(conn, { ...a, slotID: s }));
  }

  C_OpenSession(conn: ConnectionState, a: rpc.C_OpenSession_args): rpc.MaybePromise<rpc.C_OpenSession_ret> {
    return this.mapped(conn, a.slotID, (rv) => ({ rv, session: 0 }), (s) => this.next.C_OpenSession(conn, { ...a, slotID: s }));
  }

  C_GetMechanismList(conn: ConnectionState, a: rpc.C_GetMechanismList_args): rpc.MaybePromise<rpc.C_GetMechanismList_ret> {
    return this.mapped(conn, a.slotID, (rv) => this.errorRet('C_GetMechanismList', rv) as rpc.C_GetMechanismList_ret, (s) => this.next.C_GetMechanismList(conn, { ...a, slotID: s }));
  }

  C_GetMechanismInfo(conn: ConnectionState, a: rpc.C_GetMechanismInfo_args): rpc.MaybePromise<rpc.C_GetMechanismInfo_ret> {
    return this.mapped(conn, a.slotID, (rv) => this.errorRet('C_GetMechanismInfo', rv) as rpc.C_GetMechanismInfo_ret, (s) => this.next.C_GetMechanismInfo(conn, { ...a, slotID: s }));
  }

  C_CloseAllSessions(conn: ConnectionState, a: rpc.C_CloseAllSessions_args): rpc.MaybePromise<rpc.px_rv> {
    return this.mapped(conn, a.slotID, (rv) => rv, (s) => this.next.C_CloseAllSessions(conn, { ...a, slotID: s }));
  }

  C_InitToken(conn: ConnectionState, a: rpc.C_InitToken_args): rpc.MaybePromise<rpc.px_rv> {
    return this.mapped(conn, a.slotID, (rv) => rv, (s) => this.next.C_InitToken(conn, { ...a, slotID: s }));
  }

  /** A session's slot, renumbered. A session on a hidden slot cannot exist (C_OpenSession refuses them). */
  C_GetSessionInfo(conn: ConnectionState, a: rpc.C_GetSessionInfo_args): rpc.MaybePromise<rpc.C_GetSessionInfo_ret> {
    const sel = this.selectors(conn);
    if (sel === undefined) return this.next.C_GetSessionInfo(conn, a);
    return then(this.next.C_GetSessionInfo(conn, a), (r) =>
      then(this.view(conn, sel), (v) => {
        if (r.rv !== CKR_OK) return r;
        const i = v.slots.indexOf(r.info.slotID);
        return i < 0 ? { rv: ck.CKR_SESSION_HANDLE_INVALID, info: { ...r.info, slotID: 0 } } : { ...r, info: { ...r.info, slotID: i } };
      }),
    );
  }

  /** An event on a hidden slot is none of this client's business: CKR_NO_EVENT. */
  C_WaitForSlotEvent(conn: ConnectionState, a: rpc.C_WaitForSlotEvent_args): rpc.MaybePromise<rpc.C_WaitForSlotEvent_ret> {
    const sel = this.selectors(conn);
    if (sel === undefined) return this.next.C_WaitForSlotEvent(conn, a);
    return then(this.next.C_WaitForSlotEvent(conn, a), (r) =>
      then(this.view(conn, sel), (v) => {
        if (r.rv !== CKR_OK) return r;
        const i = v.slots.indexOf(r.slotID);
        return i < 0 ? { rv: CKR_NO_EVENT, slotID: 0 } : { rv: CKR_OK, slotID: i };
      }),
    );
  }

  private errorRet(name: 'C_GetSlotInfo' | 'C_GetTokenInfo' | 'C_GetMechanismList' | 'C_GetMechanismInfo', rv: number): unknown {
    return ERROR_RET.get(name)!(rv);
  }
}

const ERROR_RET = new Map(PROCEDURES.map((p) => [p.name, p.errorRet]));
