/**
 * One RPC connection: stream -> records -> calls -> handler -> replies, in request order.
 * Calls may overlap (pipelining). Two bounds keep a peer from making the daemon buffer without
 * limit: at most `maxPendingCalls` calls dispatched and unanswered, and at most `maxReplyBytes` of
 * encoded replies held (in order behind a slower call, or in the socket's write buffer) before the
 * next call is dispatched. Over either bound reading pauses (the kernel's buffers then push back on
 * the peer); a peer that takes none of its replies for `stallTimeoutMs` is dropped.
 */
import type net from 'net';
import { getErrorCode, getErrorMessage } from './errors';
import { directReadSocket, type StreamHandle } from './direct-read';
import { frameRecord, RecordAssembler } from './record-marking';
import { AuthFlavor, encodeReply, fillSuccessFrame, parseAuthSysCred, parseCall, RPC_VERSION, type RpcReply } from './rpc-message';
import { IdleWatch, reportIdleClose, sourceOf } from './limits';
import { FRAMED_REPLY_PREFIX_SIZE } from './types';
import type { CallOutcome, ConnectionInfo, RpcCallHeader, RpcConnectionHandler, RpcLogger, XdrArgsReader } from './types';

export const DEFAULT_MAX_PENDING_CALLS = 16;
export const DEFAULT_MAX_REPLY_BYTES = 4 * 1024 * 1024;
export const DEFAULT_STALL_TIMEOUT_MS = 30_000;

/** Socket errors that only mean the peer went away. */
const PEER_GONE_ERRORS = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ERR_STREAM_DESTROYED']);

export interface RpcConnectionOptions {
  maxRecordSize: number;
  maxPendingCalls: number;
  maxReplyBytes: number;
  stallTimeoutMs: number;
  log: RpcLogger;
  /** idle_timeout_s in ms: no call in flight and none received this long closes the connection; 0/absent: off. */
  idleTimeoutMs?: number;
  /** Bytes already read from the socket by its previous owner; processed first. */
  initial?: Buffer;
}

/** A call or denial awaiting its turn to be written. `frame` is set iff the reply is ready. */
interface ReplySlot {
  frame: Buffer | null;
}

export class RpcConnection {
  /** Resolves once the socket has closed and the handler's close() has finished. Never rejects. */
  readonly closed: Promise<void>;
  private resolveClosed!: () => void;

  private readonly assembler: RecordAssembler;
  /** Records read from the socket and not yet dispatched (at most the records of a few chunks). */
  private readonly backlog: Buffer[] = [];
  /** Dispatched calls whose replies are not yet written, oldest first. */
  private readonly slots: ReplySlot[] = [];
  /** Bytes of the frames in `slots` that are ready and not yet written. */
  private readyBytes = 0;
  /** Armed while dispatch is blocked on replies the peer does not take. */
  private stallTimer: NodeJS.Timeout | null = null;
  /** Handler promises not yet settled; close() waits for zero. */
  private running = 0;
  private readPaused = false;
  /** A pump() is scheduled for the next turn of the event loop. */
  private pumpScheduled = false;
  /** Set while pump() runs, so completions inside it do not re-enter. */
  private pumping = false;
  /** The peer sent FIN: finish pending replies, then end our side. */
  private inputEnded = false;
  /** A protocol error was seen; nothing more is read or dispatched. */
  private failed = false;
  private socketClosed = false;
  private handlerCloseStarted = false;
  /** drain() was called: nothing more is read; the socket closes after the owed replies. */
  private draining = false;
  private readonly tag: string;
  /** Copy of the last AUTH_SYS body seen, so an unchanged credential is not decoded again. */
  private authSysBody: Buffer | null = null;
  private readonly idle: IdleWatch | null = null;
  /** The socket over `accepted`'s handle that reads into the shared buffer (direct-read.ts), or `accepted` itself. */
  private readonly socket: net.Socket;

