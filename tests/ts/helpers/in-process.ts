import { PKCS11_PROG, PKCS11_V3, PROCEDURES_BY_VERSION, xdrDecode, xdrEncode } from '../../../src/generated/pkcs11_rpc';
import type { CallName, Pkcs11Calls } from '../../../src/generated/pkcs11_rpc';
import type { Pkcs11Dispatcher } from '../../../src/server/dispatch/dispatcher';
import { createPkcs11Stack } from '../../../src/server/serve';
import type { Pkcs11Stack } from '../../../src/server/serve';
import type { AppLimits } from '../../../src/server/settings';
import { FRAMED_REPLY_PREFIX_SIZE } from '../../../src/server/transport/types';
import type { RpcCallHeader } from '../../../src/server/transport/types';

export type ArgsOf<N extends CallName> = Parameters<Pkcs11Calls<null>[N]> extends [unknown, infer A] ? A : void;
export type RetOf<N extends CallName> = Awaited<ReturnType<Pkcs11Calls<null>[N]>>;

/** What the daemon client (P11Client) and the in-process client share: one call by name. */
export interface Pkcs11Caller {
  call<N extends CallName>(name: N, args: ArgsOf<N>): Promise<RetOf<N>>;
  close(): Promise<void>;
}

const byName = new Map([...PROCEDURES_BY_VERSION.get(PKCS11_V3)!.values()].map((p) => [p.name, p]));

/**
 * A client of the in-process layer stack: each call is encoded, dispatched
 * and decoded exactly as the daemon does for a socket, without a socket.
 */
export class InProcessClient implements Pkcs11Caller {
  private xid = 1;
  constructor(readonly dispatcher: Pkcs11Dispatcher) {}

  async call<N extends CallName>(name: N, args: ArgsOf<N>): Promise<RetOf<N>> {
    const def = byName.get(name);
    if (!def) throw new Error(`no procedure ${name}`);
    const header: RpcCallHeader = { xid: this.xid++, rpcvers: 2, prog: PKCS11_PROG, vers: PKCS11_V3, proc: def.proc, credFlavor: 0, cred: Buffer.alloc(0), verfFlavor: 0 };
    const out = await this.dispatcher.handleCall(header, args === undefined ? Buffer.alloc(0) : xdrEncode(def.args, args as never));
    // The dispatcher answers with the reply frame, the record mark and reply header still to be filled in front.
    if (out.kind === 'success_framed') return xdrDecode(def.ret, out.frame.subarray(FRAMED_REPLY_PREFIX_SIZE)) as RetOf<N>;
    if (out.kind !== 'success') throw new Error(`${name}: RPC failure ${out.kind}`);
    return xdrDecode(def.ret, out.body) as RetOf<N>;
  }

  /** The disconnect: the daemon's implicit C_Finalize of the application's last connection. */
  close(): Promise<void> {
    return this.dispatcher.close();
  }
}

export interface InProcessStack {
  stack: Pkcs11Stack;
  /** A fresh connection: SetupArch (LE64), LoadModule(alias), Initialize. */
  open(alias?: string): Promise<InProcessClient>;
  /** A fresh connection with nothing called yet. */
  connect(): InProcessClient;
  finalize(): void;
}

let nextId = 1;

/**
 * The daemon's layer stack in this process over real modules. Modules are
 * loaded once per process by path: each stack needs module files of its own
 * (see faulty-module.ts) or must be finalized before the next one loads.
 */
/**
 * `filterFile`: a filter.conf to enforce (its `modules` are ignored: `modules` here are loaded).
 * `log`: receives the stack's log lines (filter refusals at debug >= 1).
 */
export function startInProcess(
  modules: Array<{ alias: string; path: string }>,
  limits?: AppLimits,
  opts: { filterFile?: string; log?: (level: string, msg: string) => void } = {},
): InProcessStack {
  const stack = createPkcs11Stack(
    {
      listen: [], modules, defaultAlias: modules[0].alias, trace: false, workers: 0, maxRecordSize: 1 << 24,
      ...(limits ? { limits } : {}), ...(opts.filterFile ? { filterFile: opts.filterFile } : {}),
    },
    opts.log ?? (() => undefined),
    0,
  );
  const connect = () => new InProcessClient(stack.createDispatcher({ id: nextId++, transport: 'unix', remote: 'in-process' }));
  return {
    stack,
    connect,
    async open(alias = modules[0].alias) {
      const c = connect();
      await c.call('C_SetupArch', { arch: 1 });
      const rv = await c.call('C_LoadModule', { alias: Buffer.from(alias) });
      if (rv !== 0) throw new Error(`C_LoadModule -> ${rv}`);
      const irv = await c.call('C_Initialize', undefined as never);
      if (irv !== 0) throw new Error(`C_Initialize -> ${irv}`);
      return c;
    },
    finalize: () => stack.finalize(),
  };
}
