import { CALL_INVOKERS, PROCEDURES } from '../../generated/pkcs11_rpc';
import type {
  C_GetInfo_ret,
  C_GetSlotList_args,
  C_GetSlotList_ret,
  C_WaitForSlotEvent_args,
  C_WaitForSlotEvent_ret,
  CallName,
  Pkcs11Calls,
} from '../../generated/pkcs11_rpc';
import { ck, CKR_OK } from '../../pkcs11/constants';
import { Pkcs11Error, errorMessage, rvOf } from '../../pkcs11/errors';
import { OBJECT_ARG_FIELDS, OBJECT_RESULT_FIELDS } from '../../server/layers/object-fields';
import { BackendBase } from '../backend';
import type { Backend, BackendContext } from '../backend';
import type { SlotNatSpec } from './pool-spec';

/** One aliased backend whose slots the NAT lists. */
interface NatMember {
  readonly index: number;
  readonly alias: string;
  readonly backend: Backend;
  readonly ctx: BackendContext;
}

/** A virtual slot: the member and its own CK_SLOT_ID. */
interface NatSlot {
  readonly member: NatMember;
  readonly slotID: number;
}

interface NatSession {
  readonly member: NatMember;
  readonly handle: number;
  readonly slot: number;
}

function padded(s: string, width: number): Buffer {
  const b = Buffer.alloc(width, 0x20);
  Buffer.from(s, 'utf8').copy(b, 0, 0, width);
  return b;
}

/**
 * Slot NAT ("PKCS #11 NAT"): one alias listing the slots of several
 * aliases (different modules) side by side. Virtual slot ids are 0..n-1:
 * the first alias's slots in its C_GetSlotList order, then the second's,
 * as the modules listed them when the NAT was opened (slots a module adds
 * later are not listed). Sessions and object handles are renumbered so
 * that numbers of two modules never collide; every call naming a session,
 * a slot or an object goes to the module it belongs to, with that
 * module's numbers. Login is per virtual slot (each one is one real
 * token). An object handle of one module given in a session of another
 * answers the handle's CKR_*_HANDLE_INVALID.
 */
export class SlotNatBackend extends BackendBase {
  readonly alias: string;
  private readonly members: NatMember[];
  private slots: NatSlot[] = [];
  private readonly sessions = new Map<number, NatSession>();
  private nextSession = 1;
  /** Virtual object handle ↔ member object. */
  private readonly objects = new Map<number, { member: NatMember; handle: number }>();
  private readonly objectIds = new Map<string, number>();
  private nextObject = 1;
  private readonly started: Promise<void>;

  constructor(
    spec: SlotNatSpec,
    backends: ReadonlyMap<string, Backend>,
    warn: (msg: string) => void,
  ) {
    super();
    this.alias = spec.name;
    const members = spec.aliases.map((alias, index): NatMember => {
      const backend = backends.get(alias);
      if (backend === undefined) throw new Error(`slot_nat '${spec.name}': alias '${alias}' has no backend`);
      return { index, alias, backend, ctx: Object.freeze({ appId: 0, alias }) };
    });
    this.members = members;
    this.started = (async () => {
      const slots: NatSlot[] = [];
      for (const member of members) {
        try {
          const r = (await member.backend.C_GetSlotList(member.ctx, { tokenPresent: 0, count: 4096 })) as C_GetSlotList_ret;
          if (r.rv !== CKR_OK) throw new Pkcs11Error(r.rv, 'C_GetSlotList');
          for (const slotID of r.slotList) slots.push({ member, slotID });
        } catch (e) {
          warn(`slot_nat '${spec.name}': alias '${member.alias}' lists no slot: ${errorMessage(e)}`);
        }
      }
      this.slots = slots;
    })();
    for (const p of new Set(PROCEDURES.map((x) => x.name))) {
      // The calls the NAT answers itself (defined here or inherited from BackendBase); every other
      // call names a session or a slot and goes to its member.
      if (p in SlotNatBackend.prototype) continue;
      Object.defineProperty(this, p, { value: (_c: BackendContext, a: Record<string, unknown>) => this.forward(p, a), enumerable: false, writable: false });
    }
  }

  asBackend(): Backend {
    return this as unknown as Backend;
  }

  finalize(): void {
    // The members are finalized by their own aliases.
  }

  private objectId(member: NatMember, handle: number): number {
    const k = `${member.index}:${handle}`;
    let v = this.objectIds.get(k);
    if (v === undefined) {
      v = this.nextObject++;
      this.objectIds.set(k, v);
      this.objects.set(v, { member, handle });
    }
    return v;
  }