  /** `accepted`: a socket, or a bare handle received from the primary. */
  constructor(
    accepted: net.Socket | StreamHandle,
    readonly info: ConnectionInfo,
    private readonly handler: RpcConnectionHandler,
    private readonly opts: RpcConnectionOptions,
  ) {
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    this.assembler = new RecordAssembler(opts.maxRecordSize);
    this.tag = `conn ${info.id} (${info.transport} ${info.remote})`;
    const direct = directReadSocket(accepted, (chunk) => this.onData(chunk, true));
    // Null only for a socket that keeps the stream path.
    const socket = direct ?? (accepted as net.Socket);
    this.socket = socket;
    // Replies to calls read before the peer's FIN are still owed, so our side ends only after them.
    socket.allowHalfOpen = true;
    if (direct === null) socket.on('data', (chunk: Buffer) => this.onData(chunk, false));
    socket.on('end', () => this.onEnd());
    socket.on('drain', () => {
      // The peer took bytes: whatever stall was being timed made progress.
      this.disarmStall();
      this.pump();
    });
    socket.on('error', (e: Error) => this.onError(e));
    socket.on('close', () => this.onClose());
    if (socket.destroyed) process.nextTick(() => this.onClose());
    // A socket accepted with pauseOnConnect (e.g. for handover between processes) has flowing
    // explicitly off, which a 'data' listener does not undo.
    else socket.resume();
    if (opts.idleTimeoutMs !== undefined && opts.idleTimeoutMs > 0 && !socket.destroyed) {
      const ms = opts.idleTimeoutMs;
      this.idle = new IdleWatch(
        ms,
        () => this.running > 0 || this.slots.length > 0 || this.backlog.length > 0 || this.assembler.midRecord,
        () => {
          reportIdleClose(opts.log, this.tag, info.peer ? sourceOf(info.peer) : info.remote, ms);
          this.failed = true;
          this.socket.destroy();
        },
      );
    }
    if (opts.initial && opts.initial.length > 0) this.onData(opts.initial, false);
  }

  /** Drop the connection now; unsent replies are lost. */
  destroy(): void {
    this.socket.destroy();
  }

  /**
   * Shutdown: read and dispatch no more calls; the calls already dispatched
   * are answered, then the connection closes (`closed` resolves).
   */
  drain(): void {
    if (this.socketClosed || this.draining) return;
    this.draining = true;
    this.backlog.length = 0;
    this.inputEnded = true;
    this.socket.pause();
    this.maybeEnd();
  }

  /** `transient`: the chunk is the shared read buffer, overwritten after this returns. */
  private onData(chunk: Buffer, transient: boolean): void {
    if (this.failed || this.socketClosed || this.draining) return;
    let records: Buffer[];
    try {
      records = this.assembler.push(chunk, transient);
    } catch (e) {
      this.fail(e);
      return;
    }
    this.idle?.touch();
    for (const r of records) this.backlog.push(r);
    this.pump();
  }

  /** Bytes of encoded replies this connection holds: ready in order, or in the socket's write buffer. */
  private heldReplyBytes(): number {
    return this.readyBytes + this.socket.writableLength;
  }

  private overReplyBound(): boolean {
    return this.heldReplyBytes() >= this.opts.maxReplyBytes;
  }

