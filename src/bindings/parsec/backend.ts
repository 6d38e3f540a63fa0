/**
 * A Parsec service as a PKCS#11 backend (docs/parsec.md is the specification).
 * One slot per Parsec provider (ListProviders order, Core excluded; slot ID =
 * provider id); a token per slot; a Parsec key pair is a private and a public
 * key object with the same CKA_ID, its CKA_LABEL the Parsec key name. Every
 * call that needs the service makes one request per connection (the service
 * closes after each response). A service that cannot be reached or answers
 * outside the protocol is CKR_DEVICE_ERROR; a status answers through the one
 * table of status.ts.
 */
import { createHash } from 'node:crypto';
import type { Hash } from 'node:crypto';
import { auditCallLimit } from '../../server/transport/limits';
import type * as rpc from '../../generated/pkcs11_rpc';
import { PX_MP_NONE, PX_MP_RAW, PX_MP_RSA_PKCS_OAEP, PX_MP_RSA_PKCS_PSS } from '../../generated/pkcs11_rpc';
import type { DescMessage, MessageInitShape, MessageShape } from '@bufbuild/protobuf';
import * as listProviders from '../../generated/parsec/list_providers_pb';
import * as listOpcodes from '../../generated/parsec/list_opcodes_pb';
import * as listKeys from '../../generated/parsec/list_keys_pb';
import * as generateKey from '../../generated/parsec/psa_generate_key_pb';
import * as destroyKey from '../../generated/parsec/psa_destroy_key_pb';
import * as importKey from '../../generated/parsec/psa_import_key_pb';
import * as exportPublicKey from '../../generated/parsec/psa_export_public_key_pb';
import * as signHash from '../../generated/parsec/psa_sign_hash_pb';
import * as verifyHash from '../../generated/parsec/psa_verify_hash_pb';
import * as asymEncrypt from '../../generated/parsec/psa_asymmetric_encrypt_pb';
import * as asymDecrypt from '../../generated/parsec/psa_asymmetric_decrypt_pb';
import * as generateRandom from '../../generated/parsec/psa_generate_random_pb';
import * as hashCompute from '../../generated/parsec/psa_hash_compute_pb';
import type { KeyAttributesSchema } from '../../generated/parsec/psa_key_attributes_pb';
import type { KeyInfo } from '../../generated/parsec/list_keys_pb';
import type { ProviderInfo } from '../../generated/parsec/list_providers_pb';
import { CK_UNAVAILABLE_INFORMATION_WIRE, CKR_OK, ck } from '../../pkcs11/constants';
import { NATIVE_ARCH, readULong, writeULong } from '../../pkcs11/arch';
import { Pkcs11Error } from '../../pkcs11/errors';
import { BackendBase } from '../backend';
import type { Backend, BackendContext, BackendLimits } from '../backend';
import { ParsecClient, ParsecStatusError, ParsecUnavailableError } from './client';
import type { ParsecAuth } from './client';
import { Opcode, Provider } from './wire';
import type { OpcodeName } from './wire';
import { statusRv } from './status';
import type { ParsecSpec } from './uri';
import { curveOf, curveOfParams, derOctetString, ecPointOf, parseRsaPublicKey, rsaPrivateKeyDer, rsaPublicKeyDer } from './der';
import {
  DIGEST_MECHANISMS,
  ENCRYPT_MECHANISMS,
  SIGN_MECHANISMS,
  allowedMechanisms,
  encryptAlgorithm,
  hashByCkm,
  hashByName,
  oaepHash,
  policyAlgorithm,
  pssHash,
  signPlan,
} from './mechanisms';
import type { AlgorithmInit, EncryptionInit, HashInfo, OaepParams, PssParams, SignMechanism } from './mechanisms';

const EMPTY = Buffer.alloc(0);
/** PsaGenerateRandom asks per request: far below the service's default body limit (1 MiB). */
const RANDOM_CHUNK = 64 * 1024;
/** RSA public exponent PSA generates (psa_generate_key has no exponent parameter). */
const F4 = Buffer.from([0x01, 0x00, 0x01]);
const EC_GEN_BITS = new Set([256, 384]);
const RSA_GEN_BITS = new Set([2048, 3072, 4096]);
/** Parsec key names: non-empty UTF-8; the service keeps them in its key store as given. */
const MAX_KEY_NAME = 255;
/** The longest RSA input or output (8192-bit modulus). */
const MAX_RSA_BLOCK = 1024;
/** Longest input sent to PsaHashCompute: well under the service's default body limit (1 MiB). */
const MAX_HASH_REQUEST = 64 * 1024;

const PROVIDER_NAMES: Readonly<Record<number, string>> = {
  [Provider.MbedCrypto]: 'Mbed Crypto',
  [Provider.Pkcs11]: 'PKCS #11',
  [Provider.Tpm]: 'TPM',
  [Provider.TrustedService]: 'Trusted Service',
  [Provider.CryptoAuthLib]: 'CryptoAuthLib',
};

function padded(s: string, width: number): Buffer {
  const b = Buffer.alloc(width, 0x20);
  let n = 0;
  // Cut at a character boundary: a blank-padded field holds whole UTF-8 characters.
  for (const ch of s) {
    const c = Buffer.from(ch, 'utf8');
    if (n + c.length > width) break;
    c.copy(b, n);
    n += c.length;
  }
  return b;
}

function version(maj: number, min: number): rpc.px_version {
  return { major: Buffer.from([maj & 0xff]), minor: Buffer.from([min & 0xff]) };
}

const bool = (v: boolean): Buffer => Buffer.from([v ? 1 : 0]);
function ulong(v: number): Buffer {
  const b = Buffer.alloc(NATIVE_ARCH.ulongSize);
  writeULong(b, 0, v, NATIVE_ARCH);
  return b;
}
function ulongs(vs: readonly number[]): Buffer {
  const b = Buffer.alloc(NATIVE_ARCH.ulongSize * vs.length);
  vs.forEach((v, i) => writeULong(b, i * NATIVE_ARCH.ulongSize, v, NATIVE_ARCH));
  return b;
}

/** A template attribute's value as CK_BBOOL; anything but one byte is CKR_ATTRIBUTE_VALUE_INVALID. */
function readBool(a: rpc.px_attribute): boolean {
  if (a.value.length !== 1) throw new Pkcs11Error(ck.CKR_ATTRIBUTE_VALUE_INVALID);
  return a.value[0] !== 0;
}
function readUlong(a: rpc.px_attribute): number {
  if (a.value.length !== NATIVE_ARCH.ulongSize) throw new Pkcs11Error(ck.CKR_ATTRIBUTE_VALUE_INVALID);
  return readULong(a.value, 0, NATIVE_ARCH);
}
function readUlongs(a: rpc.px_attribute): number[] {
  const u = NATIVE_ARCH.ulongSize;
  if (a.value.length % u !== 0) throw new Pkcs11Error(ck.CKR_ATTRIBUTE_VALUE_INVALID);
  const out: number[] = [];
  for (let off = 0; off < a.value.length; off += u) out.push(readULong(a.value, off, NATIVE_ARCH));
  return out;
}

/** A mechanism as the backend reads it: its type and the RSA parameters PSA can take. */
interface Mech {
  readonly type: number;
  /** True when a parameter was given (mechanisms without parameters refuse one). */
  readonly hasParam: boolean;
  readonly pss: PssParams | null;
  readonly oaep: OaepParams | null;
}

/** Version 3 procedures carry raw bytes: only RSA-PSS parameters are pointer-free (three CK_ULONGs, the daemon's layout). */
function rawMech(m: rpc.px_mechanism): Mech {
  if (m.parameter.length === 0) return { type: m.mechanism, hasParam: false, pss: null, oaep: null };
  const isPss = SIGN_MECHANISMS.get(m.mechanism)?.family === 'pss';
  const u = NATIVE_ARCH.ulongSize;
  if (!isPss || m.parameter.length !== 3 * u) throw new Pkcs11Error(ck.CKR_MECHANISM_PARAM_INVALID);
  const p = m.parameter;
  const pss = { hashAlg: readULong(p, 0, NATIVE_ARCH), mgf: readULong(p, u, NATIVE_ARCH), sLen: readULong(p, 2 * u, NATIVE_ARCH) };
  return { type: m.mechanism, hasParam: true, pss, oaep: null };
}

function typedMech(m: rpc.px_mechanism_typed): Mech {
  const p = m.param;
  switch (p.tag) {
    case PX_MP_NONE:
      return { type: m.mechanism, hasParam: false, pss: null, oaep: null };
    case PX_MP_RAW:
      return rawMech({ mechanism: m.mechanism, parameter: p.value });
    case PX_MP_RSA_PKCS_PSS:
      return { type: m.mechanism, hasParam: true, pss: { hashAlg: p.value.hashAlg, mgf: p.value.mgf, sLen: p.value.sLen }, oaep: null };
    case PX_MP_RSA_PKCS_OAEP:
      return {
        type: m.mechanism,
        hasParam: true,
        pss: null,
        oaep: { hashAlg: p.value.hashAlg, mgf: p.value.mgf, source: p.value.source, sourceData: p.value.sourceData },
      };
    default:
      throw new Pkcs11Error(ck.CKR_MECHANISM_PARAM_INVALID);
  }
}

/** One provider as a slot, from ListProviders and ListOpcodes. */
interface Slot {
  readonly id: number;
  readonly info: ProviderInfo;
  readonly opcodes: ReadonlySet<number>;
}

/** A key object: one Parsec key seen as its private or public half. */
interface KeyObject {
  readonly handle: number;
  /** The Parsec application (authentication) it belongs to: a handle never crosses tenants. */
  readonly app: string;
  readonly provider: number;
  readonly name: string;
  readonly cls: number;
  /** Attributes as the last ListKeys (or generation) gave them. */
  info: KeyInfo;
}

