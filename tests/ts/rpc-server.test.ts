/** RpcServer: listeners (unix, TCP), socket files, handover of accepted sockets, shutdown. */
import { promises as fs } from 'fs';
import net from 'net';
import os from 'os';
import path from 'path';
import { RpcServer } from '../../src/server/transport/rpc-server';
import type { ConnectionInfo, RpcServerOptions } from '../../src/server/transport/types';
import { authSysBody, RawRpcClient, rawCall, xdrOpaque, type ParsedReply } from './helpers/raw-rpc-client';
import { ECHO_PROG, ECHO_VERS, EchoProgram, PROC } from './helpers/rpc-echo-program';

let dir: string;
const servers: RpcServer[] = [];
const programs: EchoProgram[] = [];
const clients: RawRpcClient[] = [];
const netServers: net.Server[] = [];

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rpc-srv-'));
});

afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  for (const p of programs.splice(0)) p.releaseAll();
  await Promise.all(servers.splice(0).map((s) => s.close()));
  await Promise.all(netServers.splice(0).map((s) => new Promise((r) => s.close(r))));
  await fs.rm(dir, { recursive: true, force: true });
});

function makeServer(opts: Partial<RpcServerOptions> = {}): { server: RpcServer; program: EchoProgram } {
  const program = new EchoProgram();
  programs.push(program);
  const server = new RpcServer({ createHandler: program.createHandler, log: () => {}, ...opts });
  servers.push(server);
  return { server, program };
}

async function connect(target: { path: string } | { host: string; port: number }): Promise<RawRpcClient> {
  const c = await RawRpcClient.connect(target);
  clients.push(c);
  return c;
}

function expectEcho(reply: ParsedReply, xid: number, data: string): void {
  expect(reply).toEqual({
    xid,
    stat: 'accepted',
    verfFlavor: 0,
    verf: Buffer.alloc(0),
    acceptStat: 0,
    body: xdrOpaque(data),
  });
}

function codeOf(e: unknown): unknown {
  return (e as { code?: unknown }).code;
}

