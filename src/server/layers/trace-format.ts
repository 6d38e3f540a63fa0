/**
 * What `-debug-pkcs11` shows of a call, built once as a JSON-able tree and
 * rendered as a text line or one JSON object per line.
 *
 * Numbers appear by their spec names (CKM_, CKA_, CKR_, CKO_, CKK_, CKC_,
 * CKU_, CKS_, CKF_ sets by struct); public strings (slot, token and library
 * descriptions, manufacturer, model, serial, CKA_LABEL) as text. Redaction:
 * PINs, seeds and operation state are `<redacted>`; every other byte field
 * (data to sign or encrypt, signatures, IVs, wrapped keys...) and every
 * attribute value not on SHOWN_ATTRIBUTES (CKA_VALUE, private key parts...)
 * is only its length, `<N bytes>`.
 */
import * as rpc from '../../generated/pkcs11_rpc';
import { callFieldsOf } from '../../generated/pkcs11_rpc';
import type { CallName, px_attribute, px_mechanism, px_mechanism_typed } from '../../generated/pkcs11_rpc';
import { ATTR_SHAPE, attributeShape } from '../../generated/attribute-shapes';
import { type ArchLayout, readULong } from '../../pkcs11/arch';
import { ck, type CkName } from '../../pkcs11/constants';
import { type FlagFamily, flagsOf, nameOf, type NamePrefix } from '../../pkcs11/names';

/** Argument fields that are secrets whatever their size. */
const SECRET_FIELDS: ReadonlySet<string> = new Set(['pin', 'oldPin', 'newPin', 'seed', 'operationState']);

/** Byte fields that hold public text (blank-padded in CK_*_INFO: trailing blanks are dropped). */
const TEXT_FIELDS: ReadonlySet<string> = new Set([
  'label', 'manufacturerID', 'model', 'serialNumber', 'slotDescription', 'libraryDescription', 'utcTime', 'alias',
]);

const ids = (names: readonly CkName[]): ReadonlySet<number> => new Set(names.map((n) => ck[n]));

/**
 * Attribute types whose values may be shown. Everything else is printed as a
 * length only: key material (CKA_VALUE, CKA_PRIVATE_EXPONENT, ...) must never
 * reach a log, so the list is of what is known to be harmless.
 */
const SHOWN_ATTRIBUTES = ids([
  'CKA_CLASS', 'CKA_TOKEN', 'CKA_PRIVATE', 'CKA_LABEL', 'CKA_APPLICATION', 'CKA_ID', 'CKA_KEY_TYPE', 'CKA_MODIFIABLE',
  'CKA_COPYABLE', 'CKA_DESTROYABLE', 'CKA_SENSITIVE', 'CKA_EXTRACTABLE', 'CKA_ENCRYPT', 'CKA_DECRYPT', 'CKA_SIGN',
  'CKA_SIGN_RECOVER', 'CKA_VERIFY', 'CKA_VERIFY_RECOVER', 'CKA_WRAP', 'CKA_UNWRAP', 'CKA_DERIVE', 'CKA_TRUSTED',
  'CKA_WRAP_WITH_TRUSTED', 'CKA_MODULUS_BITS', 'CKA_VALUE_LEN', 'CKA_LOCAL', 'CKA_NEVER_EXTRACTABLE',
  'CKA_ALWAYS_SENSITIVE', 'CKA_ALWAYS_AUTHENTICATE', 'CKA_CERTIFICATE_TYPE', 'CKA_CERTIFICATE_CATEGORY',
  'CKA_KEY_GEN_MECHANISM', 'CKA_ALLOWED_MECHANISMS', 'CKA_START_DATE', 'CKA_END_DATE',
]);
const TEXT_ATTRIBUTES = ids(['CKA_LABEL', 'CKA_APPLICATION']);
/** CK_ULONG attributes whose value is a constant of a family. */
const ATTRIBUTE_VALUE_NAMES: ReadonlyMap<number, NamePrefix> = new Map<number, NamePrefix>([
  [ck.CKA_CLASS, 'CKO_'],
  [ck.CKA_KEY_TYPE, 'CKK_'],
  [ck.CKA_CERTIFICATE_TYPE, 'CKC_'],
  [ck.CKA_KEY_GEN_MECHANISM, 'CKM_'],
]);

