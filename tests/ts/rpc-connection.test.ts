/** RPC connection behaviour over real unix sockets, with the fake echo program. */
import { promises as fs } from 'fs';
import os from 'os';
import path from 'path';
import { RpcServer } from '../../src/server/transport/rpc-server';
import type { RpcLogLevel, RpcServerOptions } from '../../src/server/transport/types';
import {
  ACCEPT,
  AUTH_STAT,
  authSysBody,
  encodeCall,
  encodeCallRecord,
  RawRpcClient,
  rawCall,
  recordMark,
  REJECT,
  u32,
  xdrOpaque,
  type ParsedReply,
} from './helpers/raw-rpc-client';
import { ECHO_PROG, ECHO_VERS, EchoProgram, PROC } from './helpers/rpc-echo-program';

interface Fixture {
  server: RpcServer;
  program: EchoProgram;
  logs: Array<{ level: RpcLogLevel; msg: string }>;
  connect(): Promise<RawRpcClient>;
}

let dir: string;
const servers: RpcServer[] = [];
const programs: EchoProgram[] = [];
const clients: RawRpcClient[] = [];

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rpc-conn-'));
});

afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  for (const p of programs.splice(0)) p.releaseAll();
  await Promise.all(servers.splice(0).map((s) => s.close()));
  await fs.rm(dir, { recursive: true, force: true });
});

async function start(opts: Partial<RpcServerOptions> = {}): Promise<Fixture> {
  const program = new EchoProgram();
  programs.push(program);
  const logs: Fixture['logs'] = [];
  const server = new RpcServer({
    createHandler: program.createHandler,
    log: (level, msg) => logs.push({ level, msg }),
    ...opts,
  });
  servers.push(server);
  const sockPath = path.join(dir, `s${servers.length}.sock`);
  await server.listen([{ type: 'local', path: sockPath }]);
  return {
    server,
    program,
    logs,
    connect: async () => {
      const c = await RawRpcClient.connect({ path: sockPath });
      clients.push(c);
      return c;
    },
  };
}

const echoArgs = (s: string | Buffer): Buffer => xdrOpaque(s);

function expectSuccess(reply: ParsedReply, xid: number, body: Buffer = Buffer.alloc(0)): void {
  expect(reply).toEqual({ xid, stat: 'accepted', verfFlavor: 0, verf: Buffer.alloc(0), acceptStat: 0, body });
}

function expectAccepted(reply: ParsedReply, xid: number, acceptStat: number): void {
  expect(reply).toMatchObject({ xid, stat: 'accepted', verfFlavor: 0, acceptStat });
}

/** One full round trip on a fresh connection: lets the event loop run everything already queued. */
async function roundTrip(f: Fixture): Promise<void> {
  const c = await f.connect();
  expectSuccess(await rawCall(c, 0xabc, ECHO_PROG, ECHO_VERS, PROC.NULL), 0xabc);
  c.destroy();
}

