import { RpcError } from '../../src/server/transport/errors';
import { Reader } from '@stellar/js-xdr';
import { encodeReply, parseAuthSysCred, parseCall, type ParsedCall } from '../../src/server/transport/rpc-message';
import { authSysBody, encodeCall, u32, xdrOpaque } from './helpers/raw-rpc-client';

const PROG = 0x20000001;

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(RpcError);
    return (e as RpcError).code;
  }
  return undefined;
}

describe('parseCall', () => {
  it('decodes an AUTH_NONE call and returns the arguments as the rest of the record', () => {
    const args = u32(0xdeadbeef, 7);
    // xid, CALL, rpcvers 2, prog, vers, proc, cred AUTH_NONE len 0, verf AUTH_NONE len 0, args
    const record = Buffer.concat([u32(0x01020304, 0, 2, PROG, 1, 9, 0, 0, 0, 0), args]);
    const parsed = parseCall(record);
    expect(parsed).toEqual<ParsedCall>({
      kind: 'call',
      header: {
        xid: 0x01020304,
        rpcvers: 2,
        prog: PROG,
        vers: 1,
        proc: 9,
        credFlavor: 0,
        cred: Buffer.alloc(0),
        verfFlavor: 0,
      },
      args,
      reader: expect.any(Reader),
    });
    // The codecs go on from the header's reader: it stands at the first argument byte.
    if (parsed.kind === 'call') expect(parsed.reader.offset).toBe(record.length - args.length);
  });

  it('decodes an AUTH_SYS call with its credential body and a padded verifier', () => {
    const cred = authSysBody({ stamp: 5, machine: 'abc', uid: 1000, gid: 100, gids: [4, 24] });
    const record = Buffer.concat([
      u32(77, 0, 2, PROG, 1, 1, 1),
      xdrOpaque(cred),
      u32(0),
      xdrOpaque(Buffer.from([9, 9, 9])),
      u32(42),
    ]);
    const parsed = parseCall(record);
    expect(parsed.kind).toBe('call');
    if (parsed.kind !== 'call') return;
    expect(parsed.header.credFlavor).toBe(1);
    expect(parsed.header.cred).toEqual(cred);
    expect(parsed.args).toEqual(u32(42));
    expect(parseAuthSysCred(parsed.header.cred)).toEqual({
      stamp: 5,
      machineName: 'abc',
      uid: 1000,
      gid: 100,
      gids: [4, 24],
    });
  });

  it('answers rpcvers 3 with rpc_mismatch without reading further', () => {
    expect(parseCall(u32(5, 0, 3))).toEqual({ kind: 'rpc_mismatch', xid: 5, rpcvers: 3 });
  });

  it.each([
    [2, 'AUTH_SHORT'],
    [3, 'AUTH_DH'],
    [6, 'RPCSEC_GSS'],
    [0x12345, 'unknown'],
  ])('refuses credential flavor %d (%s) with AUTH_REJECTEDCRED', (flavor) => {
    const record = encodeCall({
      xid: 9,
      prog: PROG,
      vers: 1,
      proc: 0,
      credFlavor: flavor,
      cred: Buffer.alloc(8),
    });
    expect(parseCall(record)).toEqual({ kind: 'auth_error', xid: 9, stat: 2, credFlavor: flavor });
  });

  it.each([
    ['empty body', Buffer.alloc(0)],
    ['truncated', authSysBody({ uid: 1, gid: 1 }).subarray(0, 12)],
    ['trailing bytes', Buffer.concat([authSysBody({ uid: 1, gid: 1 }), u32(0)])],
    ['17 gids', authSysBody({ uid: 1, gid: 1, gids: Array.from({ length: 17 }, (_, i) => i) })],
    ['machine name of 256 bytes', authSysBody({ uid: 1, gid: 1, machine: 'm'.repeat(256) })],
  ])('refuses a malformed AUTH_SYS credential (%s) with AUTH_BADCRED', (_name, cred) => {
    const record = encodeCall({ xid: 10, prog: PROG, vers: 1, proc: 0, credFlavor: 1, cred });
    expect(parseCall(record)).toEqual({ kind: 'auth_error', xid: 10, stat: 1, credFlavor: 1 });
  });

  it('throws RPC_ERR_NOT_A_CALL for msg_type REPLY', () => {
    expect(codeOf(() => parseCall(u32(1, 1, 0, 0, 0, 0)))).toBe('RPC_ERR_NOT_A_CALL');
  });

  it('throws RPC_ERR_TRUNCATED for a header cut at every position', () => {
    const full = encodeCall({
      xid: 1,
      prog: PROG,
      vers: 1,
      proc: 0,
      cred: Buffer.alloc(0),
      verf: Buffer.from([1, 2, 3, 4, 5]),
    });
    // The header ends where the (empty) args begin: the whole message.
    for (let cut = 0; cut < full.length; cut++) {
      expect({ cut, code: codeOf(() => parseCall(full.subarray(0, cut))) }).toEqual({
        cut,
        code: 'RPC_ERR_TRUNCATED',
      });
    }
    expect(parseCall(full).kind).toBe('call');
  });

  it('throws RPC_ERR_FIELD_TOO_LONG for a 401-byte credential or verifier', () => {
    const longCred = Buffer.concat([u32(1, 0, 2, PROG, 1, 0, 0), xdrOpaque(Buffer.alloc(401)), u32(0, 0)]);
    expect(codeOf(() => parseCall(longCred))).toBe('RPC_ERR_FIELD_TOO_LONG');
    const longVerf = Buffer.concat([u32(1, 0, 2, PROG, 1, 0, 0, 0, 0), xdrOpaque(Buffer.alloc(401))]);
    expect(codeOf(() => parseCall(longVerf))).toBe('RPC_ERR_FIELD_TOO_LONG');
    const maxCred = Buffer.concat([u32(1, 0, 2, PROG, 1, 0, 0), xdrOpaque(Buffer.alloc(400)), u32(0, 0)]);
    expect(parseCall(maxCred).kind).toBe('call');
  });

  it('rejects a credential length near 2^32 by its bound, before any read', () => {
    expect(codeOf(() => parseCall(u32(1, 0, 2, PROG, 1, 0, 0, 0xfffffffd)))).toBe('RPC_ERR_FIELD_TOO_LONG');
  });
});

