import { Pkcs11Passthrough } from '../../generated/pkcs11_rpc';
import type {
  C_CloseAllSessions_args,
  C_CloseSession_args,
  C_DestroyObject_args,
  C_FindObjects_args,
  C_FindObjects_ret,
  C_OpenSession_args,
  C_OpenSession_ret,
  Pkcs11Calls,
  px_rv,
} from '../../generated/pkcs11_rpc';
import { ck, CKR_OK, CKR_SESSION_HANDLE_INVALID } from '../../pkcs11/constants';

const CKA_TOKEN = ck.CKA_TOKEN;
import { Pkcs11Error, rvOf } from '../../pkcs11/errors';
import type { Application, ConnectionState } from '../dispatch/connection-state';
import type { Logger } from '../log';
import { installGeneric, invoke } from './generic';
import { OBJECT_ARG_FIELDS, OBJECT_RESULT_FIELDS, V3_CALL_OF_TYPED } from './object-fields';

/** Handles are CK_ULONGs; keep them below 2^32 so 32-bit clients can hold them. */
const MAX_HANDLE = 0xffffffff;
/** Low bits of every virtual handle carry the worker index, so numbers never repeat across workers. */
const WORKER_BITS = 4;


interface SessionEntry {
  readonly backend: number;
  readonly slotID: number;
}

/** One connection's view: virtual number → backend number. */
class HandleTables {
  readonly sessions = new Map<number, SessionEntry>();
  readonly objects = new Map<number, number>();
  /** backend object → virtual, so an object found twice keeps one handle. */
  readonly objectsByBackend = new Map<number, number>();
}

const STATE = Symbol('handles');

/** Calls that create objects: their session objects belong to the creating connection. */
const CREATING_CALLS: ReadonlySet<string> = new Set([
  'C_CreateObject', 'C_CopyObject', 'C_GenerateKey', 'C_GenerateKeyPair', 'C_UnwrapKey', 'C_DeriveKey',
]);

/** A session object's creator: the module shows session objects to every session of this process. */
interface SessionObjectOwner {
  app: Application;
  /** Module session that created it; the module destroys the object with that session. */
  session: number;
}

/**
 * Virtual handles: clients see the daemon's own session and object numbers,
 * never the module's. A connection can only name handles it was given, so
 * another connection's handle is CKR_SESSION_HANDLE_INVALID /
 * CKR_OBJECT_HANDLE_INVALID here. This indirection is what later lets a
 * session move to another backend.
 */
export class HandleLayer extends Pkcs11Passthrough<ConnectionState> {
  private counter = 0;
  /** Module object number → creator, for session objects only (token objects are shared by design). */
  private readonly sessionObjects = new Map<number, SessionObjectOwner>();

  constructor(
    next: Pkcs11Calls<ConnectionState>,
    private readonly workerIndex = 0,
    private readonly log?: Logger,
  ) {
    super(next);
    installGeneric(this, HandleLayer.prototype, (name, conn, args) => this.translate(name, conn, args));
  }

  private tables(conn: ConnectionState): HandleTables {
    return conn.stateFor(STATE, () => new HandleTables());
  }

  private mint(): number {
    this.counter += 1;
    const h = this.counter * (1 << WORKER_BITS) + (this.workerIndex % (1 << WORKER_BITS));
    if (h > MAX_HANDLE) throw new Pkcs11Error(ck.CKR_HOST_MEMORY);
    return h;
  }

  private backendSession(t: HandleTables, h: unknown): number {
    const s = typeof h === 'number' ? t.sessions.get(h) : undefined;
    if (!s) throw new Pkcs11Error(CKR_SESSION_HANDLE_INVALID);
    return s.backend;
  }

  private virtualObject(t: HandleTables, backend: number): number {
    let v = t.objectsByBackend.get(backend);
    if (v === undefined) {
      v = this.mint();
      t.objects.set(v, backend);
      t.objectsByBackend.set(backend, v);
    }
    return v;
  }

  private async translate(name: Parameters<typeof invoke>[1], conn: ConnectionState, args: unknown): Promise<unknown> {
    const t = this.tables(conn);
    let a = args;
    if (args !== null && typeof args === 'object') {
      const copy: Record<string, unknown> = { ...(args as Record<string, unknown>) };
      if ('session' in copy) copy.session = this.backendSession(t, copy.session);
      for (const [field, spec] of OBJECT_ARG_FIELDS) {
        if (!(field in copy)) continue;
        const v = copy[field] as number;
        if (v === 0 && spec.zeroAllowed) continue;
        const b = t.objects.get(v);
        if (b === undefined) throw new Pkcs11Error(spec.rv);
        copy[field] = b;
      }
      a = copy;
    }
    const r = await invoke(this.next, name, conn, a);
    if (r === null || typeof r !== 'object' || (r as { rv: number }).rv !== CKR_OK) return r;
    const out: Record<string, unknown> = { ...(r as Record<string, unknown>) };
    const session = (a as { session?: number } | undefined)?.session;
    for (const f of OBJECT_RESULT_FIELDS) {
      if (typeof out[f] !== 'number') continue;
      if (CREATING_CALLS.has(V3_CALL_OF_TYPED.get(name) ?? name) && session !== undefined) await this.claimIfSessionObject(conn, session, out[f] as number);
      out[f] = this.virtualObject(t, out[f] as number);
    }
    return out;
  }

