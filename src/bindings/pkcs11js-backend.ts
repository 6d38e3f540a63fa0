import { ProxyError } from '../errors';
import { auditCallLimit } from '../server/transport/limits';
import * as pkcs11js from 'pkcs11js';
import { isPromise } from '../generated/pkcs11_rpc';
import type * as rpc from '../generated/pkcs11_rpc';
import {
  CKR_ARGUMENTS_BAD,
  CKR_ATTRIBUTE_SENSITIVE,
  CKR_ATTRIBUTE_TYPE_INVALID,
  CKR_BUFFER_TOO_SMALL,
  CKR_FUNCTION_NOT_PARALLEL,
  CKR_FUNCTION_NOT_SUPPORTED,
  CKR_OK,
  CK_UNAVAILABLE_INFORMATION_WIRE,
  ck,
} from '../pkcs11/constants';
import { NATIVE_ARCH } from '../pkcs11/arch';
import { Pkcs11Error, rvOf } from '../pkcs11/errors';
import { ATTR_SHAPE, attributeShape } from '../generated/attribute-shapes';
import {
  P11CALL_DATA,
  P11CALL_INIT,
  P11CALL_MAX_ATTRIBUTES,
  P11CALL_MAX_BYTES,
  P11CALL_MAX_FIND_ATTRIBUTES,
  P11CALL_MAX_FIND_OBJECTS,
  p11call,
  threadClock,
} from './p11call';
import type { P11CallAddon, P11CallModule } from './p11call';
import { CallCostModel } from './call-cost';
import { BackendBase } from './backend';
import type { Backend, BackendContext, BackendLimits } from './backend';
import { rawMechanism as mechanism, typedMechanism } from './mech-params';

/** Largest output the daemon will allocate for one call (matches the default record limit). */
const MAX_OUTPUT = 16 * 1024 * 1024;
/** First guess for an operation's output; a too-small guess costs one retry. */
const MIN_OUTPUT_GUESS = 1024;
/** Output growth factor after CKR_BUFFER_TOO_SMALL (which never ends an operation). */
const OUTPUT_GROWTH = 4;

const EMPTY = Buffer.alloc(0);

export class BackendError extends ProxyError {
  readonly code = 'BACKEND_LOAD';
}

/** A handle as pkcs11js wants it: a CK_ULONG in native layout. */
export function toHandle(n: number): Buffer {
  const b = Buffer.alloc(NATIVE_ARCH.ulongSize);
  if (NATIVE_ARCH.ulongSize === 8) {
    const v = n < 0 ? 0xffffffffffffffffn : BigInt(n);
    if (NATIVE_ARCH.littleEndian) b.writeBigUInt64LE(v);
    else b.writeBigUInt64BE(v);
  } else if (NATIVE_ARCH.littleEndian) b.writeUInt32LE(n >>> 0);
  else b.writeUInt32BE(n >>> 0);
  return b;
}

export function fromHandle(b: Buffer): number {
  if (b.length === 8) {
    const v = NATIVE_ARCH.littleEndian ? b.readBigUInt64LE() : b.readBigUInt64BE();
    return v === 0xffffffffffffffffn ? -1 : Number(v);
  }
  return NATIVE_ARCH.littleEndian ? b.readUInt32LE() : b.readUInt32BE();
}

/** Blank-padded fixed-width PKCS#11 string field. */
function padded(s: string, width: number): Buffer {
  const b = Buffer.alloc(width, 0x20);
  Buffer.from(s, 'utf8').copy(b, 0, 0, width);
  return b;
}

/**
 * pkcs11js returns CK_ULONGs as JS numbers, so ~0UL (CK_UNAVAILABLE_INFORMATION,
 * CK_EFFECTIVELY_INFINITE's neighbour in token info) arrives as 2^64 rounded.
 * On the wire it is hyper -1.
 */
function ul(n: number): number {
  return Number.isSafeInteger(n) ? n : -1;
}

function version(v: { major: number; minor: number }): rpc.px_version {
  return { major: Buffer.from([v.major & 0xff]), minor: Buffer.from([v.minor & 0xff]) };
}

function template(t: rpc.px_attribute[]): pkcs11js.Template {
  return t.map((a) => ({ type: a.type, value: a.value }));
}

/** pkcs11js takes PINs as JS strings; bytes that are not UTF-8 cannot be carried. */
function pinString(pin: Buffer): string {
  return pin.toString('utf8');
}

function bytesRet(data: Buffer): rpc.px_bytes_ret {
  return { rv: CKR_OK, data };
}

/**
 * Runs a call that fills an output buffer, growing it while the module answers
 * CKR_BUFFER_TOO_SMALL. The protocol has no output length (the whole output is
 * returned), so the daemon sizes the buffer itself.
 */
function withOutput(guess: number, fn: (out: Buffer) => rpc.MaybePromise<Buffer>): rpc.MaybePromise<Buffer> {
  let size = Math.max(MIN_OUTPUT_GUESS, guess);
  for (;;) {
    let r: rpc.MaybePromise<Buffer>;
    try {
      r = fn(Buffer.alloc(size));
    } catch (e) {
      size = grownOutput(e, size);
      continue;
    }
    if (!isPromise(r)) return r;
    // On the pool: a retry with a larger buffer continues asynchronously.
    const tried = size;
    return r.then(undefined, (e: unknown) => withOutput(grownOutput(e, tried), fn));
  }
}

/** The next output buffer size after `e`, or `e` rethrown when it is not CKR_BUFFER_TOO_SMALL or the cap is reached. */
function grownOutput(e: unknown, size: number): number {
  if (rvOf(e) !== CKR_BUFFER_TOO_SMALL || size >= MAX_OUTPUT) throw e;
  return Math.min(MAX_OUTPUT, size * OUTPUT_GROWTH);
}

/** The bytes result of an output, without a promise when the output came without one. */
function outputRet(b: rpc.MaybePromise<Buffer>): rpc.MaybePromise<rpc.px_bytes_ret> {
  return isPromise(b) ? b.then(bytesRet) : bytesRet(b);
}

/** C_Verify*'s CK_RV from pkcs11js's verdict. */
function verifyRv(ok: rpc.MaybePromise<boolean>): rpc.MaybePromise<rpc.px_rv> {
  return isPromise(ok) ? ok.then((v) => (v ? CKR_OK : ck.CKR_SIGNATURE_INVALID)) : ok ? CKR_OK : ck.CKR_SIGNATURE_INVALID;
}

