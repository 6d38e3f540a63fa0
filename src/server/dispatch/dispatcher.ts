import { CALL_INVOKERS, PKCS11_PROG, PROCEDURES_BY_VERSION, xdrDecode, xdrEncode } from '../../generated/pkcs11_rpc';
import type { Pkcs11Calls, ProcedureDef } from '../../generated/pkcs11_rpc';
import { CKR_GENERAL_ERROR } from '../../pkcs11/constants';
import { errorMessage, pkcs11RvOf } from '../../pkcs11/errors';
import { ConnectionState } from './connection-state';
import type { AppRegistry } from './connection-state';
import type { Logger } from '../log';
import type { CallOutcome, ConnectionInfo, RpcCallHeader, RpcConnectionHandler } from '../transport/types';

/** The NULL procedure every ONC RPC program answers (RFC 5531 section 12). */
const NULLPROC = 0;
const VERSIONS = [...PROCEDURES_BY_VERSION.keys()].sort((a, b) => a - b);
const LOW_VERSION = VERSIONS[0];
const HIGH_VERSION = VERSIONS[VERSIONS.length - 1];
const EMPTY = Buffer.alloc(0);

/**
 * RPC codec layer: decodes a call with the procedure table generated from
 * rpc/pkcs11.x, runs it through the PKCS#11 layer stack and encodes the
 * result. A CK_RV failure travels in-band as the procedure's result; only
 * undecodable arguments (GARBAGE_ARGS) or an unencodable result (SYSTEM_ERR)
 * leave the PKCS#11 level. Calls of one connection run one at a time, in
 * arrival order, as a PKCS#11 application's calls on one thread would.
 */
export class Pkcs11Dispatcher implements RpcConnectionHandler {
  readonly conn: ConnectionState;
  /** The last call's run; it never rejects. */
  private queue: Promise<unknown> = Promise.resolve();
  /** Calls accepted and not yet finished. */
  private pending = 0;

  constructor(
    info: ConnectionInfo,
    private readonly stack: Pkcs11Calls<ConnectionState>,
    private readonly log: Logger,
    private readonly apps: AppRegistry,
  ) {
    this.conn = new ConnectionState(info.id, info.remote);
  }

  handleCall(header: RpcCallHeader, args: Buffer): Promise<CallOutcome> | CallOutcome {
    if (header.prog !== PKCS11_PROG) return { kind: 'prog_unavail' };
    const procs = PROCEDURES_BY_VERSION.get(header.vers);
    if (!procs) return { kind: 'prog_mismatch', low: LOW_VERSION, high: HIGH_VERSION };
    if (header.proc === NULLPROC) return { kind: 'success', body: EMPTY };
    const def = procs.get(header.proc);
    if (!def) return { kind: 'proc_unavail' };
    let decoded: unknown;
    try {
      decoded = xdrDecode(def.args, args);
    } catch (e) {
      this.log('warn', `[conn ${this.conn.id}] ${def.name}: undecodable arguments: ${errorMessage(e)}`);
      return { kind: 'garbage_args' };
    }
    // With nothing in flight the call starts now rather than a microtask later.
    this.pending += 1;
    const run = this.pending === 1 ? this.run(def, decoded) : this.queue.then(() => this.run(def, decoded));
    this.queue = run;
    return run;
  }

  /** Never rejects: every failure becomes a CK_RV result or SYSTEM_ERR. */
  private async run(def: ProcedureDef, args: unknown): Promise<CallOutcome> {
    try {
      let result: unknown;
      try {
        result = await CALL_INVOKERS[def.name](this.stack, this.conn, args);
      } catch (e) {
        let rv = pkcs11RvOf(e);
        if (rv === undefined || rv === 0) {
          this.log('error', `[conn ${this.conn.id}] ${def.name}: internal error: ${errorMessage(e)}`);
          rv = CKR_GENERAL_ERROR;
        }
        result = def.errorRet(rv);
      }
      try {
        return { kind: 'success', body: xdrEncode(def.ret, result) };
      } catch (e) {
        // The result does not match the declared shape: a daemon bug, not the client's.
        this.log('error', `[conn ${this.conn.id}] ${def.name}: result does not match rpc/pkcs11.x: ${errorMessage(e)}`);
        return { kind: 'system_err' };
      }
    } finally {
      this.pending -= 1;
    }
  }

  /**
   * Disconnect. When it was the application's last connection, this is the
   * client's implicit C_Finalize (closes its sessions, drops its login share).
   */
  async close(): Promise<void> {
    await this.queue;
    const app = this.conn.app;
    app.connections -= 1;
    if (app.connections > 0) return;
    this.apps.forget(app);
    if (!app.initialized) return;
    try {
      await this.stack.C_Finalize(this.conn);
    } catch (e) {
      this.log('warn', `[conn ${this.conn.id}] cleanup failed: ${errorMessage(e)}`);
    }
  }
}
