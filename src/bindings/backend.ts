import type { Pkcs11Calls } from '../generated/pkcs11_rpc';

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