  private async forward(name: CallName, args: Record<string, unknown>): Promise<unknown> {
    await this.started;
    const a: Record<string, unknown> = { ...args };
    let member: NatMember;
    let sessionSlot = -1;
    if (typeof a.session === 'number') {
      const s = this.sessions.get(a.session);
      if (s === undefined) throw new Pkcs11Error(ck.CKR_SESSION_HANDLE_INVALID);
      member = s.member;
      sessionSlot = s.slot;
      a.session = s.handle;
    } else if (typeof a.slotID === 'number') {
      sessionSlot = a.slotID;
      const slot = this.slots[a.slotID];
      if (slot === undefined) throw new Pkcs11Error(ck.CKR_SLOT_ID_INVALID);
      member = slot.member;
      a.slotID = slot.slotID;
    } else {
      throw new Pkcs11Error(ck.CKR_FUNCTION_NOT_SUPPORTED);
    }
    for (const [field, spec] of OBJECT_ARG_FIELDS) {
      const v = a[field];
      if (typeof v !== 'number' || (v === 0 && spec.zeroAllowed)) continue;
      const o = this.objects.get(v);
      if (o === undefined || o.member !== member) throw new Pkcs11Error(spec.rv);
      a[field] = o.handle;
    }
    const r = (await CALL_INVOKERS[name](member.backend as Pkcs11Calls<BackendContext>, member.ctx, a)) as unknown;
    if (typeof r !== 'object' || r === null) {
      if (name === 'C_CloseSession' && r === CKR_OK) this.sessions.delete(args.session as number);
      if (name === 'C_CloseAllSessions' && r === CKR_OK) for (const [h, s] of this.sessions) if (s.slot === sessionSlot) this.sessions.delete(h);
      if (name === 'C_DestroyObject' && r === CKR_OK) this.objects.delete(args.object as number);
      return r;
    }
    const out = { ...(r as Record<string, unknown>) };
    if (out.rv !== CKR_OK) return out;
    if (name === 'C_OpenSession') {
      const h = this.nextSession++;
      this.sessions.set(h, { member, handle: out.session as number, slot: sessionSlot });
      out.session = h;
    }
    if (name === 'C_FindObjects') out.objects = (out.objects as number[]).map((h) => this.objectId(member, h));
    for (const f of OBJECT_RESULT_FIELDS) if (typeof out[f] === 'number') out[f] = this.objectId(member, out[f] as number);
    if (name === 'C_GetSessionInfo') out.info = { ...(out.info as Record<string, unknown>), slotID: sessionSlot };
    return out;
  }

  C_GetInfo(): C_GetInfo_ret {
    const v = { major: Buffer.from([2]), minor: Buffer.from([40]) };
    return {
      rv: CKR_OK,
      info: {
        cryptokiVersion: v,
        manufacturerID: padded('pkcs11proxyd', 32),
        flags: 0,
        libraryDescription: padded(`slot NAT ${this.alias}`, 32),
        libraryVersion: { major: Buffer.from([1]), minor: Buffer.from([0]) },
      },
    };
  }

  async C_GetSlotList(_c: BackendContext, a: C_GetSlotList_args): Promise<C_GetSlotList_ret> {
    await this.started;
    let list = this.slots.map((_s, i) => i);
    if (a.tokenPresent !== 0) {
      const present = new Set<string>();
      for (const m of this.members) {
        try {
          const r = (await m.backend.C_GetSlotList(m.ctx, { tokenPresent: 1, count: 4096 })) as C_GetSlotList_ret;
          if (r.rv === CKR_OK) for (const id of r.slotList) present.add(`${m.index}:${id}`);
        } catch {
          // A module that cannot list its slots has no token present.
        }
      }
      list = list.filter((i) => present.has(`${this.slots[i].member.index}:${this.slots[i].slotID}`));
    }
    if (a.count === 0) return { rv: CKR_OK, slotList: [], count: list.length };
    if (a.count < list.length) return { rv: ck.CKR_BUFFER_TOO_SMALL, slotList: [], count: list.length };
    return { rv: CKR_OK, slotList: list, count: list.length };
  }

  async C_WaitForSlotEvent(_c: BackendContext, a: C_WaitForSlotEvent_args): Promise<C_WaitForSlotEvent_ret> {
    await this.started;
    if ((a.flags & ck.CKF_DONT_BLOCK) === 0) return { rv: ck.CKR_FUNCTION_NOT_SUPPORTED, slotID: 0 };
    for (const m of this.members) {
      let r: C_WaitForSlotEvent_ret;
      try {
        r = (await m.backend.C_WaitForSlotEvent(m.ctx, a)) as C_WaitForSlotEvent_ret;
      } catch (e) {
        if (rvOf(e) === ck.CKR_NO_EVENT) continue;
        throw e;
      }
      if (r.rv !== CKR_OK) continue;
      const i = this.slots.findIndex((s) => s.member === m && s.slotID === r.slotID);
      if (i >= 0) return { rv: CKR_OK, slotID: i };
    }
    return { rv: ck.CKR_NO_EVENT, slotID: 0 };
  }

}
