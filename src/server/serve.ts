import type { Backend } from '../bindings/backend';
import { LoadedModule, Pkcs11jsBackend } from '../bindings/pkcs11js-backend';
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
  /** C_Finalize every module; the stack is unusable afterwards. */
  finalize(): void;
}

/** Loads and initializes every configured module once in this process and builds the layer stack. */
export function createPkcs11Stack(s: DaemonSettings, log: Logger, workerIndex: number): Pkcs11Stack {
  declarePlainParameterMechanisms(s.plainParameterMechanisms ?? []);
  const limits = s.limits ?? DEFAULT_APP_LIMITS;
  const backends = new Map<string, Backend>();
  try {
    for (const m of s.modules) backends.set(m.alias, new Pkcs11jsBackend(new LoadedModule(m.alias, m.path), limits));
  } catch (e) {
    for (const b of backends.values()) b.finalize();
    throw e;
  }
  const apps = new AppRegistry(workerIndex);
  const filter = s.filterFile ? compileFilter(loadFilterConfig(s.filterFile)) : passThroughFilter(backends.keys());
  const stack: Pkcs11Calls<ConnectionState> = buildStack(new RouterLayer(backends, s.defaultAlias), {
    aliases: new Set(backends.keys()),
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