  /**
   * Dispatch backlog records while within the pending-call and held-reply bounds. After a call
   * that went asynchronous the rest waits for the next turn of the event loop: its reply's bytes
   * are then counted, and other connections' calls run in between, so one connection's pipeline
   * of costly calls cannot hold the loop. A sequential handler (it runs one call at a time
   * anyway) gets no call while one runs: each reply's bytes are then counted before the next
   * call may add more, where calls admitted behind a running one would each add a reply past
   * max_reply_bytes.
   */
  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (
        !this.failed &&
        !this.socketClosed &&
        this.backlog.length > 0 &&
        (this.running === 0 || !this.handler.sequential) &&
        this.slots.length < this.opts.maxPendingCalls &&
        !this.overReplyBound()
      ) {
        const running = this.running;
        this.dispatch(this.backlog.shift()!);
        if (this.running > running && this.backlog.length > 0) {
          this.pumpLater();
          break;
        }
      }
    } finally {
      this.pumping = false;
    }
    this.updateFlow();
    this.maybeEnd();
  }

  private pumpLater(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  private updateFlow(): void {
    if (this.socketClosed || this.failed) return;
    const replies = this.overReplyBound();
    // Only bytes the peer does not take can stall for good; calls in flight finish on their own.
    if (replies && this.socket.writableLength > 0) this.armStall();
    else this.disarmStall();
    const blocked = this.backlog.length > 0 || this.slots.length >= this.opts.maxPendingCalls || replies;
    if (blocked && !this.readPaused) {
      this.readPaused = true;
      this.socket.pause();
    } else if (!blocked && this.readPaused && !this.draining) {
      this.readPaused = false;
      this.socket.resume();
    }
  }

  private dispatch(record: Buffer): void {
    let parsed;
    try {
      parsed = parseCall(record);
    } catch (e) {
      this.fail(e);
      return;
    }
    switch (parsed.kind) {
      case 'rpc_mismatch':
        this.opts.log('info', `${this.tag}: xid ${parsed.xid}: rpcvers ${parsed.rpcvers} refused`);
        this.enqueueReady({ kind: 'rpc_mismatch', xid: parsed.xid, low: RPC_VERSION, high: RPC_VERSION });
        return;
      case 'auth_error':
        this.opts.log(
          'info',
          `${this.tag}: xid ${parsed.xid}: credential flavor ${parsed.credFlavor} refused`,
        );
        this.enqueueReady({ kind: 'auth_error', xid: parsed.xid, stat: parsed.stat });
        return;
      case 'call':
        if (parsed.header.credFlavor === AuthFlavor.AUTH_SYS) this.noteAuthSys(parsed.header.cred);
        this.invoke(parsed.header, parsed.args, parsed.reader);
        return;
    }
  }

  /** parseCall has already checked the body is one well-formed authsys_parms. */
  private noteAuthSys(cred: Buffer): void {
    const last = this.authSysBody;
    if (last !== null && last.equals(cred)) return;
    this.authSysBody = Buffer.from(cred);
    this.info.authSys = parseAuthSysCred(cred);
  }

  private enqueueReady(reply: RpcReply): void {
    const frame = frameRecord(encodeReply(reply));
    this.slots.push({ frame });
    this.readyBytes += frame.length;
    this.flush();
  }

  private armStall(): void {
    if (this.stallTimer !== null) return;
    this.stallTimer = setTimeout(() => {
      this.stallTimer = null;
      if (this.socketClosed || !this.overReplyBound()) return;
      this.opts.log(
        'warn',
        `${this.tag}: closing: peer took no reply bytes for ${this.opts.stallTimeoutMs} ms ` +
          `with ${this.heldReplyBytes()} bytes held (max_reply_bytes ${this.opts.maxReplyBytes})`,
      );
      this.failed = true;
      this.backlog.length = 0;
      this.socket.destroy();
    }, this.opts.stallTimeoutMs);
    this.stallTimer.unref();
  }

  private disarmStall(): void {
    if (this.stallTimer === null) return;
    clearTimeout(this.stallTimer);
    this.stallTimer = null;
  }

  private invoke(header: RpcCallHeader, args: Buffer, reader: XdrArgsReader): void {
    const slot: ReplySlot = { frame: null };
    this.slots.push(slot);
    let result: Promise<CallOutcome> | CallOutcome;
    try {
      result = this.handler.handleCall(header, args, reader);
    } catch (e) {
      this.complete(slot, header, this.handlerFailed(header, e));
      return;
    }
    if (!isPromiseLike(result)) {
      // A synchronous answer is written before the next call is dispatched, so a full write
      // buffer stops dispatch at once.
      this.complete(slot, header, result);
      return;
    }
    this.running++;
    void Promise.resolve(result)
      .then(
        (outcome) => {
          this.running--;
          this.complete(slot, header, outcome);
        },
        (e: unknown) => {
          this.running--;
          this.complete(slot, header, this.handlerFailed(header, e));
        },
      )
      .finally(() => this.maybeCloseHandler());
  }

  private handlerFailed(header: RpcCallHeader, e: unknown): CallOutcome {
    this.opts.log(
      'error',
      `${this.tag}: xid ${header.xid} prog ${header.prog} vers ${header.vers} proc ${header.proc}: ` +
        `handler failed: ${getErrorMessage(e)}`,
    );
    return { kind: 'system_err' };
  }

  /** Never throws: it runs from promise callbacks. */
  private complete(slot: ReplySlot, header: RpcCallHeader, outcome: unknown): void {
    if (this.socketClosed) return;
    try {
      const problem = checkOutcome(outcome);
      const valid: CallOutcome = problem === null ? (outcome as CallOutcome) : { kind: 'system_err' };
      if (problem !== null) {
        this.opts.log(
          'error',
          `${this.tag}: xid ${header.xid} proc ${header.proc}: bad handler outcome: ${problem}`,
        );
      }
      slot.frame =
        valid.kind === 'success_framed' && fillSuccessFrame(valid.frame, header.xid)
          ? valid.frame
          : frameRecord(encodeReply({ kind: 'accepted', xid: header.xid, outcome: valid }));
      this.readyBytes += slot.frame.length;
      this.idle?.touch();
    } catch (e) {
      this.opts.log('error', `${this.tag}: xid ${header.xid}: cannot encode reply: ${getErrorMessage(e)}`);
      this.fail(e);
      return;
    }
    this.flush();
    this.pump();
  }

  /**
   * Write every ready reply at the head of the queue, one write per record. The bytes move from
   * `readyBytes` to the socket's write buffer; heldReplyBytes() counts both.
   */
  private flush(): void {
    while (this.slots.length > 0 && this.slots[0].frame !== null) {
      const frame = this.slots.shift()!.frame!;
      this.readyBytes -= frame.length;
      if (!this.socket.destroyed && !this.socket.writableEnded) this.socket.write(frame);
    }
  }

  private onEnd(): void {
    this.inputEnded = true;
    if (this.assembler.midRecord) this.opts.log('debug', `${this.tag}: peer ended inside a record`);
    this.maybeEnd();
  }

  private maybeEnd(): void {
    if (!this.inputEnded || this.backlog.length > 0 || this.slots.length > 0) return;
    if (this.socket.destroyed || this.socket.writableEnded) return;
    // Draining, the peer may never close its side: close once our last reply is flushed.
    if (this.draining) this.socket.end(() => this.socket.destroy());
    else this.socket.end();
  }

  private fail(e: unknown): void {
    if (this.failed) return;
    this.failed = true;
    this.backlog.length = 0;
    this.opts.log('warn', `${this.tag}: closing: ${getErrorCode(e) ?? 'error'}: ${getErrorMessage(e)}`);
    this.socket.destroy();
  }

  private onError(e: Error): void {
    const code = getErrorCode(e);
    const level = code !== undefined && PEER_GONE_ERRORS.has(code) ? 'debug' : 'warn';
    this.opts.log(level, `${this.tag}: socket error: ${code ?? ''} ${e.message}`);
  }

  private onClose(): void {
    if (this.socketClosed) return;
    this.socketClosed = true;
    this.disarmStall();
    this.idle?.stop();
    this.backlog.length = 0;
    this.slots.length = 0;
    this.readyBytes = 0;
    this.opts.log('debug', `${this.tag}: closed`);
    this.maybeCloseHandler();
  }

  private maybeCloseHandler(): void {
    if (!this.socketClosed || this.running > 0 || this.handlerCloseStarted) return;
    this.handlerCloseStarted = true;
    const done = (e?: unknown): void => {
      if (e !== undefined) this.opts.log('error', `${this.tag}: handler close failed: ${getErrorMessage(e)}`);
      this.resolveClosed();
    };
    try {
      void Promise.resolve(this.handler.close()).then(
        () => done(),
        (e: unknown) => done(e ?? 'rejected'),
      );
    } catch (e) {
      done(e ?? 'threw');
    }
  }
}

