import { performance } from 'node:perf_hooks';
import { CALL_INVOKERS, isPromise } from '../../generated/pkcs11_rpc';
import type { C_CloseAllSessions_args, C_CloseSession_args, C_OpenSession_args, C_OpenSession_ret, CallName, MaybePromise, Pkcs11Calls } from '../../generated/pkcs11_rpc';
import { rvOf } from '../../pkcs11/errors';
import type { ConnectionState } from '../dispatch/connection-state';
import { PROCEDURE_INDEX, PROCEDURE_NAMES } from './registry';
import type { ProcessMetrics } from './registry';

const OPEN = PROCEDURE_INDEX.get('C_OpenSession')!;
const CLOSE = PROCEDURE_INDEX.get('C_CloseSession')!;
const CLOSE_ALL = PROCEDURE_INDEX.get('C_CloseAllSessions')!;
const FINALIZE = PROCEDURE_INDEX.get('C_Finalize')!;
/** Procedures that change the number of open sessions. */
const SESSION_CALLS = new Uint8Array(PROCEDURE_NAMES.length);
for (const i of [OPEN, CLOSE, CLOSE_ALL, FINALIZE]) SESSION_CALLS[i] = 1;

/** An application's open sessions (client handle → slot), for the sessions gauge. */
const SESSIONS = Symbol('metrics sessions');

/** The CK_RV of a call's result: the number itself or its `rv` field. */
function rvOfResult(r: unknown): number {
  return typeof r === 'number' ? r : ((r as { rv?: number }).rv ?? 0);
}

/**
 * Top of the stack when metrics are on: counts every call by procedure index
 * and CK_RV and times it (performance.now, no label strings, no promise of
 * its own for a call that answers at once). Keeps the open-session gauge from
 * C_OpenSession, C_CloseSession, C_CloseAllSessions and C_Finalize (the
 * dispatcher's implicit one on disconnect included).
 */
export class MetricsLayer {
  constructor(next: Pkcs11Calls<ConnectionState>, m: ProcessMetrics) {
    PROCEDURE_NAMES.forEach((name: CallName, i) => {
      const invoke = CALL_INVOKERS[name];
      const done = (conn: ConnectionState, args: unknown, t0: number, r: unknown, rv: number): void => {
        m.observe(i, rv, (performance.now() - t0) / 1000);
        if (SESSION_CALLS[i] === 1 && rv === 0) sessionsChanged(m, i, conn, args, r);
      };
      const method = (conn: ConnectionState, args: unknown): MaybePromise<unknown> => {
        const t0 = performance.now();
        let r: MaybePromise<unknown>;
        try {
          r = invoke(next, conn, args);
        } catch (e) {
          done(conn, args, t0, undefined, rvOf(e));
          throw e;
        }
        if (!isPromise(r)) {
          done(conn, args, t0, r, rvOfResult(r));
          return r;
        }
        return r.then(
          (v) => {
            done(conn, args, t0, v, rvOfResult(v));
            return v;
          },
          (e: unknown) => {
            done(conn, args, t0, undefined, rvOf(e));
            throw e;
          },
        );
      };
      Object.defineProperty(this, name, { value: method, enumerable: false, writable: false });
    });
  }

  asCalls(): Pkcs11Calls<ConnectionState> {
    return this as unknown as Pkcs11Calls<ConnectionState>;
  }
}

function sessionsChanged(m: ProcessMetrics, i: number, conn: ConnectionState, args: unknown, r: unknown): void {
  const open = conn.stateFor(SESSIONS, () => new Map<number, number>());
  if (i === OPEN) {
    open.set((r as C_OpenSession_ret).session, (args as C_OpenSession_args).slotID);
    m.sessionsOpen += 1;
  } else if (i === CLOSE) {
    if (open.delete((args as C_CloseSession_args).session)) m.sessionsOpen -= 1;
  } else if (i === CLOSE_ALL) {
    const slot = (args as C_CloseAllSessions_args).slotID;
    for (const [h, s] of open) {
      if (s !== slot) continue;
      open.delete(h);
      m.sessionsOpen -= 1;
    }
  } else {
    m.sessionsOpen -= open.size;
    open.clear();
  }
}