/**
 * pkcs11js hands an empty Buffer to the module as a NULL pointer, and modules
 * (SoftHSM2 among them) answer CKR_ARGUMENTS_BAD for NULL data even with
 * length 0. An empty input goes down as this zero-length view of a live
 * buffer instead: a valid pointer, no bytes. The wire cannot tell NULL/0 from
 * pointer/0, so the daemon always sends the latter.
 */
const NON_NULL_EMPTY = Buffer.alloc(1).subarray(0, 0);
function inBuf(b: Buffer): Buffer {
  return b.length > 0 ? b : NON_NULL_EMPTY;
}

/** A direct call's CK_RV: CKR_OK, or thrown as pkcs11js throws a module's error. */
function checked(rv: number, fn: string): rpc.px_rv {
  if (rv !== CKR_OK) throw new Pkcs11Error(rv, fn);
  return CKR_OK;
}

/** A direct C_Verify's CK_RV as pkcs11js's verdict: CKR_SIGNATURE_INVALID is false, other errors throw. */
function verified(rv: number): boolean {
  if (rv === ck.CKR_SIGNATURE_INVALID) return false;
  checked(rv, 'C_Verify');
  return true;
}

/** The addon's `which` for a key *Init call it makes directly. */
function directInit(op: KeyInitCall): number | undefined {
  switch (op) {
    case 'C_SignInit':
    case 'C_VerifyInit':
    case 'C_EncryptInit':
    case 'C_DecryptInit':
      return P11CALL_INIT[op];
    default:
      return undefined;
  }
}

type KeyInitCall = 'C_SignInit' | 'C_VerifyInit' | 'C_EncryptInit' | 'C_DecryptInit' | 'C_SignRecoverInit' | 'C_VerifyRecoverInit';

/** (type, capacity) pairs of one direct C_GetAttributeValue. */
const ATTRIBUTE_SPEC = new Float64Array(2 * P11CALL_MAX_ATTRIBUTES);
/** Values of a direct C_GetAttributeValue whose capacities fit; larger asks get their own buffer. */
const ATTRIBUTE_SCRATCH = Buffer.alloc(64 * 1024);

/** The addon and the module instance it calls (the one pkcs11js loaded). */
interface DirectModule {
  readonly addon: P11CallAddon;
  readonly module: P11CallModule;
}

/** An open module session as the backend keeps it. */
interface SessionRecord {
  readonly handle: Buffer;
  readonly slotID: number;
  /** Mechanism of the active operation per *Init call; feeds the cost model's kinds. */
  readonly ops: Map<string, number>;
}

/** Object handle Buffers kept at most; the cache is dropped whole when full. */
const OBJECT_HANDLE_CACHE = 4096;
const SLOT_HANDLE_CACHE = 64;
/** C_GenerateRandom output produced per event-loop turn (pkcs11js has no async variant). */
const RANDOM_SLICE = 64 * 1024;

/**
 * Whether a module library loads (dlopen and C_GetFunctionList) without
 * initializing it, so no token store is touched: null when it does, else
 * why not. For -check-filter.
 */
export function probeModule(path: string): string | null {
  const p11 = new pkcs11js.PKCS11();
  try {
    p11.load(path);
  } catch (e) {
    return (e as Error).message;
  }
  try {
    p11.close();
  } catch {
    // Unloading a library that loaded is best effort; the answer stands.
  }
  return null;
}

/** One PKCS#11 module loaded and initialized once in this process. */
export class LoadedModule {
  readonly p11: pkcs11js.PKCS11;
  /** The same module instance reached through native/p11call, for single-call attribute reads; null without the addon. */
  readonly direct: P11CallModule | null = null;
  constructor(
    readonly alias: string,
    readonly path: string,
  ) {
    this.p11 = new pkcs11js.PKCS11();
    try {
      this.p11.load(path);
    } catch (e) {
      throw new BackendError(`cannot load module '${alias}' from ${path}: ${(e as Error).message}`);
    }
    try {
      // The daemon calls the module from its event loop and from libuv threads.
      this.p11.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
    } catch (e) {
      if (rvOf(e) !== ck.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        throw new BackendError(`C_Initialize of module '${alias}' failed: ${(e as Error).message}`);
      }
    }
    // Opened after pkcs11js: the dynamic loader hands back the instance pkcs11js loaded and initialized.
    this.direct = p11call()?.open(path) ?? null;
  }

  finalize(): void {
    try {
      this.p11.C_Finalize();
    } catch {
      // Process is exiting; nothing useful to do with a finalize error.
    }
  }
}

/**
 * One module as a backend: turns calls into pkcs11js calls. Handles here are
 * the module's own numbers. C_Initialize/C_Finalize/C_LoadModule are
 * answered by the layers above and never reach the module's process-wide
 * functions.
 */
export class Pkcs11jsBackend extends BackendBase implements Backend {
  private readonly inflight = new Set<pkcs11js.Mechanism>();
  private readonly p11: pkcs11js.PKCS11;
  readonly alias: string;
  /** Open module sessions: their handle Buffer, built once, and the mechanism of each active operation. */
  private readonly sessions = new Map<number, SessionRecord>();
  /** Handle Buffers of objects named recently; bounded, rebuilt on demand. */
  private readonly objectHandles = new Map<number, Buffer>();
  private readonly slotHandles = new Map<number, Buffer>();
  /**
   * The module's hot calls made directly (native/p11call): handles as numbers
   * and results in `scratch`, not pkcs11js's per-call Buffers and objects.
   * Null without the addon; pkcs11js then makes every call.
   */
  private readonly direct: DirectModule | null;
  /** Results of direct calls; read before the next call. */
  private readonly scratch = new Float64Array(P11CALL_MAX_FIND_OBJECTS + 1);

  constructor(
    private readonly module: LoadedModule,
    private readonly limits: BackendLimits,
  ) {
    super();
    this.p11 = module.p11;
    this.alias = module.alias;
    const addon = p11call();
    this.direct = addon !== null && module.direct !== null ? { addon, module: module.direct } : null;
  }

  finalize(): void {
    this.module.finalize();
  }

  private m(_c: BackendContext): pkcs11js.PKCS11 {
    return this.p11;
  }

  private sh(session: number): Buffer {
    return this.sessions.get(session)?.handle ?? toHandle(session);
  }

  private slot(slotID: number): Buffer {
    let b = this.slotHandles.get(slotID);
    if (b === undefined) {
      if (this.slotHandles.size >= SLOT_HANDLE_CACHE) this.slotHandles.clear();
      b = toHandle(slotID);
      this.slotHandles.set(slotID, b);
    }
    return b;
  }

  private oh(object: number): Buffer {
    let b = this.objectHandles.get(object);
    if (b === undefined) {
      if (this.objectHandles.size >= OBJECT_HANDLE_CACHE) this.objectHandles.clear();
      b = toHandle(object);
      this.objectHandles.set(object, b);
    }
    return b;
  }

