import { callFieldsOf, isPromise, Pkcs11Passthrough } from '../../generated/pkcs11_rpc';
import type {
  C_CloseAllSessions_args,
  C_CloseSession_args,
  C_DestroyObject_args,
  C_FindObjects_args,
  C_FindObjects_ret,
  C_GetAttributeValue_ret,
  C_OpenSession_args,
  C_OpenSession_ret,
  C_SetAttributeValue_args,
  CallFields,
  CallName,
  MaybePromise,
  Pkcs11Calls,
  px_attribute,
  px_rv,
} from '../../generated/pkcs11_rpc';
import { ck, CKR_OK, CKR_SESSION_HANDLE_INVALID } from '../../pkcs11/constants';
import { Pkcs11Error } from '../../pkcs11/errors';
import type { Application, ConnectionState } from '../dispatch/connection-state';
import type { Logger } from '../log';
import type { AppLimits } from '../settings';
import { installGeneric, invoke, settle, then } from './generic';
import { OBJECT_RESULT_FIELDS, V3_CALL_OF_TYPED } from './object-fields';
import { aliasOf } from './router-layer';
import { auditCallLimit } from '../transport/limits';

const CKA_TOKEN = ck.CKA_TOKEN;
/** Handles are CK_ULONGs; keep them below 2^32 so 32-bit clients can hold them. */
const MAX_HANDLE = 0xffffffff;
/** Low bits of every virtual handle carry the worker index, so numbers never repeat across workers. */
const WORKER_BITS = 4;
/** Bytes counted per session object on top of the attribute bytes the client gave (module bookkeeping, key material it generates). */
export const SESSION_OBJECT_OVERHEAD = 1024;
/**
 * Module time spent closing sessions before yielding to the event loop, so
 * other connections are served in between (a module's C_CloseSession may
 * cost time linear in its open sessions: SoftHSM2 2.6 scans all its handles).
 */
const CLOSE_SLICE_MS = 2;

/** One virtual session: the backend (alias) and module session it stands for. */
interface SessionEntry {
  readonly alias: string;
  readonly module: number;
  readonly slotID: number;
  /** Module numbers of the session objects created in this session; the module destroys them with it. */
  readonly objects: Set<number>;
}

/** One virtual object handle. */
interface ObjectEntry {
  readonly alias: string;
  readonly module: number;
}

/** One application's view: virtual number → backend number, and its usage counted against AppLimits. */
class HandleTables {
  readonly sessions = new Map<number, SessionEntry>();
  readonly objects = new Map<number, ObjectEntry>();
  /** Module object number → virtual, so an object found twice keeps one handle. All entries share the application's alias. */
  readonly objectsByModule = new Map<number, number>();
  /** Open sessions per slot. */
  readonly perSlot = new Map<number, number>();
  sessionObjectBytes = 0;
}

const STATE = Symbol('handles');

/** Calls that create objects: their session objects belong to the creating application. */
const CREATING_CALLS: ReadonlySet<string> = new Set([
  'C_CreateObject', 'C_CopyObject', 'C_GenerateKey', 'C_GenerateKeyPair', 'C_UnwrapKey', 'C_DeriveKey',
]);

/** The template argument that describes each created-object result field. */
const TEMPLATE_OF_RESULT: Readonly<Record<(typeof OBJECT_RESULT_FIELDS)[number], string>> = {
  object: 'template',
  publicKey: 'publicKeyTemplate',
  privateKey: 'privateKeyTemplate',
};

/** A session object's creator: the module shows session objects to every session of this process. */
interface SessionObjectOwner {
  readonly app: Application;
  /** Virtual session that created it; the module destroys the object with that session. */
  readonly session: SessionEntry;
  /** Bytes counted against the application's maxSessionObjectBytes. */
  bytes: number;
}

/** What the layer knows about the objects of one backend, by module object number. */
class BackendObjects {
  readonly owners = new Map<number, SessionObjectOwner>();
  /** Objects the module answered CKA_TOKEN = true for: visible to all. */
  readonly tokenObjects = new Set<number>();
}

function templateBytes(t: unknown): number {
  if (!Array.isArray(t)) return 0;
  let n = 0;
  for (const a of t as px_attribute[]) n += a.value.length;
  return n;
}