type OpKind = 'sign' | 'verify' | 'encrypt' | 'decrypt' | 'digest';

/** An active operation of a session. */
interface Operation {
  readonly mech: number;
  readonly key: KeyObject | null;
  readonly sign: SignMechanism | null;
  readonly pss: HashInfo | null;
  readonly oaep: HashInfo | null;
  readonly salt: Buffer;
  /** Digest or hash-then-sign: the running hash, once C_*Update was called. */
  running: Hash | null;
  /** RSA encryption through C_*Update: the input gathered so far. */
  parts: Buffer[] | null;
  readonly hash: HashInfo | null;
}

interface Session {
  readonly slot: number;
  readonly flags: number;
  readonly app: string;
  find: number[] | null;
  readonly ops: Map<OpKind, Operation>;
}

function keyTypeOf(info: KeyInfo): { kind: 'rsa' | 'ec' | 'other'; pair: boolean; family: number } {
  const v = info.attributes?.keyType?.variant;
  switch (v?.case) {
    case 'rsaKeyPair':
      return { kind: 'rsa', pair: true, family: 0 };
    case 'rsaPublicKey':
      return { kind: 'rsa', pair: false, family: 0 };
    case 'eccKeyPair':
      return { kind: 'ec', pair: true, family: v.value.curveFamily };
    case 'eccPublicKey':
      return { kind: 'ec', pair: false, family: v.value.curveFamily };
    default:
      return { kind: 'other', pair: false, family: 0 };
  }
}

type KeyAttributesInit = MessageInitShape<typeof KeyAttributesSchema>;

export class ParsecBackend extends BackendBase implements Backend {
  private readonly client: ParsecClient;
  private slotCache: Slot[] | null = null;
  private readonly sessions = new Map<number, Session>();
  private lastSession = 0;
  private lastHandle = 0;
  private readonly handles = new Map<string, number>();
  private readonly objects = new Map<number, KeyObject>();
  /** Exported public keys by app/provider/name: exports are public data, dropped when the key is destroyed. */
  private readonly publicKeys = new Map<string, Buffer>();
  /** Slots logged in (module-wide, as a PKCS#11 module is; the login layer above shares it per application). */
  private readonly loggedIn = new Set<number>();

  constructor(
    readonly alias: string,
    private readonly spec: ParsecSpec,
    private readonly limits: BackendLimits,
  ) {
    super();
    this.client = new ParsecClient({ socket: spec.socket, timeoutMs: spec.timeoutMs, maxResponseBytes: spec.maxResponseBytes });
  }

  finalize(): void {
    this.sessions.clear();
    this.objects.clear();
    this.handles.clear();
    this.publicKeys.clear();
  }

  /** The Parsec authentication of a caller, and the namespace key of its objects. */
  private auth(c: BackendContext): { auth: ParsecAuth; app: string } {
    if (this.spec.auth === 'unix') {
      const uid = process.getuid?.() ?? 0;
      return { auth: { type: 'unix', uid }, app: `uid:${uid}` };
    }
    const app = this.spec.app ?? c.identity ?? 'unknown';
    return { auth: { type: 'direct', app }, app: `direct:${app}` };
  }

  /** One request; service failures become the CK_RV of the status table, an unreachable service CKR_DEVICE_ERROR. */
  private async call<O extends DescMessage, R extends DescMessage>(
    c: BackendContext,
    provider: number,
    opcode: OpcodeName,
    opSchema: O,
    op: MessageInitShape<O>,
    resultSchema: R,
  ): Promise<MessageShape<R>> {
    try {
      return await this.client.call(provider, opcode, opSchema, op, resultSchema, this.auth(c).auth);
    } catch (e) {
      if (e instanceof ParsecStatusError) throw new Pkcs11Error(statusRv(e.status), opcode);
      if (e instanceof ParsecUnavailableError) {
        // The service may have restarted with other providers: ask again next time.
        this.slotCache = null;
        throw new Pkcs11Error(ck.CKR_DEVICE_ERROR, opcode);
      }
      throw e;
    }
  }

  private async refreshSlots(c: BackendContext): Promise<Slot[]> {
    const r = await this.call(c, Provider.Core, 'ListProviders', listProviders.OperationSchema, {}, listProviders.ResultSchema);
    const slots: Slot[] = [];
    for (const info of r.providers) {
      if (info.id === Provider.Core || info.id > 0xff) continue;
      const o = await this.call(c, Provider.Core, 'ListOpcodes', listOpcodes.OperationSchema, { providerId: info.id }, listOpcodes.ResultSchema);
      slots.push({ id: info.id, info, opcodes: new Set(o.opcodes) });
    }
    this.slotCache = slots;
    return slots;
  }

  private async slots(c: BackendContext): Promise<Slot[]> {
    return this.slotCache ?? this.refreshSlots(c);
  }

  private async slot(c: BackendContext, slotID: number): Promise<Slot> {
    let s = (await this.slots(c)).find((x) => x.id === slotID);
    if (s === undefined && this.slotCache !== null) s = (await this.refreshSlots(c)).find((x) => x.id === slotID);
    if (s === undefined) throw new Pkcs11Error(ck.CKR_SLOT_ID_INVALID);
    return s;
  }

  private session(c: BackendContext, session: number): Session {
    const s = this.sessions.get(session);
    if (s === undefined || s.app !== this.auth(c).app) throw new Pkcs11Error(ck.CKR_SESSION_HANDLE_INVALID);
    return s;
  }

  private object(c: BackendContext, s: Session, handle: number): KeyObject {
    const o = this.objects.get(handle);
    if (o === undefined || o.app !== this.auth(c).app || o.provider !== s.slot) throw new Pkcs11Error(ck.CKR_OBJECT_HANDLE_INVALID);
    if (o.cls === ck.CKO_PRIVATE_KEY && !this.loggedIn.has(s.slot)) throw new Pkcs11Error(ck.CKR_OBJECT_HANDLE_INVALID);
    return o;
  }

  private keyRef(app: string, provider: number, name: string): string {
    return `${app}\u0000${provider}\u0000${name}`;
  }

  /** The object of one half of a key, with a handle stable for the backend's life. */
  private register(app: string, info: KeyInfo, cls: number): KeyObject {
    const ref = `${this.keyRef(app, info.providerId, info.name)}\u0000${cls}`;
    let h = this.handles.get(ref);
    if (h === undefined) {
      h = ++this.lastHandle;
      this.handles.set(ref, h);
      this.objects.set(h, { handle: h, app, provider: info.providerId, name: info.name, cls, info });
    } else (this.objects.get(h) as KeyObject).info = info;
    return this.objects.get(h) as KeyObject;
  }

  private forget(app: string, provider: number, name: string): void {
    const ref = this.keyRef(app, provider, name);
    this.publicKeys.delete(ref);
    for (const cls of [ck.CKO_PRIVATE_KEY, ck.CKO_PUBLIC_KEY]) {
      const h = this.handles.get(`${ref}\u0000${cls}`);
      if (h === undefined) continue;
      this.handles.delete(`${ref}\u0000${cls}`);
      this.objects.delete(h);
    }
  }

  /** The objects of the caller's keys on one provider: a key pair is two objects, a public key one. */
  private async keyObjects(c: BackendContext, s: Session): Promise<KeyObject[]> {
    const app = this.auth(c).app;
    const r = await this.call(c, Provider.Core, 'ListKeys', listKeys.OperationSchema, {}, listKeys.ResultSchema);
    const out: KeyObject[] = [];
    for (const k of r.keys) {
      if (k.providerId !== s.slot) continue;
      const t = keyTypeOf(k);
      if (t.kind === 'other') continue;
      if (t.pair && this.loggedIn.has(s.slot)) out.push(this.register(app, k, ck.CKO_PRIVATE_KEY));
      out.push(this.register(app, k, ck.CKO_PUBLIC_KEY));
    }
    return out;
  }

  private async publicKey(c: BackendContext, o: KeyObject): Promise<Buffer> {
    const ref = this.keyRef(o.app, o.provider, o.name);
    let k = this.publicKeys.get(ref);
    if (k === undefined) {
      const r = await this.call(c, o.provider, 'PsaExportPublicKey', exportPublicKey.OperationSchema, { keyName: o.name }, exportPublicKey.ResultSchema);
      k = Buffer.from(r.data);
      this.publicKeys.set(ref, k);
    }
    return k;
  }