/** The flags family of the `flags` fields of each call. */
const FLAGS_OF_CALL: Partial<Record<CallName, FlagFamily>> = {
  C_OpenSession: 'session',
  C_GetSessionInfo: 'session',
  C_GetSlotInfo: 'slot',
  C_GetTokenInfo: 'token',
  C_GetMechanismInfo: 'mechanism',
  C_WaitForSlotEvent: 'waitForSlotEvent',
};

/** Public text: quoted in the text form, a plain string in JSON. */
export class TraceText {
  constructor(readonly text: string) {}
  toJSON(): string {
    return this.text;
  }
}

/** One attribute: its value shown, `<N bytes>`, or only a length asked (`len`). */
export class TraceAttribute {
  constructor(
    readonly type: string,
    readonly value: TraceValue | undefined,
    readonly len?: number,
  ) {}
  toJSON(): object {
    return this.value === undefined ? { type: this.type, len: this.len } : { type: this.type, value: this.value };
  }
}

export type TraceValue =
  | string
  | number
  | boolean
  | null
  | TraceText
  | TraceAttribute
  | TraceValue[]
  | { [k: string]: TraceValue };

/** One traced call. `result` holds the result's fields other than rv. */
export interface TraceRecord {
  conn: number;
  call: CallName;
  args: { [k: string]: TraceValue };
  rv: string;
  result?: { [k: string]: TraceValue };
  ms: number;
}

const opaque = (n: number): string => `<${n} bytes>`;

function text(b: Buffer): TraceText {
  return new TraceText(b.toString('utf8').replace(/[ \0]+$/, ''));
}

function attributeValue(type: number, v: Buffer, arch: ArchLayout): TraceValue {
  if (!SHOWN_ATTRIBUTES.has(type)) return opaque(v.length);
  if (TEXT_ATTRIBUTES.has(type)) return text(v);
  switch (attributeShape(type)) {
    case ATTR_SHAPE.ULONG: {
      if (v.length !== arch.ulongSize) return opaque(v.length);
      const n = readULong(v, 0, arch);
      const family = ATTRIBUTE_VALUE_NAMES.get(type);
      return family === undefined ? n : nameOf(family, n);
    }
    case ATTR_SHAPE.BOOL:
      return v.length === 1 ? v[0] !== 0 : opaque(v.length);
    case ATTR_SHAPE.DATE:
      return new TraceText(v.toString('latin1'));
    case ATTR_SHAPE.ULONGS: {
      if (v.length % arch.ulongSize !== 0) return opaque(v.length);
      const out: string[] = [];
      for (let off = 0; off < v.length; off += arch.ulongSize) out.push(nameOf('CKM_', readULong(v, off, arch)));
      return out;
    }
    case ATTR_SHAPE.BYTES:
      return v.toString('hex');
    default:
      return opaque(v.length);
  }
}

function attribute(a: px_attribute, arch: ArchLayout): TraceAttribute {
  const name = nameOf('CKA_', a.type);
  if (a.value.length === 0) return new TraceAttribute(name, undefined, a.valueLen);
  return new TraceAttribute(name, attributeValue(a.type, a.value, arch));
}

function isAttributeList(v: unknown[]): v is px_attribute[] {
  const x = v[0] as Partial<px_attribute> | undefined;
  return x !== undefined && typeof x === 'object' && typeof x.type === 'number' && Buffer.isBuffer(x.value) && 'valueLen' in x;
}

