import { ProxyError } from '../errors';
import type { Backend } from '../bindings/backend';
import { BackendError, LoadedModule, Pkcs11jsBackend } from '../bindings/pkcs11js-backend';
import { errorMessage } from '../pkcs11/errors';
import { declarePlainParameterMechanisms } from '../pkcs11/mechanism-shapes';
import type { Pkcs11Calls } from '../generated/pkcs11_rpc';
import { AppRegistry } from './dispatch/connection-state';
import type { ConnectionState } from './dispatch/connection-state';
import { Pkcs11Dispatcher } from './dispatch/dispatcher';
import type { Logger } from './log';
import { RpcServer } from './transport';
import type { ConnectionInfo } from './transport/types';
import { DEFAULT_APP_LIMITS } from './settings';
import type { DaemonSettings } from './settings';
import { RouterLayer } from './layers/router-layer';
import { buildStack } from './stack';
import { loadFilterConfig } from '../config/filter-config';
import { compileFilter, passThroughFilter } from '../filter/policy';

/** The PKCS#11 side of a process: its module instances and the layer stack over them. */
export interface Pkcs11Stack {
  /** The layer stack itself, for in-process callers (tests, benchmarks). */
  readonly stack: Pkcs11Calls<ConnectionState>;
  /** A handler for one RPC connection. */
  createDispatcher(info: ConnectionInfo): Pkcs11Dispatcher;
  /** Configured modules that could not be loaded in this process. */
  readonly unavailable: readonly UnavailableModule[];
  /** C_Finalize every module; the stack is unusable afterwards. */
  finalize(): void;
}

/** A configured module this process could not load or initialize. */
export interface UnavailableModule {
  readonly alias: string;
  readonly path: string;
  readonly reason: string;
}

export class NoModuleError extends ProxyError {
  readonly code = 'NO_MODULE';
}

/**
 * Loads and initializes every configured module once in this process and
 * builds the layer stack. A module that cannot be loaded (library missing,
 * no C_GetFunctionList, C_Initialize failing) does not stop the others, as
 * Caml Crush loads a module only when a client names its alias: its alias
 * stays known and C_LoadModule for it answers CKR_FUNCTION_FAILED (see
 * ConnectionLayer), the default alias included. Worker 0 logs each one once.
 * When no module at all loads there is nothing to serve: NoModuleError.
 */
export function createPkcs11Stack(s: DaemonSettings, log: Logger, workerIndex: number): Pkcs11Stack {
  declarePlainParameterMechanisms(s.plainParameterMechanisms ?? []);
  const limits = s.limits ?? DEFAULT_APP_LIMITS;
  const backends = new Map<string, Backend>();
  const unavailable: UnavailableModule[] = [];
  try {
    for (const m of s.modules) {
      let loaded: LoadedModule;
      try {
        loaded = new LoadedModule(m.alias, m.path);
      } catch (e) {
        if (!(e instanceof BackendError)) throw e;
        unavailable.push(Object.freeze({ alias: m.alias, path: m.path, reason: errorMessage(e) }));
        continue;
      }
      backends.set(m.alias, new Pkcs11jsBackend(loaded, limits));
    }
    if (backends.size === 0) {
      throw new NoModuleError(`no module can be loaded: ${unavailable.map((u) => u.reason).join('; ')}`);
    }
  } catch (e) {
    for (const b of backends.values()) b.finalize();
    throw e;
  }
  for (const u of unavailable) {
    const which = u.alias === s.defaultAlias ? 'default module' : 'module';
    // Every worker loads its own modules; one line per module, not one per worker.
    log(workerIndex === 0 ? 'error' : 'debug', `${which} '${u.alias}' (${u.path}) cannot be loaded, C_LoadModule for it answers CKR_FUNCTION_FAILED: ${u.reason}`);
  }
  const apps = new AppRegistry(workerIndex);
  const filter = s.filterFile ? compileFilter(loadFilterConfig(s.filterFile)) : passThroughFilter(backends.keys());
  const stack: Pkcs11Calls<ConnectionState> = buildStack(new RouterLayer(backends, s.defaultAlias), {
    aliases: new Set(backends.keys()),
    unavailableAliases: new Set(unavailable.map((u) => u.alias)),
    defaultAlias: s.defaultAlias,
    trace: s.trace,
    log,
    workerIndex,
    apps,
    limits,
    filter,
  });
  return {
    stack,
    unavailable,
    createDispatcher: (info) => new Pkcs11Dispatcher(info, stack, log, apps),
    finalize: () => {
      for (const b of backends.values()) b.finalize();
    },
  };
}

/** An RPC server whose connections run through this process's layer stack. */
export function createPkcs11Server(s: DaemonSettings, log: Logger, workerIndex: number): { server: RpcServer; shutdown(): Promise<void> } {
  const pkcs11 = createPkcs11Stack(s, log, workerIndex);
  const server = new RpcServer({
    maxRecordSize: s.maxRecordSize,
    ...s.connectionLimits,
    createHandler: (info) => pkcs11.createDispatcher(info),
    log: (level, msg) => log(level, msg),
  });
  return {
    server,
    async shutdown() {
      await server.close();
      pkcs11.finalize();
    },
  };
}
