import { Pkcs11Passthrough } from '../../generated/pkcs11_rpc';
import type { C_GetAttributeValue_args, C_GetAttributeValue_ret, C_SetupArch_args, Pkcs11Calls, px_attribute, px_mechanism, px_rv } from '../../generated/pkcs11_rpc';
import {
  ARCH_UNSUPPORTED,
  archLayout,
  convertAttributeLength,
  convertAttributeValue,
  convertMechanismParameter,
  NATIVE_ARCH,
} from '../../pkcs11/arch';
import type { ArchLayout } from '../../pkcs11/arch';
import type { ConnectionState } from '../connection-state';
import { installGeneric, invoke } from './generic';
import { TEMPLATE_ARG_FIELDS } from './object-fields';

function convertTemplate(t: px_attribute[], from: ArchLayout, to: ArchLayout): px_attribute[] {
  return t.map((a) => ({
    type: a.type,
    value: convertAttributeValue(a.type, a.value, from, to),
    valueLen: convertAttributeLength(a.type, a.valueLen, from, to),
  }));
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
      if (conn.arch === NATIVE_ARCH || args === null || typeof args !== 'object') return invoke(this.next, name, conn, args);
      const a: Record<string, unknown> = { ...(args as Record<string, unknown>) };
      for (const f of TEMPLATE_ARG_FIELDS) {
        if (Array.isArray(a[f])) a[f] = convertTemplate(a[f] as px_attribute[], conn.arch, NATIVE_ARCH);
      }
      const m = a.mechanism as px_mechanism | undefined;
      if (m) a.mechanism = { mechanism: m.mechanism, parameter: convertMechanismParameter(m.mechanism, m.parameter, conn.arch, NATIVE_ARCH) };
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