  private readonly cost = new CallCostModel(threadClock());

  /**
   * Runs an asynchronous pkcs11js call whose mechanism may be a typed
   * parameter: pkcs11js points the C struct into that object's Buffers and
   * the module reads them on a libuv thread, so they are kept referenced
   * until the call settles.
   */
  private async pinned<T>(m: pkcs11js.Mechanism, fn: () => rpc.MaybePromise<T>): Promise<T> {
    this.inflight.add(m);
    try {
      return await fn();
    } finally {
      this.inflight.delete(m);
    }
  }

  /**
   * Whether the addon can make an *Init call with `m`: its parameter is flat
   * bytes or none (raw wire bytes, an IV, a CK_ULONG; our client sends
   * AES-CBC's IV typed). pkcs11js builds the structs it knows.
   */
  private canInitDirect(m: pkcs11js.Mechanism): boolean {
    return this.direct !== null && (m.parameter === undefined || Buffer.isBuffer(m.parameter));
  }

  /** An *Init call made directly; `op` names it for errors and the cost model's record of the operation. */
  private initDirect(which: number, op: string, session: number, m: pkcs11js.Mechanism, key: number): rpc.px_rv {
    const d = this.direct!;
    checked(d.addon.init(d.module, which, session, m.mechanism, (m.parameter as Buffer | undefined) ?? null, key), op);
    this.sessions.get(session)?.ops.set(op, m.mechanism);
    return CKR_OK;
  }

  /**
   * The inline form of a single-part data call: made directly when the addon
   * is there, else by pkcs11js. It answers the output's first bytes, or
   * throws Pkcs11Error (CKR_BUFFER_TOO_SMALL makes withOutput grow `out`).
   */
  private singlePart(fn: keyof typeof P11CALL_DATA, session: number, h: Buffer, input: Buffer): (out: Buffer) => Buffer {
    const d = this.direct;
    if (d === null) {
      const p11 = this.p11;
      return (out) => p11[fn](h, inBuf(input), out);
    }
    const which = P11CALL_DATA[fn];
    return (out) => {
      checked(d.addon.data(d.module, which, session, input, out, this.scratch), fn);
      return out.subarray(0, this.scratch[0]);
    };
  }

  /** The *Init calls that take a mechanism and a key: made directly when the addon has the call and can carry `m`. */
  private keyInit(c: BackendContext, op: KeyInitCall, session: number, m: pkcs11js.Mechanism, key: number): rpc.px_rv {
    const which = directInit(op);
    if (which !== undefined && this.canInitDirect(m)) return this.initDirect(which, op, session, m, key);
    this.m(c)[op](this.sh(session), m, this.oh(key));
    this.sessions.get(session)?.ops.set(op, m.mechanism);
    return CKR_OK;
  }

  /**
   * Runs a data call of the operation `init` started on `session`, inline or
   * on the libuv pool as its measured cost says (see call-cost.ts).
   */
  private timed<T>(c: BackendContext, call: string, init: string, session: number, input: number, sync: () => T, async: () => Promise<T>): rpc.MaybePromise<T> {
    const mech = this.sessions.get(session)?.ops.get(init);
    return this.cost.run(CallCostModel.key(call, mech, input), input, sync, async);
  }

  C_GetInfo(c: BackendContext): rpc.C_GetInfo_ret {
    const i = this.m(c).C_GetInfo();
    return {
      rv: CKR_OK,
      info: {
        cryptokiVersion: version(i.cryptokiVersion),
        manufacturerID: padded(i.manufacturerID, 32),
        flags: ul(i.flags),
        libraryDescription: padded(i.libraryDescription, 32),
        libraryVersion: version(i.libraryVersion),
      },
    };
  }

  C_GetSlotList(c: BackendContext, a: rpc.C_GetSlotList_args): rpc.C_GetSlotList_ret {
    const slots = this.m(c).C_GetSlotList(a.tokenPresent !== 0).map(fromHandle);
    if (a.count === 0) return { rv: CKR_OK, slotList: [], count: slots.length };
    if (a.count < slots.length) return { rv: CKR_BUFFER_TOO_SMALL, slotList: [], count: slots.length };
    return { rv: CKR_OK, slotList: slots, count: slots.length };
  }

  C_WaitForSlotEvent(c: BackendContext, a: rpc.C_WaitForSlotEvent_args): rpc.C_WaitForSlotEvent_ret {
    // Only the non-blocking form is passed on: a blocking wait would hold the event loop.
    if ((a.flags & ck.CKF_DONT_BLOCK) === 0) return { rv: CKR_FUNCTION_NOT_SUPPORTED, slotID: 0 };
    const slot = this.m(c).C_WaitForSlotEvent(a.flags);
    if (slot === null) return { rv: ck.CKR_NO_EVENT, slotID: 0 };
    return { rv: CKR_OK, slotID: fromHandle(slot) };
  }

  C_GetSlotInfo(c: BackendContext, a: rpc.C_GetSlotInfo_args): rpc.C_GetSlotInfo_ret {
    const i = this.m(c).C_GetSlotInfo(this.slot(a.slotID));
    return {
      rv: CKR_OK,
      info: {
        slotDescription: padded(i.slotDescription, 64),
        manufacturerID: padded(i.manufacturerID, 32),
        flags: ul(i.flags),
        hardwareVersion: version(i.hardwareVersion),
        firmwareVersion: version(i.firmwareVersion),
      },
    };
  }

  C_GetTokenInfo(c: BackendContext, a: rpc.C_GetTokenInfo_args): rpc.C_GetTokenInfo_ret {
    const i = this.m(c).C_GetTokenInfo(this.slot(a.slotID));
    return {
      rv: CKR_OK,
      info: {
        label: padded(i.label, 32),
        manufacturerID: padded(i.manufacturerID, 32),
        model: padded(i.model, 16),
        serialNumber: padded(i.serialNumber, 16),
        flags: ul(i.flags),
        maxSessionCount: ul(i.maxSessionCount),
        sessionCount: ul(i.sessionCount),
        maxRwSessionCount: ul(i.maxRwSessionCount),
        rwSessionCount: ul(i.rwSessionCount),
        maxPinLen: ul(i.maxPinLen),
        minPinLen: ul(i.minPinLen),
        totalPublicMemory: ul(i.totalPublicMemory),
        freePublicMemory: ul(i.freePublicMemory),
        totalPrivateMemory: ul(i.totalPrivateMemory),
        freePrivateMemory: ul(i.freePrivateMemory),
        hardwareVersion: version(i.hardwareVersion),
        firmwareVersion: version(i.firmwareVersion),
        utcTime: padded(i.utcTime, 16),
      },
    };
  }