/** True when the template asks for a token object (CKA_TOKEN = CK_TRUE). */
function asksToken(t: unknown): boolean {
  if (!Array.isArray(t)) return false;
  const a = (t as px_attribute[]).find((x) => x.type === CKA_TOKEN);
  return a !== undefined && a.value.length > 0 && a.value[0] !== 0;
}

/** Yields to the event loop once CLOSE_SLICE_MS of work has passed since the last yield. */
class Slicer {
  private since = performance.now();
  async tick(): Promise<void> {
    if (performance.now() - this.since < CLOSE_SLICE_MS) return;
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.since = performance.now();
  }
}

/** CKA_TOKEN from a one-attribute C_GetAttributeValue answer; undefined unless the module gave it. */
function tokenFlag(r: C_GetAttributeValue_ret): boolean | undefined {
  const v = r.template[0]?.value;
  if (r.rv !== CKR_OK || v === undefined || v.length !== 1) return undefined;
  return v[0] !== 0;
}

/** Runs `f` on each item in order, each after the previous one finished; a promise only once one of them made one. */
function eachInOrder<T>(items: readonly T[], f: (x: T) => MaybePromise<void>, from = 0): MaybePromise<void> {
  for (let i = from; i < items.length; i++) {
    const r = f(items[i]);
    if (isPromise(r)) return r.then(() => eachInOrder(items, f, i + 1));
  }
  return undefined;
}

/** One C_FindObjects call of the handle layer: what it found so far. */
interface Search {
  readonly conn: ConnectionState;
  readonly a: C_FindObjects_args;
  readonly t: HandleTables;
  readonly alias: string;
  readonly session: number;
  readonly known: BackendObjects;
  readonly objects: number[];
}

function slotKey(alias: string, slotID: number): string {
  return `${alias}\u0000${slotID}`;
}

export interface HandleLayerOptions {
  workerIndex: number;
  log?: Logger;
  limits: AppLimits;
  defaultAlias: string;
}

/**
 * Virtual handles: clients see the daemon's own session and object numbers,
 * never a module's. Every virtual handle and every session-object owner
 * record carries the backend (alias) it belongs to, so module numbers of two
 * backends never meet. An application can only name handles it was given on
 * its backend: anything else is CKR_SESSION_HANDLE_INVALID /
 * CKR_*_HANDLE_INVALID here.
 *
 * Session objects are visible only to their creating application. The owner
 * is recorded as soon as the module answers the creating call, before the
 * result goes up; a session object with no known owner (created by a call
 * still in flight) is invisible to everyone.
 */
export class HandleLayer extends Pkcs11Passthrough<ConnectionState> {
  private counter = 0;
  private readonly backends = new Map<string, BackendObjects>();
  /** Open sessions of all applications per backend slot (slotKey). */
  private readonly slotSessions = new Map<string, number>();
  private readonly workerIndex: number;
  private readonly log?: Logger;
  private readonly limits: AppLimits;
  private readonly defaultAlias: string;

  constructor(next: Pkcs11Calls<ConnectionState>, o: HandleLayerOptions) {
    super(next);
    this.workerIndex = o.workerIndex;
    this.log = o.log;
    this.limits = o.limits;
    this.defaultAlias = o.defaultAlias;
    installGeneric(this, HandleLayer.prototype, (name, conn, args) => this.translate(name, conn, args));
  }

  private tables(conn: ConnectionState): HandleTables {
    return conn.stateFor(STATE, () => new HandleTables());
  }

  private objectsOf(alias: string): BackendObjects {
    let b = this.backends.get(alias);
    if (!b) {
      b = new BackendObjects();
      this.backends.set(alias, b);
    }
    return b;
  }

  private mint(): number {
    this.counter += 1;
    const h = this.counter * (1 << WORKER_BITS) + (this.workerIndex % (1 << WORKER_BITS));
    if (h > MAX_HANDLE) throw new Pkcs11Error(ck.CKR_HOST_MEMORY);
    return h;
  }

  private session(t: HandleTables, alias: string, h: unknown): SessionEntry {
    const s = typeof h === 'number' ? t.sessions.get(h) : undefined;
    if (!s || s.alias !== alias) throw new Pkcs11Error(CKR_SESSION_HANDLE_INVALID);
    return s;
  }