  /**
   * One attribute of an object: its value, 'sensitive', or 'invalid' (not an
   * attribute of this object). CK_ULONGs are in the daemon's layout (the
   * layout layer above converts).
   */
  private async attribute(c: BackendContext, o: KeyObject, type: number): Promise<Buffer | 'sensitive' | 'invalid'> {
    const t = keyTypeOf(o.info);
    const priv = o.cls === ck.CKO_PRIVATE_KEY;
    const flags = o.info.attributes?.keyPolicy?.keyUsageFlags;
    const bits = o.info.attributes?.keyBits ?? 0;
    const rsa = t.kind === 'rsa';
    switch (type) {
      case ck.CKA_CLASS:
        return ulong(o.cls);
      case ck.CKA_KEY_TYPE:
        return ulong(rsa ? ck.CKK_RSA : ck.CKK_EC);
      case ck.CKA_TOKEN:
        return bool(true);
      case ck.CKA_PRIVATE:
        return bool(priv);
      case ck.CKA_MODIFIABLE:
      case ck.CKA_COPYABLE:
      case ck.CKA_DERIVE:
      case ck.CKA_LOCAL:
        return bool(type === ck.CKA_DERIVE ? (flags?.derive ?? false) : false);
      case ck.CKA_DESTROYABLE:
        return bool(true);
      case ck.CKA_LABEL:
      case ck.CKA_ID:
        return Buffer.from(o.name, 'utf8');
      case ck.CKA_START_DATE:
      case ck.CKA_END_DATE:
      case ck.CKA_SUBJECT:
        return EMPTY;
      case ck.CKA_KEY_GEN_MECHANISM:
        return ulong(CK_UNAVAILABLE_INFORMATION_WIRE);
      case ck.CKA_ALLOWED_MECHANISMS:
        return ulongs(allowedMechanisms(o.info.attributes?.keyPolicy?.keyAlgorithm));
      case ck.CKA_EC_PARAMS: {
        if (rsa) return 'invalid';
        const curve = curveOf(t.family, bits);
        return curve === undefined ? 'invalid' : curve.oid;
      }
      case ck.CKA_MODULUS:
      case ck.CKA_PUBLIC_EXPONENT: {
        if (!rsa) return 'invalid';
        const k = parseRsaPublicKey(await this.publicKey(c, o));
        return type === ck.CKA_MODULUS ? k.modulus : k.exponent;
      }
    }
    if (priv) {
      switch (type) {
        case ck.CKA_SENSITIVE:
        case ck.CKA_ALWAYS_SENSITIVE:
          return bool(true);
        case ck.CKA_EXTRACTABLE:
          return bool(flags?.export ?? false);
        case ck.CKA_NEVER_EXTRACTABLE:
          return bool(!(flags?.export ?? false));
        case ck.CKA_SIGN:
          return bool(flags?.signHash ?? false);
        case ck.CKA_DECRYPT:
          return bool(flags?.decrypt ?? false);
        case ck.CKA_SIGN_RECOVER:
        case ck.CKA_UNWRAP:
        case ck.CKA_ALWAYS_AUTHENTICATE:
        case ck.CKA_WRAP_WITH_TRUSTED:
          return bool(false);
        case ck.CKA_VALUE:
          return rsa ? 'invalid' : 'sensitive';
        case ck.CKA_PRIVATE_EXPONENT:
        case ck.CKA_PRIME_1:
        case ck.CKA_PRIME_2:
        case ck.CKA_EXPONENT_1:
        case ck.CKA_EXPONENT_2:
        case ck.CKA_COEFFICIENT:
          return rsa ? 'sensitive' : 'invalid';
      }
      return 'invalid';
    }
    switch (type) {
      case ck.CKA_VERIFY:
        return bool(flags?.verifyHash ?? false);
      case ck.CKA_ENCRYPT:
        return bool(flags?.encrypt ?? false);
      case ck.CKA_VERIFY_RECOVER:
      case ck.CKA_WRAP:
      case ck.CKA_TRUSTED:
        return bool(false);
      case ck.CKA_MODULUS_BITS:
        return rsa ? ulong(bits) : 'invalid';
      case ck.CKA_EC_POINT:
        return rsa ? 'invalid' : derOctetString(await this.publicKey(c, o));
    }
    return 'invalid';
  }

  // ---- general, slots, tokens ----

  C_GetInfo(_c: BackendContext): rpc.C_GetInfo_ret {
    return {
      rv: CKR_OK,
      info: {
        cryptokiVersion: version(2, 40),
        manufacturerID: padded('pkcs11proxyd', 32),
        flags: 0,
        libraryDescription: padded('Parsec service backend', 32),
        libraryVersion: version(0, 1),
      },
    };
  }

  async C_GetSlotList(c: BackendContext, a: rpc.C_GetSlotList_args): Promise<rpc.C_GetSlotList_ret> {
    // Asked again each time: the slot list is when an application learns of a restarted service.
    const ids = (await this.refreshSlots(c)).map((s) => s.id);
    if (a.count === 0) return { rv: CKR_OK, slotList: [], count: ids.length };
    if (a.count < ids.length) return { rv: ck.CKR_BUFFER_TOO_SMALL, slotList: [], count: ids.length };
    return { rv: CKR_OK, slotList: ids, count: ids.length };
  }

  C_WaitForSlotEvent(_c: BackendContext, _a: rpc.C_WaitForSlotEvent_args): rpc.C_WaitForSlotEvent_ret {
    return { rv: ck.CKR_FUNCTION_NOT_SUPPORTED, slotID: 0 };
  }

  async C_GetSlotInfo(c: BackendContext, a: rpc.C_GetSlotInfo_args): Promise<rpc.C_GetSlotInfo_ret> {
    const s = await this.slot(c, a.slotID);
    return {
      rv: CKR_OK,
      info: {
        slotDescription: padded(`Parsec provider ${s.id}: ${s.info.description}`, 64),
        manufacturerID: padded(s.info.vendor, 32),
        flags: ck.CKF_TOKEN_PRESENT,
        hardwareVersion: version(s.info.versionMaj, s.info.versionMin),
        firmwareVersion: version(s.info.versionRev, 0),
      },
    };
  }

  async C_GetTokenInfo(c: BackendContext, a: rpc.C_GetTokenInfo_args): Promise<rpc.C_GetTokenInfo_ret> {
    const s = await this.slot(c, a.slotID);
    const open = [...this.sessions.values()].filter((x) => x.slot === s.id);
    // No PIN: the login is C_Login with an empty PIN, which CKF_PROTECTED_AUTHENTICATION_PATH makes applications send.
    let flags = ck.CKF_TOKEN_INITIALIZED | ck.CKF_LOGIN_REQUIRED | ck.CKF_USER_PIN_INITIALIZED | ck.CKF_PROTECTED_AUTHENTICATION_PATH;
    if (s.opcodes.has(Opcode.PsaGenerateRandom)) flags |= ck.CKF_RNG;
    return {
      rv: CKR_OK,
      info: {
        label: padded(`Parsec ${PROVIDER_NAMES[s.id] ?? `provider ${s.id}`}`, 32),
        manufacturerID: padded(s.info.vendor, 32),
        model: padded('Parsec provider', 16),
        serialNumber: padded(s.info.uuid.replace(/-/g, '').slice(0, 16), 16),
        flags,
        maxSessionCount: 0,
        sessionCount: open.length,
        maxRwSessionCount: 0,
        rwSessionCount: open.filter((x) => (x.flags & ck.CKF_RW_SESSION) !== 0).length,
        maxPinLen: 0,
        minPinLen: 0,
        totalPublicMemory: CK_UNAVAILABLE_INFORMATION_WIRE,
        freePublicMemory: CK_UNAVAILABLE_INFORMATION_WIRE,
        totalPrivateMemory: CK_UNAVAILABLE_INFORMATION_WIRE,
        freePrivateMemory: CK_UNAVAILABLE_INFORMATION_WIRE,
        hardwareVersion: version(s.info.versionMaj, s.info.versionMin),
        firmwareVersion: version(s.info.versionRev, 0),
        utcTime: padded('', 16),
      },
    };
  }

  /** The mechanisms of a provider, from its opcodes, with their CK_MECHANISM_INFO. */
  private mechanisms(s: Slot): Map<number, { min: number; max: number; flags: number }> {
    const m = new Map<number, { min: number; max: number; flags: number }>();
    const add = (mech: number, min: number, max: number, flags: number): void => {
      const cur = m.get(mech);
      m.set(mech, cur ? { min, max, flags: cur.flags | flags } : { min, max, flags });
    };
    const ec = ck.CKF_EC_F_P | ck.CKF_EC_NAMEDCURVE | ck.CKF_EC_UNCOMPRESS;
    if (s.opcodes.has(Opcode.PsaGenerateKey)) {
      add(ck.CKM_EC_KEY_PAIR_GEN, 256, 384, ck.CKF_GENERATE_KEY_PAIR | ec);
      add(ck.CKM_RSA_PKCS_KEY_PAIR_GEN, 2048, 4096, ck.CKF_GENERATE_KEY_PAIR);
    }
    const sign = s.opcodes.has(Opcode.PsaSignHash) ? ck.CKF_SIGN : 0;
    const verify = s.opcodes.has(Opcode.PsaVerifyHash) ? ck.CKF_VERIFY : 0;
    if (sign | verify) {
      for (const [mech, sm] of SIGN_MECHANISMS) {
        if (sm.keyType === ck.CKK_EC) add(mech, 256, 521, sign | verify | ec);
        else add(mech, 1024, 4096, sign | verify);
      }
    }
    const enc = s.opcodes.has(Opcode.PsaAsymmetricEncrypt) ? ck.CKF_ENCRYPT : 0;
    const dec = s.opcodes.has(Opcode.PsaAsymmetricDecrypt) ? ck.CKF_DECRYPT : 0;
    if (enc | dec) for (const mech of ENCRYPT_MECHANISMS) add(mech, 1024, 4096, enc | dec);
    for (const mech of DIGEST_MECHANISMS) add(mech, 0, 0, ck.CKF_DIGEST);
    return m;
  }

  async C_GetMechanismList(c: BackendContext, a: rpc.C_GetMechanismList_args): Promise<rpc.C_GetMechanismList_ret> {
    const list = [...this.mechanisms(await this.slot(c, a.slotID)).keys()];
    if (a.count === 0) return { rv: CKR_OK, mechanismList: [], count: list.length };
    if (a.count < list.length) return { rv: ck.CKR_BUFFER_TOO_SMALL, mechanismList: [], count: list.length };
    return { rv: CKR_OK, mechanismList: list, count: list.length };
  }

  async C_GetMechanismInfo(c: BackendContext, a: rpc.C_GetMechanismInfo_args): Promise<rpc.C_GetMechanismInfo_ret> {
    const i = this.mechanisms(await this.slot(c, a.slotID)).get(a.type);
    if (i === undefined) throw new Pkcs11Error(ck.CKR_MECHANISM_INVALID);
    return { rv: CKR_OK, info: { minKeySize: i.min, maxKeySize: i.max, flags: i.flags } };
  }

