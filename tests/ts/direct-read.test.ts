/** directReadSocket over real Unix sockets: the socket re-created over its handle reads into the shared buffer. */
import { promises as fs } from 'fs';
import net from 'net';
import os from 'os';
import path from 'path';
import { once } from 'events';
import { directReadSocket } from '../../src/server/transport/direct-read';

let dir: string;
let server: net.Server;
let sockPath: string;
const accepted: net.Socket[] = [];
const clients: net.Socket[] = [];
/** Server sides, adopted or not: allowHalfOpen keeps them open after the client goes, and server.close() waits for them. */
const serverSides: net.Socket[] = [];
let acceptedWaiters: Array<(s: net.Socket) => void> = [];

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'direct-read-'));
  sockPath = path.join(dir, 's.sock');
  server = net.createServer({ allowHalfOpen: true }, (s) => {
    const w = acceptedWaiters.shift();
    if (w) w(s);
    else accepted.push(s);
  });
  server.listen(sockPath);
  await once(server, 'listening');
});

afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  for (const s of serverSides.splice(0)) s.destroy();
  for (const s of accepted) s.destroy();
  acceptedWaiters = [];
  accepted.length = 0;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await fs.rm(dir, { recursive: true, force: true });
});

/** A client connection and the server side of it, adopted; `got` collects copies of what the callback saw. */
async function pair(): Promise<{ client: net.Socket; sock: net.Socket; got: Buffer[]; gotBytes: () => Buffer }> {
  const serverSide = new Promise<net.Socket>((resolve) => acceptedWaiters.push(resolve));
  const client = net.connect(sockPath);
  clients.push(client);
  await once(client, 'connect');
  const raw = await serverSide;
  const got: Buffer[] = [];
  const sock = directReadSocket(raw, (chunk) => got.push(Buffer.from(chunk)));
  if (sock === null) throw new Error('not adopted');
  serverSides.push(sock);
  return { client, sock, got, gotBytes: () => Buffer.concat(got) };
}

async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setImmediate(r));
}

it('delivers each connection its own bytes while both share the read buffer', async () => {
  const a = await pair();
  const b = await pair();
  const wantA: Buffer[] = [];
  const wantB: Buffer[] = [];
  for (let i = 0; i < 50; i++) {
    const x = Buffer.alloc(100 + i, i);
    const y = Buffer.alloc(3000 + i, 255 - i);
    wantA.push(x);
    wantB.push(y);
    a.client.write(x);
    b.client.write(y);
  }
  const lenA = wantA.reduce((n, x) => n + x.length, 0);
  const lenB = wantB.reduce((n, x) => n + x.length, 0);
  await until(() => a.gotBytes().length >= lenA && b.gotBytes().length >= lenB);
  expect(a.gotBytes()).toEqual(Buffer.concat(wantA));
  expect(b.gotBytes()).toEqual(Buffer.concat(wantB));
});

it('writes, ends and half-closes as a socket does', async () => {
  const p = await pair();
  p.sock.on('end', () => p.sock.end(Buffer.from('bye')));
  const reply: Buffer[] = [];
  p.client.on('data', (d: Buffer) => reply.push(d));
  p.client.end(Buffer.from('hello'));
  await once(p.client, 'close');
  expect(p.gotBytes().toString()).toBe('hello');
  expect(Buffer.concat(reply).toString()).toBe('bye');
});

it('pause() stops delivery until resume()', async () => {
  const p = await pair();
  p.client.write(Buffer.from('one'));
  await until(() => p.got.length > 0);
  p.sock.pause();
  p.client.write(Buffer.from('two'));
  // A round trip on another connection lets the loop poll; the paused socket must not be read meanwhile.
  const q = await pair();
  q.client.write(Buffer.from('x'));
  await until(() => q.got.length > 0);
  expect(p.gotBytes().toString()).toBe('one');
  p.sock.resume();
  await until(() => p.gotBytes().length === 6);
  expect(p.gotBytes().toString()).toBe('onetwo');
});

it('the listening server still counts the connection: close() completes once the adopted socket closes', async () => {
  const p = await pair();
  let closed = false;
  server.close(() => (closed = true));
  // A round trip on the open connection gives close() every chance to complete early.
  p.client.write(Buffer.from('ping'));
  await until(() => p.got.length > 0);
  expect(closed).toBe(false);
  p.sock.destroy();
  await until(() => closed);
});

it('leaves TLS and already destroyed sockets to the stream path', async () => {
  const serverSide = new Promise<net.Socket>((resolve) => acceptedWaiters.push(resolve));
  const client = net.connect(sockPath);
  clients.push(client);
  const raw = await serverSide;
  raw.destroy();
  expect(directReadSocket(raw, () => undefined)).toBeNull();
});
