import { LoadedModule, Pkcs11jsBackend } from '../bindings/pkcs11js-backend';
import { AppRegistry } from './connection-state';
import { Pkcs11Dispatcher } from './dispatcher';
import type { Logger } from './log';
import { RpcServer } from './rpc';
import type { DaemonSettings } from './settings';
import { buildStack } from './stack';

/**
 * Loads and initializes every configured module once in this process and
 * returns an RPC server whose connections run through the layer stack.
 */
export function createPkcs11Server(s: DaemonSettings, log: Logger, workerIndex: number): { server: RpcServer; shutdown(): Promise<void> } {
  const modules = new Map<string, LoadedModule>();
  try {
    for (const m of s.modules) modules.set(m.alias, new LoadedModule(m.alias, m.path));
  } catch (e) {
    for (const m of modules.values()) m.finalize();
    throw e;
  }
  const backend = new Pkcs11jsBackend(modules, s.defaultAlias);
  const apps = new AppRegistry(workerIndex);
  const stack = buildStack(backend, {
    aliases: new Set(modules.keys()),
    defaultAlias: s.defaultAlias,
    trace: s.trace,
    log,
    workerIndex,
    apps,
  });
  const server = new RpcServer({
    maxRecordSize: s.maxRecordSize,
    createHandler: (info) => new Pkcs11Dispatcher(info, stack, log, apps),
    log: (level, msg) => log(level, msg),
  });
  return {
    server,
    async shutdown() {
      await server.close();
      for (const m of modules.values()) m.finalize();
    },
  };
}