  // ---- sessions and login ----

  async C_OpenSession(c: BackendContext, a: rpc.C_OpenSession_args): Promise<rpc.C_OpenSession_ret> {
    if ((a.flags & ck.CKF_SERIAL_SESSION) === 0) throw new Pkcs11Error(ck.CKR_SESSION_PARALLEL_NOT_SUPPORTED);
    const s = await this.slot(c, a.slotID);
    const session = ++this.lastSession;
    this.sessions.set(session, { slot: s.id, flags: a.flags, app: this.auth(c).app, find: null, ops: new Map() });
    return { rv: CKR_OK, session };
  }

  private closed(slot: number): void {
    // The last session closed on a token logs the application out (PKCS#11 2.40 5.6).
    if (![...this.sessions.values()].some((x) => x.slot === slot)) this.loggedIn.delete(slot);
  }

  C_CloseSession(c: BackendContext, a: rpc.C_CloseSession_args): rpc.px_rv {
    const s = this.session(c, a.session);
    this.sessions.delete(a.session);
    this.closed(s.slot);
    return CKR_OK;
  }

  C_CloseAllSessions(c: BackendContext, a: rpc.C_CloseAllSessions_args): rpc.px_rv {
    const app = this.auth(c).app;
    for (const [h, s] of this.sessions) if (s.slot === a.slotID && s.app === app) this.sessions.delete(h);
    this.closed(a.slotID);
    return CKR_OK;
  }

  C_GetSessionInfo(c: BackendContext, a: rpc.C_GetSessionInfo_args): rpc.C_GetSessionInfo_ret {
    const s = this.session(c, a.session);
    const rw = (s.flags & ck.CKF_RW_SESSION) !== 0;
    const user = this.loggedIn.has(s.slot);
    const state = user ? (rw ? ck.CKS_RW_USER_FUNCTIONS : ck.CKS_RO_USER_FUNCTIONS) : rw ? ck.CKS_RW_PUBLIC_SESSION : ck.CKS_RO_PUBLIC_SESSION;
    return { rv: CKR_OK, info: { slotID: s.slot, state, flags: s.flags, deviceError: 0 } };
  }

  /**
   * Parsec has no PIN: the caller is who the Parsec authenticator says. A
   * login with an empty PIN (or none: the wire carries both as empty)
   * succeeds; a PIN is refused, as the token cannot check it.
   */
  C_Login(c: BackendContext, a: rpc.C_Login_args): rpc.px_rv {
    const s = this.session(c, a.session);
    if (a.userType === ck.CKU_SO) throw new Pkcs11Error(ck.CKR_USER_TYPE_INVALID);
    if (a.userType === ck.CKU_CONTEXT_SPECIFIC) throw new Pkcs11Error(ck.CKR_OPERATION_NOT_INITIALIZED);
    if (a.userType !== ck.CKU_USER) throw new Pkcs11Error(ck.CKR_USER_TYPE_INVALID);
    if (a.pin.length > 0) throw new Pkcs11Error(ck.CKR_PIN_INCORRECT);
    if (this.loggedIn.has(s.slot)) throw new Pkcs11Error(ck.CKR_USER_ALREADY_LOGGED_IN);
    this.loggedIn.add(s.slot);
    return CKR_OK;
  }

  C_Logout(c: BackendContext, a: rpc.C_Logout_args): rpc.px_rv {
    const s = this.session(c, a.session);
    if (!this.loggedIn.delete(s.slot)) throw new Pkcs11Error(ck.CKR_USER_NOT_LOGGED_IN);
    return CKR_OK;
  }

  C_InitPIN(_c: BackendContext, _a: rpc.C_InitPIN_args): rpc.px_rv {
    return ck.CKR_FUNCTION_NOT_SUPPORTED;
  }
  C_SetPIN(_c: BackendContext, _a: rpc.C_SetPIN_args): rpc.px_rv {
    return ck.CKR_FUNCTION_NOT_SUPPORTED;
  }
  C_InitToken(_c: BackendContext, _a: rpc.C_InitToken_args): rpc.px_rv {
    return ck.CKR_FUNCTION_NOT_SUPPORTED;
  }
  C_SeedRandom(c: BackendContext, a: rpc.C_SeedRandom_args): rpc.px_rv {
    this.session(c, a.session);
    return ck.CKR_RANDOM_SEED_NOT_SUPPORTED;
  }

  async C_GenerateRandom(c: BackendContext, a: rpc.C_GenerateRandom_args): Promise<rpc.px_bytes_ret> {
    const s = this.session(c, a.session);
    if (a.length < 0 || a.length > this.limits.maxRandomLength) {
      auditCallLimit('max_random_length', 'C_GenerateRandom', 'CKR_ARGUMENTS_BAD', { app: c.appId, alias: c.alias });
      return { rv: ck.CKR_ARGUMENTS_BAD, data: EMPTY };
    }
    const slot = await this.slot(c, s.slot);
    if (!slot.opcodes.has(Opcode.PsaGenerateRandom)) throw new Pkcs11Error(ck.CKR_RANDOM_NO_RNG);
    const parts: Buffer[] = [];
    for (let left = a.length; left > 0; left -= RANDOM_CHUNK) {
      const size = Math.min(left, RANDOM_CHUNK);
      const r = await this.call(c, s.slot, 'PsaGenerateRandom', generateRandom.OperationSchema, { size: BigInt(size) }, generateRandom.ResultSchema);
      if (r.randomBytes.length !== size) throw new Pkcs11Error(ck.CKR_DEVICE_ERROR, 'PsaGenerateRandom');
      parts.push(Buffer.from(r.randomBytes));
    }
    return { rv: CKR_OK, data: Buffer.concat(parts) };
  }

  // ---- objects ----

  async C_FindObjectsInit(c: BackendContext, a: rpc.C_FindObjectsInit_args): Promise<rpc.px_rv> {
    const s = this.session(c, a.session);
    if (s.find !== null) throw new Pkcs11Error(ck.CKR_OPERATION_ACTIVE);
    const found: number[] = [];
    for (const o of await this.keyObjects(c, s)) {
      let match = true;
      for (const t of a.template) {
        const v = await this.attribute(c, o, t.type);
        if (typeof v === 'string' || !v.equals(t.value)) {
          match = false;
          break;
        }
      }
      if (match) found.push(o.handle);
    }
    s.find = found;
    return CKR_OK;
  }

  C_FindObjects(c: BackendContext, a: rpc.C_FindObjects_args): rpc.C_FindObjects_ret {
    const s = this.session(c, a.session);
    if (s.find === null) throw new Pkcs11Error(ck.CKR_OPERATION_NOT_INITIALIZED);
    if (a.maxObjectCount < 0) return { rv: ck.CKR_ARGUMENTS_BAD, objects: [], count: 0 };
    const objects = s.find.splice(0, a.maxObjectCount);
    return { rv: CKR_OK, objects, count: objects.length };
  }

  C_FindObjectsFinal(c: BackendContext, a: rpc.C_FindObjectsFinal_args): rpc.px_rv {
    const s = this.session(c, a.session);
    if (s.find === null) throw new Pkcs11Error(ck.CKR_OPERATION_NOT_INITIALIZED);
    s.find = null;
    return CKR_OK;
  }

  async C_GetAttributeValue(c: BackendContext, a: rpc.C_GetAttributeValue_args): Promise<rpc.C_GetAttributeValue_ret> {
    const s = this.session(c, a.session);
    const o = this.object(c, s, a.object);
    let rv = CKR_OK;
    const template: rpc.px_attribute[] = [];
    for (const req of a.template) {
      const v = await this.attribute(c, o, req.type);
      if (typeof v === 'string') {
        if (rv === CKR_OK) rv = v === 'sensitive' ? ck.CKR_ATTRIBUTE_SENSITIVE : ck.CKR_ATTRIBUTE_TYPE_INVALID;
        template.push({ type: req.type, value: EMPTY, valueLen: CK_UNAVAILABLE_INFORMATION_WIRE });
      } else if (req.value.length === 0) {
        template.push({ type: req.type, value: EMPTY, valueLen: v.length });
      } else if (v.length > req.valueLen) {
        if (rv === CKR_OK) rv = ck.CKR_BUFFER_TOO_SMALL;
        template.push({ type: req.type, value: EMPTY, valueLen: CK_UNAVAILABLE_INFORMATION_WIRE });
      } else template.push({ type: req.type, value: v, valueLen: v.length });
    }
    return { rv, template };
  }

  C_SetAttributeValue(c: BackendContext, a: rpc.C_SetAttributeValue_args): rpc.px_rv {
    this.object(c, this.session(c, a.session), a.object);
    // Parsec keeps no attributes beyond the key's own: every object is CKA_MODIFIABLE false.
    return ck.CKR_ATTRIBUTE_READ_ONLY;
  }

  C_GetObjectSize(c: BackendContext, a: rpc.C_GetObjectSize_args): rpc.C_GetObjectSize_ret {
    this.object(c, this.session(c, a.session), a.object);
    return { rv: CKR_OK, size: CK_UNAVAILABLE_INFORMATION_WIRE };
  }

  C_CopyObject(c: BackendContext, a: rpc.C_CopyObject_args): rpc.px_object_ret {
    this.object(c, this.session(c, a.session), a.object);
    // CKA_COPYABLE is false on every Parsec key (PSA's copy is not on the wire protocol).
    return { rv: ck.CKR_ACTION_PROHIBITED, object: 0 };
  }

  /** Token objects are created and destroyed only in a R/W session of a logged-in user (private halves). */
  private writable(s: Session): void {
    if ((s.flags & ck.CKF_RW_SESSION) === 0) throw new Pkcs11Error(ck.CKR_SESSION_READ_ONLY);
    if (!this.loggedIn.has(s.slot)) throw new Pkcs11Error(ck.CKR_USER_NOT_LOGGED_IN);
  }

