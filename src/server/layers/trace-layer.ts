import { isPromise, Pkcs11Passthrough } from '../../generated/pkcs11_rpc';
import type { CallName, MaybePromise, Pkcs11Calls } from '../../generated/pkcs11_rpc';
import { nameOf } from '../../pkcs11/names';
import { rvOf } from '../../pkcs11/errors';
import type { ConnectionState } from '../dispatch/connection-state';
import type { Logger } from '../log';
import { installGeneric, invoke } from './generic';
import { traceArgs, traceJson, traceResult, traceText } from './trace-format';
import type { TraceRecord } from './trace-format';

/** `-debug-pkcs11` output form: text lines through the logger, or one JSON object per line (`-debug-pkcs11-json`). */
export type TraceFormat = 'text' | 'json';

export interface TraceOptions {
  format: TraceFormat;
  /** Worker index, in JSON records (text lines carry the logger's tag). */
  worker: number;
  /** Where JSON lines go (one write per line, newline included); default stderr. */
  write?: (line: string) => void;
}

/**
 * `-debug-pkcs11`: one record per call with the connection, arguments, CK_RV
 * and duration, as the client sent them (this is the top layer), by spec
 * names; what is shown and what is redacted is trace-format.ts's to say.
 * A result that comes without waiting is passed up as it is (no promise).
 */
export class TraceLayer extends Pkcs11Passthrough<ConnectionState> {
  private readonly emit: (r: TraceRecord) => void;

  constructor(next: Pkcs11Calls<ConnectionState>, log: Logger, o: TraceOptions = { format: 'text', worker: 0 }) {
    super(next);
    if (o.format === 'json') {
      const write = o.write ?? ((line: string) => void process.stderr.write(line));
      this.emit = (r) => write(`${traceJson(r, { time: new Date().toISOString(), worker: o.worker })}\n`);
    } else {
      this.emit = (r) => log('info', traceText(r));
    }
    installGeneric(this, TraceLayer.prototype, (name, conn, args) => this.traced(name, conn, args));
  }

  private traced(name: CallName, conn: ConnectionState, args: unknown): MaybePromise<unknown> {
    const t0 = performance.now();
    // Arguments are formatted before the call: a layer below may change them (handles, layouts).
    const shownArgs = traceArgs(name, args, conn.arch);
    let r: unknown;
    try {
      r = invoke(this.next, name, conn, args);
    } catch (e) {
      this.failed(name, conn, shownArgs, e, t0);
      throw e;
    }
    if (!isPromise(r)) return this.answered(name, conn, shownArgs, r, t0);
    return r.then(
      (v) => this.answered(name, conn, shownArgs, v, t0),
      (e: unknown) => {
        this.failed(name, conn, shownArgs, e, t0);
        throw e;
      },
    );
  }

  private answered(name: CallName, conn: ConnectionState, args: TraceRecord['args'], r: unknown, t0: number): unknown {
    this.emit({ conn: conn.id, call: name, args, ...traceResult(name, r, conn.arch), ms: performance.now() - t0 });
    return r;
  }

  private failed(name: CallName, conn: ConnectionState, args: TraceRecord['args'], e: unknown, t0: number): void {
    this.emit({ conn: conn.id, call: name, args, rv: nameOf('CKR_', rvOf(e)), ms: performance.now() - t0 });
  }
}
