import { CALL_INVOKERS, isPromise } from '../../generated/pkcs11_rpc';
import type * as rpc from '../../generated/pkcs11_rpc';
import { ck, CKR_OK, CK_UNAVAILABLE_INFORMATION_WIRE, rvName } from '../../pkcs11/constants';
import { Pkcs11Error, errorMessage, rvOf } from '../../pkcs11/errors';
import { Backoff } from '../../server/supervision/backoff';
import { BackendBase } from '../backend';
import type { Backend, BackendContext } from '../backend';
import { isMemberFailure, MULTIPART_LOST_RV, NO_MEMBER_RV, TOKEN_OBJECT_CHANGE_RV } from './failover';
import { PoolMember } from './member';
import { parseTokenUri, uriMatches } from './pkcs11-uri';
import type { PoolSpec } from './pool-spec';
import { createStrategy } from './strategy';
import type { PoolStrategy } from './strategy';
import type { PoolObserver } from './observer';

const EMPTY = Buffer.alloc(0);
/** Room offered per identity attribute when reading it; larger values take a second, sized read. */
const IDENTITY_VALUE_ROOM = 1024;
/** Slots and mechanisms asked for in one call (the protocol returns the whole list when it fits). */
const LIST_ROOM = 4096;
/**
 * Shortest timeout of a health probe's calls, ms: a member that is starting
 * (a helper process being spawned and initializing its module) is given
 * this long before it counts as down, whatever call_timeout_ms says.
 */
const PROBE_TIMEOUT_FLOOR_MS = 5000;

function padded(s: string, width: number): Buffer {
  const b = Buffer.alloc(width, 0x20);
  Buffer.from(s, 'utf8').copy(b, 0, 0, width);
  return b;
}

function asksToken(t: readonly rpc.px_attribute[]): boolean {
  const a = t.find((x) => x.type === ck.CKA_TOKEN);
  return a !== undefined && a.value.length > 0 && a.value[0] !== 0;
}

/** A result's CK_RV: px_rv results are numbers, the others carry `rv`. Non-CKR_OK throws. */
function ok<T>(r: T): T {
  const rv = typeof r === 'number' ? r : (r as { rv?: unknown }).rv;
  if (typeof rv === 'number' && rv !== CKR_OK) throw new Pkcs11Error(rv);
  return r;
}

/** Operation kinds a session may have active at once, by the *Init call that starts them. */
type OpKind = 'digest' | 'sign' | 'verify' | 'encrypt' | 'decrypt' | 'signRecover' | 'verifyRecover';

/** An active operation: where it runs and how to start it again elsewhere. */
interface Operation {
  readonly kind: OpKind;
  /** The *Init call as the client made it (pool key handle, pool session). */
  readonly init: rpc.CallName;
  readonly initArgs: { session: number; key?: number };
  member: PoolMember;
  memberSession: number;
  generation: number;
  /** Data has reached the member (an Update or DigestKey succeeded): it cannot move any more. */
  multipart: boolean;
}

interface FindState {
  readonly template: rpc.px_attribute[];
  member: PoolMember;
  memberSession: number;
  generation: number;
  /** Pool handles already returned: a search replayed on another member skips them. */
  readonly returned: Set<number>;
  done: boolean;
  /** Session objects of other members that match, found once `member` is exhausted; null until then. */
  others: number[] | null;
}

interface MemberSession {
  readonly handle: number;
  readonly generation: number;
}

interface PoolSession {
  readonly handle: number;
  readonly flags: number;
  readonly members: Map<PoolMember, MemberSession>;
  readonly ops: Map<OpKind, Operation>;
  find: FindState | null;
  /** Session objects made through this session (destroyed with it). */
  readonly objects: Set<number>;
}

/**
 * An object as the pool numbers it. A token object is known by its identity
 * (the match attributes' values) and found on each member by them; a session
 * object exists on the member that made it only (`pinned`).
 */
interface PoolObject {
  readonly handle: number;
  /** Identity key (match attribute types and values); '' for pinned objects. */
  readonly key: string;
  /** The match attributes with their values: the search template on other members. */
  readonly template: rpc.px_attribute[];
  readonly pinned: PoolMember | null;
  readonly pinnedGeneration: number;
}

/** The member does not have the object (it was not provisioned there): try another member, do not mark it down. */
class MemberLacksObject extends Pkcs11Error {}

/** The pool's PIN while it is logged in: kept only to log in members it reaches later; wiped on logout. */
interface PoolLogin {
  readonly userType: number;
  readonly pin: Buffer;
}

const INIT_KIND: Readonly<Partial<Record<rpc.CallName, OpKind>>> = {
  C_DigestInit: 'digest', px_DigestInitTyped: 'digest',
  C_SignInit: 'sign', px_SignInitTyped: 'sign',
  C_VerifyInit: 'verify', px_VerifyInitTyped: 'verify',
  C_EncryptInit: 'encrypt', px_EncryptInitTyped: 'encrypt',
  C_DecryptInit: 'decrypt', px_DecryptInitTyped: 'decrypt',
  C_SignRecoverInit: 'signRecover', px_SignRecoverInitTyped: 'signRecover',
  C_VerifyRecoverInit: 'verifyRecover', px_VerifyRecoverInitTyped: 'verifyRecover',
};

/**
 * A pool: one virtual slot whose token is any of several member tokens that
 * hold the same keys. Sessions, object handles and login are the pool's
 * own; each operation runs on a member the strategy picks among those that
 * are up, in a module session the pool opens there on demand.
 *
 * Failover (failover.ts): a member answering a member-failure CK_RV, or not
 * answering within callTimeoutMs, is marked down; its module sessions are
 * dropped. Replayable work moves to another member without the client
 * seeing it: an *Init followed by its one-shot call (C_Sign, C_Verify,
 * C_Encrypt, C_Decrypt, C_Digest, C_SignRecover, C_VerifyRecover; also the
 * first C_*Update, before any data reached the member), C_GenerateRandom,
 * C_SeedRandom, C_GetAttributeValue, C_GetObjectSize, C_WrapKey and
 * C_FindObjects (the search starts again on the new member, skipping
 * objects already returned). Work that is not replayable answers
 * CKR_DEVICE_ERROR: a multi-part operation that received data
 * (MULTIPART_LOST_RV), object creation (never replayed: the failed member
 * may have made the object), and any use of a session object made on the
 * failed member (it is gone with the member's sessions). A new member
 * session is logged in with the PIN the pool keeps while logged in.
 *
 * Objects: token objects cannot be created, destroyed or modified through
 * the pool (TOKEN_OBJECT_CHANGE_RV). Session objects (C_GenerateKey,
 * C_GenerateKeyPair, C_CreateObject, C_CopyObject, C_UnwrapKey, C_DeriveKey
 * without CKA_TOKEN = CK_TRUE) are made on one member and every call using
 * them runs there. C_FindObjects searches one member (its token objects and
 * the session objects made there), then the other members holding session
 * objects made through the pool, keeping only those.
 *
 * Not supported (CKR_FUNCTION_NOT_SUPPORTED): C_InitToken, C_InitPIN,
 * C_SetPIN (administer the members directly), dual-function updates,
 * operation state, blocking C_WaitForSlotEvent. C_Login takes CKU_USER only
 * (CKR_USER_TYPE_INVALID otherwise).
 */
export class PoolBackend extends BackendBase implements Backend {
  readonly alias: string;
  readonly members: readonly PoolMember[];
  private readonly strategy: PoolStrategy;
  private readonly sessions = new Map<number, PoolSession>();
  private nextSession = 1;
  private readonly objects = new Map<number, PoolObject>();
  private readonly byKey = new Map<string, number>();
  private nextObject = 1;
  private login: PoolLogin | null = null;
  private readonly timers = new Map<PoolMember, NodeJS.Timeout>();
  private readonly backoffs = new Map<PoolMember, Backoff>();
  private finalized = false;
  /** Settles once every member was probed once: calls wait for it so that the first client sees the members that are up. */
  private readonly started: Promise<void>;