describe('calls', () => {
  it('answers the null procedure with an empty SUCCESS and an AUTH_NONE verifier', async () => {
    const f = await start();
    const c = await f.connect();
    expectSuccess(await rawCall(c, 1, ECHO_PROG, ECHO_VERS, PROC.NULL), 1);
  });

  it('echoes arguments, including across several fragments', async () => {
    const f = await start();
    const c = await f.connect();
    expectSuccess(
      await rawCall(c, 2, ECHO_PROG, ECHO_VERS, PROC.ECHO, echoArgs('hello')),
      2,
      echoArgs('hello'),
    );
    const msg = encodeCall({
      xid: 3,
      prog: ECHO_PROG,
      vers: ECHO_VERS,
      proc: PROC.ECHO,
      args: echoArgs('fragmented'),
    });
    c.write(recordMark(msg, [5, 0, 30, msg.length - 35]));
    expectSuccess(await c.nextReply(), 3, echoArgs('fragmented'));
  });

  it('answers several records sent in one chunk, in order', async () => {
    const f = await start();
    const c = await f.connect();
    const chunk = Buffer.concat(
      [10, 11, 12, 13, 14].map((xid) =>
        encodeCallRecord({
          xid,
          prog: ECHO_PROG,
          vers: ECHO_VERS,
          proc: PROC.ECHO,
          args: echoArgs(`m${xid}`),
        }),
      ),
    );
    c.write(chunk);
    for (const xid of [10, 11, 12, 13, 14]) expectSuccess(await c.nextReply(), xid, echoArgs(`m${xid}`));
  });

  it('keeps xids verbatim, including 0 and 0xffffffff', async () => {
    const f = await start();
    const c = await f.connect();
    expectSuccess(await rawCall(c, 0, ECHO_PROG, ECHO_VERS, PROC.NULL), 0);
    expectSuccess(await rawCall(c, 0xffffffff, ECHO_PROG, ECHO_VERS, PROC.NULL), 0xffffffff);
  });

  it('answers PROG_UNAVAIL, PROG_MISMATCH with the range, PROC_UNAVAIL and GARBAGE_ARGS', async () => {
    const f = await start();
    const c = await f.connect();
    expectAccepted(await rawCall(c, 20, 0x20000099, 1, 0), 20, ACCEPT.PROG_UNAVAIL);
    expect(await rawCall(c, 21, ECHO_PROG, 7, 0)).toMatchObject({
      xid: 21,
      stat: 'accepted',
      acceptStat: ACCEPT.PROG_MISMATCH,
      low: 1,
      high: 1,
    });
    expectAccepted(await rawCall(c, 22, ECHO_PROG, ECHO_VERS, 99), 22, ACCEPT.PROC_UNAVAIL);
    // opaque length 8 but only 4 bytes follow
    expectAccepted(await rawCall(c, 23, ECHO_PROG, ECHO_VERS, PROC.ECHO, u32(8, 0)), 23, ACCEPT.GARBAGE_ARGS);
    expectSuccess(await rawCall(c, 24, ECHO_PROG, ECHO_VERS, PROC.NULL), 24);
  });

  it('answers rpcvers 3 with MSG_DENIED / RPC_MISMATCH 2..2 and stays usable', async () => {
    const f = await start();
    const c = await f.connect();
    c.sendCall({ xid: 30, rpcvers: 3, prog: ECHO_PROG, vers: ECHO_VERS, proc: PROC.NULL });
    expect(await c.nextReply()).toEqual({
      xid: 30,
      stat: 'denied',
      rejectStat: REJECT.RPC_MISMATCH,
      low: 2,
      high: 2,
    });
    expectSuccess(await rawCall(c, 31, ECHO_PROG, ECHO_VERS, PROC.NULL), 31);
    expect(f.program.calls.map((x) => x.header.xid)).toEqual([31]);
  });

  it('passes AUTH_SYS calls to the handler with their credential', async () => {
    const f = await start();
    const c = await f.connect();
    const cred = authSysBody({ stamp: 1, machine: 'client', uid: 1000, gid: 1000, gids: [10] });
    c.sendCall({ xid: 40, prog: ECHO_PROG, vers: ECHO_VERS, proc: PROC.NULL, credFlavor: 1, cred });
    expectSuccess(await c.nextReply(), 40);
    expect(f.program.calls[0].header).toMatchObject({ xid: 40, credFlavor: 1, cred, verfFlavor: 0 });
  });

  it('refuses an unknown credential flavor with AUTH_ERROR and never calls the handler', async () => {
    const f = await start();
    const c = await f.connect();
    c.sendCall({
      xid: 41,
      prog: ECHO_PROG,
      vers: ECHO_VERS,
      proc: PROC.NULL,
      credFlavor: 3,
      cred: Buffer.alloc(12),
    });
    expect(await c.nextReply()).toEqual({
      xid: 41,
      stat: 'denied',
      rejectStat: REJECT.AUTH_ERROR,
      authStat: AUTH_STAT.AUTH_REJECTEDCRED,
    });
    c.sendCall({
      xid: 42,
      prog: ECHO_PROG,
      vers: ECHO_VERS,
      proc: PROC.NULL,
      credFlavor: 1,
      cred: Buffer.alloc(3),
    });
    expect(await c.nextReply()).toMatchObject({
      xid: 42,
      rejectStat: REJECT.AUTH_ERROR,
      authStat: AUTH_STAT.AUTH_BADCRED,
    });
    expect(f.program.calls).toEqual([]);
  });

  it.each([
    ['throws', PROC.THROW],
    ['rejects', PROC.REJECT],
    ['returns a malformed outcome', PROC.BAD_OUTCOME],
  ])('answers SYSTEM_ERR when the handler %s, and the connection stays usable', async (_what, proc) => {
    const f = await start();
    const c = await f.connect();
    expectAccepted(await rawCall(c, 50, ECHO_PROG, ECHO_VERS, proc), 50, ACCEPT.SYSTEM_ERR);
    expectSuccess(await rawCall(c, 51, ECHO_PROG, ECHO_VERS, PROC.ECHO, echoArgs('ok')), 51, echoArgs('ok'));
    expect(f.logs.some((l) => l.level === 'error')).toBe(true);
  });
});

