import { ATTR_SHAPE, attributeShape } from '../../generated/attribute-shapes';
import { callFieldsOf, Pkcs11Passthrough, PX_MP_RAW } from '../../generated/pkcs11_rpc';
import type {
  C_GetAttributeValue_args,
  C_GetAttributeValue_ret,
  C_SetupArch_args,
  MaybePromise,
  Pkcs11Calls,
  px_attribute,
  px_mechanism,
  px_mechanism_typed,
  px_rv,
} from '../../generated/pkcs11_rpc';
import {
  ARCH_UNSUPPORTED,
  archLayout,
  AttributeShapeError,
  checkAttributeValue,
  convertAttributeCapacity,
  convertAttributeLength,
  convertAttributeValue,
  NATIVE_ARCH,
} from '../../pkcs11/arch';
import type { ArchLayout } from '../../pkcs11/arch';
import { convertMechanismParameter } from '../../pkcs11/mechanism-shapes';
import {
  CK_UNAVAILABLE_INFORMATION_WIRE,
  CKR_ATTRIBUTE_SENSITIVE,
  CKR_ATTRIBUTE_TYPE_INVALID,
  CKR_BUFFER_TOO_SMALL,
  CKR_OK,
  ck,
} from '../../pkcs11/constants';
import { Pkcs11Error } from '../../pkcs11/errors';
import type { ConnectionState } from '../dispatch/connection-state';
import { installGeneric, invoke, then } from './generic';

const EMPTY = Buffer.alloc(0);

function isNested(a: px_attribute): boolean {
  return attributeShape(a.type) === ATTR_SHAPE.TEMPLATE;
}

/**
 * A template a client sends (object creation, search, set), checked against
 * the attribute shapes and re-encoded into the daemon's layout. A client in
 * the daemon's layout only has its nested templates checked (their bytes
 * would be its pointers, which the module would dereference); for others,
 * a CK_ULONG value of the wrong size cannot be converted either. Returns
 * `t` itself when nothing changes.
 */
function templateIn(t: px_attribute[], from: ArchLayout): px_attribute[] {
  if (from === NATIVE_ARCH) {
    for (const a of t) if (a.value.length !== 0) checkNested(a, from);
    return t;
  }
  return t.map((a) => {
    if (a.value.length !== 0) checkAttributeValue(a.type, a.value, from);
    return {
      type: a.type,
      value: convertAttributeValue(a.type, a.value, from, NATIVE_ARCH),
      valueLen: convertAttributeLength(a.type, a.valueLen, from, NATIVE_ARCH),
    };
  });
}

function checkNested(a: px_attribute, from: ArchLayout): void {
  if (isNested(a)) checkAttributeValue(a.type, a.value, from);
}

function refused(e: unknown): Promise<never> {
  if (e instanceof AttributeShapeError) return Promise.reject(new Pkcs11Error(ck.CKR_ATTRIBUTE_VALUE_INVALID));
  return Promise.reject(e);
}

/** Per-attribute outcomes of C_GetAttributeValue (2.40 section 5.7) that leave the other attributes answered. */
function isPerAttributeRv(rv: number): boolean {
  return rv === CKR_OK || rv === CKR_ATTRIBUTE_SENSITIVE || rv === CKR_ATTRIBUTE_TYPE_INVALID || rv === CKR_BUFFER_TOO_SMALL;
}

/**
 * A version 3 mechanism's parameter bytes are in the client's layout; a
 * typed parameter (procedures 73..84) carries numbers, except its RAW kind,
 * which is the version 3 bytes.
 */
function convertMechanism(m: px_mechanism | px_mechanism_typed, from: ArchLayout): px_mechanism | px_mechanism_typed {
  const convert = (b: Buffer): Buffer => convertMechanismParameter(m.mechanism, b, from, NATIVE_ARCH);
  if ('parameter' in m) return { mechanism: m.mechanism, parameter: convert(m.parameter) };
  if (m.param.tag !== PX_MP_RAW) return m;
  return { mechanism: m.mechanism, param: { tag: PX_MP_RAW, value: convert(m.param.value) } };
}

