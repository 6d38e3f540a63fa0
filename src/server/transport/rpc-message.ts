/**
 * ONC RPC version 2 messages (RFC 5531 section 9): decode a call header, encode every reply form.
 * Pure functions over buffers; framing lives in record-marking.ts.
 */
import type { Reader } from '@stellar/js-xdr';
import { RpcFieldTooLongError, RpcNotACallError, RpcTrailingBytesError } from './errors';
import { LAST_FRAGMENT_BIT, MAX_FRAGMENT_LENGTH, RECORD_MARK_SIZE } from './record-marking';
import { FRAMED_REPLY_PREFIX_SIZE } from './types';
import type { CallOutcome, RpcCallHeader } from './types';
import { XDR_UNIT, XdrReader, XdrWriter } from './xdr-cursor';

export const RPC_VERSION = 2;

export const enum MsgType {
  CALL = 0,
  REPLY = 1,
}

export const enum ReplyStat {
  MSG_ACCEPTED = 0,
  MSG_DENIED = 1,
}

export const enum AcceptStat {
  SUCCESS = 0,
  PROG_UNAVAIL = 1,
  PROG_MISMATCH = 2,
  PROC_UNAVAIL = 3,
  GARBAGE_ARGS = 4,
  SYSTEM_ERR = 5,
}

export const enum RejectStat {
  RPC_MISMATCH = 0,
  AUTH_ERROR = 1,
}

export const enum AuthFlavor {
  AUTH_NONE = 0,
  AUTH_SYS = 1,
  AUTH_SHORT = 2,
  AUTH_DH = 3,
  RPCSEC_GSS = 6,
}

export const enum AuthStat {
  AUTH_OK = 0,
  AUTH_BADCRED = 1,
  AUTH_REJECTEDCRED = 2,
  AUTH_BADVERF = 3,
  AUTH_REJECTEDVERF = 4,
  AUTH_TOOWEAK = 5,
}

/** opaque_auth body bound. */
export const MAX_AUTH_BYTES = 400;
/** authsys_parms bounds. */
export const MAX_MACHINE_NAME = 255;
export const MAX_AUTH_SYS_GIDS = 16;

/** xid, msg_type, reply_stat, verf flavor + length (AUTH_NONE, empty), accept_stat. */
export const ACCEPTED_REPLY_HEADER_SIZE = 6 * XDR_UNIT;
/** PROG_MISMATCH adds mismatch_info (low, high). */
export const MISMATCH_INFO_SIZE = 2 * XDR_UNIT;
/** xid, msg_type, reply_stat, reject_stat. */
export const DENIED_REPLY_HEADER_SIZE = 4 * XDR_UNIT;

export type ParsedCall =
  /** A call the handler should see. `args` is a view into the record; `reader` is at its first byte. */
  | { kind: 'call'; header: RpcCallHeader; args: Buffer; reader: Reader }
  /** rpcvers is not 2: answer MSG_DENIED / RPC_MISMATCH. */
  | { kind: 'rpc_mismatch'; xid: number; rpcvers: number }
  /** Credential refused: answer MSG_DENIED / AUTH_ERROR with `stat`. */
  | { kind: 'auth_error'; xid: number; stat: AuthStat; credFlavor: number };

/**
 * Decode one call record. A record that is not a call, or whose header cannot be decoded, throws an
 * RpcError (the connection is then unusable); a call that can be answered with a denial is returned
 * as such.
 */
export function parseCall(record: Buffer): ParsedCall {
  const r = new XdrReader(record);
  const xid = r.u32('xid');
  const msgType = r.u32('msg_type');
  if (msgType !== MsgType.CALL) throw new RpcNotACallError(msgType);
  const rpcvers = r.u32('rpcvers');
  // The rest of the header is only defined for version 2.
  if (rpcvers !== RPC_VERSION) return { kind: 'rpc_mismatch', xid, rpcvers };
  const prog = r.u32('prog');
  const vers = r.u32('vers');
  const proc = r.u32('proc');
  const credFlavor = r.u32('cred.flavor');
  const cred = r.opaque('cred.body', MAX_AUTH_BYTES);
  const verfFlavor = r.u32('verf.flavor');
  r.opaque('verf.body', MAX_AUTH_BYTES);

  if (credFlavor === AuthFlavor.AUTH_SYS) {
    try {
      parseAuthSysCred(cred);
    } catch {
      return { kind: 'auth_error', xid, stat: AuthStat.AUTH_BADCRED, credFlavor };
    }
  } else if (credFlavor !== AuthFlavor.AUTH_NONE) {
    return { kind: 'auth_error', xid, stat: AuthStat.AUTH_REJECTEDCRED, credFlavor };
  }
  return {
    kind: 'call',
    header: { xid, rpcvers, prog, vers, proc, credFlavor, cred, verfFlavor },
    args: r.rest(),
    reader: r.xdr,
  };
}

/** authsys_parms (RFC 5531 appendix A). */
export interface AuthSysParams {
  stamp: number;
  machineName: string;
  uid: number;
  gid: number;
  gids: number[];
}

