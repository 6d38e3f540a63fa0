import * as rpc from '../../generated/pkcs11_rpc';
import { Pkcs11Passthrough } from '../../generated/pkcs11_rpc';
import type { CallName, Pkcs11Calls, px_attribute, px_mechanism, px_mechanism_typed } from '../../generated/pkcs11_rpc';
import { type CkName, constantName, ck, rvName } from '../../pkcs11/constants';
import { rvOf } from '../../pkcs11/errors';
import type { ConnectionState } from '../dispatch/connection-state';
import type { Logger } from '../log';
import { installGeneric, invoke } from './generic';

/** Argument fields that are secrets whatever their size. */
const SECRET_FIELDS: ReadonlySet<string> = new Set(['pin', 'oldPin', 'newPin', 'seed', 'operationState']);

/**
 * Attribute types whose values may be shown. Everything else is printed as a
 * length only: key material (CKA_VALUE, CKA_PRIVATE_EXPONENT, ...) must never
 * reach a log, so the list is of what is known to be harmless.
 */
const SHOWN_ATTRIBUTES: ReadonlySet<number> = new Set(
  (
    [
    'CKA_CLASS', 'CKA_TOKEN', 'CKA_PRIVATE', 'CKA_LABEL', 'CKA_ID', 'CKA_KEY_TYPE', 'CKA_MODIFIABLE',
    'CKA_SENSITIVE', 'CKA_EXTRACTABLE', 'CKA_ENCRYPT', 'CKA_DECRYPT', 'CKA_SIGN', 'CKA_VERIFY', 'CKA_WRAP',
    'CKA_UNWRAP', 'CKA_DERIVE', 'CKA_MODULUS_BITS', 'CKA_VALUE_LEN', 'CKA_LOCAL', 'CKA_NEVER_EXTRACTABLE',
    'CKA_ALWAYS_SENSITIVE', 'CKA_CERTIFICATE_TYPE', 'CKA_KEY_GEN_MECHANISM',
    ] as const satisfies readonly CkName[]
  ).map((n) => ck[n]),
);

function fmtAttr(a: px_attribute): string {
  const name = constantName('CKA_', a.type);
  if (a.value.length === 0) return `${name}(len=${a.valueLen})`;
  if (!SHOWN_ATTRIBUTES.has(a.type)) return `${name}=<${a.value.length} bytes>`;
  return `${name}=${a.value.toString('hex')}`;
}

/** px_mech_param_kind number → name without the PX_MP_ prefix. */
const PARAM_KINDS: ReadonlyMap<number, string> = new Map(
  Object.entries(rpc as Record<string, unknown>).flatMap(([k, n]) =>
    k.startsWith('PX_MP_') && typeof n === 'number' ? [[n, k.slice('PX_MP_'.length)] as const] : [],
  ),
);

/**
 * A mechanism with its parameter: byte fields (IVs, AAD, public data,
 * labels, derivation data...) as lengths only, numbers as they are.
 */
function fmtMechanism(m: px_mechanism | px_mechanism_typed): string {
  const name = constantName('CKM_', m.mechanism);
  if ('parameter' in m) return `${name}(param <${m.parameter.length} bytes>)`;
  const p = m.param;
  const kind = PARAM_KINDS.get(p.tag) ?? String(p.tag);
  const v: unknown = p.value;
  if (v === undefined) return `${name}(${kind})`;
  if (Buffer.isBuffer(v)) return `${name}(${kind} <${v.length} bytes>)`;
  if (typeof v !== 'object' || v === null) return `${name}(${kind} ${String(v)})`;
  const fields = Object.entries(v).map(([k, x]) => `${k}=${Buffer.isBuffer(x) ? `<${x.length} bytes>` : String(x)}`);
  return `${name}(${kind} ${fields.join(', ')})`;
}

function fmt(key: string, v: unknown): string {
  if (SECRET_FIELDS.has(key)) return '<redacted>';
  if (Buffer.isBuffer(v)) return `<${v.length} bytes>`;
  if (Array.isArray(v)) {
    if (v.length > 0 && typeof v[0] === 'object' && v[0] !== null && 'type' in v[0]) return `[${(v as px_attribute[]).map(fmtAttr).join(', ')}]`;
    return `[${v.length > 16 ? `${v.length} items` : v.join(', ')}]`;
  }
  if (key === 'mechanism' && typeof v === 'object' && v !== null) return fmtMechanism(v as px_mechanism | px_mechanism_typed);
  if (typeof v === 'object' && v !== null) return `{${Object.entries(v).map(([k, x]) => `${k}=${fmt(k, x)}`).join(', ')}}`;
  return String(v);
}

function fmtArgs(args: unknown): string {
  if (args === undefined || args === null || typeof args !== 'object') return '';
  return Object.entries(args as Record<string, unknown>)
    .map(([k, v]) => `${k}=${fmt(k, v)}`)
    .join(', ');
}

function fmtResult(name: CallName, r: unknown): string {
  if (typeof r === 'number') return name === 'C_SetupArch' ? `arch ${r}` : rvName(r);
  const { rv, ...rest } = r as { rv: number } & Record<string, unknown>;
  const details = Object.entries(rest)
    .map(([k, v]) => `${k}=${fmt(k, v)}`)
    .join(', ');
  return details ? `${rvName(rv)} {${details}}` : rvName(rv);
}

/**
 * `-debug-pkcs11`: one line per call with the connection, arguments, CK_RV
 * and duration, as the client sent them (this is the top layer). PINs and
 * attribute values not known to be public are printed as lengths only.
 */
export class TraceLayer extends Pkcs11Passthrough<ConnectionState> {
  constructor(
    next: Pkcs11Calls<ConnectionState>,
    private readonly log: Logger,
  ) {
    super(next);
    installGeneric(this, TraceLayer.prototype, (name, conn, args) => this.traced(name, conn, args));
  }

  private async traced(name: CallName, conn: ConnectionState, args: unknown): Promise<unknown> {
    const t0 = process.hrtime.bigint();
    const ms = () => (Number(process.hrtime.bigint() - t0) / 1e6).toFixed(3);
    try {
      const r = await invoke(this.next, name, conn, args);
      this.log('info', `[conn ${conn.id}] ${name}(${fmtArgs(args)}) -> ${fmtResult(name, r)} (${ms()} ms)`);
      return r;
    } catch (e) {
      this.log('info', `[conn ${conn.id}] ${name}(${fmtArgs(args)}) -> ${rvName(rvOf(e))} (${ms()} ms)`);
      throw e;
    }
  }
}