  private async claimIfSessionObject(conn: ConnectionState, session: number, object: number): Promise<void> {
    const r = await this.next.C_GetAttributeValue(conn, {
      session,
      object,
      template: [{ type: CKA_TOKEN, value: Buffer.alloc(1), valueLen: 1 }],
    });
    const v = r.template[0]?.value;
    if (r.rv === CKR_OK && v !== undefined && v.length === 1 && v[0] === 0) this.sessionObjects.set(object, { app: conn.app, session });
  }

  private visible(conn: ConnectionState, object: number): boolean {
    const owner = this.sessionObjects.get(object);
    return owner === undefined || owner.app === conn.app;
  }

  /**
   * Drops other connections' session objects from the results, asking the
   * module for more so the caller still gets up to maxObjectCount.
   */
  async C_FindObjects(conn: ConnectionState, a: C_FindObjects_args): Promise<C_FindObjects_ret> {
    const t = this.tables(conn);
    const session = this.backendSession(t, a.session);
    const objects: number[] = [];
    for (;;) {
      const want = a.maxObjectCount - objects.length;
      const r = await this.next.C_FindObjects(conn, { session, maxObjectCount: want });
      if (r.rv !== CKR_OK) return objects.length ? { rv: CKR_OK, objects, count: objects.length } : r;
      for (const o of r.objects) if (this.visible(conn, o)) objects.push(this.virtualObject(t, o));
      if (r.objects.length < want || want <= 0 || objects.length >= a.maxObjectCount) break;
    }
    return { rv: CKR_OK, objects, count: objects.length };
  }

  private forgetSessionObjects(pred: (o: SessionObjectOwner) => boolean): void {
    for (const [obj, owner] of this.sessionObjects) if (pred(owner)) this.sessionObjects.delete(obj);
  }

  async C_OpenSession(conn: ConnectionState, a: C_OpenSession_args): Promise<C_OpenSession_ret> {
    const r = await this.next.C_OpenSession(conn, a);
    if (r.rv !== CKR_OK) return r;
    const v = this.mint();
    this.tables(conn).sessions.set(v, { backend: r.session, slotID: a.slotID });
    return { rv: r.rv, session: v };
  }

  async C_CloseSession(conn: ConnectionState, a: C_CloseSession_args): Promise<px_rv> {
    const t = this.tables(conn);
    const backend = this.backendSession(t, a.session);
    const rv = await this.next.C_CloseSession(conn, { session: backend });
    // The session is gone for the client whatever the module said.
    t.sessions.delete(a.session);
    this.forgetSessionObjects((o) => o.app === conn.app && o.session === backend);
    return rv;
  }

  /** Closes only this connection's sessions on the slot: other clients share the module. */
  /**
   * Closes the caller's sessions on the slot one by one: the module's
   * C_CloseAllSessions would close every application's. The slot is checked
   * with the module first, so an unknown slot answers CKR_SLOT_ID_INVALID.
   */
  async C_CloseAllSessions(conn: ConnectionState, a: C_CloseAllSessions_args): Promise<px_rv> {
    const slot = await this.next.C_GetSlotInfo(conn, { slotID: a.slotID });
    if (slot.rv !== CKR_OK) return slot.rv;
    const t = this.tables(conn);
    for (const [v, s] of [...t.sessions]) {
      if (s.slotID !== a.slotID) continue;
      t.sessions.delete(v);
      await Promise.resolve().then(() => this.next.C_CloseSession(conn, { session: s.backend })).catch(() => undefined);
      this.forgetSessionObjects((o) => o.app === conn.app && o.session === s.backend);
    }
    return CKR_OK;
  }

  async C_DestroyObject(conn: ConnectionState, a: C_DestroyObject_args): Promise<px_rv> {
    const t = this.tables(conn);
    const rv = (await this.translate('C_DestroyObject', conn, a)) as px_rv;
    if (rv === CKR_OK) {
      const b = t.objects.get(a.object);
      t.objects.delete(a.object);
      if (b !== undefined) t.objectsByBackend.delete(b);
    }
    return rv;
  }

  /** Releases this connection's sessions; the module itself stays initialized for the others. */
  async C_Finalize(conn: ConnectionState): Promise<px_rv> {
    const t = this.tables(conn);
    let closed = 0;
    for (const s of t.sessions.values()) {
      const rv = await Promise.resolve()
        .then(() => this.next.C_CloseSession(conn, { session: s.backend }))
        .catch((e: unknown) => rvOf(e));
      if (rv === CKR_OK) closed += 1;
    }
    this.log?.('debug', `[conn ${conn.id}] released: closed ${closed} of ${t.sessions.size} module sessions`);
    t.sessions.clear();
    this.forgetSessionObjects((o) => o.app === conn.app);
    t.objects.clear();
    t.objectsByBackend.clear();
    return this.next.C_Finalize(conn);
  }
}