  /** Destroying either half destroys the Parsec key, so both objects go. */
  async C_DestroyObject(c: BackendContext, a: rpc.C_DestroyObject_args): Promise<rpc.px_rv> {
    const s = this.session(c, a.session);
    const o = this.object(c, s, a.object);
    this.writable(s);
    await this.call(c, o.provider, 'PsaDestroyKey', destroyKey.OperationSchema, { keyName: o.name }, destroyKey.ResultSchema);
    this.forget(o.app, o.provider, o.name);
    return CKR_OK;
  }

  /**
   * The Parsec key name of a new key: CKA_LABEL; CKA_ID, when given, must be
   * the same bytes (a Parsec key has no separate identifier) or, with no
   * label, is the name; neither: a generated name.
   */
  private keyName(templates: rpc.px_attribute[][]): string {
    let label: Buffer | undefined;
    let id: Buffer | undefined;
    for (const t of templates) {
      for (const a of t) {
        if (a.type === ck.CKA_LABEL) {
          if (label !== undefined && !label.equals(a.value)) throw new Pkcs11Error(ck.CKR_TEMPLATE_INCONSISTENT);
          label = a.value;
        } else if (a.type === ck.CKA_ID) {
          if (id !== undefined && !id.equals(a.value)) throw new Pkcs11Error(ck.CKR_TEMPLATE_INCONSISTENT);
          id = a.value;
        }
      }
    }
    if (label !== undefined && id !== undefined && !label.equals(id)) throw new Pkcs11Error(ck.CKR_ATTRIBUTE_VALUE_INVALID);
    const bytes = label ?? id;
    if (bytes === undefined) return `pkcs11-${Date.now().toString(36)}-${(++this.lastHandle).toString(36)}`;
    const name = bytes.toString('utf8');
    if (name.length === 0 || bytes.length > MAX_KEY_NAME || !Buffer.from(name, 'utf8').equals(bytes) || /[\u0000-\u001f]/.test(name)) {
      throw new Pkcs11Error(ck.CKR_ATTRIBUTE_VALUE_INVALID);
    }
    return name;
  }

  /**
   * Reads a creation template: the attributes Parsec can honour, each checked
   * against what the key will be. An attribute it cannot represent is
   * CKR_ATTRIBUTE_TYPE_INVALID, a value it cannot honour CKR_ATTRIBUTE_VALUE_INVALID.
   */
  private readTemplate(t: rpc.px_attribute[], cls: number, keyType: number | null): Map<number, rpc.px_attribute> {
    const out = new Map<number, rpc.px_attribute>();
    const mustBe = (a: rpc.px_attribute, v: boolean): void => {
      if (readBool(a) !== v) throw new Pkcs11Error(ck.CKR_ATTRIBUTE_VALUE_INVALID);
    };
    const priv = cls === ck.CKO_PRIVATE_KEY;
    for (const a of t) {
      switch (a.type) {
        case ck.CKA_CLASS:
          if (readUlong(a) !== cls) throw new Pkcs11Error(ck.CKR_TEMPLATE_INCONSISTENT);
          break;
        case ck.CKA_KEY_TYPE:
          if (keyType !== null && readUlong(a) !== keyType) throw new Pkcs11Error(ck.CKR_TEMPLATE_INCONSISTENT);
          break;
        case ck.CKA_TOKEN:
          mustBe(a, true);
          break;
        case ck.CKA_PRIVATE:
          mustBe(a, priv);
          break;
        case ck.CKA_MODIFIABLE:
        case ck.CKA_COPYABLE:
        case ck.CKA_WRAP:
        case ck.CKA_UNWRAP:
        case ck.CKA_SIGN_RECOVER:
        case ck.CKA_VERIFY_RECOVER:
        case ck.CKA_ALWAYS_AUTHENTICATE:
        case ck.CKA_WRAP_WITH_TRUSTED:
        case ck.CKA_TRUSTED:
          mustBe(a, false);
          break;
        case ck.CKA_DESTROYABLE:
          mustBe(a, true);
          break;
        case ck.CKA_SENSITIVE:
          if (!priv) throw new Pkcs11Error(ck.CKR_ATTRIBUTE_TYPE_INVALID);
          mustBe(a, true);
          break;
        case ck.CKA_SUBJECT:
        case ck.CKA_START_DATE:
        case ck.CKA_END_DATE:
          if (a.value.length !== 0) throw new Pkcs11Error(ck.CKR_ATTRIBUTE_VALUE_INVALID);
          break;
        case ck.CKA_DERIVE:
          // PSA's derive usage flag: kept and read back, though the key's one algorithm is not a key agreement.
          readBool(a);
          out.set(a.type, a);
          break;
        case ck.CKA_SIGN:
        case ck.CKA_DECRYPT:
        case ck.CKA_EXTRACTABLE:
          if (!priv) throw new Pkcs11Error(ck.CKR_ATTRIBUTE_TYPE_INVALID);
          readBool(a);
          out.set(a.type, a);
          break;
        case ck.CKA_VERIFY:
        case ck.CKA_ENCRYPT:
          if (priv) throw new Pkcs11Error(ck.CKR_ATTRIBUTE_TYPE_INVALID);
          readBool(a);
          out.set(a.type, a);
          break;
        case ck.CKA_LABEL:
        case ck.CKA_ID:
        case ck.CKA_ALLOWED_MECHANISMS:
        case ck.CKA_EC_PARAMS:
        case ck.CKA_EC_POINT:
        case ck.CKA_MODULUS:
        case ck.CKA_MODULUS_BITS:
        case ck.CKA_PUBLIC_EXPONENT:
        case ck.CKA_VALUE:
        case ck.CKA_PRIVATE_EXPONENT:
        case ck.CKA_PRIME_1:
        case ck.CKA_PRIME_2:
        case ck.CKA_EXPONENT_1:
        case ck.CKA_EXPONENT_2:
        case ck.CKA_COEFFICIENT:
          out.set(a.type, a);
          break;
        default:
          throw new Pkcs11Error(ck.CKR_ATTRIBUTE_TYPE_INVALID);
      }
    }
    return out;
  }

  /** The PSA attributes of a new key from its (checked) templates. */
  private keyAttributes(
    keyType: number,
    pair: boolean,
    bits: number,
    family: number,
    pub: Map<number, rpc.px_attribute>,
    priv: Map<number, rpc.px_attribute>,
  ): KeyAttributesInit {
    const flag = (m: Map<number, rpc.px_attribute>, t: number, dflt: boolean): boolean => {
      const a = m.get(t);
      return a === undefined ? dflt : readBool(a);
    };
    const allowedAttr = priv.get(ck.CKA_ALLOWED_MECHANISMS) ?? pub.get(ck.CKA_ALLOWED_MECHANISMS);
    const allowed = allowedAttr === undefined ? null : readUlongs(allowedAttr);
    const decryptAsked = flag(priv, ck.CKA_DECRYPT, false) || flag(pub, ck.CKA_ENCRYPT, false);
    const signAsked = flag(priv, ck.CKA_SIGN, !decryptAsked) || flag(pub, ck.CKA_VERIFY, false);
    const dflt = hashByName(keyType === ck.CKK_EC && bits === 384 ? 'sha384' : 'sha256');
    const alg: AlgorithmInit = policyAlgorithm(keyType, allowed, signAsked, decryptAsked, dflt);
    const isSig = alg.variant?.case === 'asymmetricSignature';
    const sign = pair && isSig && flag(priv, ck.CKA_SIGN, true);
    const verify = isSig && flag(pub, ck.CKA_VERIFY, true);
    const decrypt = pair && !isSig && flag(priv, ck.CKA_DECRYPT, true);
    const encrypt = !isSig && flag(pub, ck.CKA_ENCRYPT, true);
    const keyTypeInit: KeyAttributesInit['keyType'] =
      keyType === ck.CKK_RSA
        ? { variant: pair ? { case: 'rsaKeyPair', value: {} } : { case: 'rsaPublicKey', value: {} } }
        : { variant: pair ? { case: 'eccKeyPair', value: { curveFamily: family } } : { case: 'eccPublicKey', value: { curveFamily: family } } };
    return {
      keyType: keyTypeInit,
      keyBits: bits,
      keyPolicy: {
        keyUsageFlags: {
          export: pair && flag(priv, ck.CKA_EXTRACTABLE, false),
          derive: flag(priv, ck.CKA_DERIVE, false) || flag(pub, ck.CKA_DERIVE, false),
          signHash: sign,
          signMessage: sign,
          verifyHash: verify,
          verifyMessage: verify,
          encrypt,
          decrypt,
        },
        keyAlgorithm: alg,
      },
    };
  }

  async C_GenerateKeyPair(c: BackendContext, a: rpc.C_GenerateKeyPair_args): Promise<rpc.C_GenerateKeyPair_ret> {
    return this.generateKeyPair(c, a.session, rawMech(a.mechanism), a.publicKeyTemplate, a.privateKeyTemplate);
  }
  async px_GenerateKeyPairTyped(c: BackendContext, a: rpc.px_GenerateKeyPairTyped_args): Promise<rpc.C_GenerateKeyPair_ret> {
    return this.generateKeyPair(c, a.session, typedMech(a.mechanism), a.publicKeyTemplate, a.privateKeyTemplate);
  }

