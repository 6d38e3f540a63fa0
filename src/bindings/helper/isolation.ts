/**
 * `module_isolation` of filter.conf, per alias: where the module's code runs.
 *   in-worker  (default) the worker loads the module itself: fastest; a crash
 *              of the module kills the worker and every connection on it.
 *   helper     the module runs in a helper process of the worker, reached
 *              over a socketpair (protocol.ts); a crash, abort or hang of the
 *              module costs only that helper (helper-backend.ts).
 */
export interface ModuleIsolation {
  readonly mode: 'in-worker' | 'helper';
  /** Helper processes per worker. Only 1 is supported (login state is per process: see filter-config.ts). */
  readonly processes: number;
  /** A call the helper has not answered after this long kills it (SIGKILL): CKR_DEVICE_ERROR. */
  readonly callTimeoutMs: number;
}

export const DEFAULT_CALL_TIMEOUT_MS = 30_000;

export const IN_WORKER: ModuleIsolation = Object.freeze({ mode: 'in-worker', processes: 1, callTimeoutMs: DEFAULT_CALL_TIMEOUT_MS });
