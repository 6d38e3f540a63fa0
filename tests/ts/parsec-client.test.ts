import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import * as ping from '../../src/generated/parsec/ping_pb';
import * as listProviders from '../../src/generated/parsec/list_providers_pb';
import { ParsecClient, ParsecStatusError, ParsecUnavailableError } from '../../src/bindings/parsec/client';
import { statusRv, statusTable } from '../../src/bindings/parsec/status';
import { parseParsecPath } from '../../src/bindings/parsec/uri';
import { ConfigError } from '../../src/config/errors';
import { parseFilterConfig } from '../../src/config/filter-config';
import { ck } from '../../src/pkcs11/constants';
import { startParsec } from './helpers/parsec';
import type { ParsecService } from './helpers/parsec';

/**
 * The Parsec client: requests as the wire protocol lays them out (checked
 * byte by byte against a hand-built header, not the encoder under test),
 * answers of the real service, and the transport faults the real service
 * never produces (a peer on a socket of the test's own: bad magic, an
 * oversized or truncated response, silence).
 */

/** A request header built field by field from the wire protocol 1.0 table (parsec-book wire_protocol.md). */
function expectedHeader(f: { provider: number; authType: number; bodyLen: number; authLen: number; opcode: number }): Buffer {
  const h = Buffer.alloc(36);
  h.writeUInt32LE(0x5ec0a710, 0); // magic
  h.writeUInt16LE(30, 4); // hdr_size
  h[6] = 1; // version_maj
  h[7] = 0; // version_min
  // flags u16 at 8, provider u8 at 10, session u64 at 11, content_type 19, accept_type 20, auth_type 21
  h[10] = f.provider;
  h[21] = f.authType;
  h.writeUInt32LE(f.bodyLen, 22);
  h.writeUInt16LE(f.authLen, 26);
  h.writeUInt32LE(f.opcode, 28);
  return h;
}

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'parsec-client-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A peer that records the request and answers with `reply` (or nothing, with null). */
async function peer(reply: (req: Buffer) => Buffer | null): Promise<{ socket: string; requests: Buffer[]; close(): Promise<void> }> {
  const socket = path.join(dir, 'peer.sock');
  const requests: Buffer[] = [];
  const conns = new Set<net.Socket>();
  const server = net.createServer((c) => {
    conns.add(c);
    let got = Buffer.alloc(0);
    c.on('data', (d) => {
      got = Buffer.concat([got, d]);
      if (got.length >= 36 && got.length >= 36 + got.readUInt32LE(22) + got.readUInt16LE(26)) {
        requests.push(got);
        const r = reply(got);
        if (r !== null) c.end(r);
      }
    });
    c.on('close', () => conns.delete(c));
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  return {
    socket,
    requests,
    close: () =>
      new Promise((resolve) => {
        for (const c of conns) c.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A response header for `opcode` with `status` and a body of `bodyLen` bytes. */
function response(opcode: number, status: number, body: Buffer, magic = 0x5ec0a710): Buffer {
  const h = expectedHeader({ provider: 0, authType: 0, bodyLen: body.length, authLen: 0, opcode });
  h.writeUInt32LE(magic, 0);
  h.writeUInt16LE(status, 32);
  return Buffer.concat([h, body]);
}

const client = (socket: string, over: Partial<{ timeoutMs: number; maxResponseBytes: number }> = {}): ParsecClient =>
  new ParsecClient({ socket, timeoutMs: over.timeoutMs ?? 2000, maxResponseBytes: over.maxResponseBytes ?? 1 << 20 });

describe('requests on the wire', () => {
  it('Direct: the application name as auth bytes; UnixPeerCredentials: the uid as u32 LE', async () => {
    const p = await peer(() => response(0x01, 0, Buffer.from([0x08, 0x01, 0x10, 0x00])));
    try {
      await client(p.socket).call(0, 'Ping', ping.OperationSchema, {}, ping.ResultSchema, { type: 'direct', app: 'tenant-é' });
      await client(p.socket).call(2, 'ListProviders', listProviders.OperationSchema, {}, listProviders.ResultSchema, { type: 'unix', uid: 0x01020304 });
    } catch {
      // The answers are not what these opcodes return; only the requests are checked here.
    } finally {
      await p.close();
    }
    const app = Buffer.from('tenant-é', 'utf8');
    expect(p.requests[0]).toEqual(Buffer.concat([expectedHeader({ provider: 0, authType: 1, bodyLen: 0, authLen: app.length, opcode: 0x01 }), app]));
    expect(p.requests[1]).toEqual(
      Buffer.concat([expectedHeader({ provider: 2, authType: 3, bodyLen: 0, authLen: 4, opcode: 0x08 }), Buffer.from([4, 3, 2, 1])]),
    );
  });
});

describe('transport faults: each a clear ParsecUnavailableError (the backend answers CKR_DEVICE_ERROR)', () => {
  const cases: Array<{ name: string; reply: (req: Buffer) => Buffer | null; error: RegExp; limits?: { timeoutMs?: number; maxResponseBytes?: number } }> = [
    { name: 'bad magic', reply: () => response(0x01, 0, Buffer.alloc(0), 0xdeadbeef), error: /bad magic 0xdeadbeef/ },
    { name: 'a response larger than the limit, refused from its header', reply: () => response(0x01, 0, Buffer.alloc(8192)), error: /response of 8228 bytes exceeds the limit of 4096/, limits: { maxResponseBytes: 4096 } },
    { name: 'closed before the whole body', reply: () => response(0x01, 0, Buffer.alloc(10)).subarray(0, 40), error: /closed the connection after 40 bytes/ },
    { name: 'the answer of another opcode', reply: () => response(0x09, 0, Buffer.alloc(0)), error: /response for opcode 9/ },
    { name: 'silence past the deadline', reply: () => null, error: /no response from .* within 300 ms/, limits: { timeoutMs: 300 } },
    { name: 'an undecodable body', reply: () => response(0x01, 0, Buffer.from([0xff, 0xff, 0xff])), error: /undecodable result/ },
  ];
  it.each(cases)('$name', async ({ reply, error, limits }) => {
    const p = await peer(reply);
    try {
      const e = await client(p.socket, limits).call(0, 'Ping', ping.OperationSchema, {}, ping.ResultSchema, { type: 'none' }).then(() => null, (x: unknown) => x);
      expect(e).toBeInstanceOf(ParsecUnavailableError);
      expect((e as Error).message).toMatch(error);
    } finally {
      await p.close();
    }
  });
  it('no service at the path', async () => {
    const e = await client(path.join(dir, 'none.sock')).call(0, 'Ping', ping.OperationSchema, {}, ping.ResultSchema, { type: 'none' }).then(() => null, (x: unknown) => x);
    expect(e).toBeInstanceOf(ParsecUnavailableError);
    expect((e as Error).message).toMatch(/none\.sock: ENOENT/);
  });
});

describe('against the real service', () => {
  let svc: ParsecService;
  beforeAll(async () => {
    svc = await startParsec('Direct');
  }, 60_000);
  afterAll(async () => svc?.cleanup(), 60_000);

  it('Ping answers the wire protocol version; ListProviders the providers, Core last', async () => {
    const c = client(svc.socket);
    const r = await c.call(0, 'Ping', ping.OperationSchema, {}, ping.ResultSchema, { type: 'direct', app: 'a' });
    expect([r.wireProtocolVersionMaj, r.wireProtocolVersionMin]).toEqual([1, 0]);
    const l = await c.call(0, 'ListProviders', listProviders.OperationSchema, {}, listProviders.ResultSchema, { type: 'direct', app: 'a' });
    expect(l.providers.map((p) => p.id)).toEqual([2, 1, 0]);
  });
  it('a status is a ParsecStatusError naming it: another authenticator than the configured one', async () => {
    const e = await client(svc.socket)
      .call(0, 'ListProviders', listProviders.OperationSchema, {}, listProviders.ResultSchema, { type: 'unix', uid: 0 })
      .then(() => null, (x: unknown) => x);
    expect(e).toBeInstanceOf(ParsecStatusError);
    expect((e as ParsecStatusError).status).toBe(13);
    expect((e as Error).message).toContain('AuthenticatorNotRegistered');
  });
});

test('the status table: known statuses map as documented, an unknown one fails closed', () => {
  const rv = new Map(statusTable().map(([s, , r]) => [s, r]));
  expect(rv.get(0)).toBe(ck.CKR_OK);
  expect(rv.get(1140)).toBe(ck.CKR_OBJECT_HANDLE_INVALID);
  expect(rv.get(1149)).toBe(ck.CKR_SIGNATURE_INVALID);
  expect(rv.get(1133)).toBe(ck.CKR_KEY_FUNCTION_NOT_PERMITTED);
  expect(rv.get(1134)).toBe(ck.CKR_MECHANISM_INVALID);
  expect(rv.get(13)).toBe(ck.CKR_DEVICE_ERROR);
  expect(statusRv(9999)).toBe(ck.CKR_DEVICE_ERROR);
  expect(statusTable().every(([, , r]) => r !== ck.CKR_GENERAL_ERROR)).toBe(true);
});

describe('parsec: module paths', () => {
  it('defaults and options', () => {
    expect(parseParsecPath('parsec:/run/parsec/parsec.sock')).toEqual({
      socket: '/run/parsec/parsec.sock',
      auth: 'unix',
      app: null,
      timeoutMs: 10000,
      maxResponseBytes: 4 * 1024 * 1024,
    });
    expect(parseParsecPath('parsec:/s?auth=direct&app=my%20app&timeout_ms=500&max_response_bytes=65536')).toMatchObject({
      auth: 'direct',
      app: 'my app',
      timeoutMs: 500,
      maxResponseBytes: 65536,
    });
  });
  const bad: Array<[string, RegExp]> = [
    ['parsec:relative.sock', /^f\.conf:1:18: key 'modules\[0\]\[1\]': .*the socket path must be absolute/],
    ['parsec:/s?auth=jwt', /^f\.conf:1:18: key 'modules\[0\]\[1\]': .*auth must be "unix" or "direct", not "jwt"/],
    ['parsec:/s?app=x', /app needs auth=direct/],
    ['parsec:/s?timeout_ms=0', /timeout_ms must be in 1\.\.600000, not 0/],
    ['parsec:/s?timeout_ms=5s', /timeout_ms must be a whole number/],
    ['parsec:/s?colour=red', /unknown option "colour"/],
    ['parsec:/s?auth=direct&auth=unix', /option "auth" given twice/],
  ];
  it.each(bad)('%s is refused at file:line:column', (p, error) => {
    let caught: unknown;
    try {
      parseFilterConfig(`modules = [("p", "${p}")]\n`, 'f.conf');
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as Error).message).toMatch(error);
  });
});