  C_Login(c: BackendContext, a: rpc.C_Login_args): rpc.px_rv {
    this.m(c).C_Login(this.sh(a.session), a.userType, pinString(a.pin));
    return CKR_OK;
  }
  C_Logout(c: BackendContext, a: rpc.C_Logout_args): rpc.px_rv {
    this.m(c).C_Logout(this.sh(a.session));
    return CKR_OK;
  }
  C_OpenSession(c: BackendContext, a: rpc.C_OpenSession_args): rpc.C_OpenSession_ret {
    const h = this.m(c).C_OpenSession(this.slot(a.slotID), a.flags);
    const session = fromHandle(h);
    this.sessions.set(session, { handle: h, slotID: a.slotID, ops: new Map() });
    return { rv: CKR_OK, session };
  }
  C_CloseSession(c: BackendContext, a: rpc.C_CloseSession_args): rpc.px_rv {
    this.m(c).C_CloseSession(this.sh(a.session));
    // The module forgets the session's objects; their cached handles are just numbers.
    this.sessions.delete(a.session);
    return CKR_OK;
  }
  C_CloseAllSessions(c: BackendContext, a: rpc.C_CloseAllSessions_args): rpc.px_rv {
    // Reached only when the caller holds every session of this process on
    // the slot (the handle layer closes others' sessions one by one).
    this.m(c).C_CloseAllSessions(this.slot(a.slotID));
    for (const [h, s] of this.sessions) if (s.slotID === a.slotID) this.sessions.delete(h);
    return CKR_OK;
  }

  C_GetMechanismList(c: BackendContext, a: rpc.C_GetMechanismList_args): rpc.C_GetMechanismList_ret {
    const list = this.m(c).C_GetMechanismList(this.slot(a.slotID));
    if (a.count === 0) return { rv: CKR_OK, mechanismList: [], count: list.length };
    if (a.count < list.length) return { rv: CKR_BUFFER_TOO_SMALL, mechanismList: [], count: list.length };
    return { rv: CKR_OK, mechanismList: list, count: list.length };
  }

  C_GetSessionInfo(c: BackendContext, a: rpc.C_GetSessionInfo_args): rpc.C_GetSessionInfo_ret {
    const d = this.direct;
    if (d !== null) {
      const o = this.scratch;
      checked(d.addon.getSessionInfo(d.module, a.session, o), 'C_GetSessionInfo');
      return { rv: CKR_OK, info: { slotID: o[0], state: o[1], flags: o[2], deviceError: o[3] } };
    }
    const i = this.m(c).C_GetSessionInfo(this.sh(a.session));
    return {
      rv: CKR_OK,
      info: { slotID: fromHandle(i.slotID), state: i.state, flags: ul(i.flags), deviceError: i.deviceError },
    };
  }

  C_GetMechanismInfo(c: BackendContext, a: rpc.C_GetMechanismInfo_args): rpc.C_GetMechanismInfo_ret {
    const i = this.m(c).C_GetMechanismInfo(this.slot(a.slotID), a.type);
    return { rv: CKR_OK, info: { minKeySize: ul(i.minKeySize), maxKeySize: ul(i.maxKeySize), flags: ul(i.flags) } };
  }

  C_InitPIN(c: BackendContext, a: rpc.C_InitPIN_args): rpc.px_rv {
    this.m(c).C_InitPIN(this.sh(a.session), pinString(a.pin));
    return CKR_OK;
  }
  C_SetPIN(c: BackendContext, a: rpc.C_SetPIN_args): rpc.px_rv {
    this.m(c).C_SetPIN(this.sh(a.session), pinString(a.oldPin), pinString(a.newPin));
    return CKR_OK;
  }
  C_SeedRandom(c: BackendContext, a: rpc.C_SeedRandom_args): rpc.px_rv {
    this.m(c).C_SeedRandom(this.sh(a.session), inBuf(a.seed));
    return CKR_OK;
  }
  C_InitToken(c: BackendContext, a: rpc.C_InitToken_args): rpc.px_rv {
    // The label is a blank-padded 32-byte field; pkcs11js pads it again.
    this.m(c).C_InitToken(this.slot(a.slotID), pinString(a.pin), a.label.toString('utf8').replace(/ +$/, ''));
    return CKR_OK;
  }
  /**
   * pkcs11js has no async C_GenerateRandom, so long outputs are produced in
   * RANDOM_SLICE pieces, one per event-loop turn, so other connections are
   * served in between. Beyond the configured cap: CKR_ARGUMENTS_BAD.
   */
  C_GenerateRandom(c: BackendContext, a: rpc.C_GenerateRandom_args): rpc.MaybePromise<rpc.px_bytes_ret> {
    if (a.length < 0 || a.length > Math.min(MAX_OUTPUT, this.limits.maxRandomLength)) {
      auditCallLimit('max_random_length', 'C_GenerateRandom', 'CKR_ARGUMENTS_BAD', { app: c.appId, alias: c.alias });
      return { rv: CKR_ARGUMENTS_BAD, data: EMPTY };
    }
    const h = this.sh(a.session);
    // pkcs11js refuses an empty buffer; ask for one byte so the module still
    // judges the session, and return nothing, as a zero-length call would.
    if (a.length <= RANDOM_SLICE) {
      const out = this.p11.C_GenerateRandom(h, Buffer.alloc(Math.max(1, a.length)));
      return bytesRet(a.length === 0 ? EMPTY : out);
    }
    return this.randomSliced(h, a.length);
  }
  private async randomSliced(h: pkcs11js.Handle, length: number): Promise<rpc.px_bytes_ret> {
    const out = Buffer.allocUnsafe(length);
    for (let off = 0; off < length; off += RANDOM_SLICE) {
      if (off > 0) await new Promise<void>((resolve) => setImmediate(resolve));
      this.p11.C_GenerateRandom(h, out.subarray(off, Math.min(length, off + RANDOM_SLICE)));
    }
    return bytesRet(out);
  }

