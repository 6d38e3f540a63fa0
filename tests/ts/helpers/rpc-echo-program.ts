/**
 * Fake RPC program for transport tests: prog 0x20000001 vers 1.
 *   proc 0 null: no args, empty result
 *   proc 1 echo: opaque<> in, same opaque<> out
 *   proc 2 slow: like echo, but answers only when the test releases it
 *   proc 3 throws synchronously
 *   proc 4 rejects asynchronously
 *   proc 5 big: uint n in, n zero bytes (n % 4 == 0) out, answered synchronously
 *   proc 6 returns an invalid outcome (a 3-byte success body)
 */
import type {
  CallOutcome,
  ConnectionInfo,
  RpcCallHeader,
  RpcConnectionHandler,
} from '../../../src/server/transport/types';
import { xdrOpaque } from './raw-rpc-client';

export const ECHO_PROG = 0x20000001;
export const ECHO_VERS = 1;
export const PROC = { NULL: 0, ECHO: 1, SLOW: 2, THROW: 3, REJECT: 4, BIG: 5, BAD_OUTCOME: 6 } as const;

/** Decode the echo argument by hand; null when malformed. */
function decodeOpaque(args: Buffer): Buffer | null {
  if (args.length < 4) return null;
  const len = args.readUInt32BE(0);
  const padded = len + ((4 - (len % 4)) % 4);
  if (padded !== args.length - 4) return null;
  return args.subarray(4, 4 + len);
}

export interface SlowCall {
  connId: number;
  xid: number;
  release(): void;
}

/** A promise-based event queue: `next()` yields items in push order, waiting if none is queued. */
export class AsyncQueue<T> {
  private readonly items: T[] = [];
  private readonly waiters: Array<(t: T) => void> = [];

  push(item: T): void {
    const w = this.waiters.shift();
    if (w) w(item);
    else this.items.push(item);
  }

  next(): Promise<T> {
    const item = this.items.shift();
    if (item !== undefined) return Promise.resolve(item);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  get size(): number {
    return this.items.length;
  }
}

export class EchoProgram {
  readonly opened: ConnectionInfo[] = [];
  readonly calls: Array<{ connId: number; header: RpcCallHeader }> = [];
  /** Slow calls as they start. */
  readonly slowCalls = new AsyncQueue<SlowCall>();
  /** Connection ids as their handler's close() runs. */
  readonly closedConns = new AsyncQueue<number>();
  /** Headers of finished non-slow calls, as they finish. */
  readonly finished = new AsyncQueue<RpcCallHeader>();
  closeCount = 0;
  slowRunning = 0;
  maxSlowRunning = 0;
  bigCount = 0;
  /** When set, createHandler throws. */
  failCreate = false;
  private readonly unreleased = new Set<() => void>();

  createHandler = (info: ConnectionInfo): RpcConnectionHandler => {
    if (this.failCreate) throw new Error('createHandler refused');
    this.opened.push(info);
    return {
      handleCall: (header, args) => this.handleCall(info.id, header, args),
      close: () => {
        this.closeCount++;
        this.closedConns.push(info.id);
      },
    };
  };

  private handleCall(
    connId: number,
    header: RpcCallHeader,
    args: Buffer,
  ): Promise<CallOutcome> | CallOutcome {
    this.calls.push({ connId, header });
    if (header.prog !== ECHO_PROG) return { kind: 'prog_unavail' };
    if (header.vers !== ECHO_VERS) return { kind: 'prog_mismatch', low: ECHO_VERS, high: ECHO_VERS };
    switch (header.proc) {
      case PROC.NULL:
        return this.done(
          header,
          args.length === 0 ? { kind: 'success', body: Buffer.alloc(0) } : { kind: 'garbage_args' },
        );
      case PROC.ECHO: {
        const data = decodeOpaque(args);
        return this.done(
          header,
          data ? { kind: 'success', body: xdrOpaque(data) } : { kind: 'garbage_args' },
        );
      }
      case PROC.SLOW:
        return this.slow(connId, header, args);
      case PROC.THROW:
        throw new Error('proc 3 throws');
      case PROC.REJECT:
        return Promise.reject(new Error('proc 4 rejects'));
      case PROC.BIG: {
        if (args.length !== 4) return { kind: 'garbage_args' };
        this.bigCount++;
        return this.done(header, { kind: 'success', body: Buffer.alloc(args.readUInt32BE(0)) });
      }
      case PROC.BAD_OUTCOME:
        return { kind: 'success', body: Buffer.alloc(3) };
      default:
        return { kind: 'proc_unavail' };
    }
  }

  /** Let every waiting slow call finish (test teardown, so server.close() does not wait on them). */
  releaseAll(): void {
    for (const release of [...this.unreleased]) release();
  }

  private done(header: RpcCallHeader, outcome: CallOutcome): CallOutcome {
    this.finished.push(header);
    return outcome;
  }

  private async slow(connId: number, header: RpcCallHeader, args: Buffer): Promise<CallOutcome> {
    const data = decodeOpaque(args);
    if (!data) return { kind: 'garbage_args' };
    this.slowRunning++;
    this.maxSlowRunning = Math.max(this.maxSlowRunning, this.slowRunning);
    await new Promise<void>((resolve) => {
      const release = (): void => {
        this.unreleased.delete(release);
        resolve();
      };
      this.unreleased.add(release);
      this.slowCalls.push({ connId, xid: header.xid, release });
    });
    this.slowRunning--;
    return { kind: 'success', body: xdrOpaque(data) };
  }
}