  private async generateKeyPair(c: BackendContext, session: number, m: Mech, pubT: rpc.px_attribute[], privT: rpc.px_attribute[]): Promise<rpc.C_GenerateKeyPair_ret> {
    const s = this.session(c, session);
    const slot = await this.slot(c, s.slot);
    let keyType: number;
    if (m.type === ck.CKM_EC_KEY_PAIR_GEN) keyType = ck.CKK_EC;
    else if (m.type === ck.CKM_RSA_PKCS_KEY_PAIR_GEN) keyType = ck.CKK_RSA;
    else throw new Pkcs11Error(ck.CKR_MECHANISM_INVALID);
    if (!slot.opcodes.has(Opcode.PsaGenerateKey)) throw new Pkcs11Error(ck.CKR_MECHANISM_INVALID);
    if (m.hasParam) throw new Pkcs11Error(ck.CKR_MECHANISM_PARAM_INVALID);
    this.writable(s);
    const pub = this.readTemplate(pubT, ck.CKO_PUBLIC_KEY, keyType);
    const priv = this.readTemplate(privT, ck.CKO_PRIVATE_KEY, keyType);
    let bits: number;
    let family = 0;
    if (keyType === ck.CKK_EC) {
      const params = pub.get(ck.CKA_EC_PARAMS) ?? priv.get(ck.CKA_EC_PARAMS);
      if (params === undefined) throw new Pkcs11Error(ck.CKR_TEMPLATE_INCOMPLETE);
      const curve = curveOfParams(params.value);
      if (curve === undefined || curve.family !== 2 || !EC_GEN_BITS.has(curve.bits)) throw new Pkcs11Error(ck.CKR_DOMAIN_PARAMS_INVALID);
      bits = curve.bits;
      family = curve.family;
      for (const t of [ck.CKA_MODULUS_BITS, ck.CKA_PUBLIC_EXPONENT, ck.CKA_MODULUS]) {
        if (pub.has(t) || priv.has(t)) throw new Pkcs11Error(ck.CKR_TEMPLATE_INCONSISTENT);
      }
    } else {
      const mb = pub.get(ck.CKA_MODULUS_BITS);
      if (mb === undefined) throw new Pkcs11Error(ck.CKR_TEMPLATE_INCOMPLETE);
      bits = readUlong(mb);
      if (!RSA_GEN_BITS.has(bits)) throw new Pkcs11Error(ck.CKR_KEY_SIZE_RANGE);
      const e = pub.get(ck.CKA_PUBLIC_EXPONENT);
      if (e !== undefined && !stripZeros(e.value).equals(F4)) throw new Pkcs11Error(ck.CKR_ATTRIBUTE_VALUE_INVALID);
      if (pub.has(ck.CKA_EC_PARAMS) || priv.has(ck.CKA_EC_PARAMS)) throw new Pkcs11Error(ck.CKR_TEMPLATE_INCONSISTENT);
    }
    for (const t of [ck.CKA_EC_POINT, ck.CKA_MODULUS, ck.CKA_VALUE, ck.CKA_PRIVATE_EXPONENT, ck.CKA_PRIME_1, ck.CKA_PRIME_2, ck.CKA_EXPONENT_1, ck.CKA_EXPONENT_2, ck.CKA_COEFFICIENT]) {
      if (pub.has(t) || priv.has(t)) throw new Pkcs11Error(ck.CKR_ATTRIBUTE_READ_ONLY);
    }
    const name = this.keyName([pubT, privT]);
    const attributes = this.keyAttributes(keyType, true, bits, family, pub, priv);
    await this.call(c, s.slot, 'PsaGenerateKey', generateKey.OperationSchema, { keyName: name, attributes }, generateKey.ResultSchema);
    const info = await this.findKey(c, s, name);
    const app = this.auth(c).app;
    return { rv: CKR_OK, publicKey: this.register(app, info, ck.CKO_PUBLIC_KEY).handle, privateKey: this.register(app, info, ck.CKO_PRIVATE_KEY).handle };
  }

  /** A key's KeyInfo as the service now holds it (what it stored may differ from what was asked). */
  private async findKey(c: BackendContext, s: Session, name: string): Promise<KeyInfo> {
    const r = await this.call(c, Provider.Core, 'ListKeys', listKeys.OperationSchema, {}, listKeys.ResultSchema);
    const k = r.keys.find((x) => x.providerId === s.slot && x.name === name);
    if (k === undefined) throw new Pkcs11Error(ck.CKR_DEVICE_ERROR, 'ListKeys');
    return k;
  }

  /**
   * C_CreateObject of an RSA or EC public or private key -> PsaImportKey
   * (RSAPublicKey / RSAPrivateKey DER, the EC point / private scalar). The
   * provider decides whether it accepts the import (its status answers).
   */
  async C_CreateObject(c: BackendContext, a: rpc.C_CreateObject_args): Promise<rpc.px_object_ret> {
    const s = this.session(c, a.session);
    const slot = await this.slot(c, s.slot);
    const clsAttr = a.template.find((t) => t.type === ck.CKA_CLASS);
    const ktAttr = a.template.find((t) => t.type === ck.CKA_KEY_TYPE);
    if (clsAttr === undefined || ktAttr === undefined) throw new Pkcs11Error(ck.CKR_TEMPLATE_INCOMPLETE);
    const cls = readUlong(clsAttr);
    const keyType = readUlong(ktAttr);
    if (cls !== ck.CKO_PUBLIC_KEY && cls !== ck.CKO_PRIVATE_KEY) throw new Pkcs11Error(ck.CKR_ATTRIBUTE_VALUE_INVALID);
    if (keyType !== ck.CKK_RSA && keyType !== ck.CKK_EC) throw new Pkcs11Error(ck.CKR_ATTRIBUTE_VALUE_INVALID);
    if (!slot.opcodes.has(Opcode.PsaImportKey)) throw new Pkcs11Error(ck.CKR_FUNCTION_NOT_SUPPORTED);
    const pair = cls === ck.CKO_PRIVATE_KEY;
    if (pair) this.writable(s);
    else if ((s.flags & ck.CKF_RW_SESSION) === 0) throw new Pkcs11Error(ck.CKR_SESSION_READ_ONLY);
    const t = this.readTemplate(a.template, cls, keyType);
    const need = (type: number): Buffer => {
      const v = t.get(type);
      if (v === undefined) throw new Pkcs11Error(ck.CKR_TEMPLATE_INCOMPLETE);
      return v.value;
    };
    let data: Buffer;
    let bits: number;
    let family = 0;
    if (keyType === ck.CKK_EC) {
      const curve = curveOfParams(need(ck.CKA_EC_PARAMS));
      if (curve === undefined) throw new Pkcs11Error(ck.CKR_DOMAIN_PARAMS_INVALID);
      bits = curve.bits;
      family = curve.family;
      if (pair) {
        data = need(ck.CKA_VALUE);
        if (data.length === 0 || data.length > Math.ceil(bits / 8)) throw new Pkcs11Error(ck.CKR_ATTRIBUTE_VALUE_INVALID);
        data = Buffer.concat([Buffer.alloc(Math.ceil(bits / 8) - data.length), data]);
      } else data = ecPointOf(need(ck.CKA_EC_POINT), bits);
    } else {
      const n = stripZeros(need(ck.CKA_MODULUS));
      bits = n.length * 8 - Math.clz32(n[0] ?? 0) + 24;
      if (n.length === 0 || bits < 1024 || bits > 8192) throw new Pkcs11Error(ck.CKR_ATTRIBUTE_VALUE_INVALID);
      const mb = t.get(ck.CKA_MODULUS_BITS);
      if (mb !== undefined && readUlong(mb) !== bits) throw new Pkcs11Error(ck.CKR_TEMPLATE_INCONSISTENT);
      const e = need(ck.CKA_PUBLIC_EXPONENT);
      data = pair
        ? rsaPrivateKeyDer([n, e, ...[ck.CKA_PRIVATE_EXPONENT, ck.CKA_PRIME_1, ck.CKA_PRIME_2, ck.CKA_EXPONENT_1, ck.CKA_EXPONENT_2, ck.CKA_COEFFICIENT].map(need)])
        : rsaPublicKeyDer(n, e);
    }
    const name = this.keyName([a.template]);
    const empty = new Map<number, rpc.px_attribute>();
    const attributes = pair ? this.keyAttributes(keyType, true, bits, family, empty, t) : this.keyAttributes(keyType, false, bits, family, t, empty);
    try {
      await this.call(c, s.slot, 'PsaImportKey', importKey.OperationSchema, { keyName: name, attributes, data }, importKey.ResultSchema);
    } finally {
      data.fill(0);
    }
    const info = await this.findKey(c, s, name);
    return { rv: CKR_OK, object: this.register(this.auth(c).app, info, pair ? ck.CKO_PRIVATE_KEY : ck.CKO_PUBLIC_KEY).handle };
  }

  C_GenerateKey(_c: BackendContext, _a: rpc.C_GenerateKey_args): rpc.px_object_ret {
    return { rv: ck.CKR_MECHANISM_INVALID, object: 0 };
  }
  px_GenerateKeyTyped(_c: BackendContext, _a: rpc.px_GenerateKeyTyped_args): rpc.px_object_ret {
    return { rv: ck.CKR_MECHANISM_INVALID, object: 0 };
  }
  C_WrapKey(_c: BackendContext, _a: rpc.C_WrapKey_args): rpc.px_bytes_ret {
    return { rv: ck.CKR_MECHANISM_INVALID, data: EMPTY };
  }
  px_WrapKeyTyped(_c: BackendContext, _a: rpc.px_WrapKeyTyped_args): rpc.px_bytes_ret {
    return { rv: ck.CKR_MECHANISM_INVALID, data: EMPTY };
  }
  C_UnwrapKey(_c: BackendContext, _a: rpc.C_UnwrapKey_args): rpc.px_object_ret {
    return { rv: ck.CKR_MECHANISM_INVALID, object: 0 };
  }
  px_UnwrapKeyTyped(_c: BackendContext, _a: rpc.px_UnwrapKeyTyped_args): rpc.px_object_ret {
    return { rv: ck.CKR_MECHANISM_INVALID, object: 0 };
  }
  C_DeriveKey(_c: BackendContext, _a: rpc.C_DeriveKey_args): rpc.px_object_ret {
    return { rv: ck.CKR_MECHANISM_INVALID, object: 0 };
  }
  px_DeriveKeyTyped(_c: BackendContext, _a: rpc.px_DeriveKeyTyped_args): rpc.px_object_ret {
    return { rv: ck.CKR_MECHANISM_INVALID, object: 0 };
  }