describe('encodeReply', () => {
  const encode = (...args: Parameters<typeof encodeReply>): Buffer => Buffer.concat(encodeReply(...args));
  // Accepted reply: xid, REPLY(1), MSG_ACCEPTED(0), verf AUTH_NONE(0) len 0, accept_stat.
  it.each([
    ['prog_unavail', { kind: 'prog_unavail' } as const, u32(7, 1, 0, 0, 0, 1)],
    ['prog_mismatch', { kind: 'prog_mismatch', low: 1, high: 3 } as const, u32(7, 1, 0, 0, 0, 2, 1, 3)],
    ['proc_unavail', { kind: 'proc_unavail' } as const, u32(7, 1, 0, 0, 0, 3)],
    ['garbage_args', { kind: 'garbage_args' } as const, u32(7, 1, 0, 0, 0, 4)],
    ['system_err', { kind: 'system_err' } as const, u32(7, 1, 0, 0, 0, 5)],
    ['success', { kind: 'success', body: u32(0xcafe, 1) } as const, u32(7, 1, 0, 0, 0, 0, 0xcafe, 1)],
  ])('encodes an accepted %s reply', (_name, outcome, expected) => {
    expect(encode({ kind: 'accepted', xid: 7, outcome })).toEqual(expected);
  });

  it('does not copy a success body', () => {
    const body = u32(1, 2);
    const pieces = encodeReply({ kind: 'accepted', xid: 1, outcome: { kind: 'success', body } });
    expect(pieces[pieces.length - 1]).toBe(body);
  });

  it('encodes MSG_DENIED / RPC_MISMATCH with the supported range', () => {
    // xid, REPLY, MSG_DENIED(1), RPC_MISMATCH(0), low, high
    expect(encode({ kind: 'rpc_mismatch', xid: 0xffffffff, low: 2, high: 2 })).toEqual(
      u32(0xffffffff, 1, 1, 0, 2, 2),
    );
  });

  it('encodes MSG_DENIED / AUTH_ERROR with its auth_stat', () => {
    // xid, REPLY, MSG_DENIED(1), AUTH_ERROR(1), AUTH_REJECTEDCRED(2)
    expect(encode({ kind: 'auth_error', xid: 3, stat: 2 })).toEqual(u32(3, 1, 1, 1, 2));
  });
});