  C_FindObjectsInit(c: BackendContext, a: rpc.C_FindObjectsInit_args): rpc.px_rv {
    const d = this.direct;
    const n = a.template.length;
    if (d !== null && n <= P11CALL_MAX_FIND_ATTRIBUTES) {
      const types = new Array<number>(n);
      const values = new Array<Buffer>(n);
      for (let i = 0; i < n; i++) {
        types[i] = a.template[i].type;
        values[i] = a.template[i].value;
      }
      return checked(d.addon.findObjectsInit(d.module, a.session, types, values), 'C_FindObjectsInit');
    }
    this.m(c).C_FindObjectsInit(this.sh(a.session), template(a.template));
    return CKR_OK;
  }
  C_FindObjects(c: BackendContext, a: rpc.C_FindObjects_args): rpc.C_FindObjects_ret {
    if (a.maxObjectCount < 0) return { rv: CKR_ARGUMENTS_BAD, objects: [], count: 0 };
    if (a.maxObjectCount === 0) return { rv: CKR_OK, objects: [], count: 0 };
    const d = this.direct;
    if (d !== null && a.maxObjectCount <= P11CALL_MAX_FIND_OBJECTS) {
      const o = this.scratch;
      checked(d.addon.findObjects(d.module, a.session, a.maxObjectCount, o), 'C_FindObjects');
      const count = o[0];
      const objects = new Array<number>(count);
      for (let i = 0; i < count; i++) objects[i] = o[i + 1];
      return { rv: CKR_OK, objects, count };
    }
    const found = this.m(c).C_FindObjects(this.sh(a.session), Math.min(a.maxObjectCount, 65536)).map(fromHandle);
    return { rv: CKR_OK, objects: found, count: found.length };
  }
  C_FindObjectsFinal(c: BackendContext, a: rpc.C_FindObjectsFinal_args): rpc.px_rv {
    const d = this.direct;
    if (d !== null) return checked(d.addon.findObjectsFinal(d.module, a.session), 'C_FindObjectsFinal');
    this.m(c).C_FindObjectsFinal(this.sh(a.session));
    return CKR_OK;
  }

  async C_GenerateKey(c: BackendContext, a: rpc.C_GenerateKey_args): Promise<rpc.px_object_ret> {
    return this.generateKey(c, a.session, mechanism(a.mechanism), a.template);
  }
  async px_GenerateKeyTyped(c: BackendContext, a: rpc.px_GenerateKeyTyped_args): Promise<rpc.px_object_ret> {
    return this.generateKey(c, a.session, typedMechanism(a.mechanism), a.template);
  }
  private async generateKey(c: BackendContext, session: number, m: pkcs11js.Mechanism, t: rpc.px_attribute[]): Promise<rpc.px_object_ret> {
    const h = await this.pinned(m, () => this.m(c).C_GenerateKeyAsync(this.sh(session), m, template(t)));
    return { rv: CKR_OK, object: fromHandle(h) };
  }

  async C_GenerateKeyPair(c: BackendContext, a: rpc.C_GenerateKeyPair_args): Promise<rpc.C_GenerateKeyPair_ret> {
    return this.generateKeyPair(c, a.session, mechanism(a.mechanism), a.publicKeyTemplate, a.privateKeyTemplate);
  }
  async px_GenerateKeyPairTyped(c: BackendContext, a: rpc.px_GenerateKeyPairTyped_args): Promise<rpc.C_GenerateKeyPair_ret> {
    return this.generateKeyPair(c, a.session, typedMechanism(a.mechanism), a.publicKeyTemplate, a.privateKeyTemplate);
  }
  private async generateKeyPair(
    c: BackendContext,
    session: number,
    m: pkcs11js.Mechanism,
    pub: rpc.px_attribute[],
    priv: rpc.px_attribute[],
  ): Promise<rpc.C_GenerateKeyPair_ret> {
    const p11 = this.m(c);
    const kp = await this.pinned(m, () => p11.C_GenerateKeyPairAsync(this.sh(session), m, template(pub), template(priv)));
    return { rv: CKR_OK, publicKey: fromHandle(kp.publicKey), privateKey: fromHandle(kp.privateKey) };
  }
  C_CreateObject(c: BackendContext, a: rpc.C_CreateObject_args): rpc.px_object_ret {
    return { rv: CKR_OK, object: fromHandle(this.m(c).C_CreateObject(this.sh(a.session), template(a.template))) };
  }
  C_CopyObject(c: BackendContext, a: rpc.C_CopyObject_args): rpc.px_object_ret {
    const h = this.m(c).C_CopyObject(this.sh(a.session), this.oh(a.object), template(a.template));
    return { rv: CKR_OK, object: fromHandle(h) };
  }
  C_DestroyObject(c: BackendContext, a: rpc.C_DestroyObject_args): rpc.px_rv {
    this.m(c).C_DestroyObject(this.sh(a.session), this.oh(a.object));
    return CKR_OK;
  }

  /**
   * pkcs11js fetches all attributes at once and throws on the first error, so
   * per-attribute outcomes (sensitive, invalid, too small) are rebuilt here by
   * asking again one attribute at a time. A value-less request attribute is a
   * size query; otherwise `valueLen` is the caller's buffer size.
   */
  C_GetAttributeValue(c: BackendContext, a: rpc.C_GetAttributeValue_args): rpc.C_GetAttributeValue_ret {
    if (this.direct !== null) {
      const r = this.getAttributeValueDirect(this.direct, a);
      if (r !== null) return r;
    }
    const p11 = this.m(c);
    const session = this.sh(a.session);
    const object = this.oh(a.object);
    let values: Array<Buffer | undefined | number>;
    try {
      values = p11.C_GetAttributeValue(session, object, a.template.map((t) => ({ type: t.type }))).map(
        (t) => t.value as Buffer | undefined,
      );
    } catch (e) {
      const rv = rvOf(e);
      if (rv !== CKR_ATTRIBUTE_SENSITIVE && rv !== CKR_ATTRIBUTE_TYPE_INVALID && !(e instanceof TypeError)) throw e;
      values = a.template.map((t) => {
        try {
          return p11.C_GetAttributeValue(session, object, [{ type: t.type }])[0].value as Buffer | undefined;
        } catch (e1) {
          // pkcs11js rejects a CK_DATE whose length is not 8; only the empty date occurs in practice.
          if (e1 instanceof TypeError) return EMPTY;
          return rvOf(e1);
        }
      });
    }
    let rv = CKR_OK;
    const out: rpc.px_attribute[] = a.template.map((req, i) => {
      const v = values[i];
      if (typeof v === 'number' || v === undefined) {
        if (rv === CKR_OK) rv = typeof v === 'number' ? v : CKR_ATTRIBUTE_TYPE_INVALID;
        return { type: req.type, value: EMPTY, valueLen: CK_UNAVAILABLE_INFORMATION_WIRE };
      }
      if (req.value.length === 0 && req.valueLen === 0) return { type: req.type, value: EMPTY, valueLen: v.length };
      if (req.value.length === 0) return { type: req.type, value: EMPTY, valueLen: v.length };
      if (v.length > req.valueLen) {
        if (rv === CKR_OK) rv = CKR_BUFFER_TOO_SMALL;
        return { type: req.type, value: EMPTY, valueLen: CK_UNAVAILABLE_INFORMATION_WIRE };
      }
      return { type: req.type, value: v, valueLen: v.length };
    });
    return { rv, template: out };
  }