/**
 * Attribute values by their shape (rpc/attributes.table) and mechanism
 * parameters between the client's CK_ULONG layout (declared by
 * C_SetupArch) and the daemon's. A client with the daemon's layout costs a
 * shape lookup per sent attribute here.
 */
export class ArchLayer extends Pkcs11Passthrough<ConnectionState> {
  constructor(next: Pkcs11Calls<ConnectionState>) {
    super(next);
    installGeneric(this, ArchLayer.prototype, (name, conn, args) => {
      const f = callFieldsOf(name).args;
      if (f.template.length === 0 && (conn.arch === NATIVE_ARCH || f.mechanism.length === 0)) {
        return invoke(this.next, name, conn, args);
      }
      let a: unknown;
      try {
        for (const t of f.template) {
          const given = t.get(a ?? args);
          const converted = templateIn(given, conn.arch);
          if (converted === given) continue;
          a ??= callFieldsOf(name).copyArgs(args);
          t.set(a, converted);
        }
      } catch (e) {
        return refused(e);
      }
      if (conn.arch !== NATIVE_ARCH) {
        for (const m of f.mechanism) {
          a ??= callFieldsOf(name).copyArgs(args);
          m.set(a, convertMechanism(m.get(a), conn.arch));
        }
      }
      return invoke(this.next, name, conn, a ?? args);
    });
  }

  /** Answers with the daemon's own code; the caller's layout applies to this connection from now on. */
  C_SetupArch(conn: ConnectionState, a: C_SetupArch_args): px_rv {
    const layout = archLayout(a.arch);
    if (!layout) return ARCH_UNSUPPORTED;
    conn.arch = layout.code === NATIVE_ARCH.code ? NATIVE_ARCH : layout;
    return NATIVE_ARCH.code;
  }

  /**
   * Output buffer sizes are converted as capacities, values and lengths of
   * the reply back into the client's layout. A nested template is never
   * asked of the module: pkcs11js hands the module an uninitialised buffer
   * as the CK_ATTRIBUTE array, whose pValue members the module would write
   * through, and its answer would hold the daemon's addresses. It is
   * answered unavailable, as a value that cannot be revealed.
   */
  C_GetAttributeValue(conn: ConnectionState, a: C_GetAttributeValue_args): MaybePromise<C_GetAttributeValue_ret> {
    const native = conn.arch === NATIVE_ARCH;
    const nested = a.template.some(isNested);
    if (native && !nested) return this.next.C_GetAttributeValue(conn, a);
    const asked = nested ? a.template.filter((t) => !isNested(t)) : a.template;
    const request = native
      ? asked
      : asked.map((t) => ({ type: t.type, value: t.value, valueLen: convertAttributeCapacity(t.type, t.valueLen, conn.arch, NATIVE_ARCH) }));
    const answered: MaybePromise<C_GetAttributeValue_ret> =
      request.length > 0
        ? this.next.C_GetAttributeValue(conn, { session: a.session, object: a.object, template: request })
        : { rv: CKR_OK, template: [] };
    return then(answered, (r) => {
      if (r.template.length !== request.length || !isPerAttributeRv(r.rv)) return r;
      const answers = native
        ? r.template
        : r.template.map((t) => {
            const value = convertAttributeValue(t.type, t.value, NATIVE_ARCH, conn.arch);
            const valueLen = t.value.length > 0 ? value.length : convertAttributeLength(t.type, t.valueLen, NATIVE_ARCH, conn.arch);
            return { type: t.type, value, valueLen };
          });
      if (!nested) return { rv: r.rv, template: answers };
      let i = 0;
      const template = a.template.map((t) =>
        isNested(t) ? { type: t.type, value: EMPTY, valueLen: CK_UNAVAILABLE_INFORMATION_WIRE } : answers[i++],
      );
      return { rv: r.rv === CKR_OK ? CKR_ATTRIBUTE_SENSITIVE : r.rv, template };
    });
  }
}