describe('pipelining and concurrency', () => {
  it('writes replies in request order when a later call finishes first', async () => {
    const f = await start();
    const c = await f.connect();
    c.write(
      Buffer.concat([
        encodeCallRecord({
          xid: 1,
          prog: ECHO_PROG,
          vers: ECHO_VERS,
          proc: PROC.SLOW,
          args: echoArgs('slow'),
        }),
        encodeCallRecord({
          xid: 2,
          prog: ECHO_PROG,
          vers: ECHO_VERS,
          proc: PROC.ECHO,
          args: echoArgs('fast'),
        }),
        encodeCallRecord({ xid: 3, prog: 1, vers: 1, proc: 0 }),
      ]),
    );
    const slow = await f.program.slowCalls.next();
    expect((await f.program.finished.next()).xid).toBe(2);
    await roundTrip(f);
    expect(c.records).toEqual([]);
    slow.release();
    expectSuccess(await c.nextReply(), 1, echoArgs('slow'));
    expectSuccess(await c.nextReply(), 2, echoArgs('fast'));
    expectAccepted(await c.nextReply(), 3, ACCEPT.PROG_UNAVAIL);
  });

  it('does not let a slow call on one connection block another connection', async () => {
    const f = await start();
    const a = await f.connect();
    const b = await f.connect();
    a.sendCall({ xid: 1, prog: ECHO_PROG, vers: ECHO_VERS, proc: PROC.SLOW, args: echoArgs('a') });
    const slow = await f.program.slowCalls.next();
    expectSuccess(await rawCall(b, 2, ECHO_PROG, ECHO_VERS, PROC.ECHO, echoArgs('b')), 2, echoArgs('b'));
    expect(a.records).toEqual([]);
    slow.release();
    expectSuccess(await a.nextReply(), 1, echoArgs('a'));
  });

  it('stops dispatching above maxPendingCalls and resumes as replies go out', async () => {
    const f = await start({ maxPendingCalls: 4 });
    const c = await f.connect();
    const xids = Array.from({ length: 10 }, (_, i) => i + 1);
    c.write(
      Buffer.concat(
        xids.map((xid) =>
          encodeCallRecord({
            xid,
            prog: ECHO_PROG,
            vers: ECHO_VERS,
            proc: PROC.SLOW,
            args: echoArgs(`s${xid}`),
          }),
        ),
      ),
    );
    const started = [];
    for (let i = 0; i < 4; i++) started.push(await f.program.slowCalls.next());
    await roundTrip(f);
    expect(f.program.slowRunning).toBe(4);
    expect(f.program.slowCalls.size).toBe(0);
    // Release in reverse: none can be written before call 1, so no slot frees until then.
    for (const s of started.reverse()) s.release();
    for (let i = 4; i < 10; i++) (await f.program.slowCalls.next()).release();
    for (const xid of xids) expectSuccess(await c.nextReply(), xid, echoArgs(`s${xid}`));
    expect(f.program.maxSlowRunning).toBe(4);
  });

  it('stops dispatching while the socket write buffer is full', async () => {
    const f = await start();
    const c = await f.connect();
    c.socket.pause();
    const size = 8 * 1024 * 1024; // far above unix socket buffers, so the first reply cannot drain
    const xids = [1, 2, 3, 4, 5];
    c.write(
      Buffer.concat(
        xids.map((xid) =>
          encodeCallRecord({ xid, prog: ECHO_PROG, vers: ECHO_VERS, proc: PROC.BIG, args: u32(size) }),
        ),
      ),
    );
    expect((await f.program.finished.next()).xid).toBe(1);
    await roundTrip(f);
    expect(f.program.bigCount).toBe(1);
    c.socket.resume();
    for (const xid of xids) {
      const reply = await c.nextReply();
      expect(reply).toMatchObject({ xid, acceptStat: ACCEPT.SUCCESS });
      expect(reply.stat === 'accepted' && reply.acceptStat === 0 && reply.body.length).toBe(size);
    }
    expect(f.program.bigCount).toBe(5);
  });
});