  /**
   * One module call (pkcs11js makes two, see p11call.c): each attribute is
   * offered the capacity the caller gave, or asked for its length only when
   * the caller sent no value, exactly as the client's own C_GetAttributeValue
   * did. Null when the ask is outside what the direct call carries (nested
   * templates, whose values hold pointers, or very large asks): the pkcs11js
   * path answers those.
   */
  private getAttributeValueDirect(direct: DirectModule, a: rpc.C_GetAttributeValue_args): rpc.C_GetAttributeValue_ret | null {
    const n = a.template.length;
    if (n > P11CALL_MAX_ATTRIBUTES) return null;
    const spec = ATTRIBUTE_SPEC;
    let bytes = 0;
    for (let i = 0; i < n; i++) {
      const t = a.template[i];
      if (attributeShape(t.type) === ATTR_SHAPE.TEMPLATE) return null;
      const cap = t.value.length === 0 ? -1 : t.valueLen;
      spec[2 * i] = t.type;
      spec[2 * i + 1] = cap;
      if (cap > 0) bytes += cap;
    }
    if (bytes > P11CALL_MAX_BYTES) return null;
    // The shared scratch is only read before this returns: values leave as copies.
    const out = bytes <= ATTRIBUTE_SCRATCH.length ? ATTRIBUTE_SCRATCH : Buffer.allocUnsafe(bytes);
    const rv = direct.addon.getAttributeValueInto(direct.module, a.session, a.object, spec, n, out);
    if (rv !== CKR_OK && rv !== CKR_ATTRIBUTE_SENSITIVE && rv !== CKR_ATTRIBUTE_TYPE_INVALID && rv !== CKR_BUFFER_TOO_SMALL) {
      throw new Pkcs11Error(rv, 'C_GetAttributeValue');
    }
    const template: rpc.px_attribute[] = new Array<rpc.px_attribute>(n);
    let at = 0;
    for (let i = 0; i < n; i++) {
      const t = a.template[i];
      const len = spec[2 * i + 1];
      let value = EMPTY;
      // A length-only ask (capacity -1) took no room in `out`.
      if (t.value.length !== 0) {
        if (len >= 0) {
          value = Buffer.allocUnsafe(len);
          out.copy(value, 0, at, at + len);
        }
        at += t.valueLen;
      }
      template[i] = { type: t.type, value, valueLen: len < 0 ? CK_UNAVAILABLE_INFORMATION_WIRE : len };
    }
    return { rv, template };
  }

  C_SetAttributeValue(c: BackendContext, a: rpc.C_SetAttributeValue_args): rpc.px_rv {
    this.m(c).C_SetAttributeValue(this.sh(a.session), this.oh(a.object), template(a.template));
    return CKR_OK;
  }
  C_GetObjectSize(c: BackendContext, a: rpc.C_GetObjectSize_args): rpc.C_GetObjectSize_ret {
    return { rv: CKR_OK, size: ul(this.m(c).C_GetObjectSize(this.sh(a.session), this.oh(a.object))) };
  }

  async C_WrapKey(c: BackendContext, a: rpc.C_WrapKey_args): Promise<rpc.px_bytes_ret> {
    return this.wrapKey(c, a.session, mechanism(a.mechanism), a.wrappingKey, a.key);
  }
  async px_WrapKeyTyped(c: BackendContext, a: rpc.px_WrapKeyTyped_args): Promise<rpc.px_bytes_ret> {
    return this.wrapKey(c, a.session, typedMechanism(a.mechanism), a.wrappingKey, a.key);
  }
  private async wrapKey(
    c: BackendContext,
    session: number,
    m: pkcs11js.Mechanism,
    wrappingKey: number,
    key: number,
  ): Promise<rpc.px_bytes_ret> {
    const p11 = this.m(c);
    const args = [this.sh(session), m, this.oh(wrappingKey), this.oh(key)] as const;
    return bytesRet(await this.pinned(m, () => withOutput(4096, (out) => p11.C_WrapKeyAsync(...args, out))));
  }

  async C_UnwrapKey(c: BackendContext, a: rpc.C_UnwrapKey_args): Promise<rpc.px_object_ret> {
    return this.unwrapKey(c, a.session, mechanism(a.mechanism), a.unwrappingKey, a.wrappedKey, a.template);
  }
  async px_UnwrapKeyTyped(c: BackendContext, a: rpc.px_UnwrapKeyTyped_args): Promise<rpc.px_object_ret> {
    return this.unwrapKey(c, a.session, typedMechanism(a.mechanism), a.unwrappingKey, a.wrappedKey, a.template);
  }
  private async unwrapKey(
    c: BackendContext,
    session: number,
    m: pkcs11js.Mechanism,
    unwrappingKey: number,
    wrapped: Buffer,
    t: rpc.px_attribute[],
  ): Promise<rpc.px_object_ret> {
    const p11 = this.m(c);
    const h = await this.pinned(m, () => p11.C_UnwrapKeyAsync(this.sh(session), m, this.oh(unwrappingKey), wrapped, template(t)));
    return { rv: CKR_OK, object: fromHandle(h) };
  }

  async C_DeriveKey(c: BackendContext, a: rpc.C_DeriveKey_args): Promise<rpc.px_object_ret> {
    return this.deriveKey(c, a.session, mechanism(a.mechanism), a.baseKey, a.template);
  }
  async px_DeriveKeyTyped(c: BackendContext, a: rpc.px_DeriveKeyTyped_args): Promise<rpc.px_object_ret> {
    return this.deriveKey(c, a.session, typedMechanism(a.mechanism), a.baseKey, a.template);
  }
  private async deriveKey(
    c: BackendContext,
    session: number,
    m: pkcs11js.Mechanism,
    baseKey: number,
    t: rpc.px_attribute[],
  ): Promise<rpc.px_object_ret> {
    const p11 = this.m(c);
    const h = await this.pinned(m, () => p11.C_DeriveKeyAsync(this.sh(session), m, this.oh(baseKey), template(t)));
    return { rv: CKR_OK, object: fromHandle(h) };
  }

