import { CALL_INVOKERS, PKCS11_PROG, PROCEDURES_BY_VERSION, xdrDecode, xdrDecodeFrom, xdrEncodeFramed } from '../../generated/pkcs11_rpc';
import type { MaybePromise, Pkcs11Calls, ProcedureDef } from '../../generated/pkcs11_rpc';
import { CKR_GENERAL_ERROR } from '../../pkcs11/constants';
import { errorMessage, pkcs11RvOf } from '../../pkcs11/errors';
import { identityOf } from '../../filter/identity';
import { ConnectionState } from './connection-state';
import type { AppRegistry } from './connection-state';
import type { Logger } from '../log';
import { audit } from '../audit';
import { connectionFields } from '../audit-fields';
import { processMetrics } from '../metrics/registry';
import { FRAMED_REPLY_PREFIX_SIZE } from '../transport/types';
import type { CallOutcome, ConnectionInfo, RpcCallHeader, RpcConnectionHandler, XdrArgsReader } from '../transport/types';

/** The NULL procedure every ONC RPC program answers (RFC 5531 section 12). */
const NULLPROC = 0;
const VERSIONS = [...PROCEDURES_BY_VERSION.keys()].sort((a, b) => a - b);
const LOW_VERSION = VERSIONS[0];
const HIGH_VERSION = VERSIONS[VERSIONS.length - 1];
const EMPTY = Buffer.alloc(0);

function isThenable<T>(v: unknown): v is PromiseLike<T> {
  return typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';
}

/**
 * RPC codec layer: decodes a call with the procedure table generated from
 * rpc/pkcs11.x, runs it through the PKCS#11 layer stack and encodes the
 * result. A CK_RV failure travels in-band as the procedure's result; only
 * undecodable arguments (GARBAGE_ARGS) or an unencodable result (SYSTEM_ERR)
 * leave the PKCS#11 level. Calls of one connection run one at a time, in
 * arrival order, as a PKCS#11 application's calls on one thread would.
 */
export class Pkcs11Dispatcher implements RpcConnectionHandler {
  /** Calls of one connection run one at a time, in arrival order. */
  readonly sequential = true;
  readonly conn: ConnectionState;
  /** The last call that had to wait (for the stack or for the call before it); it never rejects. */
  private queue: Promise<unknown> = Promise.resolve();
  /** Calls accepted whose outcome is still to come. */
  private pending = 0;

  constructor(
    info: ConnectionInfo,
    private readonly stack: Pkcs11Calls<ConnectionState>,
    private readonly log: Logger,
    private readonly apps: AppRegistry,
  ) {
    this.conn = new ConnectionState(info.id, info.remote, identityOf(info));
    const m = processMetrics();
    if (m !== null) {
      m.connectionsOpen += 1;
      m.connectionsTotal += 1;
    }
  }

  /**
   * With nothing in flight a call starts at once, and when the stack answers without waiting (a
   * synchronous module call through layers that had nothing to await) its outcome is returned directly:
   * no promise is made. Otherwise the call waits for the one before it.
   */
  handleCall(header: RpcCallHeader, args: Buffer, reader?: XdrArgsReader): Promise<CallOutcome> | CallOutcome {
    if (header.prog !== PKCS11_PROG) return { kind: 'prog_unavail' };
    const procs = PROCEDURES_BY_VERSION.get(header.vers);
    if (!procs) return { kind: 'prog_mismatch', low: LOW_VERSION, high: HIGH_VERSION };
    if (header.proc === NULLPROC) return { kind: 'success', body: EMPTY };
    const def = procs.get(header.proc);
    if (!def) return { kind: 'proc_unavail' };
    let decoded: unknown;
    try {
      // The transport's reader, already at the arguments, saves making a second one.
      decoded = reader ? xdrDecodeFrom(def.args, reader) : xdrDecode(def.args, args);
    } catch (e) {
      this.log('warn', `[conn ${this.conn.id}] ${def.name}: undecodable arguments: ${errorMessage(e)}`);
      return { kind: 'garbage_args' };
    }
    if (this.pending === 0) {
      const out = this.run(def, decoded);
      if (isThenable(out)) this.queue = out;
      return out;
    }
    this.pending += 1;
    const queued = this.queue.then(() => {
      this.pending -= 1;
      return this.run(def, decoded);
    });
    // Only a call's arrival moves the queue, so calls start in arrival order.
    this.queue = queued;
    return queued;
  }

  /**
   * The call's outcome, a promise of it only if the stack returned one (counted in `pending` until it
   * settles). Never throws or rejects.
   */
  private run(def: ProcedureDef, args: unknown): MaybePromise<CallOutcome> {
    let r: unknown;
    try {
      r = CALL_INVOKERS[def.name](this.stack, this.conn, args);
    } catch (e) {
      return this.reply(def, this.errorResult(def, e));
    }
    if (!isThenable(r)) return this.reply(def, r);
    this.pending += 1;
    return Promise.resolve(r).then(
      (v) => {
        this.pending -= 1;
        return this.reply(def, v);
      },
      (e: unknown) => {
        this.pending -= 1;
        return this.reply(def, this.errorResult(def, e));
      },
    );
  }

  /** A CK_RV failure becomes the procedure's result; anything else is CKR_GENERAL_ERROR, logged. */
  private errorResult(def: ProcedureDef, e: unknown): unknown {
    let rv = pkcs11RvOf(e);
    if (rv === undefined || rv === 0) {
      this.log('error', `[conn ${this.conn.id}] ${def.name}: internal error: ${errorMessage(e)}`);
      rv = CKR_GENERAL_ERROR;
    }
    return def.errorRet(rv);
  }

  /** The result encoded once, behind room for the record mark and reply header the transport fills in. */
  private reply(def: ProcedureDef, result: unknown): CallOutcome {
    try {
      return { kind: 'success_framed', frame: xdrEncodeFramed(def.ret, result, FRAMED_REPLY_PREFIX_SIZE) };
    } catch (e) {
      // The result does not match the declared shape: a daemon bug, not the client's.
      this.log('error', `[conn ${this.conn.id}] ${def.name}: result does not match rpc/pkcs11.x: ${errorMessage(e)}`);
      return { kind: 'system_err' };
    }
  }

  /**
   * Disconnect. When it was the application's last connection, this is the
   * client's implicit C_Finalize (closes its sessions, drops its login share).
   */
  async close(): Promise<void> {
    await this.queue;
    const m = processMetrics();
    if (m !== null) m.connectionsOpen -= 1;
    audit({ event: 'connection_closed', ...connectionFields(this.conn), app: this.conn.app.id, last_of_app: this.conn.app.connections === 1 });
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
