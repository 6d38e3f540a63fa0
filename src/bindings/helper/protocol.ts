/**
 * The channel between a worker and the helper process of one module: a
 * stream socket (a socketpair made by child_process, the helper's fd 3)
 * carrying length-prefixed frames. Every field is big-endian.
 *
 *   call  (worker -> helper): u32 length | u32 id | u32 call | u32 app | XDR arguments
 *   reply (helper -> worker): u32 length | u32 id | u32 status | u32 0  | payload
 *
 * `length` counts the bytes after itself. `call` is the index of the call in
 * HELPER_CALLS (both ends run the same build); `app` is BackendContext.appId.
 * The arguments and results are the rpc/pkcs11.x types the daemon already
 * speaks to its clients, encoded by the same generated codecs. Replies carry
 * the id of their call and may come in any order: several calls are in
 * flight at once. Status:
 *   STATUS_VALUE  the call returned: payload is the XDR result;
 *   STATUS_RV     the call threw a PKCS#11 error: payload is its CK_RV (XDR hyper);
 *   STATUS_FAILED anything else: payload is a UTF-8 message (never argument bytes).
 * Id 0 is the helper's own: STATUS_VALUE once the module is loaded and
 * initialized (ready), STATUS_FAILED with the reason when it cannot be.
 */
import { PROCEDURES } from '../../generated/pkcs11_rpc';
import type { CallName, ProcedureDef } from '../../generated/pkcs11_rpc';
import type { LogFormat, LogLevel } from '../../server/log';
import type { PrivilegeSettings } from '../../server/supervision/privilege';
import type { BackendLimits } from '../backend';

export const HEADER_SIZE = 16;
/** Largest frame either end accepts: the daemon's largest record plus room; more is a protocol error. */
export const MAX_FRAME = 64 * 1024 * 1024;

export const STATUS_VALUE = 0;
export const STATUS_RV = 1;
export const STATUS_FAILED = 2;

/** Id of the helper's own frames (ready, load failure). */
export const CONTROL_ID = 0;

/** One procedure per call name (the highest version that has it), in a fixed order: the `call` field indexes it. */
export const HELPER_CALLS: readonly ProcedureDef[] = (() => {
  const byName = new Map<CallName, ProcedureDef>();
  for (const p of PROCEDURES) {
    const seen = byName.get(p.name);
    if (seen === undefined || p.vers > seen.vers) byName.set(p.name, p);
  }
  return Object.freeze([...byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)));
})();

export const HELPER_CALL_INDEX: ReadonlyMap<CallName, number> = new Map(HELPER_CALLS.map((p, i) => [p.name, i]));

/** Fills the 16-byte header in front of a frame whose payload was encoded after HEADER_SIZE reserved bytes. */
export function writeHeader(frame: Buffer, id: number, word2: number, word3: number): Buffer {
  frame.writeUInt32BE(frame.length - 4, 0);
  frame.writeUInt32BE(id, 4);
  frame.writeUInt32BE(word2, 8);
  frame.writeUInt32BE(word3 >>> 0, 12);
  return frame;
}

/** A frame with a raw payload (not XDR-encoded in place). */
export function frameOf(id: number, word2: number, word3: number, payload: Buffer): Buffer {
  const f = Buffer.allocUnsafe(HEADER_SIZE + payload.length);
  payload.copy(f, HEADER_SIZE);
  return writeHeader(f, id, word2, word3);
}

export class FrameError extends Error {}

/**
 * Cuts a byte stream into frames. `push` calls `onFrame` for every complete
 * frame, with the payload as a view of the received bytes (the codecs copy
 * what they decode). Throws FrameError on a frame longer than MAX_FRAME or
 * shorter than its header.
 */
export class FrameReader {
  /** Bytes received and not yet consumed; joined only once a whole frame is there (no copy per chunk). */
  private chunks: Buffer[] = [];
  private size = 0;

  constructor(private readonly onFrame: (id: number, word2: number, word3: number, payload: Buffer) => void) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.size >= 4) {
      const head = this.chunks[0].length >= 4 ? this.chunks[0] : this.joined();
      const len = head.readUInt32BE(0);
      if (len < HEADER_SIZE - 4 || len > MAX_FRAME) throw new FrameError(`bad frame length ${len}`);
      if (this.size < 4 + len) return;
      const buf = this.chunks.length === 1 ? this.chunks[0] : this.joined();
      // A socket's chunks are never reused by Node: the rest can stay a view.
      const rest = buf.subarray(4 + len);
      this.chunks = rest.length > 0 ? [rest] : [];
      this.size = rest.length;
      this.onFrame(buf.readUInt32BE(4), buf.readUInt32BE(8), buf.readUInt32BE(12), buf.subarray(HEADER_SIZE, 4 + len));
    }
  }

  private joined(): Buffer {
    const b = Buffer.concat(this.chunks, this.size);
    this.chunks = [b];
    return b;
  }
}

/** Environment variable carrying HelperStartup (JSON) to the helper process. */
export const HELPER_ENV = 'PKCS11PROXYD_HELPER';

/** What a helper process is started with. Plain data, no secrets. */
export interface HelperStartup {
  readonly alias: string;
  readonly path: string;
  readonly limits: BackendLimits;
  /** The worker's privilege settings: the first helper starts before the worker drops and drops itself. */
  readonly privilege: PrivilegeSettings | null;
  readonly logLevel: LogLevel;
  readonly logFormat: LogFormat;
  readonly workerIndex: number | null;
  /** The worker's pid: the helper kills itself once its parent is another process (the worker died). */
  readonly parentPid: number;
  readonly plainParameterMechanisms: readonly number[];
}