  private virtualObject(t: HandleTables, alias: string, module: number): number {
    let v = t.objectsByModule.get(module);
    if (v === undefined) {
      v = this.mint();
      t.objects.set(v, { alias, module });
      t.objectsByModule.set(module, v);
    }
    return v;
  }

  /**
   * Rewrites the session and object handles of a call's arguments (CALL_FIELDS) into module numbers
   * and the object handles of its result into virtual ones. The result is post-processed as soon as
   * it is there: without a promise when the layer below answered without one.
   */
  private translate(name: CallName, conn: ConnectionState, args: unknown): MaybePromise<unknown> {
    if (args === null || typeof args !== 'object') return invoke(this.next, name, conn, args);
    const f = callFieldsOf(name);
    const alias = aliasOf(conn, this.defaultAlias);
    const t = this.tables(conn);
    const a = f.copyArgs(args);
    let entry: SessionEntry | undefined;
    for (const sf of f.args.session) {
      const s = this.session(t, alias, sf.get(a));
      sf.set(a, s.module);
      entry ??= s;
    }
    for (const of of f.args.object) {
      const v = of.get(a);
      if (v === 0 && of.zeroAllowed) continue;
      const o = t.objects.get(v);
      if (o === undefined || o.alias !== alias) throw new Pkcs11Error(of.invalidRv);
      of.set(a, o.module);
    }
    const creating = entry !== undefined && CREATING_CALLS.has(V3_CALL_OF_TYPED.get(name) ?? name);
    const named = a as Record<string, unknown>;
    // A copy is at least as large as a session object it copies.
    const copied = name === 'C_CopyObject' ? (this.objectsOf(alias).owners.get(named.object as number)?.bytes ?? 0) : 0;
    const estimates = creating ? this.reserve(t, named, copied, { call: name, conn: conn.id, alias }) : undefined;
    return then(invoke(this.next, name, conn, a), (r) => this.translated(f, conn, alias, t, entry, estimates, r));
  }

  /** The result of a translated call with virtual object handles; session objects it created are claimed before it leaves. */
  private translated(
    f: CallFields<unknown, unknown>,
    conn: ConnectionState,
    alias: string,
    t: HandleTables,
    entry: SessionEntry | undefined,
    estimates: Record<string, number> | undefined,
    r: unknown,
  ): MaybePromise<unknown> {
    if (r === null || typeof r !== 'object' || (r as { rv: number }).rv !== CKR_OK) return r;
    const fields = f.result.object;
    if (fields.length === 0) return r;
    const out = f.copyResult(r);
    if (!estimates || !entry) {
      for (const of of fields) {
        const m = of.get(out);
        if (typeof m === 'number') of.set(out, this.virtualObject(t, alias, m));
      }
      return out;
    }
    // Claimed before anything else can run: until the module says it is a
    // token object, only the creator sees it.
    const objects = this.objectsOf(alias);
    const created: Array<[number, SessionObjectOwner]> = [];
    for (const of of fields) {
      const m = of.get(out);
      if (typeof m !== 'number') continue;
      const owner: SessionObjectOwner = { app: conn.app, session: entry, bytes: estimates[of.name] ?? 0 };
      objects.owners.set(m, owner);
      objects.tokenObjects.delete(m);
      entry.objects.add(m);
      t.sessionObjectBytes += owner.bytes;
      created.push([m, owner]);
      of.set(out, this.virtualObject(t, alias, m));
    }
    return then(this.releaseTokenObjects(conn, t, entry, objects, created), () => out);
  }

  /** Created objects the module says are token objects are nobody's session objects: visible to all, counted for none. */
  private releaseTokenObjects(
    conn: ConnectionState,
    t: HandleTables,
    entry: SessionEntry,
    objects: BackendObjects,
    created: Array<[number, SessionObjectOwner]>,
  ): MaybePromise<void> {
    return eachInOrder(created, ([m, owner]) =>
      then(this.isTokenObject(conn, entry.module, m), (token) => {
        if (token !== true) return;
        if (objects.owners.get(m) === owner) objects.owners.delete(m);
        entry.objects.delete(m);
        t.sessionObjectBytes -= owner.bytes;
        objects.tokenObjects.add(m);
      }),
    );
  }