describe('framing and protocol errors', () => {
  it('closes on an HTTP request (garbage) and keeps serving new connections', async () => {
    const f = await start();
    const c = await f.connect();
    c.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    await c.closed;
    expect(f.logs.some((l) => l.level === 'warn' && l.msg.includes('RPC_ERR_RECORD_TOO_LARGE'))).toBe(true);
    await roundTrip(f);
  });

  it('closes on a record whose header cannot be decoded', async () => {
    const f = await start();
    const c = await f.connect();
    c.write(recordMark(u32(1, 0, 2, ECHO_PROG, 1))); // ends inside the header
    await c.closed;
    expect(f.logs.some((l) => l.msg.includes('RPC_ERR_TRUNCATED'))).toBe(true);
    await roundTrip(f);
  });

  it('closes on fragment length 0x7fffffff without buffering it, and keeps serving', async () => {
    const f = await start();
    const c = await f.connect();
    c.write(Buffer.concat([u32(0x7fffffff), Buffer.alloc(64)]));
    await c.closed;
    await roundTrip(f);
    await f.program.closedConns.next();
    await f.program.closedConns.next();
  });

  it('closes when msg_type is REPLY', async () => {
    const f = await start();
    const c = await f.connect();
    c.sendCall({ xid: 1, msgType: 1, prog: ECHO_PROG, vers: ECHO_VERS, proc: PROC.NULL });
    await c.closed;
    expect(c.records).toEqual([]);
    expect(f.logs.some((l) => l.msg.includes('RPC_ERR_NOT_A_CALL'))).toBe(true);
  });

  it('closes on a credential longer than 400 bytes', async () => {
    const f = await start();
    const c = await f.connect();
    c.sendCall({
      xid: 1,
      prog: ECHO_PROG,
      vers: ECHO_VERS,
      proc: PROC.NULL,
      credFlavor: 1,
      cred: Buffer.alloc(404),
    });
    await c.closed;
    expect(c.records).toEqual([]);
  });

  describe('maxRecordSize 1024', () => {
    // Echo call record: 40-byte header (AUTH_NONE cred and verf) + 4-byte length + data.
    const callWithData = (xid: number, n: number): Buffer =>
      encodeCall({
        xid,
        prog: ECHO_PROG,
        vers: ECHO_VERS,
        proc: PROC.ECHO,
        args: xdrOpaque(Buffer.alloc(n, 0x61)),
      });

    it('accepts records of exactly and just below the limit', async () => {
      const f = await start({ maxRecordSize: 1024 });
      const c = await f.connect();
      const exact = callWithData(1, 980);
      expect(exact.length).toBe(1024);
      c.write(recordMark(exact, [500, 524]));
      expectSuccess(await c.nextReply(), 1, xdrOpaque(Buffer.alloc(980, 0x61)));
      const below = callWithData(2, 976);
      expect(below.length).toBe(1020);
      c.write(recordMark(below));
      expectSuccess(await c.nextReply(), 2, xdrOpaque(Buffer.alloc(976, 0x61)));
    });

    it('closes on a record one byte above the limit, split in fragments', async () => {
      const f = await start({ maxRecordSize: 1024 });
      const c = await f.connect();
      const over = Buffer.concat([callWithData(1, 980), Buffer.from([0])]);
      expect(over.length).toBe(1025);
      c.write(recordMark(over, [1000, 25]));
      await c.closed;
      expect(c.records).toEqual([]);
      expect(f.program.calls).toEqual([]);
      await roundTrip(f);
    });
  });

  it('survives random garbage on many connections', async () => {
    const f = await start({ maxRecordSize: 4096 });
    let seed = 12345;
    const rand = (): number => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed >>> 16;
    };
    for (let i = 0; i < 40; i++) {
      const c = await f.connect();
      const n = 1 + (rand() % 200);
      const junk = Buffer.from(Array.from({ length: n }, () => rand() & 0xff));
      if (i % 2 === 0) {
        // a plausible small record mark in front, so the junk reaches the message decoder
        c.write(Buffer.concat([u32(0x80000000 + n), junk]));
      } else {
        c.write(junk);
      }
      c.socket.end();
      await c.closed;
    }
    await roundTrip(f);
  });
});

