import * as rpc from '../../generated/pkcs11_rpc';
import { callFieldsOf, isPromise, Pkcs11Passthrough } from '../../generated/pkcs11_rpc';
import type {
  CallName,
  MaybePromise,
  Pkcs11Calls,
  px_attribute,
  px_mechanism,
  px_mechanism_typed,
  RoleFields,
} from '../../generated/pkcs11_rpc';
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

function fmtTemplate(t: px_attribute[]): string {
  return `[${t.map(fmtAttr).join(', ')}]`;
}

function fmt(key: string, v: unknown): string {
  if (SECRET_FIELDS.has(key)) return '<redacted>';
  if (Buffer.isBuffer(v)) return `<${v.length} bytes>`;
  if (Array.isArray(v)) return `[${v.length > 16 ? `${v.length} items` : v.join(', ')}]`;
  if (typeof v === 'object' && v !== null) return `{${Object.entries(v).map(([k, x]) => `${k}=${fmt(k, x)}`).join(', ')}}`;
  return String(v);
}

/** The fields of an argument or result struct; templates and mechanisms (by CALL_FIELDS) in their own format. */
function fmtFields(value: object, roles: RoleFields<unknown>, skip?: string): string {
  const out: string[] = [];
  for (const [k, v] of Object.entries(value)) {
    if (k === skip) continue;
    if (roles.template.some((f) => f.name === k)) out.push(`${k}=${fmtTemplate(v as px_attribute[])}`);
    else if (roles.mechanism.some((f) => f.name === k)) out.push(`${k}=${fmtMechanism(v as px_mechanism | px_mechanism_typed)}`);
    else out.push(`${k}=${fmt(k, v)}`);
  }
  return out.join(', ');
}

function fmtArgs(name: CallName, args: unknown): string {
  if (args === undefined || args === null || typeof args !== 'object') return '';
  return fmtFields(args, callFieldsOf(name).args);
}

function fmtResult(name: CallName, r: unknown): string {
  if (typeof r === 'number') return name === 'C_SetupArch' ? `arch ${r}` : rvName(r);
  const rv = (r as { rv: number }).rv;
  const details = fmtFields(r as object, callFieldsOf(name).result, 'rv');
  return details ? `${rvName(rv)} {${details}}` : rvName(rv);
}

/**
 * `-debug-pkcs11`: one line per call with the connection, arguments, CK_RV
 * and duration, as the client sent them (this is the top layer). PINs and
 * attribute values not known to be public are printed as lengths only.
 * A result that comes without waiting is passed up as it is (no promise).
 */
export class TraceLayer extends Pkcs11Passthrough<ConnectionState> {
  constructor(
    next: Pkcs11Calls<ConnectionState>,
    private readonly log: Logger,
  ) {
    super(next);
    installGeneric(this, TraceLayer.prototype, (name, conn, args) => this.traced(name, conn, args));
  }

  private traced(name: CallName, conn: ConnectionState, args: unknown): MaybePromise<unknown> {
    const t0 = performance.now();
    let r: unknown;
    try {
      r = invoke(this.next, name, conn, args);
    } catch (e) {
      this.failed(name, conn, args, e, t0);
      throw e;
    }
    if (!isPromise(r)) return this.answered(name, conn, args, r, t0);
    return r.then(
      (v) => this.answered(name, conn, args, v, t0),
      (e: unknown) => {
        this.failed(name, conn, args, e, t0);
        throw e;
      },
    );
  }

  private answered(name: CallName, conn: ConnectionState, args: unknown, r: unknown, t0: number): unknown {
    this.log('info', `[conn ${conn.id}] ${name}(${fmtArgs(name, args)}) -> ${fmtResult(name, r)} (${ms(t0)} ms)`);
    return r;
  }

  private failed(name: CallName, conn: ConnectionState, args: unknown, e: unknown, t0: number): void {
    this.log('info', `[conn ${conn.id}] ${name}(${fmtArgs(name, args)}) -> ${rvName(rvOf(e))} (${ms(t0)} ms)`);
  }
}

function ms(t0: number): string {
  return (performance.now() - t0).toFixed(3);
}