  /**
   * Bytes each created object will count for, checked against the
   * application's limit before the module is asked. A template asking for a
   * token object counts nothing.
   */
  private reserve(t: HandleTables, a: Record<string, unknown>, copied: number, who: { call: string; conn: number; alias: string }): Record<string, number> {
    const est: Record<string, number> = {};
    let total = 0;
    for (const f of OBJECT_RESULT_FIELDS) {
      const tpl = a[TEMPLATE_OF_RESULT[f]];
      est[f] = tpl === undefined || asksToken(tpl) ? 0 : templateBytes(tpl) + SESSION_OBJECT_OVERHEAD + (f === 'object' ? copied : 0);
      total += est[f];
    }
    if (t.sessionObjectBytes + total > this.limits.maxSessionObjectBytes) {
      auditCallLimit('max_session_object_bytes_per_app', who.call, 'CKR_DEVICE_MEMORY', { connection: who.conn, alias: who.alias });
      throw new Pkcs11Error(ck.CKR_DEVICE_MEMORY);
    }
    return est;
  }

  /** CKA_TOKEN of a module object: true/false, or undefined when the module does not answer (error or rejection). */
  private isTokenObject(conn: ConnectionState, session: number, object: number): MaybePromise<boolean | undefined> {
    let r: MaybePromise<C_GetAttributeValue_ret>;
    try {
      r = this.next.C_GetAttributeValue(conn, {
        session,
        object,
        template: [{ type: CKA_TOKEN, value: Buffer.alloc(1), valueLen: 1 }],
      });
    } catch {
      return undefined;
    }
    return isPromise(r) ? r.then(tokenFlag, () => undefined) : tokenFlag(r);
  }

  /** Whether `conn` may see a module object its search found. */
  private visible(conn: ConnectionState, objects: BackendObjects, session: number, object: number): MaybePromise<boolean> {
    const owner = objects.owners.get(object);
    if (owner !== undefined) return owner.app === conn.app;
    if (objects.tokenObjects.has(object)) return true;
    return then(this.isTokenObject(conn, session, object), (token) => {
      if (token !== true) return false;
      // A creating call may have claimed it meanwhile.
      const claimed = objects.owners.get(object);
      if (claimed !== undefined) return claimed.app === conn.app;
      objects.tokenObjects.add(object);
      return true;
    });
  }

  /**
   * Drops other applications' session objects from the results, asking the
   * module for more so the caller still gets up to maxObjectCount.
   */
  C_FindObjects(conn: ConnectionState, a: C_FindObjects_args): MaybePromise<C_FindObjects_ret> {
    const alias = aliasOf(conn, this.defaultAlias);
    const t = this.tables(conn);
    const session = this.session(t, alias, a.session).module;
    const search: Search = { conn, a, t, alias, session, known: this.objectsOf(alias), objects: [] };
    return this.searchOn(search);
  }

  /** Asks the module for the next batch until the caller has maxObjectCount or the module has no more. */
  private searchOn(s: Search): MaybePromise<C_FindObjects_ret> {
    for (;;) {
      const want = s.a.maxObjectCount - s.objects.length;
      const r = this.next.C_FindObjects(s.conn, { session: s.session, maxObjectCount: want });
      if (isPromise(r)) return r.then((v) => then(this.sift(s, want, v), (done) => done ?? this.searchOn(s)));
      const done = this.sift(s, want, r);
      if (isPromise(done)) return done.then((d) => d ?? this.searchOn(s));
      if (done !== undefined) return done;
    }
  }

  /** Keeps the visible objects of one module batch; the final answer, or undefined to ask for more. */
  private sift(s: Search, want: number, r: C_FindObjects_ret): MaybePromise<C_FindObjects_ret | undefined> {
    if (r.rv !== CKR_OK) return s.objects.length ? { rv: CKR_OK, objects: s.objects, count: s.objects.length } : r;
    const finish = (): C_FindObjects_ret | undefined =>
      r.objects.length < want || want <= 0 || s.objects.length >= s.a.maxObjectCount
        ? { rv: CKR_OK, objects: s.objects, count: s.objects.length }
        : undefined;
    return then(eachInOrder(r.objects, (o) => then(this.visible(s.conn, s.known, s.session, o), (v) => {
      if (v) s.objects.push(this.virtualObject(s.t, s.alias, o));
    })), finish);
  }