  private digestInit(c: BackendContext, session: number, m: pkcs11js.Mechanism): rpc.px_rv {
    if (this.canInitDirect(m)) return this.initDirect(P11CALL_INIT.C_DigestInit, 'C_DigestInit', session, m, 0);
    this.m(c).C_DigestInit(this.sh(session), m);
    this.sessions.get(session)?.ops.set('C_DigestInit', m.mechanism);
    return CKR_OK;
  }
  C_DigestInit(c: BackendContext, a: rpc.px_session_mechanism_args): rpc.px_rv {
    return this.digestInit(c, a.session, mechanism(a.mechanism));
  }
  px_DigestInitTyped(c: BackendContext, a: rpc.px_session_mechanism_typed_args): rpc.px_rv {
    return this.digestInit(c, a.session, typedMechanism(a.mechanism));
  }
  C_Digest(c: BackendContext, a: rpc.px_session_data_args): rpc.MaybePromise<rpc.px_bytes_ret> {
    const p11 = this.m(c);
    const h = this.sh(a.session);
    const sync = this.singlePart('C_Digest', a.session, h, a.data);
    return outputRet(withOutput(128, (out) =>
        this.timed(c, 'C_Digest', 'C_DigestInit', a.session, a.data.length, () => sync(out), () => p11.C_DigestAsync(h, inBuf(a.data), out)),
      ),
    );
  }
  C_DigestUpdate(c: BackendContext, a: rpc.px_session_data_args): rpc.px_rv {
    this.m(c).C_DigestUpdate(this.sh(a.session), inBuf(a.data));
    return CKR_OK;
  }
  C_DigestFinal(c: BackendContext, a: rpc.px_session_args): rpc.MaybePromise<rpc.px_bytes_ret> {
    const p11 = this.m(c);
    const h = this.sh(a.session);
    return outputRet(withOutput(128, (out) => this.timed(c, 'C_DigestFinal', 'C_DigestInit', a.session, 0, () => p11.C_DigestFinal(h, out), () => p11.C_DigestFinalAsync(h, out))),
    );
  }
  C_DigestKey(c: BackendContext, a: rpc.C_DigestKey_args): rpc.px_rv {
    this.m(c).C_DigestKey(this.sh(a.session), this.oh(a.key));
    return CKR_OK;
  }

  C_SignInit(c: BackendContext, a: rpc.px_session_mechanism_key_args): rpc.px_rv {
    return this.keyInit(c, 'C_SignInit', a.session, mechanism(a.mechanism), a.key);
  }
  px_SignInitTyped(c: BackendContext, a: rpc.px_session_mechanism_typed_key_args): rpc.px_rv {
    return this.keyInit(c, 'C_SignInit', a.session, typedMechanism(a.mechanism), a.key);
  }
  C_Sign(c: BackendContext, a: rpc.px_session_data_args): rpc.MaybePromise<rpc.px_bytes_ret> {
    const p11 = this.m(c);
    const h = this.sh(a.session);
    const sync = this.singlePart('C_Sign', a.session, h, a.data);
    return outputRet(withOutput(1024, (out) =>
        this.timed(c, 'C_Sign', 'C_SignInit', a.session, a.data.length, () => sync(out), () => p11.C_SignAsync(h, inBuf(a.data), out)),
      ),
    );
  }
  C_SignUpdate(c: BackendContext, a: rpc.px_session_data_args): rpc.px_rv {
    this.m(c).C_SignUpdate(this.sh(a.session), inBuf(a.data));
    return CKR_OK;
  }
  C_SignFinal(c: BackendContext, a: rpc.px_session_args): rpc.MaybePromise<rpc.px_bytes_ret> {
    const p11 = this.m(c);
    const h = this.sh(a.session);
    return outputRet(withOutput(1024, (out) => this.timed(c, 'C_SignFinal', 'C_SignInit', a.session, 0, () => p11.C_SignFinal(h, out), () => p11.C_SignFinalAsync(h, out))),
    );
  }

  C_VerifyInit(c: BackendContext, a: rpc.px_session_mechanism_key_args): rpc.px_rv {
    return this.keyInit(c, 'C_VerifyInit', a.session, mechanism(a.mechanism), a.key);
  }
  px_VerifyInitTyped(c: BackendContext, a: rpc.px_session_mechanism_typed_key_args): rpc.px_rv {
    return this.keyInit(c, 'C_VerifyInit', a.session, typedMechanism(a.mechanism), a.key);
  }
  C_Verify(c: BackendContext, a: rpc.C_Verify_args): rpc.MaybePromise<rpc.px_rv> {
    const p11 = this.m(c);
    const h = this.sh(a.session);
    const d = this.direct;
    const sync = d !== null
      ? () => verified(d.addon.verify(d.module, a.session, a.data, a.signature))
      : () => p11.C_Verify(h, inBuf(a.data), inBuf(a.signature));
    return verifyRv(this.timed(c, 'C_Verify', 'C_VerifyInit', a.session, a.data.length, sync, () => p11.C_VerifyAsync(h, inBuf(a.data), inBuf(a.signature))));
  }
  C_VerifyUpdate(c: BackendContext, a: rpc.px_session_data_args): rpc.px_rv {
    this.m(c).C_VerifyUpdate(this.sh(a.session), inBuf(a.data));
    return CKR_OK;
  }
  C_VerifyFinal(c: BackendContext, a: rpc.C_VerifyFinal_args): rpc.MaybePromise<rpc.px_rv> {
    const p11 = this.m(c);
    const h = this.sh(a.session);
    return verifyRv(this.timed(c, 'C_VerifyFinal', 'C_VerifyInit', a.session, 0, () => p11.C_VerifyFinal(h, inBuf(a.signature)), () => p11.C_VerifyFinalAsync(h, inBuf(a.signature))));
  }

  C_EncryptInit(c: BackendContext, a: rpc.px_session_mechanism_key_args): rpc.px_rv {
    return this.keyInit(c, 'C_EncryptInit', a.session, mechanism(a.mechanism), a.key);
  }
  px_EncryptInitTyped(c: BackendContext, a: rpc.px_session_mechanism_typed_key_args): rpc.px_rv {
    return this.keyInit(c, 'C_EncryptInit', a.session, typedMechanism(a.mechanism), a.key);
  }
  C_Encrypt(c: BackendContext, a: rpc.px_session_data_args): rpc.MaybePromise<rpc.px_bytes_ret> {
    const p11 = this.m(c);
    const h = this.sh(a.session);
    const sync = this.singlePart('C_Encrypt', a.session, h, a.data);
    return outputRet(withOutput(a.data.length + 256, (out) =>
        this.timed(c, 'C_Encrypt', 'C_EncryptInit', a.session, a.data.length, () => sync(out), () => p11.C_EncryptAsync(h, inBuf(a.data), out)),
      ),
    );
  }
  C_EncryptUpdate(c: BackendContext, a: rpc.px_session_data_args): rpc.MaybePromise<rpc.px_bytes_ret> {
    const p11 = this.m(c);
    return outputRet(withOutput(a.data.length + 256, (out) => p11.C_EncryptUpdate(this.sh(a.session), inBuf(a.data), out)));
  }
  C_EncryptFinal(c: BackendContext, a: rpc.px_session_args): rpc.MaybePromise<rpc.px_bytes_ret> {
    const p11 = this.m(c);
    const h = this.sh(a.session);
    return outputRet(withOutput(256, (out) => this.timed(c, 'C_EncryptFinal', 'C_EncryptInit', a.session, 0, () => p11.C_EncryptFinal(h, out), () => p11.C_EncryptFinalAsync(h, out))),
    );
  }