  constructor(
    readonly spec: PoolSpec,
    backends: ReadonlyMap<string, Backend>,
    private readonly observer: PoolObserver,
  ) {
    super();
    this.alias = spec.name;
    this.strategy = createStrategy(spec.strategy);
    this.members = spec.members.map((m, i) => {
      const b = backends.get(m.alias);
      if (b === undefined) throw new Error(`pool '${spec.name}': member alias '${m.alias}' has no backend`);
      return new PoolMember(i, m.alias, parseTokenUri(m.uri), m.weight, b);
    });
    for (const m of this.members) {
      this.backoffs.set(m, new Backoff({ baseMs: spec.retryBaseMs, maxMs: spec.retryMaxMs, jitter: 0.5, stableMs: Math.max(spec.probeIntervalMs * 4, spec.retryMaxMs) }));
    }
    this.started = Promise.all(this.members.map((m) => this.probe(m))).then(() => undefined);
  }

  finalize(): void {
    this.finalized = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    this.wipeLogin();
  }

  // ---------------------------------------------------------------- member calls

  /**
   * One call of a member's backend, counted and timed. A call that returns
   * a promise and does not settle within callTimeoutMs rejects with
   * CKR_DEVICE_ERROR (the member is then marked down by the caller); a
   * session it opens late is closed.
   */
  private call<T>(m: PoolMember, name: rpc.CallName, args: unknown, timeoutMs = this.spec.callTimeoutMs): Promise<T> {
    m.count(name);
    m.outstanding++;
    let r: rpc.MaybePromise<unknown>;
    try {
      r = CALL_INVOKERS[name](m.backend, m.ctx, args);
    } catch (e) {
      m.outstanding--;
      return Promise.reject(e);
    }
    if (!isPromise(r)) {
      m.outstanding--;
      return Promise.resolve(r as T);
    }
    const pending = r;
    return new Promise<T>((resolve, reject) => {
      let late = false;
      const timer = setTimeout(() => {
        late = true;
        m.outstanding--;
        reject(new Pkcs11Error(ck.CKR_DEVICE_ERROR, `${name} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      pending.then(
        (v) => {
          if (late) {
            const s = (v as { rv?: number; session?: number }).session;
            if (name === 'C_OpenSession' && typeof s === 'number') void this.quietly(m, 'C_CloseSession', { session: s });
            return;
          }
          clearTimeout(timer);
          m.outstanding--;
          resolve(v as T);
        },
        (e: unknown) => {
          if (late) return;
          clearTimeout(timer);
          m.outstanding--;
          reject(e);
        },
      );
    });
  }

  /** A member call whose result must be CKR_OK. */
  private async callOk<T>(m: PoolMember, name: rpc.CallName, args: unknown, timeoutMs?: number): Promise<T> {
    return ok(await this.call<T>(m, name, args, timeoutMs));
  }

  /** A health probe's call: CKR_OK or thrown, with the probe timeout. */
  private probeCall<T>(m: PoolMember, name: rpc.CallName, args: unknown): Promise<T> {
    return this.callOk<T>(m, name, args, Math.max(this.spec.callTimeoutMs, PROBE_TIMEOUT_FLOOR_MS));
  }

  /** Cleanup call: failures are ignored. */
  private async quietly(m: PoolMember, name: rpc.CallName, args: unknown): Promise<void> {
    try {
      await this.call(m, name, args);
    } catch {
      // The member is going away or has forgotten the session: nothing to clean.
    }
  }

  // ---------------------------------------------------------------- health

  /**
   * Probes `m`: a member that is down is looked for again (its token found
   * by URI, its mechanisms read, a look-up session opened, logged in when
   * the pool is); a member that is up answers C_GetTokenInfo and
   * C_GetSessionInfo on its look-up session. Schedules the next probe.
   */
  private async probe(m: PoolMember): Promise<void> {
    if (this.finalized) return;
    this.timers.delete(m);
    const generation = m.generation;
    try {
      if (m.state === 'up') {
        await this.probeCall(m, 'C_GetTokenInfo', { slotID: m.slotID });
        if (m.lookupSession !== null) await this.probeCall(m, 'C_GetSessionInfo', { session: m.lookupSession });
      } else {
        await this.admit(m);
      }
    } catch (e) {
      if (m.generation === generation) this.markDown(m, `probe: ${this.describe(e)}`);
    }
    this.schedule(m);
  }

  private schedule(m: PoolMember): void {
    if (this.finalized || this.timers.has(m)) return;
    const delay = m.state === 'up' ? this.spec.probeIntervalMs : this.backoffs.get(m)!.died(performance.now() - m.upSince);
    const t = setTimeout(() => void this.probe(m), delay);
    t.unref();
    this.timers.set(m, t);
  }

  private describe(e: unknown): string {
    const rv = rvOf(e);
    return e instanceof Pkcs11Error || rv !== ck.CKR_GENERAL_ERROR ? errorMessage(e) || rvName(rv) : errorMessage(e);
  }

  /** Finds the member's token and makes the member usable; throws when it cannot. */
  private async admit(m: PoolMember): Promise<void> {
    const info = await this.probeCall<rpc.C_GetInfo_ret>(m, 'C_GetInfo', undefined);
    const list = await this.probeCall<rpc.C_GetSlotList_ret>(m, 'C_GetSlotList', { tokenPresent: 1, count: LIST_ROOM });
    const found: number[] = [];
    let token: rpc.px_token_info | null = null;
    for (const slotID of list.slotList) {
      const ti = await this.probeCall<rpc.C_GetTokenInfo_ret>(m, 'C_GetTokenInfo', { slotID });
      const si = await this.probeCall<rpc.C_GetSlotInfo_ret>(m, 'C_GetSlotInfo', { slotID });
      if (uriMatches(m.uri, { slotId: slotID, token: ti.info, slot: si.info, library: info.info })) {
        found.push(slotID);
        token = ti.info;
      }
    }
    if (found.length === 0) throw new Error(`no token matches ${m.uri.source}`);
    if (found.length > 1) throw new Error(`${found.length} tokens match ${m.uri.source} (slots ${found.join(', ')}): the URI must name one`);
    const slotID = found[0];
    const mechs = await this.probeCall<rpc.C_GetMechanismList_ret>(m, 'C_GetMechanismList', { slotID, count: LIST_ROOM });
    const mechanisms = new Map<number, rpc.px_mechanism_info>();
    for (const type of mechs.mechanismList) {
      mechanisms.set(type, (await this.probeCall<rpc.C_GetMechanismInfo_ret>(m, 'C_GetMechanismInfo', { slotID, type })).info);
    }
    const lookup = await this.probeCall<rpc.C_OpenSession_ret>(m, 'C_OpenSession', { slotID, flags: ck.CKF_SERIAL_SESSION });
    m.slotID = slotID;
    m.tokenInfo = token;
    m.mechanisms = mechanisms;
    m.lookupSession = lookup.session;
    m.libraryInfo = info.info;
    if (this.login !== null) await this.memberLogin(m);
    m.state = 'up';
    m.reason = '';
    m.upSince = performance.now();
    this.announce(m);
  }

  /**
   * Marks `m` down (once per failure): its module sessions are closed on a
   * best-effort basis and forgotten, its handles and login state dropped,
   * and it is probed again after a backoff delay.
   */
  private markDown(m: PoolMember, reason: string): void {
    if (m.state === 'down') {
      // Already down (never admitted, or marked by another call): the probe schedule stands.
      m.reason = reason;
      this.announce(m);
      this.schedule(m);
      return;
    }
    const generation = m.generation;
    const stale: number[] = [];
    for (const s of this.sessions.values()) {
      const ms = s.members.get(m);
      if (ms !== undefined && ms.generation === generation) {
        stale.push(ms.handle);
        s.members.delete(m);
      }
    }
    if (m.lookupSession !== null) stale.push(m.lookupSession);
    m.state = 'down';
    m.reason = reason;
    m.resetGeneration();
    for (const h of stale) void this.quietly(m, 'C_CloseSession', { session: h });
    this.announce(m);
    const t = this.timers.get(m);
    if (t !== undefined) {
      clearTimeout(t);
      this.timers.delete(m);
    }
    this.schedule(m);
  }

  /** Reports a state change (and a member's first state): log, audit, metrics. */
  private announce(m: PoolMember): void {
    if (m.announced === m.state) return;
    m.announced = m.state;
    this.observer.memberState(this, m);
  }

  /** Logs `m` in with the pool's PIN (one C_Login at a time per member). */
  private async memberLogin(m: PoolMember): Promise<void> {
    const login = this.login;
    if (login === null || m.loggedIn) return;
    if (m.loggingIn !== null) return m.loggingIn;
    const generation = m.generation;
    const p = (async () => {
      const rv = await this.loginRv(m, { session: m.lookupSession, userType: login.userType, pin: login.pin });
      // A member the pool PIN does not log in cannot serve the pool: it counts as failed.
      if (rv !== CKR_OK && rv !== ck.CKR_USER_ALREADY_LOGGED_IN) throw new Pkcs11Error(ck.CKR_DEVICE_ERROR, `C_Login of member ${m.name}: ${rvName(rv)}`);
      if (m.generation === generation) m.loggedIn = true;
    })();
    m.loggingIn = p;
    try {
      await p;
    } finally {
      if (m.loggingIn === p) m.loggingIn = null;
    }
  }

  /** The module session of pool session `s` on `m`, opened (and the member logged in) on first use. */
  private async memberSession(s: PoolSession, m: PoolMember): Promise<number> {
    if (m.state !== 'up') throw new Pkcs11Error(ck.CKR_DEVICE_ERROR, `member ${m.name} is down`);
    await this.memberLogin(m);
    const have = s.members.get(m);
    if (have !== undefined && have.generation === m.generation) return have.handle;
    const generation = m.generation;
    const r = await this.callOk<rpc.C_OpenSession_ret>(m, 'C_OpenSession', { slotID: m.slotID, flags: s.flags });
    if (m.generation !== generation || !this.sessions.has(s.handle)) {
      void this.quietly(m, 'C_CloseSession', { session: r.session });
      throw new Pkcs11Error(ck.CKR_DEVICE_ERROR, `member ${m.name} went down`);
    }
    s.members.set(m, { handle: r.session, generation });
    return r.session;
  }

  /**
   * Runs `work` on a member: `pinned` if given, else one the strategy picks.
   * A member failure marks the member down and, when `replay` holds, runs
   * `work` again on another member; without `replay` it answers
   * CKR_DEVICE_ERROR. Failures while reaching a member (opening its
   * session, logging it in) always move on: nothing was done there yet.
   */
  private async run<T>(
    s: PoolSession | null,
    o: { replay: boolean; pinned?: PoolMember | null; exclude?: Iterable<PoolMember> },
    work: (m: PoolMember, memberSession: number) => Promise<T>,
  ): Promise<T> {
    await this.started;
    const tried = new Set<PoolMember>(o.exclude ?? []);
    let lacking = false;
    for (;;) {
      const m = o.pinned ?? this.strategy.pick(this.members, tried);
      if (m === null || (o.pinned && (tried.has(o.pinned) || o.pinned.state !== 'up'))) {
        throw new Pkcs11Error(lacking ? ck.CKR_OBJECT_HANDLE_INVALID : o.pinned ? ck.CKR_OBJECT_HANDLE_INVALID : NO_MEMBER_RV);
      }
      tried.add(m);
      const generation = m.generation;
      let started = false;
      try {
        const ms = s === null ? (m.lookupSession ?? -1) : await this.memberSession(s, m);
        started = true;
        return await work(m, ms);
      } catch (e) {
        if (e instanceof MemberLacksObject) {
          lacking = true;
          if (o.pinned) throw new Pkcs11Error(e.rv);
          continue;
        }
        const rv = rvOf(e);
        if (!isMemberFailure(rv)) throw e;
        if (m.generation === generation) this.markDown(m, `${this.describe(e)}`);
        if (o.pinned) throw new Pkcs11Error(ck.CKR_DEVICE_ERROR);
        if (started && !o.replay) throw new Pkcs11Error(ck.CKR_DEVICE_ERROR);
      }
    }
  }

  // ---------------------------------------------------------------- objects

  private object(handle: number): PoolObject {
    const o = this.objects.get(handle);
    if (o === undefined) throw new Pkcs11Error(ck.CKR_OBJECT_HANDLE_INVALID);
    return o;
  }

  /** The member an object is bound to (session objects), or null when any member has it. */
  private pinnedOf(...handles: number[]): PoolMember | null {
    let pinned: PoolMember | null = null;
    for (const h of handles) {
      const o = this.object(h);
      if (o.pinned === null) continue;
      if (o.pinnedGeneration !== o.pinned.generation) throw new Pkcs11Error(ck.CKR_OBJECT_HANDLE_INVALID);
      if (pinned !== null && pinned !== o.pinned) throw new Pkcs11Error(ck.CKR_OBJECT_HANDLE_INVALID);
      pinned = o.pinned;
    }
    return pinned;
  }

  /** The module handle of pool object `handle` on `m`, searched for by identity on first use. */
  private async memberHandle(m: PoolMember, handle: number): Promise<number> {
    const o = this.object(handle);
    const have = m.handles.get(handle);
    if (have !== undefined) return have;
    if (o.pinned !== null) throw new Pkcs11Error(ck.CKR_OBJECT_HANDLE_INVALID);
    const generation = m.generation;
    const found = await this.lookup(m, o.template);
    if (found.length === 0) {
      this.observer.warn(this, m, `object ${o.key} is missing on member ${m.name}`);
      throw new MemberLacksObject(ck.CKR_OBJECT_HANDLE_INVALID);
    }
    if (found.length > 1) {
      this.observer.warn(this, m, `object ${o.key} is not unique on member ${m.name}: the match attributes must identify one object`);
      throw new Pkcs11Error(ck.CKR_GENERAL_ERROR);
    }
    if (m.generation === generation) {
      m.handles.set(handle, found[0]);
      m.reverse.set(found[0], handle);
    }
    return found[0];
  }

  /** C_FindObjects on the member's look-up session, one search at a time. */
  private lookup(m: PoolMember, template: rpc.px_attribute[]): Promise<number[]> {
    const run = async (): Promise<number[]> => {
      await this.memberLogin(m);
      const session = m.lookupSession;
      if (session === null || m.state !== 'up') throw new Pkcs11Error(ck.CKR_DEVICE_ERROR);
      await this.callOk(m, 'C_FindObjectsInit', { session, template });
      try {
        return (await this.callOk<rpc.C_FindObjects_ret>(m, 'C_FindObjects', { session, maxObjectCount: 2 })).objects;
      } finally {
        await this.quietly(m, 'C_FindObjectsFinal', { session });
      }
    };
    const p = m.lookupChain.then(run, run);
    m.lookupChain = p.catch(() => undefined);
    return p;
  }

  /** Reads the identity attributes of a module object on `m` (look-up session). */
  private async identity(m: PoolMember, object: number): Promise<{ key: string; template: rpc.px_attribute[]; token: boolean }> {
    const types = [...this.spec.matchAttributes, ck.CKA_TOKEN];
    const ask = (room: number[] | null): rpc.C_GetAttributeValue_args => ({
      session: m.lookupSession ?? -1,
      object,
      template: types.map((type, i) => ({ type, value: room === null ? Buffer.alloc(IDENTITY_VALUE_ROOM) : Buffer.alloc(room[i]), valueLen: room === null ? IDENTITY_VALUE_ROOM : room[i] })),
    });
    let r = await this.call<rpc.C_GetAttributeValue_ret>(m, 'C_GetAttributeValue', ask(null));
    if (r.rv === ck.CKR_BUFFER_TOO_SMALL) {
      const sizes = await this.call<rpc.C_GetAttributeValue_ret>(m, 'C_GetAttributeValue', {
        session: m.lookupSession ?? -1,
        object,
        template: types.map((type) => ({ type, value: EMPTY, valueLen: 0 })),
      });
      r = await this.call<rpc.C_GetAttributeValue_ret>(m, 'C_GetAttributeValue', ask(sizes.template.map((a) => (a.valueLen === CK_UNAVAILABLE_INFORMATION_WIRE ? 0 : a.valueLen))));
    }
    if (r.rv !== CKR_OK && r.rv !== ck.CKR_ATTRIBUTE_SENSITIVE && r.rv !== ck.CKR_ATTRIBUTE_TYPE_INVALID) throw new Pkcs11Error(r.rv, 'C_GetAttributeValue');
    const template: rpc.px_attribute[] = [];
    const parts: string[] = [];
    let token = false;
    r.template.forEach((a, i) => {
      const present = a.valueLen !== CK_UNAVAILABLE_INFORMATION_WIRE && a.value.length === a.valueLen;
      if (types[i] === ck.CKA_TOKEN) {
        token = present && a.value.length > 0 && a.value[0] !== 0;
        return;
      }
      if (!present) return;
      template.push({ type: types[i], value: Buffer.from(a.value), valueLen: a.value.length });
      parts.push(`${types[i].toString(16)}=${a.value.toString('hex')}`);
    });
    return { key: parts.join(';'), template, token };
  }

  /** The pool handle for module object `object` found on `m`. */
  private async poolHandle(m: PoolMember, object: number): Promise<number> {
    const known = m.reverse.get(object);
    if (known !== undefined && this.objects.has(known)) return known;
    const generation = m.generation;
    const id = await this.identity(m, object);
    let handle: number;
    if (!id.token || id.template.length === 0) {
      // A session object, or one without identity: usable on this member only.
      handle = this.newObject('', [], m);
    } else {
      handle = this.byKey.get(id.key) ?? this.newObject(id.key, id.template, null);
    }
    if (m.generation === generation) {
      m.handles.set(handle, object);
      m.reverse.set(object, handle);
    }
    return handle;
  }

  private newObject(key: string, template: rpc.px_attribute[], pinned: PoolMember | null): number {
    const handle = this.nextObject++;
    this.objects.set(handle, Object.freeze({ handle, key, template, pinned, pinnedGeneration: pinned?.generation ?? 0 }));
    if (key !== '') this.byKey.set(key, handle);
    return handle;
  }

  /** Registers an object a creating call made on `m` in session `s`: a session object pinned to `m`. */
  private created(s: PoolSession, m: PoolMember, object: number): number {
    const handle = this.newObject('', [], m);
    m.handles.set(handle, object);
    m.reverse.set(object, handle);
    s.objects.add(handle);
    return handle;
  }

  private forget(handle: number): void {
    const o = this.objects.get(handle);
    if (o === undefined) return;
    this.objects.delete(handle);
    if (o.key !== '' && this.byKey.get(o.key) === handle) this.byKey.delete(o.key);
    for (const m of this.members) {
      const mh = m.handles.get(handle);
      if (mh !== undefined) {
        m.handles.delete(handle);
        m.reverse.delete(mh);
      }
    }
    for (const s of this.sessions.values()) s.objects.delete(handle);
  }

  // ---------------------------------------------------------------- sessions

  private session(handle: number): PoolSession {
    const s = this.sessions.get(handle);
    if (s === undefined) throw new Pkcs11Error(ck.CKR_SESSION_HANDLE_INVALID);
    return s;
  }

  private checkSlot(slotID: number): void {
    if (slotID !== this.spec.slotId) throw new Pkcs11Error(ck.CKR_SLOT_ID_INVALID);
  }

  private anyUp(): boolean {
    return this.members.some((m) => m.state === 'up');
  }

  private wipeLogin(): void {
    if (this.login !== null) this.login.pin.fill(0);
    this.login = null;
  }

  private async closeSession(s: PoolSession): Promise<void> {
    this.sessions.delete(s.handle);
    for (const h of [...s.objects]) this.forget(h);
    for (const [m, ms] of s.members) if (ms.generation === m.generation) await this.quietly(m, 'C_CloseSession', { session: ms.handle });
    s.members.clear();
    // The last session of an application on a token ends its login (PKCS#11 v2.40 section 5.6).
    if (this.sessions.size === 0 && this.login !== null) await this.logoutMembers();
  }

  private async logoutMembers(): Promise<void> {
    this.wipeLogin();
    for (const m of this.members) {
      if (m.state === 'up' && m.lookupSession !== null && m.loggedIn) {
        m.loggedIn = false;
        await this.quietly(m, 'C_Logout', { session: m.lookupSession });
      }
      this.forgetTokenHandles(m);
    }
  }

  /**
   * Drops `m`'s handles of token objects: a module may number its objects
   * again after a logout (SoftHSM2 gives private objects new handles at the
   * next login), so a cached number could name another object.
   */
  private forgetTokenHandles(m: PoolMember): void {
    for (const [handle, mh] of m.handles) {
      if (this.objects.get(handle)?.pinned === m) continue;
      m.handles.delete(handle);
      m.reverse.delete(mh);
    }
  }

  // ---------------------------------------------------------------- operations

  private async init(name: rpc.CallName, args: { session: number; key?: number }): Promise<rpc.px_rv> {
    const kind = INIT_KIND[name]!;
    const s = this.session(args.session);
    if (s.ops.has(kind)) return ck.CKR_OPERATION_ACTIVE;
    const pinned = args.key === undefined ? null : this.pinnedOf(args.key);
    const placed = await this.run(s, { replay: true, pinned }, async (m, ms) => {
      await this.startOn(m, ms, name, args);
      return { m, ms };
    });
    s.ops.set(kind, { kind, init: name, initArgs: args, member: placed.m, memberSession: placed.ms, generation: placed.m.generation, multipart: false });
    return CKR_OK;
  }

  private async startOn(m: PoolMember, ms: number, name: rpc.CallName, args: { session: number; key?: number }): Promise<void> {
    const key = args.key === undefined ? undefined : await this.memberHandle(m, args.key);
    await this.callOk(m, name, key === undefined ? { ...args, session: ms } : { ...args, session: ms, key });
  }

  /**
   * A call of an active operation. `ends`: the call ends the operation (a
   * one-shot call, a *Final). A member failure before data reached the
   * member replays the *Init and this call on another member.
   */
  private async opCall<T>(kind: OpKind, name: rpc.CallName, args: { session: number }, ends: boolean, keyArg?: number): Promise<T> {
    await this.started;
    const s = this.session(args.session);
    const op = s.ops.get(kind);
    if (op === undefined) throw new Pkcs11Error(ck.CKR_OPERATION_NOT_INITIALIZED);
    const withKey = async (m: PoolMember, ms: number): Promise<Record<string, unknown>> =>
      keyArg === undefined ? { ...args, session: ms } : { ...args, session: ms, key: await this.memberHandle(m, keyArg) };
    const finish = (r: T): T => {
      if (ends) s.ops.delete(kind);
      else op.multipart = true;
      return r;
    };
    const first = op.generation === op.member.generation;
    if (first) {
      try {
        return finish(await this.callOk<T>(op.member, name, await withKey(op.member, op.memberSession)));
      } catch (e) {
        const rv = rvOf(e);
        if (!isMemberFailure(rv)) {
          // Any other error ends the operation (PKCS#11 v2.40 section 5.2); CKR_BUFFER_TOO_SMALL never reaches here (outputs are sized below).
          s.ops.delete(kind);
          throw e;
        }
        if (op.member.generation === op.generation) this.markDown(op.member, this.describe(e));
      }
    }
    if (op.multipart) {
      s.ops.delete(kind);
      throw new Pkcs11Error(MULTIPART_LOST_RV);
    }
    const failed = op.member;
    const pinned = op.initArgs.key === undefined ? null : this.objects.get(op.initArgs.key)?.pinned ?? null;
    if (pinned !== null) {
      s.ops.delete(kind);
      throw new Pkcs11Error(ck.CKR_DEVICE_ERROR);
    }
    try {
      const r = await this.run(s, { replay: true, exclude: [failed] }, async (m, ms) => {
        await this.startOn(m, ms, op.init, op.initArgs);
        op.member = m;
        op.memberSession = ms;
        op.generation = m.generation;
        return this.callOk<T>(m, name, await withKey(m, ms));
      });
      return finish(r);
    } catch (e) {
      s.ops.delete(kind);
      throw e;
    }
  }

  // ---------------------------------------------------------------- Backend: general

  async C_GetInfo(_c: BackendContext): Promise<rpc.C_GetInfo_ret> {
    await this.started;
    const lib = this.members.find((m) => m.libraryInfo !== null)?.libraryInfo;
    const info: rpc.px_info = {
      cryptokiVersion: lib?.cryptokiVersion ?? { major: Buffer.from([2]), minor: Buffer.from([40]) },
      manufacturerID: padded('pkcs11proxyd', 32),
      flags: 0,
      libraryDescription: padded(`pool ${this.alias}`, 32),
      libraryVersion: { major: Buffer.from([1]), minor: Buffer.from([0]) },
    };
    return { rv: CKR_OK, info };
  }

  async C_GetSlotList(_c: BackendContext, a: rpc.C_GetSlotList_args): Promise<rpc.C_GetSlotList_ret> {
    await this.started;
    const slots = a.tokenPresent !== 0 && !this.anyUp() ? [] : [this.spec.slotId];
    if (a.count === 0) return { rv: CKR_OK, slotList: [], count: slots.length };
    if (a.count < slots.length) return { rv: ck.CKR_BUFFER_TOO_SMALL, slotList: [], count: slots.length };
    return { rv: CKR_OK, slotList: slots, count: slots.length };
  }

  C_WaitForSlotEvent(_c: BackendContext, a: rpc.C_WaitForSlotEvent_args): rpc.C_WaitForSlotEvent_ret {
    if ((a.flags & ck.CKF_DONT_BLOCK) === 0) return { rv: ck.CKR_FUNCTION_NOT_SUPPORTED, slotID: 0 };
    return { rv: ck.CKR_NO_EVENT, slotID: 0 };
  }

  async C_GetSlotInfo(_c: BackendContext, a: rpc.C_GetSlotInfo_args): Promise<rpc.C_GetSlotInfo_ret> {
    await this.started;
    this.checkSlot(a.slotID);
    const v = { major: Buffer.from([1]), minor: Buffer.from([0]) };
    return {
      rv: CKR_OK,
      info: {
        slotDescription: padded(`pkcs11proxyd pool ${this.alias}`, 64),
        manufacturerID: padded('pkcs11proxyd', 32),
        flags: this.anyUp() ? ck.CKF_TOKEN_PRESENT : 0,
        hardwareVersion: v,
        firmwareVersion: v,
      },
    };
  }

  async C_GetTokenInfo(_c: BackendContext, a: rpc.C_GetTokenInfo_args): Promise<rpc.C_GetTokenInfo_ret> {
    await this.started;
    this.checkSlot(a.slotID);
    const m = this.members.find((x) => x.state === 'up' && x.tokenInfo !== null);
    if (m === undefined) throw new Pkcs11Error(ck.CKR_TOKEN_NOT_PRESENT);
    const t = m.tokenInfo!;
    let rw = 0;
    for (const s of this.sessions.values()) if ((s.flags & ck.CKF_RW_SESSION) !== 0) rw++;
    return {
      rv: CKR_OK,
      info: {
        ...t,
        label: padded(this.spec.label, 32),
        manufacturerID: padded('pkcs11proxyd', 32),
        model: padded('pool', 16),
        serialNumber: padded(this.alias, 16),
        sessionCount: this.sessions.size,
        rwSessionCount: rw,
      },
    };
  }

  /** Mechanism → info over every member that was ever admitted: only mechanisms all of them have. */
  private mechanisms(): Map<number, rpc.px_mechanism_info> {
    const known = this.members.map((m) => m.mechanisms).filter((x): x is Map<number, rpc.px_mechanism_info> => x !== null);
    const out = new Map<number, rpc.px_mechanism_info>();
    if (known.length === 0) return out;
    for (const [type, first] of known[0]) {
      let info: rpc.px_mechanism_info | null = { ...first };
      for (const other of known.slice(1)) {
        const o = other.get(type);
        if (o === undefined) {
          info = null;
          break;
        }
        info = { minKeySize: Math.max(info.minKeySize, o.minKeySize), maxKeySize: Math.min(info.maxKeySize, o.maxKeySize), flags: info.flags & o.flags };
      }
      if (info !== null) out.set(type, info);
    }
    return out;
  }

  async C_GetMechanismList(_c: BackendContext, a: rpc.C_GetMechanismList_args): Promise<rpc.C_GetMechanismList_ret> {
    await this.started;
    this.checkSlot(a.slotID);
    const list = [...this.mechanisms().keys()];
    if (a.count === 0) return { rv: CKR_OK, mechanismList: [], count: list.length };
    if (a.count < list.length) return { rv: ck.CKR_BUFFER_TOO_SMALL, mechanismList: [], count: list.length };
    return { rv: CKR_OK, mechanismList: list, count: list.length };
  }

  async C_GetMechanismInfo(_c: BackendContext, a: rpc.C_GetMechanismInfo_args): Promise<rpc.C_GetMechanismInfo_ret> {
    await this.started;
    this.checkSlot(a.slotID);
    const info = this.mechanisms().get(a.type);
    if (info === undefined) throw new Pkcs11Error(ck.CKR_MECHANISM_INVALID);
    return { rv: CKR_OK, info };
  }

  C_InitToken(_c: BackendContext, _a: rpc.C_InitToken_args): rpc.px_rv {
    return ck.CKR_FUNCTION_NOT_SUPPORTED;
  }
  C_InitPIN(_c: BackendContext, _a: rpc.C_InitPIN_args): rpc.px_rv {
    return ck.CKR_FUNCTION_NOT_SUPPORTED;
  }
  C_SetPIN(_c: BackendContext, _a: rpc.C_SetPIN_args): rpc.px_rv {
    return ck.CKR_FUNCTION_NOT_SUPPORTED;
  }

  // ---------------------------------------------------------------- sessions and login

  async C_OpenSession(_c: BackendContext, a: rpc.C_OpenSession_args): Promise<rpc.C_OpenSession_ret> {
    await this.started;
    this.checkSlot(a.slotID);
    if ((a.flags & ck.CKF_SERIAL_SESSION) === 0) throw new Pkcs11Error(ck.CKR_SESSION_PARALLEL_NOT_SUPPORTED);
    if (!this.anyUp()) throw new Pkcs11Error(ck.CKR_TOKEN_NOT_PRESENT);
    const handle = this.nextSession++;
    this.sessions.set(handle, { handle, flags: a.flags, members: new Map(), ops: new Map(), find: null, objects: new Set() });
    return { rv: CKR_OK, session: handle };
  }

  async C_CloseSession(_c: BackendContext, a: rpc.C_CloseSession_args): Promise<rpc.px_rv> {
    await this.closeSession(this.session(a.session));
    return CKR_OK;
  }

  async C_CloseAllSessions(_c: BackendContext, a: rpc.C_CloseAllSessions_args): Promise<rpc.px_rv> {
    this.checkSlot(a.slotID);
    for (const s of [...this.sessions.values()]) await this.closeSession(s);
    return CKR_OK;
  }

  C_GetSessionInfo(_c: BackendContext, a: rpc.C_GetSessionInfo_args): rpc.C_GetSessionInfo_ret {
    const s = this.session(a.session);
    const rw = (s.flags & ck.CKF_RW_SESSION) !== 0;
    const user = this.login !== null;
    const state = rw ? (user ? ck.CKS_RW_USER_FUNCTIONS : ck.CKS_RW_PUBLIC_SESSION) : user ? ck.CKS_RO_USER_FUNCTIONS : ck.CKS_RO_PUBLIC_SESSION;
    return { rv: CKR_OK, info: { slotID: this.spec.slotId, state, flags: s.flags, deviceError: 0 } };
  }

  async C_Login(_c: BackendContext, a: rpc.C_Login_args): Promise<rpc.px_rv> {
    await this.started;
    this.session(a.session);
    if (a.userType !== ck.CKU_USER) return ck.CKR_USER_TYPE_INVALID;
    if (this.login !== null) return ck.CKR_USER_ALREADY_LOGGED_IN;
    const pin = Buffer.from(a.pin);
    try {
      // The first member that answers checks the PIN; the others are logged in when first used.
      await this.run(null, { replay: true }, async (m) => {
        const args = { session: m.lookupSession, userType: a.userType, pin };
        let rv = await this.loginRv(m, args);
        if (rv === ck.CKR_USER_ALREADY_LOGGED_IN) {
          // Logged in by someone else (the member's own alias): the PIN is checked all the same.
          await this.quietly(m, 'C_Logout', { session: m.lookupSession });
          rv = await this.loginRv(m, args);
        }
        if (rv !== CKR_OK) throw new Pkcs11Error(rv, 'C_Login');
        m.loggedIn = true;
      });
    } catch (e) {
      pin.fill(0);
      throw e;
    }
    if (this.login !== null) {
      pin.fill(0);
      return ck.CKR_USER_ALREADY_LOGGED_IN;
    }
    this.login = { userType: a.userType, pin };
    return CKR_OK;
  }

  /** C_Login's CK_RV, thrown only for member failures. */
  private async loginRv(m: PoolMember, args: unknown): Promise<number> {
    try {
      return await this.call<number>(m, 'C_Login', args);
    } catch (e) {
      const rv = rvOf(e);
      if (isMemberFailure(rv)) throw e;
      return rv;
    }
  }

  async C_Logout(_c: BackendContext, a: rpc.C_Logout_args): Promise<rpc.px_rv> {
    this.session(a.session);
    if (this.login === null) return ck.CKR_USER_NOT_LOGGED_IN;
    await this.logoutMembers();
    return CKR_OK;
  }

  // ---------------------------------------------------------------- objects

  async C_FindObjectsInit(_c: BackendContext, a: rpc.C_FindObjectsInit_args): Promise<rpc.px_rv> {
    const s = this.session(a.session);
    if (s.find !== null) return ck.CKR_OPERATION_ACTIVE;
    const template = a.template.map((t) => ({ type: t.type, value: Buffer.from(t.value), valueLen: t.valueLen }));
    const placed = await this.run(s, { replay: true }, async (m, ms) => {
      await this.callOk(m, 'C_FindObjectsInit', { session: ms, template });
      return { m, ms };
    });
    s.find = { template, member: placed.m, memberSession: placed.ms, generation: placed.m.generation, returned: new Set(), done: false, others: null };
    return CKR_OK;
  }

  async C_FindObjects(_c: BackendContext, a: rpc.C_FindObjects_args): Promise<rpc.C_FindObjects_ret> {
    const s = this.session(a.session);
    const f = s.find;
    if (f === null) throw new Pkcs11Error(ck.CKR_OPERATION_NOT_INITIALIZED);
    const out: number[] = [];
    while (out.length < a.maxObjectCount && !f.done) {
      let batch: number[];
      try {
        if (f.generation !== f.member.generation) throw new Pkcs11Error(ck.CKR_DEVICE_ERROR);
        batch = (await this.callOk<rpc.C_FindObjects_ret>(f.member, 'C_FindObjects', { session: f.memberSession, maxObjectCount: a.maxObjectCount - out.length })).objects;
        for (const h of batch) {
          const ph = await this.poolHandle(f.member, h);
          if (f.returned.has(ph)) continue;
          f.returned.add(ph);
          out.push(ph);
        }
      } catch (e) {
        if (!isMemberFailure(rvOf(e))) throw e;
        if (f.member.generation === f.generation) this.markDown(f.member, this.describe(e));
        // The search starts over on another member; objects already returned are skipped.
        const failed = f.member;
        const placed = await this.run(s, { replay: true, exclude: [failed] }, async (m, ms) => {
          await this.callOk(m, 'C_FindObjectsInit', { session: ms, template: f.template });
          return { m, ms };
        });
        f.member = placed.m;
        f.memberSession = placed.ms;
        f.generation = placed.m.generation;
        continue;
      }
      if (batch.length === 0) f.done = true;
    }
    if (f.done && f.others === null) f.others = await this.otherSessionObjects(s, f);
    while (out.length < a.maxObjectCount && f.others !== null && f.others.length > 0) {
      const h = f.others.shift()!;
      if (f.returned.has(h)) continue;
      f.returned.add(h);
      out.push(h);
    }
    return { rv: CKR_OK, objects: out, count: out.length };
  }

  /**
   * The session objects made on members other than the one a search ran on
   * that match its template: the same search on each member holding some,
   * keeping only those objects. A member that fails meanwhile lost them.
   */
  private async otherSessionObjects(s: PoolSession, f: FindState): Promise<number[]> {
    const holders = new Set<PoolMember>();
    for (const o of this.objects.values()) if (o.pinned !== null && o.pinned !== f.member && o.pinned.state === 'up' && o.pinnedGeneration === o.pinned.generation) holders.add(o.pinned);
    const out: number[] = [];
    for (const m of holders) {
      try {
        const ms = await this.memberSession(s, m);
        await this.callOk(m, 'C_FindObjectsInit', { session: ms, template: f.template });
        try {
          for (;;) {
            const batch = (await this.callOk<rpc.C_FindObjects_ret>(m, 'C_FindObjects', { session: ms, maxObjectCount: 64 })).objects;
            if (batch.length === 0) break;
            for (const h of batch) {
              const ph = m.reverse.get(h);
              if (ph !== undefined && this.objects.get(ph)?.pinned === m) out.push(ph);
            }
          }
        } finally {
          await this.quietly(m, 'C_FindObjectsFinal', { session: ms });
        }
      } catch (e) {
        if (!isMemberFailure(rvOf(e))) throw e;
        if (m.state === 'up') this.markDown(m, this.describe(e));
      }
    }
    return out;
  }

  async C_FindObjectsFinal(_c: BackendContext, a: rpc.C_FindObjectsFinal_args): Promise<rpc.px_rv> {
    const s = this.session(a.session);
    const f = s.find;
    if (f === null) return ck.CKR_OPERATION_NOT_INITIALIZED;
    s.find = null;
    if (f.generation === f.member.generation) await this.quietly(f.member, 'C_FindObjectsFinal', { session: f.memberSession });
    return CKR_OK;
  }

  async C_GetAttributeValue(_c: BackendContext, a: rpc.C_GetAttributeValue_args): Promise<rpc.C_GetAttributeValue_ret> {
    const s = this.session(a.session);
    return this.run(s, { replay: true, pinned: this.pinnedOf(a.object) }, async (m, ms) => {
      const r = await this.call<rpc.C_GetAttributeValue_ret>(m, 'C_GetAttributeValue', { ...a, session: ms, object: await this.memberHandle(m, a.object) });
      if (isMemberFailure(r.rv)) throw new Pkcs11Error(r.rv);
      return r;
    });
  }

  async C_GetObjectSize(_c: BackendContext, a: rpc.C_GetObjectSize_args): Promise<rpc.C_GetObjectSize_ret> {
    const s = this.session(a.session);
    return this.run(s, { replay: true, pinned: this.pinnedOf(a.object) }, async (m, ms) =>
      this.callOk<rpc.C_GetObjectSize_ret>(m, 'C_GetObjectSize', { ...a, session: ms, object: await this.memberHandle(m, a.object) }),
    );
  }

  /** A session object's member, or TOKEN_OBJECT_CHANGE_RV for a token object. */
  private sessionObjectMember(handle: number): PoolMember {
    const pinned = this.pinnedOf(handle);
    if (pinned === null) throw new Pkcs11Error(TOKEN_OBJECT_CHANGE_RV);
    return pinned;
  }

  async C_SetAttributeValue(_c: BackendContext, a: rpc.C_SetAttributeValue_args): Promise<rpc.px_rv> {
    const s = this.session(a.session);
    const m = this.sessionObjectMember(a.object);
    if (asksToken(a.template)) throw new Pkcs11Error(TOKEN_OBJECT_CHANGE_RV);
    return this.run(s, { replay: false, pinned: m }, async (mm, ms) =>
      this.callOk<rpc.px_rv>(mm, 'C_SetAttributeValue', { ...a, session: ms, object: await this.memberHandle(mm, a.object) }),
    );
  }

  async C_DestroyObject(_c: BackendContext, a: rpc.C_DestroyObject_args): Promise<rpc.px_rv> {
    const s = this.session(a.session);
    const m = this.sessionObjectMember(a.object);
    await this.run(s, { replay: false, pinned: m }, async (mm, ms) =>
      this.callOk<rpc.px_rv>(mm, 'C_DestroyObject', { ...a, session: ms, object: await this.memberHandle(mm, a.object) }),
    );
    this.forget(a.object);
    return CKR_OK;
  }

  /**
   * A creating call: session objects only, made on one member (the one
   * holding `inputs` if any is a session object), never replayed.
   */
  private async create<R extends object>(
    name: rpc.CallName,
    a: { session: number },
    templates: ReadonlyArray<readonly rpc.px_attribute[]>,
    inputs: Array<[string, number]>,
    results: ReadonlyArray<keyof R & string>,
  ): Promise<R> {
    const s = this.session(a.session);
    if (templates.some(asksToken)) throw new Pkcs11Error(TOKEN_OBJECT_CHANGE_RV);
    const pinned = this.pinnedOf(...inputs.map(([, h]) => h));
    return this.run(s, { replay: false, pinned }, async (m, ms) => {
      const args: Record<string, unknown> = { ...a, session: ms };
      for (const [field, h] of inputs) args[field] = await this.memberHandle(m, h);
      const r = await this.callOk<R>(m, name, args);
      const out = { ...r } as Record<string, unknown>;
      for (const f of results) out[f] = this.created(s, m, (r as Record<string, unknown>)[f] as number);
      return out as R;
    });
  }

  C_CreateObject(_c: BackendContext, a: rpc.C_CreateObject_args): Promise<rpc.px_object_ret> {
    return this.create('C_CreateObject', a, [a.template], [], ['object']);
  }
  C_CopyObject(_c: BackendContext, a: rpc.C_CopyObject_args): Promise<rpc.px_object_ret> {
    return this.create('C_CopyObject', a, [a.template], [['object', a.object]], ['object']);
  }
  C_GenerateKey(_c: BackendContext, a: rpc.C_GenerateKey_args): Promise<rpc.px_object_ret> {
    return this.create('C_GenerateKey', a, [a.template], [], ['object']);
  }
  px_GenerateKeyTyped(_c: BackendContext, a: rpc.px_GenerateKeyTyped_args): Promise<rpc.px_object_ret> {
    return this.create('px_GenerateKeyTyped', a, [a.template], [], ['object']);
  }
  C_GenerateKeyPair(_c: BackendContext, a: rpc.C_GenerateKeyPair_args): Promise<rpc.C_GenerateKeyPair_ret> {
    return this.create('C_GenerateKeyPair', a, [a.publicKeyTemplate, a.privateKeyTemplate], [], ['publicKey', 'privateKey']);
  }
  px_GenerateKeyPairTyped(_c: BackendContext, a: rpc.px_GenerateKeyPairTyped_args): Promise<rpc.C_GenerateKeyPair_ret> {
    return this.create('px_GenerateKeyPairTyped', a, [a.publicKeyTemplate, a.privateKeyTemplate], [], ['publicKey', 'privateKey']);
  }
  C_UnwrapKey(_c: BackendContext, a: rpc.C_UnwrapKey_args): Promise<rpc.px_object_ret> {
    return this.create('C_UnwrapKey', a, [a.template], [['unwrappingKey', a.unwrappingKey]], ['object']);
  }
  px_UnwrapKeyTyped(_c: BackendContext, a: rpc.px_UnwrapKeyTyped_args): Promise<rpc.px_object_ret> {
    return this.create('px_UnwrapKeyTyped', a, [a.template], [['unwrappingKey', a.unwrappingKey]], ['object']);
  }
  C_DeriveKey(_c: BackendContext, a: rpc.C_DeriveKey_args): Promise<rpc.px_object_ret> {
    return this.create('C_DeriveKey', a, [a.template], [['baseKey', a.baseKey]], ['object']);
  }
  px_DeriveKeyTyped(_c: BackendContext, a: rpc.px_DeriveKeyTyped_args): Promise<rpc.px_object_ret> {
    return this.create('px_DeriveKeyTyped', a, [a.template], [['baseKey', a.baseKey]], ['object']);
  }

  private async wrap(name: rpc.CallName, a: rpc.C_WrapKey_args | rpc.px_WrapKeyTyped_args): Promise<rpc.px_bytes_ret> {
    const s = this.session(a.session);
    return this.run(s, { replay: true, pinned: this.pinnedOf(a.wrappingKey, a.key) }, async (m, ms) =>
      this.callOk<rpc.px_bytes_ret>(m, name, { ...a, session: ms, wrappingKey: await this.memberHandle(m, a.wrappingKey), key: await this.memberHandle(m, a.key) }),
    );
  }
  C_WrapKey(_c: BackendContext, a: rpc.C_WrapKey_args): Promise<rpc.px_bytes_ret> {
    return this.wrap('C_WrapKey', a);
  }
  px_WrapKeyTyped(_c: BackendContext, a: rpc.px_WrapKeyTyped_args): Promise<rpc.px_bytes_ret> {
    return this.wrap('px_WrapKeyTyped', a);
  }

  // ---------------------------------------------------------------- random

  async C_GenerateRandom(_c: BackendContext, a: rpc.C_GenerateRandom_args): Promise<rpc.px_bytes_ret> {
    const s = this.session(a.session);
    return this.run(s, { replay: true }, (m, ms) => this.callOk<rpc.px_bytes_ret>(m, 'C_GenerateRandom', { ...a, session: ms }));
  }
  async C_SeedRandom(_c: BackendContext, a: rpc.C_SeedRandom_args): Promise<rpc.px_rv> {
    const s = this.session(a.session);
    return this.run(s, { replay: true }, (m, ms) => this.callOk<rpc.px_rv>(m, 'C_SeedRandom', { ...a, session: ms }));
  }

  // ---------------------------------------------------------------- cryptographic operations

  C_DigestInit(_c: BackendContext, a: rpc.px_session_mechanism_args): Promise<rpc.px_rv> {
    return this.init('C_DigestInit', a);
  }
  px_DigestInitTyped(_c: BackendContext, a: rpc.px_session_mechanism_typed_args): Promise<rpc.px_rv> {
    return this.init('px_DigestInitTyped', a);
  }
  C_Digest(_c: BackendContext, a: rpc.px_session_data_args): Promise<rpc.px_bytes_ret> {
    return this.opCall('digest', 'C_Digest', a, true);
  }
  C_DigestUpdate(_c: BackendContext, a: rpc.px_session_data_args): Promise<rpc.px_rv> {
    return this.opCall('digest', 'C_DigestUpdate', a, false);
  }
  C_DigestKey(_c: BackendContext, a: rpc.C_DigestKey_args): Promise<rpc.px_rv> {
    return this.opCall('digest', 'C_DigestKey', a, false, a.key);
  }
  C_DigestFinal(_c: BackendContext, a: rpc.px_session_args): Promise<rpc.px_bytes_ret> {
    return this.opCall('digest', 'C_DigestFinal', a, true);
  }

  C_SignInit(_c: BackendContext, a: rpc.px_session_mechanism_key_args): Promise<rpc.px_rv> {
    return this.init('C_SignInit', a);
  }
  px_SignInitTyped(_c: BackendContext, a: rpc.px_session_mechanism_typed_key_args): Promise<rpc.px_rv> {
    return this.init('px_SignInitTyped', a);
  }
  C_Sign(_c: BackendContext, a: rpc.px_session_data_args): Promise<rpc.px_bytes_ret> {
    return this.opCall('sign', 'C_Sign', a, true);
  }
  C_SignUpdate(_c: BackendContext, a: rpc.px_session_data_args): Promise<rpc.px_rv> {
    return this.opCall('sign', 'C_SignUpdate', a, false);
  }
  C_SignFinal(_c: BackendContext, a: rpc.px_session_args): Promise<rpc.px_bytes_ret> {
    return this.opCall('sign', 'C_SignFinal', a, true);
  }

  C_VerifyInit(_c: BackendContext, a: rpc.px_session_mechanism_key_args): Promise<rpc.px_rv> {
    return this.init('C_VerifyInit', a);
  }
  px_VerifyInitTyped(_c: BackendContext, a: rpc.px_session_mechanism_typed_key_args): Promise<rpc.px_rv> {
    return this.init('px_VerifyInitTyped', a);
  }
  C_Verify(_c: BackendContext, a: rpc.C_Verify_args): Promise<rpc.px_rv> {
    return this.opCall('verify', 'C_Verify', a, true);
  }
  C_VerifyUpdate(_c: BackendContext, a: rpc.px_session_data_args): Promise<rpc.px_rv> {
    return this.opCall('verify', 'C_VerifyUpdate', a, false);
  }
  C_VerifyFinal(_c: BackendContext, a: rpc.C_VerifyFinal_args): Promise<rpc.px_rv> {
    return this.opCall('verify', 'C_VerifyFinal', a, true);
  }

  C_EncryptInit(_c: BackendContext, a: rpc.px_session_mechanism_key_args): Promise<rpc.px_rv> {
    return this.init('C_EncryptInit', a);
  }
  px_EncryptInitTyped(_c: BackendContext, a: rpc.px_session_mechanism_typed_key_args): Promise<rpc.px_rv> {
    return this.init('px_EncryptInitTyped', a);
  }
  C_Encrypt(_c: BackendContext, a: rpc.px_session_data_args): Promise<rpc.px_bytes_ret> {
    return this.opCall('encrypt', 'C_Encrypt', a, true);
  }
  C_EncryptUpdate(_c: BackendContext, a: rpc.px_session_data_args): Promise<rpc.px_bytes_ret> {
    return this.opCall('encrypt', 'C_EncryptUpdate', a, false);
  }
  C_EncryptFinal(_c: BackendContext, a: rpc.px_session_args): Promise<rpc.px_bytes_ret> {
    return this.opCall('encrypt', 'C_EncryptFinal', a, true);
  }

  C_DecryptInit(_c: BackendContext, a: rpc.px_session_mechanism_key_args): Promise<rpc.px_rv> {
    return this.init('C_DecryptInit', a);
  }
  px_DecryptInitTyped(_c: BackendContext, a: rpc.px_session_mechanism_typed_key_args): Promise<rpc.px_rv> {
    return this.init('px_DecryptInitTyped', a);
  }
  C_Decrypt(_c: BackendContext, a: rpc.px_session_data_args): Promise<rpc.px_bytes_ret> {
    return this.opCall('decrypt', 'C_Decrypt', a, true);
  }
  C_DecryptUpdate(_c: BackendContext, a: rpc.px_session_data_args): Promise<rpc.px_bytes_ret> {
    return this.opCall('decrypt', 'C_DecryptUpdate', a, false);
  }
  C_DecryptFinal(_c: BackendContext, a: rpc.px_session_args): Promise<rpc.px_bytes_ret> {
    return this.opCall('decrypt', 'C_DecryptFinal', a, true);
  }

  C_SignRecoverInit(_c: BackendContext, a: rpc.px_session_mechanism_key_args): Promise<rpc.px_rv> {
    return this.init('C_SignRecoverInit', a);
  }
  px_SignRecoverInitTyped(_c: BackendContext, a: rpc.px_session_mechanism_typed_key_args): Promise<rpc.px_rv> {
    return this.init('px_SignRecoverInitTyped', a);
  }
  C_SignRecover(_c: BackendContext, a: rpc.px_session_data_args): Promise<rpc.px_bytes_ret> {
    return this.opCall('signRecover', 'C_SignRecover', a, true);
  }
  C_VerifyRecoverInit(_c: BackendContext, a: rpc.px_session_mechanism_key_args): Promise<rpc.px_rv> {
    return this.init('C_VerifyRecoverInit', a);
  }
  px_VerifyRecoverInitTyped(_c: BackendContext, a: rpc.px_session_mechanism_typed_key_args): Promise<rpc.px_rv> {
    return this.init('px_VerifyRecoverInitTyped', a);
  }
  C_VerifyRecover(_c: BackendContext, a: rpc.px_session_data_args): Promise<rpc.px_bytes_ret> {
    return this.opCall('verifyRecover', 'C_VerifyRecover', a, true);
  }

  // Two operations of one session may run on two members: the combined calls have no single member to go to.
  C_DigestEncryptUpdate(_c: BackendContext, _a: rpc.px_session_data_args): rpc.px_bytes_ret {
    return { rv: ck.CKR_FUNCTION_NOT_SUPPORTED, data: EMPTY };
  }
  C_SignEncryptUpdate(_c: BackendContext, _a: rpc.px_session_data_args): rpc.px_bytes_ret {
    return { rv: ck.CKR_FUNCTION_NOT_SUPPORTED, data: EMPTY };
  }
  C_DecryptDigestUpdate(_c: BackendContext, _a: rpc.px_session_data_args): rpc.px_bytes_ret {
    return { rv: ck.CKR_FUNCTION_NOT_SUPPORTED, data: EMPTY };
  }
  C_DecryptVerifyUpdate(_c: BackendContext, _a: rpc.px_session_data_args): rpc.px_bytes_ret {
    return { rv: ck.CKR_FUNCTION_NOT_SUPPORTED, data: EMPTY };
  }
  C_GetOperationState(_c: BackendContext, _a: rpc.px_session_args): rpc.px_bytes_ret {
    return { rv: ck.CKR_FUNCTION_NOT_SUPPORTED, data: EMPTY };
  }
  C_SetOperationState(_c: BackendContext, _a: rpc.C_SetOperationState_args): rpc.px_rv {
    return ck.CKR_FUNCTION_NOT_SUPPORTED;
  }
  C_GetFunctionStatus(_c: BackendContext, _a: rpc.px_session_args): rpc.px_rv {
    return ck.CKR_FUNCTION_NOT_PARALLEL;
  }
  C_CancelFunction(_c: BackendContext, _a: rpc.px_session_args): rpc.px_rv {
    return ck.CKR_FUNCTION_NOT_PARALLEL;
  }
}