  /** Forgets the session objects a closed session took with it, and their virtual handles: cost linear in their number. */
  private dropSessionObjects(t: HandleTables, s: SessionEntry): void {
    const known = this.objectsOf(s.alias);
    for (const m of s.objects) {
      const owner = known.owners.get(m);
      if (owner?.session === s) {
        known.owners.delete(m);
        t.sessionObjectBytes -= owner.bytes;
      }
      const v = t.objectsByModule.get(m);
      if (v !== undefined) {
        t.objectsByModule.delete(m);
        t.objects.delete(v);
      }
    }
    s.objects.clear();
  }

  C_OpenSession(conn: ConnectionState, a: C_OpenSession_args): MaybePromise<C_OpenSession_ret> {
    const t = this.tables(conn);
    if (t.sessions.size >= this.limits.maxSessions) {
      auditCallLimit('max_sessions_per_app', 'C_OpenSession', 'CKR_SESSION_COUNT', { connection: conn.id, alias: aliasOf(conn, this.defaultAlias) });
      return { rv: ck.CKR_SESSION_COUNT, session: 0 };
    }
    const alias = aliasOf(conn, this.defaultAlias);
    // Counted before the module is asked, so a close-all never misses a session being opened.
    const k = slotKey(alias, a.slotID);
    this.slotSessions.set(k, (this.slotSessions.get(k) ?? 0) + 1);
    let r: MaybePromise<C_OpenSession_ret>;
    try {
      r = this.next.C_OpenSession(conn, a);
    } catch (e) {
      this.uncount(k);
      throw e;
    }
    if (!isPromise(r)) return this.opened(t, alias, k, a, r);
    return r.then(
      (v) => this.opened(t, alias, k, a, v),
      (e: unknown) => {
        this.uncount(k);
        throw e;
      },
    );
  }

  /** Records a session the module opened (or uncounts the one it refused) and gives it a virtual handle. */
  private opened(t: HandleTables, alias: string, k: string, a: C_OpenSession_args, r: C_OpenSession_ret): C_OpenSession_ret {
    if (r.rv !== CKR_OK) {
      this.uncount(k);
      return r;
    }
    const v = this.mint();
    t.sessions.set(v, { alias, module: r.session, slotID: a.slotID, objects: new Set() });
    t.perSlot.set(a.slotID, (t.perSlot.get(a.slotID) ?? 0) + 1);
    return { rv: r.rv, session: v };
  }

  private uncount(k: string): void {
    const all = (this.slotSessions.get(k) ?? 1) - 1;
    if (all > 0) this.slotSessions.set(k, all);
    else this.slotSessions.delete(k);
  }

  C_CloseSession(conn: ConnectionState, a: C_CloseSession_args): MaybePromise<px_rv> {
    const t = this.tables(conn);
    const s = this.session(t, aliasOf(conn, this.defaultAlias), a.session);
    return then(this.next.C_CloseSession(conn, { session: s.module }), (rv) => {
      // The session is gone for the client whatever the module said.
      this.forgetSession(t, a.session, s);
      return rv;
    });
  }

  /** Drops a closed session from every table. */
  private forgetSession(t: HandleTables, v: number, s: SessionEntry): void {
    if (!t.sessions.delete(v)) return;
    this.dropSessionObjects(t, s);
    const left = (t.perSlot.get(s.slotID) ?? 1) - 1;
    if (left > 0) t.perSlot.set(s.slotID, left);
    else t.perSlot.delete(s.slotID);
    this.uncount(slotKey(s.alias, s.slotID));
  }