/** Decode an AUTH_SYS credential body; it must be exactly one authsys_parms. Throws RpcError. */
export function parseAuthSysCred(body: Buffer): AuthSysParams {
  const r = new XdrReader(body);
  const stamp = r.u32('authsys.stamp');
  const machineName = r.opaque('authsys.machinename', MAX_MACHINE_NAME).toString('latin1');
  const uid = r.u32('authsys.uid');
  const gid = r.u32('authsys.gid');
  const count = r.u32('authsys.gids');
  if (count > MAX_AUTH_SYS_GIDS) throw new RpcFieldTooLongError('authsys.gids', count, MAX_AUTH_SYS_GIDS);
  const gids: number[] = [];
  for (let i = 0; i < count; i++) gids.push(r.u32('authsys.gids'));
  if (r.remaining !== 0) throw new RpcTrailingBytesError('authsys_parms', r.remaining);
  return { stamp, machineName, uid, gid, gids };
}

/** Reply to send, before record marking. */
export type RpcReply =
  | { kind: 'accepted'; xid: number; outcome: CallOutcome }
  | { kind: 'rpc_mismatch'; xid: number; low: number; high: number }
  | { kind: 'auth_error'; xid: number; stat: AuthStat };

/**
 * Encode a reply as its pieces: a header and, for SUCCESS, the handler's body (not copied).
 * Accepted replies carry an AUTH_NONE verifier.
 */
export function encodeReply(reply: RpcReply): Buffer[] {
  switch (reply.kind) {
    case 'accepted':
      return encodeAccepted(reply.xid, reply.outcome);
    case 'rpc_mismatch':
      return [
        deniedHeader(reply.xid, RejectStat.RPC_MISMATCH, MISMATCH_INFO_SIZE)
          .u32(reply.low)
          .u32(reply.high)
          .finish(),
      ];
    case 'auth_error':
      return [deniedHeader(reply.xid, RejectStat.AUTH_ERROR, XDR_UNIT).u32(reply.stat).finish()];
  }
}

/**
 * Fills the record mark and SUCCESS reply header in front of a `success_framed` frame, in place; the frame is
 * then the whole record. False if the frame is too short, not whole XDR units, or too long for one fragment.
 */
export function fillSuccessFrame(frame: Buffer, xid: number): boolean {
  const len = frame.length - RECORD_MARK_SIZE;
  if (frame.length < FRAMED_REPLY_PREFIX_SIZE || len % XDR_UNIT !== 0 || len > MAX_FRAGMENT_LENGTH) return false;
  frame.writeUInt32BE((LAST_FRAGMENT_BIT | len) >>> 0, 0);
  frame.writeUInt32BE(xid >>> 0, 4);
  frame.writeUInt32BE(MsgType.REPLY, 8);
  frame.writeUInt32BE(ReplyStat.MSG_ACCEPTED, 12);
  frame.writeUInt32BE(AuthFlavor.AUTH_NONE, 16);
  frame.writeUInt32BE(0, 20);
  frame.writeUInt32BE(AcceptStat.SUCCESS, 24);
  return true;
}

function encodeAccepted(xid: number, outcome: CallOutcome): Buffer[] {
  switch (outcome.kind) {
    case 'success':
      return [acceptedHeader(xid, AcceptStat.SUCCESS, 0).finish(), outcome.body];
    case 'success_framed':
      // Written by the connection as it is (fillSuccessFrame); as pieces: the result after the prefix.
      return [acceptedHeader(xid, AcceptStat.SUCCESS, 0).finish(), outcome.frame.subarray(FRAMED_REPLY_PREFIX_SIZE)];
    case 'prog_unavail':
      return [acceptedHeader(xid, AcceptStat.PROG_UNAVAIL, 0).finish()];
    case 'prog_mismatch':
      return [
        acceptedHeader(xid, AcceptStat.PROG_MISMATCH, MISMATCH_INFO_SIZE)
          .u32(outcome.low)
          .u32(outcome.high)
          .finish(),
      ];
    case 'proc_unavail':
      return [acceptedHeader(xid, AcceptStat.PROC_UNAVAIL, 0).finish()];
    case 'garbage_args':
      return [acceptedHeader(xid, AcceptStat.GARBAGE_ARGS, 0).finish()];
    case 'system_err':
      return [acceptedHeader(xid, AcceptStat.SYSTEM_ERR, 0).finish()];
  }
}

function acceptedHeader(xid: number, stat: AcceptStat, extra: number): XdrWriter {
  return new XdrWriter(ACCEPTED_REPLY_HEADER_SIZE + extra)
    .u32(xid)
    .u32(MsgType.REPLY)
    .u32(ReplyStat.MSG_ACCEPTED)
    .u32(AuthFlavor.AUTH_NONE)
    .u32(0)
    .u32(stat);
}

function deniedHeader(xid: number, stat: RejectStat, extra: number): XdrWriter {
  return new XdrWriter(DENIED_REPLY_HEADER_SIZE + extra)
    .u32(xid)
    .u32(MsgType.REPLY)
    .u32(ReplyStat.MSG_DENIED)
    .u32(stat);
}