  // ---- operations ----

  private begin(s: Session, kind: OpKind, op: Operation): rpc.px_rv {
    if (s.ops.has(kind)) throw new Pkcs11Error(ck.CKR_OPERATION_ACTIVE);
    s.ops.set(kind, op);
    return CKR_OK;
  }

  private active(c: BackendContext, session: number, kind: OpKind): { s: Session; op: Operation } {
    const s = this.session(c, session);
    const op = s.ops.get(kind);
    if (op === undefined) throw new Pkcs11Error(ck.CKR_OPERATION_NOT_INITIALIZED);
    return { s, op };
  }

  /** Runs the last step of an operation: it ends with any result (the protocol returns the whole output, so never CKR_BUFFER_TOO_SMALL). */
  private async finish<T>(s: Session, kind: OpKind, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } finally {
      s.ops.delete(kind);
    }
  }

  private async keyInit(c: BackendContext, kind: 'sign' | 'verify' | 'encrypt' | 'decrypt', session: number, m: Mech, key: number): Promise<rpc.px_rv> {
    const s = this.session(c, session);
    if (s.ops.has(kind)) throw new Pkcs11Error(ck.CKR_OPERATION_ACTIVE);
    const o = this.object(c, s, key);
    const slot = await this.slot(c, s.slot);
    const needPriv = kind === 'sign' || kind === 'decrypt';
    if (needPriv !== (o.cls === ck.CKO_PRIVATE_KEY)) throw new Pkcs11Error(ck.CKR_KEY_TYPE_INCONSISTENT);
    if (needPriv && !this.loggedIn.has(s.slot)) throw new Pkcs11Error(ck.CKR_USER_NOT_LOGGED_IN);
    const t = keyTypeOf(o.info);
    const flags = o.info.attributes?.keyPolicy?.keyUsageFlags;
    const policy = o.info.attributes?.keyPolicy?.keyAlgorithm;
    const opcode = { sign: Opcode.PsaSignHash, verify: Opcode.PsaVerifyHash, encrypt: Opcode.PsaAsymmetricEncrypt, decrypt: Opcode.PsaAsymmetricDecrypt }[kind];
    if (kind === 'sign' || kind === 'verify') {
      const sm = SIGN_MECHANISMS.get(m.type);
      if (sm === undefined || !slot.opcodes.has(opcode)) throw new Pkcs11Error(ck.CKR_MECHANISM_INVALID);
      if ((sm.keyType === ck.CKK_RSA) !== (t.kind === 'rsa')) throw new Pkcs11Error(ck.CKR_KEY_TYPE_INCONSISTENT);
      const pss = sm.family === 'pss' ? pssHash(sm, m.pss) : null;
      if (sm.family !== 'pss' && m.hasParam) throw new Pkcs11Error(ck.CKR_MECHANISM_PARAM_INVALID);
      if (!(kind === 'sign' ? flags?.signHash : flags?.verifyHash)) throw new Pkcs11Error(ck.CKR_KEY_FUNCTION_NOT_PERMITTED);
      if (policy?.variant.case !== 'asymmetricSignature') throw new Pkcs11Error(ck.CKR_KEY_FUNCTION_NOT_PERMITTED);
      if (sm.prehash !== null) signPlan(sm, policy, pss, Buffer.alloc(sm.prehash.length));
      else if (pss !== null) signPlan(sm, policy, pss, Buffer.alloc(pss.length));
      return this.begin(s, kind, { mech: m.type, key: o, sign: sm, pss, oaep: null, salt: EMPTY, running: null, parts: null, hash: sm.prehash });
    }
    if (!ENCRYPT_MECHANISMS.includes(m.type) || !slot.opcodes.has(opcode)) throw new Pkcs11Error(ck.CKR_MECHANISM_INVALID);
    if (t.kind !== 'rsa') throw new Pkcs11Error(ck.CKR_KEY_TYPE_INCONSISTENT);
    let oaep: HashInfo | null = null;
    let salt = EMPTY;
    if (m.type === ck.CKM_RSA_PKCS_OAEP) {
      oaep = oaepHash(m.oaep);
      salt = Buffer.from((m.oaep as OaepParams).sourceData);
    } else if (m.hasParam) throw new Pkcs11Error(ck.CKR_MECHANISM_PARAM_INVALID);
    if (!(kind === 'encrypt' ? flags?.encrypt : flags?.decrypt)) throw new Pkcs11Error(ck.CKR_KEY_FUNCTION_NOT_PERMITTED);
    encryptAlgorithm(m.type, policy, oaep);
    return this.begin(s, kind, { mech: m.type, key: o, sign: null, pss: null, oaep, salt, running: null, parts: null, hash: null });
  }

  C_SignInit(c: BackendContext, a: rpc.px_session_mechanism_key_args): Promise<rpc.px_rv> {
    return this.keyInit(c, 'sign', a.session, rawMech(a.mechanism), a.key);
  }
  px_SignInitTyped(c: BackendContext, a: rpc.px_session_mechanism_typed_key_args): Promise<rpc.px_rv> {
    return this.keyInit(c, 'sign', a.session, typedMech(a.mechanism), a.key);
  }
  C_VerifyInit(c: BackendContext, a: rpc.px_session_mechanism_key_args): Promise<rpc.px_rv> {
    return this.keyInit(c, 'verify', a.session, rawMech(a.mechanism), a.key);
  }
  px_VerifyInitTyped(c: BackendContext, a: rpc.px_session_mechanism_typed_key_args): Promise<rpc.px_rv> {
    return this.keyInit(c, 'verify', a.session, typedMech(a.mechanism), a.key);
  }
  C_EncryptInit(c: BackendContext, a: rpc.px_session_mechanism_key_args): Promise<rpc.px_rv> {
    return this.keyInit(c, 'encrypt', a.session, rawMech(a.mechanism), a.key);
  }
  px_EncryptInitTyped(c: BackendContext, a: rpc.px_session_mechanism_typed_key_args): Promise<rpc.px_rv> {
    return this.keyInit(c, 'encrypt', a.session, typedMech(a.mechanism), a.key);
  }
  C_DecryptInit(c: BackendContext, a: rpc.px_session_mechanism_key_args): Promise<rpc.px_rv> {
    return this.keyInit(c, 'decrypt', a.session, rawMech(a.mechanism), a.key);
  }
  px_DecryptInitTyped(c: BackendContext, a: rpc.px_session_mechanism_typed_key_args): Promise<rpc.px_rv> {
    return this.keyInit(c, 'decrypt', a.session, typedMech(a.mechanism), a.key);
  }

  /** The hash input of a signature operation: the data as given, or the daemon's hash of it. */
  private signInput(op: Operation, data: Buffer | null): Buffer {
    if (op.hash === null) return data as Buffer;
    const h = op.running ?? createHash(op.hash.name);
    if (data !== null) h.update(data);
    return h.digest();
  }

  private async signWith(c: BackendContext, op: Operation, input: Buffer): Promise<Buffer> {
    const o = op.key as KeyObject;
    const plan = signPlan(op.sign as SignMechanism, o.info.attributes?.keyPolicy?.keyAlgorithm, op.pss, input);
    const r = await this.call(c, o.provider, 'PsaSignHash', signHash.OperationSchema, { keyName: o.name, alg: plan.alg, hash: plan.hash }, signHash.ResultSchema);
    return Buffer.from(r.signature);
  }

  private async verifyWith(c: BackendContext, op: Operation, input: Buffer, signature: Buffer): Promise<rpc.px_rv> {
    const o = op.key as KeyObject;
    const plan = signPlan(op.sign as SignMechanism, o.info.attributes?.keyPolicy?.keyAlgorithm, op.pss, input);
    const bits = o.info.attributes?.keyBits ?? 0;
    const size = keyTypeOf(o.info).kind === 'rsa' ? Math.ceil(bits / 8) : 2 * Math.ceil(bits / 8);
    if (signature.length !== size) throw new Pkcs11Error(ck.CKR_SIGNATURE_LEN_RANGE);
    await this.call(c, o.provider, 'PsaVerifyHash', verifyHash.OperationSchema, { keyName: o.name, alg: plan.alg, hash: plan.hash, signature }, verifyHash.ResultSchema);
    return CKR_OK;
  }

  /** C_*Update is for the hashing mechanisms only: the others sign a hash given whole. */
  private update(c: BackendContext, session: number, kind: 'sign' | 'verify' | 'digest', data: Buffer): rpc.px_rv {
    const { s, op } = this.active(c, session, kind);
    if (op.hash === null) {
      s.ops.delete(kind);
      throw new Pkcs11Error(ck.CKR_FUNCTION_NOT_SUPPORTED);
    }
    op.running ??= createHash(op.hash.name);
    op.running.update(data);
    return CKR_OK;
  }

  C_Sign(c: BackendContext, a: rpc.px_session_data_args): Promise<rpc.px_bytes_ret> {
    const { s, op } = this.active(c, a.session, 'sign');
    return this.finish(s, 'sign', async () => {
      if (op.running !== null) throw new Pkcs11Error(ck.CKR_OPERATION_ACTIVE);
      return { rv: CKR_OK, data: await this.signWith(c, op, this.signInput(op, a.data)) };
    });
  }
  C_SignUpdate(c: BackendContext, a: rpc.px_session_data_args): rpc.px_rv {
    return this.update(c, a.session, 'sign', a.data);
  }
  C_SignFinal(c: BackendContext, a: rpc.px_session_args): Promise<rpc.px_bytes_ret> {
    const { s, op } = this.active(c, a.session, 'sign');
    return this.finish(s, 'sign', async () => {
      if (op.hash === null) throw new Pkcs11Error(ck.CKR_FUNCTION_NOT_SUPPORTED);
      return { rv: CKR_OK, data: await this.signWith(c, op, this.signInput(op, null)) };
    });
  }
  C_Verify(c: BackendContext, a: rpc.C_Verify_args): Promise<rpc.px_rv> {
    const { s, op } = this.active(c, a.session, 'verify');
    return this.finish(s, 'verify', async () => {
      if (op.running !== null) throw new Pkcs11Error(ck.CKR_OPERATION_ACTIVE);
      return this.verifyWith(c, op, this.signInput(op, a.data), a.signature);
    });
  }
  C_VerifyUpdate(c: BackendContext, a: rpc.px_session_data_args): rpc.px_rv {
    return this.update(c, a.session, 'verify', a.data);
  }
  C_VerifyFinal(c: BackendContext, a: rpc.C_VerifyFinal_args): Promise<rpc.px_rv> {
    const { s, op } = this.active(c, a.session, 'verify');
    return this.finish(s, 'verify', async () => {
      if (op.hash === null) throw new Pkcs11Error(ck.CKR_FUNCTION_NOT_SUPPORTED);
      return this.verifyWith(c, op, this.signInput(op, null), a.signature);
    });
  }

  private encryption(op: Operation): EncryptionInit {
    const o = op.key as KeyObject;
    return encryptAlgorithm(op.mech, o.info.attributes?.keyPolicy?.keyAlgorithm, op.oaep);
  }

  private async encryptWith(c: BackendContext, op: Operation, data: Buffer): Promise<Buffer> {
    const o = op.key as KeyObject;
    const r = await this.call(c, o.provider, 'PsaAsymmetricEncrypt', asymEncrypt.OperationSchema, { keyName: o.name, alg: this.encryption(op), plaintext: data, salt: op.salt }, asymEncrypt.ResultSchema);
    return Buffer.from(r.ciphertext);
  }
  private async decryptWith(c: BackendContext, op: Operation, data: Buffer): Promise<Buffer> {
    const o = op.key as KeyObject;
    const r = await this.call(c, o.provider, 'PsaAsymmetricDecrypt', asymDecrypt.OperationSchema, { keyName: o.name, alg: this.encryption(op), ciphertext: data, salt: op.salt }, asymDecrypt.ResultSchema);
    return Buffer.from(r.plaintext);
  }

  C_Encrypt(c: BackendContext, a: rpc.px_session_data_args): Promise<rpc.px_bytes_ret> {
    const { s, op } = this.active(c, a.session, 'encrypt');
    return this.finish(s, 'encrypt', async () => {
      if (op.parts !== null) throw new Pkcs11Error(ck.CKR_OPERATION_ACTIVE);
      return { rv: CKR_OK, data: await this.encryptWith(c, op, a.data) };
    });
  }
  C_Decrypt(c: BackendContext, a: rpc.px_session_data_args): Promise<rpc.px_bytes_ret> {
    const { s, op } = this.active(c, a.session, 'decrypt');
    return this.finish(s, 'decrypt', async () => {
      if (op.parts !== null) throw new Pkcs11Error(ck.CKR_OPERATION_ACTIVE);
      return { rv: CKR_OK, data: await this.decryptWith(c, op, a.data) };
    });
  }
  /**
   * RSA encryption is single-part in PKCS#11, but applications (pkcs11-tool)
   * use the multi-part calls: the input is gathered, bounded by the largest
   * RSA block, and processed at C_*Final (the Update calls output nothing).
   */
  private gather(c: BackendContext, session: number, kind: 'encrypt' | 'decrypt', data: Buffer): rpc.px_bytes_ret {
    const { s, op } = this.active(c, session, kind);
    const have = op.parts === null ? 0 : op.parts.reduce((n, b) => n + b.length, 0);
    if (have + data.length > MAX_RSA_BLOCK) {
      s.ops.delete(kind);
      throw new Pkcs11Error(kind === 'encrypt' ? ck.CKR_DATA_LEN_RANGE : ck.CKR_ENCRYPTED_DATA_LEN_RANGE);
    }
    (op.parts ??= []).push(Buffer.from(data));
    return { rv: CKR_OK, data: EMPTY };
  }
  C_EncryptUpdate(c: BackendContext, a: rpc.px_session_data_args): rpc.px_bytes_ret {
    return this.gather(c, a.session, 'encrypt', a.data);
  }
  C_EncryptFinal(c: BackendContext, a: rpc.px_session_args): Promise<rpc.px_bytes_ret> {
    const { s, op } = this.active(c, a.session, 'encrypt');
    return this.finish(s, 'encrypt', async () => ({ rv: CKR_OK, data: await this.encryptWith(c, op, Buffer.concat(op.parts ?? [])) }));
  }
  C_DecryptUpdate(c: BackendContext, a: rpc.px_session_data_args): rpc.px_bytes_ret {
    return this.gather(c, a.session, 'decrypt', a.data);
  }
  C_DecryptFinal(c: BackendContext, a: rpc.px_session_args): Promise<rpc.px_bytes_ret> {
    const { s, op } = this.active(c, a.session, 'decrypt');
    return this.finish(s, 'decrypt', async () => ({ rv: CKR_OK, data: await this.decryptWith(c, op, Buffer.concat(op.parts ?? [])) }));
  }

  private digestInit(c: BackendContext, session: number, m: Mech): rpc.px_rv {
    const s = this.session(c, session);
    const h = hashByCkm(m.type);
    if (h === undefined || !DIGEST_MECHANISMS.includes(m.type)) throw new Pkcs11Error(ck.CKR_MECHANISM_INVALID);
    if (m.hasParam) throw new Pkcs11Error(ck.CKR_MECHANISM_PARAM_INVALID);
    return this.begin(s, 'digest', { mech: m.type, key: null, sign: null, pss: null, oaep: null, salt: EMPTY, running: null, parts: null, hash: h });
  }
  C_DigestInit(c: BackendContext, a: rpc.px_session_mechanism_args): rpc.px_rv {
    return this.digestInit(c, a.session, rawMech(a.mechanism));
  }
  px_DigestInitTyped(c: BackendContext, a: rpc.px_session_mechanism_typed_args): rpc.px_rv {
    return this.digestInit(c, a.session, typedMech(a.mechanism));
  }
  /**
   * Single-part: PsaHashCompute where the provider has it (inputs up to
   * MAX_HASH_REQUEST), else the daemon hashes: the same function either way.
   */
  C_Digest(c: BackendContext, a: rpc.px_session_data_args): Promise<rpc.px_bytes_ret> {
    const { s, op } = this.active(c, a.session, 'digest');
    return this.finish(s, 'digest', async () => {
      if (op.running !== null) throw new Pkcs11Error(ck.CKR_OPERATION_ACTIVE);
      const h = op.hash as HashInfo;
      const slot = await this.slot(c, s.slot);
      if (slot.opcodes.has(Opcode.PsaHashCompute) && a.data.length <= MAX_HASH_REQUEST) {
        const r = await this.call(c, s.slot, 'PsaHashCompute', hashCompute.OperationSchema, { alg: h.psa, input: a.data }, hashCompute.ResultSchema);
        return { rv: CKR_OK, data: Buffer.from(r.hash) };
      }
      return { rv: CKR_OK, data: createHash(h.name).update(a.data).digest() };
    });
  }
  C_DigestUpdate(c: BackendContext, a: rpc.px_session_data_args): rpc.px_rv {
    return this.update(c, a.session, 'digest', a.data);
  }
  C_DigestFinal(c: BackendContext, a: rpc.px_session_args): Promise<rpc.px_bytes_ret> {
    const { s, op } = this.active(c, a.session, 'digest');
    return this.finish(s, 'digest', async () => ({ rv: CKR_OK, data: (op.running ?? createHash((op.hash as HashInfo).name)).digest() }));
  }
  C_DigestKey(c: BackendContext, a: rpc.C_DigestKey_args): rpc.px_rv {
    this.active(c, a.session, 'digest');
    return ck.CKR_KEY_INDIGESTIBLE;
  }

  C_SignRecoverInit(_c: BackendContext, _a: rpc.px_session_mechanism_key_args): rpc.px_rv {
    return ck.CKR_MECHANISM_INVALID;
  }
  px_SignRecoverInitTyped(_c: BackendContext, _a: rpc.px_session_mechanism_typed_key_args): rpc.px_rv {
    return ck.CKR_MECHANISM_INVALID;
  }
  C_SignRecover(_c: BackendContext, _a: rpc.px_session_data_args): rpc.px_bytes_ret {
    return { rv: ck.CKR_OPERATION_NOT_INITIALIZED, data: EMPTY };
  }
  C_VerifyRecoverInit(_c: BackendContext, _a: rpc.px_session_mechanism_key_args): rpc.px_rv {
    return ck.CKR_MECHANISM_INVALID;
  }
  px_VerifyRecoverInitTyped(_c: BackendContext, _a: rpc.px_session_mechanism_typed_key_args): rpc.px_rv {
    return ck.CKR_MECHANISM_INVALID;
  }
  C_VerifyRecover(_c: BackendContext, _a: rpc.px_session_data_args): rpc.px_bytes_ret {
    return { rv: ck.CKR_OPERATION_NOT_INITIALIZED, data: EMPTY };
  }
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

function stripZeros(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length && b[i] === 0) i++;
  return b.subarray(i);
}