describe('connection lifecycle', () => {
  it('runs the handler close() once when the client disconnects', async () => {
    const f = await start();
    const c = await f.connect();
    expectSuccess(await rawCall(c, 1, ECHO_PROG, ECHO_VERS, PROC.NULL), 1);
    c.destroy();
    expect(await f.program.closedConns.next()).toBe(f.program.opened[0].id);
    await roundTrip(f);
    await f.program.closedConns.next();
    expect(f.program.closeCount).toBe(2);
  });

  it('delays close() until the running calls of the connection have settled', async () => {
    const f = await start();
    const c = await f.connect();
    c.sendCall({ xid: 1, prog: ECHO_PROG, vers: ECHO_VERS, proc: PROC.SLOW, args: echoArgs('x') });
    const slow = await f.program.slowCalls.next();
    c.destroy();
    await c.closed;
    await roundTrip(f);
    await f.program.closedConns.next(); // the round trip's connection
    expect(f.program.closeCount).toBe(1);
    slow.release();
    expect(await f.program.closedConns.next()).toBe(slow.connId);
  });

  it('answers calls sent before a half-close, then closes', async () => {
    const f = await start();
    const c = await f.connect();
    c.write(
      Buffer.concat([
        encodeCallRecord({ xid: 1, prog: ECHO_PROG, vers: ECHO_VERS, proc: PROC.SLOW, args: echoArgs('x') }),
        encodeCallRecord({ xid: 2, prog: ECHO_PROG, vers: ECHO_VERS, proc: PROC.NULL }),
      ]),
    );
    c.socket.end();
    const slow = await f.program.slowCalls.next();
    slow.release();
    await c.closed;
    expect(c.records.map((r) => r.readUInt32BE(0))).toEqual([1, 2]);
    expect(await f.program.closedConns.next()).toBe(slow.connId);
  });

  it('destroys the socket when createHandler throws, and keeps serving', async () => {
    const f = await start();
    f.program.failCreate = true;
    const c = await f.connect();
    await c.closed;
    f.program.failCreate = false;
    await roundTrip(f);
  });
});
