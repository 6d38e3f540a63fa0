import type { ArchLayout } from '../pkcs11/arch';
import { NATIVE_ARCH } from '../pkcs11/arch';

/**
 * Everything the daemon knows about one client connection. Each layer of the
 * call stack keeps its own per-connection data in `layerState`, keyed by a
 * symbol private to that layer, so layers stay independent.
 */
export class ConnectionState {
  /** Client's CK_ULONG layout, declared by C_SetupArch; native until then. */
  arch: ArchLayout = NATIVE_ARCH;
  /** Backend alias chosen by C_LoadModule; null means the default module. */
  moduleAlias: string | null = null;
  /** Set by C_Initialize, cleared by C_Finalize and on disconnect. */
  initialized = false;
  readonly layerState = new Map<symbol, unknown>();

  constructor(
    readonly id: number,
    /** 'unix' or the TCP peer address, for logs. */
    readonly peer: string,
  ) {}

  stateFor<T>(key: symbol, create: () => T): T {
    let s = this.layerState.get(key) as T | undefined;
    if (s === undefined) {
      s = create();
      this.layerState.set(key, s);
    }
    return s;
  }
}
