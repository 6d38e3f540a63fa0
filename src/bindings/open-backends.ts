import type { Backend, BackendLimits } from './backend';
import fs from 'node:fs';
import { BackendError, LoadedModule, Pkcs11jsBackend, probeModule } from './pkcs11js-backend';
import { errorMessage } from '../pkcs11/errors';
import type { Logger } from '../server/log';
import { openVirtualBackends } from './pool/open-virtual';
import type { VirtualAliasSpec } from './pool/pool-spec';
import { HelperBackend } from './helper/helper-backend';
import type { HelperEnvironment } from './helper/helper-backend';
import type { ModuleIsolation } from './helper/isolation';
import { ParsecBackend } from './parsec/backend';
import { isParsecPath, parseParsecPath } from './parsec/uri';

/** One configured alias (`modules` entry of filter.conf). */
export interface ModuleSpec {
  readonly alias: string;
  readonly path: string;
  /** filter.conf `module_isolation` for this alias; absent: in the worker. */
  readonly isolation?: ModuleIsolation;
}

/** A configured module this process could not load or initialize. */
export interface UnavailableModule {
  readonly alias: string;
  readonly path: string;
  readonly reason: string;
}

/** The backends of one process, by alias, and the aliases that could not be opened. */
export interface OpenedBackends {
  readonly backends: Map<string, Backend>;
  readonly unavailable: UnavailableModule[];
}

/**
 * Opens the backend of one alias. The kind of backend is chosen here and only
 * here: the layers above see every kind through the Backend interface.
 * Throws BackendError when the backend cannot be opened (the alias then stays
 * known and C_LoadModule for it answers CKR_FUNCTION_FAILED).
 */
export function openBackend(m: ModuleSpec, limits: BackendLimits, env: HelperEnvironment = {}): Backend {
  // A Parsec service (bindings/parsec/uri.ts): reached per request, so opening it contacts nothing.
  if (isParsecPath(m.path)) {
    let spec;
    try {
      spec = parseParsecPath(m.path);
    } catch (e) {
      throw new BackendError(`module '${m.alias}': ${errorMessage(e)}`);
    }
    return new ParsecBackend(m.alias, spec, limits);
  }
  if (m.isolation?.mode === 'helper') return new HelperBackend(m, m.isolation, limits, env).asBackend();
  return new Pkcs11jsBackend(new LoadedModule(m.alias, m.path), limits);
}

/**
 * Whether the backend of a path could be opened, touching no token: null when
 * it could, else why not (-check-filter). A Parsec path is checked for a
 * socket at its path (the service is asked nothing).
 */
export function probeBackend(path: string): string | null {
  if (!isParsecPath(path)) return probeModule(path);
  const socket = parseParsecPath(path).socket;
  try {
    return fs.statSync(socket).isSocket() ? null : `${socket} is not a socket`;
  } catch (e) {
    return `${socket}: ${(e as NodeJS.ErrnoException).code ?? errorMessage(e)}`;
  }
}

/**
 * Opens every configured alias once in this process. A backend that cannot be
 * opened does not stop the others. Any other error finalizes what was opened
 * and is rethrown. Pools and slot NATs (`virtual`) are built afterwards out
 * of the backends opened (src/bindings/pool).
 */
export function openBackends(modules: readonly ModuleSpec[], limits: BackendLimits, env: HelperEnvironment = {}, virtual: readonly VirtualAliasSpec[] = []): OpenedBackends {
  const backends = new Map<string, Backend>();
  const unavailable: UnavailableModule[] = [];
  try {
    for (const m of modules) {
      try {
        backends.set(m.alias, openBackend(m, limits, env));
      } catch (e) {
        if (!(e instanceof BackendError)) throw e;
        unavailable.push(Object.freeze({ alias: m.alias, path: m.path, reason: errorMessage(e) }));
      }
    }
    for (const u of openVirtualBackends(virtual, backends, env.log === undefined ? null : poolLog(env.log, env.workerIndex ?? 0))) unavailable.push(Object.freeze({ ...u, path: `(${u.alias}: pool or slot_nat)` }));
  } catch (e) {
    for (const b of backends.values()) b.finalize();
    throw e;
  }
  return { backends, unavailable };
}

/** Pool member state lines: every worker has its own members; worker 0 logs them at info, the others at debug. */
function poolLog(log: Logger, workerIndex: number): Logger {
  return workerIndex === 0 ? log : (level, msg) => log(level === 'info' ? 'debug' : level, msg);
}
