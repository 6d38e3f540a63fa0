import { LoadedModule, Pkcs11jsBackend } from '../bindings/pkcs11js-backend';
import { declarePlainParameterMechanisms } from '../pkcs11/mechanism-shapes';
import type { Pkcs11Calls } from '../generated/pkcs11_rpc';
import { AppRegistry } from './dispatch/connection-state';
import type { ConnectionState } from './dispatch/connection-state';
import { Pkcs11Dispatcher } from './dispatch/dispatcher';
import type { Logger } from './log';
import { RpcServer } from './transport';
import type { ConnectionInfo } from './transport/types';
import type { DaemonSettings } from './settings';
import { buildStack } from './stack';

/** The PKCS#11 side of a process: its module instances and the layer stack over them. */
export interface Pkcs11Stack {
  /** A handler for one RPC connection. */
  createDispatcher(info: ConnectionInfo): Pkcs11Dispatcher;
  /** C_Finalize every module; the stack is unusable afterwards. */
  finalize(): void;
}

/** Loads and initializes every configured module once in this process and builds the layer stack. */
export function createPkcs11Stack(s: DaemonSettings, log: Logger, workerIndex: number): Pkcs11Stack {
  declarePlainParameterMechanisms(s.plainParameterMechanisms ?? []);
  const modules = new Map<string, LoadedModule>();
  try {
    for (const m of s.modules) modules.set(m.alias, new LoadedModule(m.alias, m.path));
  } catch (e) {
    for (const m of modules.values()) m.finalize();
    throw e;
  }
  const backend = new Pkcs11jsBackend(modules, s.defaultAlias);
  const apps = new AppRegistry(workerIndex);
  const stack: Pkcs11Calls<ConnectionState> = buildStack(backend, {
    aliases: new Set(modules.keys()),
    defaultAlias: s.defaultAlias,
    trace: s.trace,
    log,
    workerIndex,
    apps,
  });
  return {
    createDispatcher: (info) => new Pkcs11Dispatcher(info, stack, log, apps),
    finalize: () => {
      for (const m of modules.values()) m.finalize();
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