function isPromiseLike<T>(v: T | PromiseLike<T>): v is PromiseLike<T> {
  return typeof (v as { then?: unknown } | null)?.then === 'function';
}

function isU32(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
}

/** Why `o` is not a well-formed CallOutcome, or null if it is. */
function checkOutcome(o: unknown): string | null {
  if (typeof o !== 'object' || o === null) return 'not an object';
  const kind = (o as { kind?: unknown }).kind;
  switch (kind) {
    case 'success': {
      const body = (o as { body?: unknown }).body;
      if (!Buffer.isBuffer(body)) return 'success body is not a Buffer';
      if (body.length % 4 !== 0) return `success body length ${body.length} is not a multiple of 4`;
      return null;
    }
    case 'success_framed': {
      const frame = (o as { frame?: unknown }).frame;
      if (!Buffer.isBuffer(frame)) return 'success_framed frame is not a Buffer';
      if (frame.length < FRAMED_REPLY_PREFIX_SIZE || frame.length % 4 !== 0) {
        return `success_framed frame length ${frame.length} is not ${FRAMED_REPLY_PREFIX_SIZE} + a multiple of 4`;
      }
      return null;
    }
    case 'prog_mismatch': {
      const { low, high } = o as { low?: unknown; high?: unknown };
      if (!isU32(low) || !isU32(high) || low > high) return 'prog_mismatch needs 0 <= low <= high < 2^32';
      return null;
    }
    case 'prog_unavail':
    case 'proc_unavail':
    case 'garbage_args':
    case 'system_err':
      return null;
    default:
      return `unknown kind ${JSON.stringify(kind)}`;
  }
}