/** px_mech_param_kind number -> name without the PX_MP_ prefix. */
const PARAM_KINDS: ReadonlyMap<number, string> = new Map(
  Object.entries(rpc as Record<string, unknown>).flatMap(([k, n]) =>
    k.startsWith('PX_MP_') && typeof n === 'number' ? [[n, k.slice('PX_MP_'.length)] as const] : [],
  ),
);

/**
 * A mechanism and its parameter: byte fields (IVs, AAD, public data,
 * labels, derivation data...) as lengths only, numbers as they are,
 * hash and MGF fields by name.
 */
function mechanism(m: px_mechanism | px_mechanism_typed): TraceValue {
  const name = nameOf('CKM_', m.mechanism);
  if ('parameter' in m) return m.parameter.length === 0 ? { mechanism: name } : { mechanism: name, parameter: opaque(m.parameter.length) };
  const p = m.param;
  const kind = PARAM_KINDS.get(p.tag) ?? String(p.tag);
  const v: unknown = p.value;
  if (v === undefined) return { mechanism: name, parameter: kind };
  if (Buffer.isBuffer(v)) return { mechanism: name, parameter: kind, value: opaque(v.length) };
  if (typeof v !== 'object' || v === null) return { mechanism: name, parameter: kind, value: String(v) };
  const fields: { [k: string]: TraceValue } = {};
  for (const [k, x] of Object.entries(v)) {
    if (Buffer.isBuffer(x)) fields[k] = opaque(x.length);
    else if (typeof x === 'number' && /^(hashAlg|hash|mechanism|kdfMechanism)$/.test(k)) fields[k] = nameOf('CKM_', x);
    else fields[k] = typeof x === 'number' || typeof x === 'boolean' ? x : String(x);
  }
  return { mechanism: name, parameter: kind, value: fields };
}

function value(call: CallName, key: string, v: unknown, arch: ArchLayout, mechanismKeys: ReadonlySet<string>): TraceValue {
  if (SECRET_FIELDS.has(key)) return '<redacted>';
  if (Buffer.isBuffer(v)) return TEXT_FIELDS.has(key) ? text(v) : opaque(v.length);
  if (typeof v === 'number') {
    switch (key) {
      case 'rv':
        return nameOf('CKR_', v);
      case 'userType':
        return nameOf('CKU_', v);
      case 'state':
        return nameOf('CKS_', v);
      case 'flags': {
        const family = FLAGS_OF_CALL[call];
        return family === undefined ? v : flagsOf(family, v);
      }
      case 'type':
        return call === 'C_GetMechanismInfo' ? nameOf('CKM_', v) : v;
      default:
        return v;
    }
  }
  if (Array.isArray(v)) {
    if (isAttributeList(v)) return v.map((a) => attribute(a, arch));
    if (key === 'mechanismList') return v.map((m) => (typeof m === 'number' ? nameOf('CKM_', m) : mechanism(m as px_mechanism)));
    if (v.length > 16 && v.every((x) => typeof x === 'number')) return `${v.length} items`;
    return v.map((x) => value(call, '', x, arch, mechanismKeys));
  }
  if (typeof v === 'object' && v !== null) {
    if (mechanismKeys.has(key)) return mechanism(v as px_mechanism);
    const o = v as Record<string, unknown>;
    const keys = Object.keys(o);
    // CK_VERSION: two bytes (opaque[1] each on the wire).
    if (keys.length === 2 && Buffer.isBuffer(o.major) && Buffer.isBuffer(o.minor) && o.major.length === 1 && o.minor.length === 1) {
      return `${o.major[0]}.${o.minor[0]}`;
    }
    return fields(call, o, arch, mechanismKeys);
  }
  if (typeof v === 'boolean' || typeof v === 'string') return v;
  return v === undefined || v === null ? null : String(v);
}

