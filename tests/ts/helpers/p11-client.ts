import { PKCS11_PROG, PKCS11_V3, PROCEDURES_BY_VERSION, xdrDecode, xdrEncode } from '../../../src/generated/pkcs11_rpc';
import type { CallName, Pkcs11Calls } from '../../../src/generated/pkcs11_rpc';
import { RawRpcClient } from './raw-rpc-client';
import type { Target } from './raw-rpc-client';

type ArgsOf<N extends CallName> = Parameters<Pkcs11Calls<null>[N]> extends [unknown, infer A] ? A : void;
type RetOf<N extends CallName> = Awaited<ReturnType<Pkcs11Calls<null>[N]>>;

const byName = new Map([...PROCEDURES_BY_VERSION.get(PKCS11_V3)!.values()].map((p) => [p.name, p]));

/**
 * Test-side PKCS#11 RPC client: encodes with the generated codecs and frames
 * with the raw client. `call` throws only on an RPC-level failure; CK_RVs
 * come back in the result.
 */
export class P11Client {
  private xid = 1;
  private constructor(readonly raw: RawRpcClient) {}

  static async connect(target: Target): Promise<P11Client> {
    return new P11Client(await RawRpcClient.connect(target));
  }

  /** SetupArch (native LE64), LoadModule(alias), Initialize — the Caml Crush client's preamble. */
  static async open(target: Target, alias = 'softhsm'): Promise<P11Client> {
    const c = await P11Client.connect(target);
    await c.call('C_SetupArch', { arch: 1 });
    const rv = await c.call('C_LoadModule', { alias: Buffer.from(alias) });
    if (rv !== 0) throw new Error(`C_LoadModule -> ${rv}`);
    const irv = await c.call('C_Initialize', undefined as never);
    if (irv !== 0) throw new Error(`C_Initialize -> ${irv}`);
    return c;
  }

  async call<N extends CallName>(name: N, args: ArgsOf<N>): Promise<RetOf<N>> {
    const def = byName.get(name);
    if (!def) throw new Error(`no procedure ${name}`);
    const reply = await this.raw.call({
      xid: this.xid++,
      prog: PKCS11_PROG,
      vers: PKCS11_V3,
      proc: def.proc,
      args: args === undefined ? Buffer.alloc(0) : xdrEncode(def.args, args as never),
    });
    if (reply.stat !== 'accepted' || reply.acceptStat !== 0) throw new Error(`${name}: RPC failure ${JSON.stringify(reply)}`);
    return xdrDecode(def.ret, reply.body) as RetOf<N>;
  }

  async close(): Promise<void> {
    await this.raw.end();
  }
}