  C_DecryptInit(c: BackendContext, a: rpc.px_session_mechanism_key_args): rpc.px_rv {
    return this.keyInit(c, 'C_DecryptInit', a.session, mechanism(a.mechanism), a.key);
  }
  px_DecryptInitTyped(c: BackendContext, a: rpc.px_session_mechanism_typed_key_args): rpc.px_rv {
    return this.keyInit(c, 'C_DecryptInit', a.session, typedMechanism(a.mechanism), a.key);
  }
  C_Decrypt(c: BackendContext, a: rpc.px_session_data_args): rpc.MaybePromise<rpc.px_bytes_ret> {
    const p11 = this.m(c);
    const h = this.sh(a.session);
    const sync = this.singlePart('C_Decrypt', a.session, h, a.data);
    return outputRet(withOutput(a.data.length + 256, (out) =>
        this.timed(c, 'C_Decrypt', 'C_DecryptInit', a.session, a.data.length, () => sync(out), () => p11.C_DecryptAsync(h, inBuf(a.data), out)),
      ),
    );
  }
  C_DecryptUpdate(c: BackendContext, a: rpc.px_session_data_args): rpc.MaybePromise<rpc.px_bytes_ret> {
    const p11 = this.m(c);
    return outputRet(withOutput(a.data.length + 256, (out) => p11.C_DecryptUpdate(this.sh(a.session), inBuf(a.data), out)));
  }
  C_DecryptFinal(c: BackendContext, a: rpc.px_session_args): rpc.MaybePromise<rpc.px_bytes_ret> {
    const p11 = this.m(c);
    const h = this.sh(a.session);
    return outputRet(withOutput(256, (out) => this.timed(c, 'C_DecryptFinal', 'C_DecryptInit', a.session, 0, () => p11.C_DecryptFinal(h, out), () => p11.C_DecryptFinalAsync(h, out))),
    );
  }

  C_SignRecoverInit(c: BackendContext, a: rpc.px_session_mechanism_key_args): rpc.px_rv {
    return this.keyInit(c, 'C_SignRecoverInit', a.session, mechanism(a.mechanism), a.key);
  }
  px_SignRecoverInitTyped(c: BackendContext, a: rpc.px_session_mechanism_typed_key_args): rpc.px_rv {
    return this.keyInit(c, 'C_SignRecoverInit', a.session, typedMechanism(a.mechanism), a.key);
  }
  C_SignRecover(c: BackendContext, a: rpc.px_session_data_args): rpc.MaybePromise<rpc.px_bytes_ret> {
    const p11 = this.m(c);
    return outputRet(withOutput(1024, (out) => p11.C_SignRecover(this.sh(a.session), inBuf(a.data), out)));
  }
  C_VerifyRecoverInit(c: BackendContext, a: rpc.px_session_mechanism_key_args): rpc.px_rv {
    return this.keyInit(c, 'C_VerifyRecoverInit', a.session, mechanism(a.mechanism), a.key);
  }
  px_VerifyRecoverInitTyped(c: BackendContext, a: rpc.px_session_mechanism_typed_key_args): rpc.px_rv {
    return this.keyInit(c, 'C_VerifyRecoverInit', a.session, typedMechanism(a.mechanism), a.key);
  }
  C_VerifyRecover(c: BackendContext, a: rpc.px_session_data_args): rpc.MaybePromise<rpc.px_bytes_ret> {
    const p11 = this.m(c);
    return outputRet(withOutput(a.data.length + 256, (out) => p11.C_VerifyRecover(this.sh(a.session), inBuf(a.data), out)));
  }

  C_DigestEncryptUpdate(c: BackendContext, a: rpc.px_session_data_args): rpc.MaybePromise<rpc.px_bytes_ret> {
    const p11 = this.m(c);
    return outputRet(withOutput(a.data.length + 256, (out) => p11.C_DigestEncryptUpdateAsync(this.sh(a.session), inBuf(a.data), out)),
    );
  }
  C_SignEncryptUpdate(c: BackendContext, a: rpc.px_session_data_args): rpc.MaybePromise<rpc.px_bytes_ret> {
    const p11 = this.m(c);
    return outputRet(withOutput(a.data.length + 256, (out) => p11.C_SignEncryptUpdateAsync(this.sh(a.session), inBuf(a.data), out)),
    );
  }
  C_DecryptDigestUpdate(c: BackendContext, a: rpc.px_session_data_args): rpc.MaybePromise<rpc.px_bytes_ret> {
    const p11 = this.m(c);
    return outputRet(withOutput(a.data.length + 256, (out) => p11.C_DecryptDigestUpdateAsync(this.sh(a.session), inBuf(a.data), out)),
    );
  }
  C_DecryptVerifyUpdate(c: BackendContext, a: rpc.px_session_data_args): rpc.MaybePromise<rpc.px_bytes_ret> {
    const p11 = this.m(c);
    return outputRet(withOutput(a.data.length + 256, (out) => p11.C_DecryptVerifyUpdateAsync(this.sh(a.session), inBuf(a.data), out)),
    );
  }

  // pkcs11js does not expose these four. Operation state is not portable
  // across processes anyway, and the two legacy calls answer as 2.40 requires.
  C_GetOperationState(_c: BackendContext, _a: rpc.px_session_args): rpc.px_bytes_ret {
    return { rv: CKR_FUNCTION_NOT_SUPPORTED, data: EMPTY };
  }
  C_SetOperationState(_c: BackendContext, _a: rpc.C_SetOperationState_args): rpc.px_rv {
    return CKR_FUNCTION_NOT_SUPPORTED;
  }
  C_GetFunctionStatus(_c: BackendContext, _a: rpc.px_session_args): rpc.px_rv {
    return CKR_FUNCTION_NOT_PARALLEL;
  }
  C_CancelFunction(_c: BackendContext, _a: rpc.px_session_args): rpc.px_rv {
    return CKR_FUNCTION_NOT_PARALLEL;
  }
}
