import { callFieldsOf, Pkcs11Passthrough, PX_MP_RAW } from '../../generated/pkcs11_rpc';
import type {
  C_GetAttributeValue_args,
  C_GetAttributeValue_ret,
  C_SetupArch_args,
  Pkcs11Calls,
  px_attribute,
  px_mechanism,
  px_mechanism_typed,
  px_rv,
} from '../../generated/pkcs11_rpc';
import {
  ARCH_UNSUPPORTED,
  archLayout,
  convertAttributeLength,
  convertAttributeValue,
  NATIVE_ARCH,
} from '../../pkcs11/arch';
import type { ArchLayout } from '../../pkcs11/arch';
import { convertMechanismParameter } from '../../pkcs11/mechanism-shapes';
import type { ConnectionState } from '../dispatch/connection-state';
import { installGeneric, invoke } from './generic';

function convertTemplate(t: px_attribute[], from: ArchLayout, to: ArchLayout): px_attribute[] {
  return t.map((a) => ({
    type: a.type,
    value: convertAttributeValue(a.type, a.value, from, to),
    valueLen: convertAttributeLength(a.type, a.valueLen, from, to),
  }));
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
 * Converts CK_ULONG-valued attribute values and mechanism parameters between
 * the client's layout (declared by C_SetupArch) and the daemon's. A client
 * with the daemon's layout costs nothing here.
 */
export class ArchLayer extends Pkcs11Passthrough<ConnectionState> {
  constructor(next: Pkcs11Calls<ConnectionState>) {
    super(next);
    installGeneric(this, ArchLayer.prototype, (name, conn, args) => {
      const f = callFieldsOf(name).args;
      if (conn.arch === NATIVE_ARCH || (f.template.length === 0 && f.mechanism.length === 0)) {
        return invoke(this.next, name, conn, args);
      }
      const a = callFieldsOf(name).copyArgs(args);
      for (const t of f.template) t.set(a, convertTemplate(t.get(a), conn.arch, NATIVE_ARCH));
      for (const m of f.mechanism) m.set(a, convertMechanism(m.get(a), conn.arch));
      return invoke(this.next, name, conn, a);
    });
  }

  /** Answers with the daemon's own code; the caller's layout applies to this connection from now on. */
  async C_SetupArch(conn: ConnectionState, a: C_SetupArch_args): Promise<px_rv> {
    const layout = archLayout(a.arch);
    if (!layout) return ARCH_UNSUPPORTED;
    conn.arch = layout.code === NATIVE_ARCH.code ? NATIVE_ARCH : layout;
    return NATIVE_ARCH.code;
  }

  async C_GetAttributeValue(conn: ConnectionState, a: C_GetAttributeValue_args): Promise<C_GetAttributeValue_ret> {
    if (conn.arch === NATIVE_ARCH) return this.next.C_GetAttributeValue(conn, a);
    const r = await this.next.C_GetAttributeValue(conn, {
      session: a.session,
      object: a.object,
      template: convertTemplate(a.template, conn.arch, NATIVE_ARCH),
    });
    return { rv: r.rv, template: convertTemplate(r.template, NATIVE_ARCH, conn.arch) };
  }
}