  /**
   * Closes the application's sessions on one slot. When they are all the
   * sessions this process has there, one module C_CloseAllSessions does it
   * (linear in the module too); otherwise one C_CloseSession each, yielding
   * to the event loop between slices. Returns how many the module closed.
   */
  private async closeSlot(conn: ConnectionState, t: HandleTables, alias: string, slotID: number): Promise<number> {
    const mine = [...t.sessions].filter(([, s]) => s.slotID === slotID && s.alias === alias);
    if (mine.length === 0) return 0;
    if (mine.length === this.slotSessions.get(slotKey(alias, slotID))) {
      const rv = await settle(() => this.next.C_CloseAllSessions(conn, { slotID }));
      if (rv === CKR_OK) {
        const slicer = new Slicer();
        for (const [v, s] of mine) {
          await slicer.tick();
          this.forgetSession(t, v, s);
        }
        return mine.length;
      }
    }
    const slicer = new Slicer();
    let closed = 0;
    for (const [v, s] of mine) {
      await slicer.tick();
      const rv = await settle(() => this.next.C_CloseSession(conn, { session: s.module }));
      if (rv === CKR_OK) closed += 1;
      this.forgetSession(t, v, s);
    }
    return closed;
  }

  /**
   * Closes the caller's sessions on the slot one by one: the module's
   * C_CloseAllSessions would close every application's. The slot is checked
   * with the module first, so an unknown slot answers CKR_SLOT_ID_INVALID.
   */
  async C_CloseAllSessions(conn: ConnectionState, a: C_CloseAllSessions_args): Promise<px_rv> {
    const slot = await this.next.C_GetSlotInfo(conn, { slotID: a.slotID });
    if (slot.rv !== CKR_OK) return slot.rv;
    await this.closeSlot(conn, this.tables(conn), aliasOf(conn, this.defaultAlias), a.slotID);
    return CKR_OK;
  }

  C_DestroyObject(conn: ConnectionState, a: C_DestroyObject_args): MaybePromise<px_rv> {
    const t = this.tables(conn);
    return then(this.translate('C_DestroyObject', conn, a) as MaybePromise<px_rv>, (rv) => {
      const o = t.objects.get(a.object);
      if (rv !== CKR_OK || o === undefined) return rv;
      t.objects.delete(a.object);
      t.objectsByModule.delete(o.module);
      const known = this.objectsOf(o.alias);
      known.tokenObjects.delete(o.module);
      const owner = known.owners.get(o.module);
      if (owner !== undefined) {
        known.owners.delete(o.module);
        owner.session.objects.delete(o.module);
        t.sessionObjectBytes -= owner.bytes;
      }
      return rv;
    });
  }

  /** Attribute bytes written to a session object count against the application's limit (never given back before the object goes). */
  C_SetAttributeValue(conn: ConnectionState, a: C_SetAttributeValue_args): MaybePromise<px_rv> {
    const t = this.tables(conn);
    const o = t.objects.get(a.object);
    const owner = o === undefined ? undefined : this.objectsOf(o.alias).owners.get(o.module);
    const grow = owner?.app === conn.app ? templateBytes(a.template) : 0;
    if (grow > 0 && t.sessionObjectBytes + grow > this.limits.maxSessionObjectBytes) {
      auditCallLimit('max_session_object_bytes_per_app', 'C_SetAttributeValue', 'CKR_DEVICE_MEMORY', { connection: conn.id, alias: aliasOf(conn, this.defaultAlias) });
      return ck.CKR_DEVICE_MEMORY;
    }
    return then(this.translate('C_SetAttributeValue', conn, a) as MaybePromise<px_rv>, (rv) => {
      if (rv === CKR_OK && owner !== undefined && grow > 0) {
        owner.bytes += grow;
        t.sessionObjectBytes += grow;
      }
      return rv;
    });
  }

  /**
   * Releases the application's sessions; the module itself stays
   * initialized for the others. Linear in the number of sessions (see
   * closeSlot).
   */
  async C_Finalize(conn: ConnectionState): Promise<px_rv> {
    const t = this.tables(conn);
    const total = t.sessions.size;
    let closed = 0;
    const slots = new Map<string, { alias: string; slotID: number }>();
    for (const s of t.sessions.values()) slots.set(slotKey(s.alias, s.slotID), { alias: s.alias, slotID: s.slotID });
    for (const { alias, slotID } of slots.values()) closed += await this.closeSlot(conn, t, alias, slotID);
    this.log?.('debug', `[conn ${conn.id}] released: closed ${closed} of ${total} module sessions`);
    for (const [v, s] of [...t.sessions]) this.forgetSession(t, v, s);
    t.objects.clear();
    t.objectsByModule.clear();
    t.sessionObjectBytes = 0;
    return this.next.C_Finalize(conn);
  }
}