function fields(call: CallName, o: object, arch: ArchLayout, mechanismKeys: ReadonlySet<string>, skip?: string): { [k: string]: TraceValue } {
  const out: { [k: string]: TraceValue } = {};
  for (const [k, v] of Object.entries(o)) if (k !== skip) out[k] = value(call, k, v, arch, mechanismKeys);
  return out;
}

const mechanismKeysCache = new Map<CallName, { args: ReadonlySet<string>; result: ReadonlySet<string> }>();
function mechanismKeysOf(call: CallName): { args: ReadonlySet<string>; result: ReadonlySet<string> } {
  let m = mechanismKeysCache.get(call);
  if (m === undefined) {
    const f = callFieldsOf(call);
    m = { args: new Set(f.args.mechanism.map((x) => x.name)), result: new Set(f.result.mechanism.map((x) => x.name)) };
    mechanismKeysCache.set(call, m);
  }
  return m;
}

export function traceArgs(call: CallName, args: unknown, arch: ArchLayout): { [k: string]: TraceValue } {
  if (args === undefined || args === null || typeof args !== 'object') return {};
  const out = fields(call, args, arch, mechanismKeysOf(call).args);
  // C_GetAttributeValue's argument values are output buffers: only their sizes mean something.
  if (call === 'C_GetAttributeValue') {
    const t = (args as { template?: px_attribute[] }).template ?? [];
    out.template = t.map((a) => new TraceAttribute(nameOf('CKA_', a.type), undefined, a.valueLen));
  }
  return out;
}

/** rv and the other result fields; a thrown error is its CK_RV. */
export function traceResult(call: CallName, r: unknown, arch: ArchLayout): { rv: string; result?: { [k: string]: TraceValue } } {
  if (typeof r === 'number') return call === 'C_SetupArch' ? { rv: 'CKR_OK', result: { arch: r } } : { rv: nameOf('CKR_', r) };
  const rv = nameOf('CKR_', (r as { rv: number }).rv);
  const result = fields(call, r as object, arch, mechanismKeysOf(call).result, 'rv');
  return Object.keys(result).length > 0 ? { rv, result } : { rv };
}

function render(v: TraceValue): string {
  if (v instanceof TraceText) return JSON.stringify(v.text);
  if (v instanceof TraceAttribute) return v.value === undefined ? `${v.type}(len=${v.len})` : `${v.type}=${render(v.value)}`;
  if (Array.isArray(v)) return `[${v.map(render).join(', ')}]`;
  if (typeof v === 'object' && v !== null) {
    const o = v as { [k: string]: TraceValue };
    if (typeof o.mechanism === 'string' && Object.keys(o).every((k) => k === 'mechanism' || k === 'parameter' || k === 'value')) {
      if (o.parameter === undefined) return o.mechanism;
      return `${o.mechanism}(${[o.parameter, o.value].filter((x) => x !== undefined).map(render).join(' ')})`;
    }
    return `{${renderFields(o)}}`;
  }
  return String(v);
}

function renderFields(o: { [k: string]: TraceValue }): string {
  return Object.entries(o)
    .map(([k, v]) => `${k}=${render(v)}`)
    .join(', ');
}

/** `[conn 1] C_OpenSession(slotID=0, flags=CKF_RW_SESSION|CKF_SERIAL_SESSION) -> CKR_OK {session=1} (0.042 ms)` */
export function traceText(r: TraceRecord): string {
  const result = r.result === undefined ? '' : ` {${renderFields(r.result)}}`;
  return `[conn ${r.conn}] ${r.call}(${renderFields(r.args)}) -> ${r.rv}${result} (${r.ms.toFixed(3)} ms)`;
}

/** One JSON object, no newline inside (JSON.stringify escapes control characters in strings). */
export function traceJson(r: TraceRecord, extra: { [k: string]: string | number }): string {
  return JSON.stringify({ ...extra, conn: r.conn, call: r.call, args: r.args, rv: r.rv, ...(r.result ? { result: r.result } : {}), ms: Number(r.ms.toFixed(3)) });
}
