import type { C_LoadModule_args, C_SetupArch_args, Pkcs11Calls, px_GetAppToken_ret, px_JoinApp_args, px_rv } from '../generated/pkcs11_rpc';
import { NATIVE_ARCH } from '../pkcs11/arch';
import { ck, CKR_OK } from '../pkcs11/constants';

/**
 * What a backend is told about the caller. Plain, serialisable data: a
 * backend may live in a helper process, be a member of a pool or a Parsec
 * service, so it never sees the connection state of the layers above.
 */
export interface BackendContext {
  /** Daemon-wide number of the PKCS#11 application (one or more joined connections). */
  readonly appId: number;
  /** Configured alias of the module the application chose (C_LoadModule). */
  readonly alias: string;
  /**
   * Who the client is (src/filter/identity.ts identityKey: `uid:N`, `spki:HEX`, ...), from the transport.
   * A backend that keeps per-client namespaces (Parsec's Direct authentication) names the client by it.
   */
  readonly identity?: string;
}

/**
 * One backend: one module, reached with the module's own session and object
 * numbers (the handle layer above maps them to the client's). Every call of
 * Pkcs11Calls answers for that module only; C_Initialize/C_Finalize are the
 * client's and answer CKR_OK without touching the module.
 */
export interface Backend extends Pkcs11Calls<BackendContext> {
  /** The alias this backend serves; a router picks backends by it. */
  readonly alias: string;
  /** C_Finalize of the module; the backend is unusable afterwards. */
  finalize(): void;
}

const EMPTY = Buffer.alloc(0);

/**
 * The calls that are the client's business, answered alike by every backend. The layers above
 * answer them (the arch layer C_SetupArch, the life-cycle layer C_Initialize/C_Finalize, the
 * connection layer application joining); a backend reached with one anyway answers for its alias
 * and never touches its module or service, whose C_Initialize is process-wide.
 */
export abstract class BackendBase {
  abstract readonly alias: string;

  C_SetupArch(_c: BackendContext, _a: C_SetupArch_args): px_rv {
    return NATIVE_ARCH.code;
  }
  C_LoadModule(_c: BackendContext, a: C_LoadModule_args): px_rv {
    return a.alias.toString('utf8') === this.alias ? CKR_OK : ck.CKR_ARGUMENTS_BAD;
  }
  C_Initialize(_c: BackendContext): px_rv {
    return CKR_OK;
  }
  C_Finalize(_c: BackendContext): px_rv {
    return CKR_OK;
  }
  px_GetAppToken(_c: BackendContext): px_GetAppToken_ret {
    return { rv: ck.CKR_FUNCTION_NOT_SUPPORTED, token: EMPTY };
  }
  px_JoinApp(_c: BackendContext, _a: px_JoinApp_args): px_rv {
    return ck.CKR_FUNCTION_NOT_SUPPORTED;
  }
}

/** Limits a backend enforces on its own calls. */
export interface BackendLimits {
  /** Longest C_GenerateRandom output; longer asks answer CKR_ARGUMENTS_BAD. */
  maxRandomLength: number;
}

type ResetListener = (alias: string) => void;
const resetListeners = new Set<ResetListener>();

/**
 * Calls `listener` whenever a backend of this process lost its module state
 * (a module helper process died: its sessions and login are gone). Layers
 * that mirror module state (the login layer) drop what they hold for that
 * alias. Returns the unsubscribe function.
 */
export function onModuleReset(listener: ResetListener): () => void {
  resetListeners.add(listener);
  return () => resetListeners.delete(listener);
}

/** Announces that the module behind `alias` lost its sessions and login state. */
export function moduleReset(alias: string): void {
  for (const l of resetListeners) l(alias);
}