describe('unix sockets', () => {
  it('records the AUTH_SYS credential of the latest call in the connection info', async () => {
    const { server, program } = makeServer();
    const p = path.join(dir, 'auth.sock');
    await server.listen([{ type: 'local', path: p }]);
    const c = await connect({ path: p });
    const call = (xid: number, credFlavor: number, cred: Buffer) =>
      c.call({ xid, prog: ECHO_PROG, vers: ECHO_VERS, proc: PROC.ECHO, args: xdrOpaque('a'), credFlavor, cred });
    expectEcho(await call(1, 0, Buffer.alloc(0)), 1, 'a');
    expect(program.opened[0].authSys).toBeUndefined();
    expectEcho(await call(2, 1, authSysBody({ stamp: 7, machine: 'box', uid: 1001, gid: 1002, gids: [5, 6] })), 2, 'a');
    expect(program.opened[0].authSys).toEqual({ stamp: 7, machineName: 'box', uid: 1001, gid: 1002, gids: [5, 6] });
    expectEcho(await call(3, 1, authSysBody({ uid: 0, gid: 0 })), 3, 'a');
    expect(program.opened[0].authSys).toMatchObject({ uid: 0, gid: 0, gids: [] });
    c.socket.destroy();
  });

  it('listens on a path and serves calls', async () => {
    const { server, program } = makeServer();
    const p = path.join(dir, 'a.sock');
    expect(await server.listen([{ type: 'local', path: p }])).toEqual([
      { addr: { type: 'local', path: p }, path: p },
    ]);
    const c = await connect({ path: p });
    expectEcho(await rawCall(c, 1, ECHO_PROG, ECHO_VERS, PROC.ECHO, xdrOpaque('u')), 1, 'u');
    // SO_PEERCRED names this very process: it called connect(2).
    expect(program.opened).toEqual([
      { id: 1, transport: 'unix', remote: 'unix', peer: { transport: 'unix', uid: process.getuid!(), gid: process.getgid!(), pid: process.pid } },
    ]);
  });

  it.each([
    ['0600', 0o600],
    ['0660', 0o660],
    ['0666', 0o666],
  ])('applies mode %s to the socket file', async (_name, mode) => {
    const { server } = makeServer();
    const p = path.join(dir, 'm.sock');
    await server.listen([{ type: 'local', path: p, mode }]);
    const st = await fs.stat(p);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(mode);
  });

  it('applies owner and group given by name or id', async () => {
    const { server } = makeServer();
    const me = os.userInfo();
    const p1 = path.join(dir, 'o1.sock');
    const p2 = path.join(dir, 'o2.sock');
    await server.listen([
      { type: 'local', path: p1, owner: me.username, group: me.gid, mode: 0o640 },
      { type: 'local', path: p2, owner: String(me.uid) },
    ]);
    for (const p of [p1, p2]) {
      const st = await fs.stat(p);
      expect([st.uid, st.gid]).toEqual([me.uid, me.gid]);
    }
  });

  it('changes ownership to another user when running as root', async () => {
    const { server } = makeServer();
    const p = path.join(dir, 'root.sock');
    const asRoot = process.getuid?.() === 0;
    // Non-root may only chown to itself, so the target is then our own user.
    const owner = asRoot ? 'daemon' : os.userInfo().username;
    await server.listen([{ type: 'local', path: p, owner, group: asRoot ? 'daemon' : os.userInfo().gid }]);
    const st = await fs.stat(p);
    if (asRoot) expect(st.uid).not.toBe(0);
    else expect(st.uid).toBe(os.userInfo().uid);
  });

  it('rejects an unknown owner name with RPC_ERR_UNKNOWN_PRINCIPAL and leaves nothing listening', async () => {
    const { server } = makeServer();
    const p = path.join(dir, 'u.sock');
    const err = await server
      .listen([{ type: 'local', path: p, owner: 'no-such-user-pkcs11proxyd-test' }])
      .catch((e: unknown) => e);
    expect(codeOf(err)).toBe('RPC_ERR_UNKNOWN_PRINCIPAL');
    await expect(fs.lstat(p)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('removes a stale socket file before binding', async () => {
    // A second name for a socket inode outlives the server: connecting to it is refused.
    const live = path.join(dir, 'live.sock');
    const stale = path.join(dir, 'stale.sock');
    const other = net.createServer();
    await new Promise<void>((r) => other.listen(live, r));
    await fs.link(live, stale);
    await new Promise((r) => other.close(r));
    expect((await fs.lstat(stale)).isSocket()).toBe(true);

    const { server } = makeServer();
    await server.listen([{ type: 'local', path: stale }]);
    const c = await connect({ path: stale });
    expectEcho(await rawCall(c, 2, ECHO_PROG, ECHO_VERS, PROC.ECHO, xdrOpaque('s')), 2, 's');
  });

  it('refuses a path where a server is live (RPC_ERR_ADDRESS_IN_USE) and keeps that server working', async () => {
    const p = path.join(dir, 'busy.sock');
    const first = makeServer().server;
    await first.listen([{ type: 'local', path: p }]);
    const err = await makeServer()
      .server.listen([{ type: 'local', path: p }])
      .catch((e: unknown) => e);
    expect(codeOf(err)).toBe('RPC_ERR_ADDRESS_IN_USE');
    const c = await connect({ path: p });
    expectEcho(await rawCall(c, 3, ECHO_PROG, ECHO_VERS, PROC.ECHO, xdrOpaque('b')), 3, 'b');
  });

  it('refuses to replace a regular file (RPC_ERR_SOCKET_PATH) and does not remove it', async () => {
    const p = path.join(dir, 'file');
    await fs.writeFile(p, 'keep');
    const err = await makeServer()
      .server.listen([{ type: 'local', path: p }])
      .catch((e: unknown) => e);
    expect(codeOf(err)).toBe('RPC_ERR_SOCKET_PATH');
    expect(await fs.readFile(p, 'utf8')).toBe('keep');
  });
});

describe('TCP', () => {
  it('listens on 127.0.0.1 port 0, reports the real port and serves calls', async () => {
    const { server, program } = makeServer();
    const [res] = await server.listen([{ type: 'internet', host: '127.0.0.1', port: 0 }]);
    expect(res.port).toBeGreaterThan(0);
    const c = await connect({ host: '127.0.0.1', port: res.port! });
    expectEcho(await rawCall(c, 4, ECHO_PROG, ECHO_VERS, PROC.ECHO, xdrOpaque('tcp')), 4, 'tcp');
    expect(program.opened[0]).toEqual({
      id: 1,
      transport: 'tcp',
      remote: `127.0.0.1:${c.socket.localPort}`,
      peer: { transport: 'tcp', address: '127.0.0.1', port: c.socket.localPort },
    });
  });

  it('listens on unix and TCP addresses at once', async () => {
    const { server } = makeServer();
    const p = path.join(dir, 'both.sock');
    const res = await server.listen([
      { type: 'local', path: p },
      { type: 'internet', host: '127.0.0.1', port: 0 },
    ]);
    expect(res.map((r) => r.addr.type)).toEqual(['local', 'internet']);
    const a = await connect({ path: p });
    const b = await connect({ host: '127.0.0.1', port: res[1].port! });
    expectEcho(await rawCall(a, 5, ECHO_PROG, ECHO_VERS, PROC.ECHO, xdrOpaque('a')), 5, 'a');
    expectEcho(await rawCall(b, 6, ECHO_PROG, ECHO_VERS, PROC.ECHO, xdrOpaque('b')), 6, 'b');
  });

  it('fails with RPC_ERR_ADDRESS_IN_USE on a taken port and closes what it bound in that call', async () => {
    const { server: first } = makeServer();
    const [taken] = await first.listen([{ type: 'internet', host: '127.0.0.1', port: 0 }]);
    const { server } = makeServer();
    const p = path.join(dir, 'rollback.sock');
    const err = await server
      .listen([
        { type: 'local', path: p },
        { type: 'internet', host: '127.0.0.1', port: taken.port! },
      ])
      .catch((e: unknown) => e);
    expect(codeOf(err)).toBe('RPC_ERR_ADDRESS_IN_USE');
    await expect(RawRpcClient.connect({ path: p })).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('attachSocket', () => {
  it('serves an already accepted socket with the given connection info', async () => {
    const { server, program } = makeServer();
    const info: ConnectionInfo = { id: 1000, transport: 'tcp', remote: 'handed-over' };
    const acceptor = net.createServer({ pauseOnConnect: true }, (sock) => server.attachSocket(sock, info));
    netServers.push(acceptor);
    await new Promise<void>((r) => acceptor.listen(0, '127.0.0.1', r));
    const { port } = acceptor.address() as net.AddressInfo;
    const c = await connect({ host: '127.0.0.1', port });
    expectEcho(await rawCall(c, 7, ECHO_PROG, ECHO_VERS, PROC.ECHO, xdrOpaque('h')), 7, 'h');
    expect(program.opened).toEqual([info]);
    expect(server.connectionCount).toBe(1);
    c.destroy();
    expect(await program.closedConns.next()).toBe(1000);
  });
});

describe('close', () => {
  it('stops listening, drops connections, runs every handler close() and reports zero connections', async () => {
    const { server, program } = makeServer();
    const p = path.join(dir, 'c.sock');
    const [, tcp] = await server.listen([
      { type: 'local', path: p },
      { type: 'internet', host: '127.0.0.1', port: 0 },
    ]);
    const a = await connect({ path: p });
    const b = await connect({ host: '127.0.0.1', port: tcp.port! });
    expectEcho(await rawCall(a, 1, ECHO_PROG, ECHO_VERS, PROC.ECHO, xdrOpaque('a')), 1, 'a');
    expectEcho(await rawCall(b, 2, ECHO_PROG, ECHO_VERS, PROC.ECHO, xdrOpaque('b')), 2, 'b');
    expect(server.connectionCount).toBe(2);

    await server.close();
    expect(server.connectionCount).toBe(0);
    expect(program.closeCount).toBe(2);
    await a.closed;
    await b.closed;
    await expect(RawRpcClient.connect({ path: p })).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(RawRpcClient.connect({ host: '127.0.0.1', port: tcp.port! })).rejects.toMatchObject({
      code: 'ECONNREFUSED',
    });
    await server.close(); // idempotent
    const err = await server
      .listen([{ type: 'internet', host: '127.0.0.1', port: 0 }])
      .catch((e: unknown) => e);
    expect(codeOf(err)).toBe('RPC_ERR_SERVER_CLOSED');
  });

  it('waits for running calls before resolving', async () => {
    const { server, program } = makeServer();
    const p = path.join(dir, 'w.sock');
    await server.listen([{ type: 'local', path: p }]);
    const c = await connect({ path: p });
    c.sendCall({ xid: 1, prog: ECHO_PROG, vers: ECHO_VERS, proc: PROC.SLOW, args: xdrOpaque('x') });
    const slow = await program.slowCalls.next();
    let closed = false;
    const closing = server.close().then(() => (closed = true));
    await c.closed;
    expect(closed).toBe(false);
    expect(program.closeCount).toBe(0);
    slow.release();
    await closing;
    expect(program.closeCount).toBe(1);
  });

  it('rejects bad options with RPC_ERR_BAD_OPTION', () => {
    const createHandler = new EchoProgram().createHandler;
    for (const opts of [
      { maxRecordSize: 0 },
      { maxRecordSize: 1.5 },
      { maxRecordSize: 2 ** 31 },
      { maxPendingCalls: 0 },
    ]) {
      let err: unknown;
      try {
        new RpcServer({ createHandler, ...opts });
      } catch (e) {
        err = e;
      }
      expect(codeOf(err)).toBe('RPC_ERR_BAD_OPTION');
    }
  });
});
