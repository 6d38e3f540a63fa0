import * as p from 'pkcs11js';
import { PKCS11_PROG, PKCS11_V3 } from '../../src/generated/pkcs11_rpc';
import { startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { P11Client } from './helpers/p11-client';
import { ACCEPT, encodeCallRecord, RawRpcClient, REJECT, u32 } from './helpers/raw-rpc-client';
import { bool, bytes, ulong } from './helpers/attrs';

/**
 * Hostile and broken input against the real daemon: each case gets the
 * right RPC answer or a clean close, and the daemon keeps serving.
 */
let d: RunningDaemon;
const target = () => ({ path: d.socketPath });

beforeAll(async () => {
  d = await startDaemon({ maxRecordSize: 1024 * 1024, trace: true });
});
afterAll(async () => {
  await d?.stop();
});

async function stillServes(): Promise<void> {
  const c = await P11Client.open(target());
  expect((await c.call('C_GetInfo', undefined)).rv).toBe(p.CKR_OK);
  await c.close();
}

function closed(sock: RawRpcClient): Promise<void> {
  return new Promise((resolve) => {
    if (!sock.isOpen) return resolve();
    sock.socket.once('close', () => resolve());
  });
}

const cases: Array<{ name: string; spec: Parameters<RawRpcClient['call']>[0]; expect: (r: Awaited<ReturnType<RawRpcClient['call']>>) => void }> = [
  {
    name: 'unknown program → PROG_UNAVAIL',
    spec: { xid: 1, prog: 0x20000099, vers: 3, proc: 5 },
    expect: (r) => expect(r.stat === 'accepted' && r.acceptStat).toBe(ACCEPT.PROG_UNAVAIL),
  },
  {
    name: 'wrong version → PROG_MISMATCH with the supported range',
    spec: { xid: 2, prog: PKCS11_PROG, vers: 1, proc: 5 },
    expect: (r) => {
      expect(r.stat === 'accepted' && r.acceptStat).toBe(ACCEPT.PROG_MISMATCH);
      if (r.stat === 'accepted' && r.acceptStat === 2) expect([r.low, r.high]).toEqual([3, 3]);
    },
  },
  {
    name: 'unknown procedure → PROC_UNAVAIL',
    spec: { xid: 3, prog: PKCS11_PROG, vers: PKCS11_V3, proc: 999 },
    expect: (r) => expect(r.stat === 'accepted' && r.acceptStat).toBe(ACCEPT.PROC_UNAVAIL),
  },
  {
    name: 'truncated arguments → GARBAGE_ARGS',
    spec: { xid: 4, prog: PKCS11_PROG, vers: PKCS11_V3, proc: 4, args: u32(0, 1) },
    expect: (r) => expect(r.stat === 'accepted' && r.acceptStat).toBe(ACCEPT.GARBAGE_ARGS),
  },
  {
    name: 'opaque length beyond the record → GARBAGE_ARGS',
    spec: { xid: 5, prog: PKCS11_PROG, vers: PKCS11_V3, proc: 70, args: u32(0x7ffffff0) },
    expect: (r) => expect(r.stat === 'accepted' && r.acceptStat).toBe(ACCEPT.GARBAGE_ARGS),
  },
  {
    name: 'template count beyond the record → GARBAGE_ARGS',
    spec: { xid: 6, prog: PKCS11_PROG, vers: PKCS11_V3, proc: 23, args: Buffer.concat([u32(0, 1), u32(0xfffffff)]) },
    expect: (r) => expect(r.stat === 'accepted' && r.acceptStat).toBe(ACCEPT.GARBAGE_ARGS),
  },
  {
    name: 'RPC version 3 → RPC_MISMATCH',
    spec: { xid: 7, prog: PKCS11_PROG, vers: PKCS11_V3, proc: 5, rpcvers: 3 },
    expect: (r) => expect(r.stat === 'denied' && r.rejectStat).toBe(REJECT.RPC_MISMATCH),
  },
  {
    name: 'NULL procedure answers empty',
    spec: { xid: 8, prog: PKCS11_PROG, vers: PKCS11_V3, proc: 0 },
    expect: (r) => {
      expect(r.stat === 'accepted' && r.acceptStat).toBe(ACCEPT.SUCCESS);
      if (r.stat === 'accepted' && r.acceptStat === 0) expect(r.body.length).toBe(0);
    },
  },
];

test.each(cases)('$name', async ({ spec, expect: check }) => {
  const c = await RawRpcClient.connect(target());
  check(await c.call(spec));
  // The connection stays usable after an RPC-level error.
  const again = await c.call({ xid: 100, prog: PKCS11_PROG, vers: PKCS11_V3, proc: 0 });
  expect(again.stat).toBe('accepted');
  await c.end();
  await stillServes();
});

test('garbage bytes close the connection; the daemon keeps serving', async () => {
  const c = await RawRpcClient.connect(target());
  c.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
  await closed(c);
  await stillServes();
});

test('a record of exactly max_record_size is answered; one byte more closes on the record mark', async () => {
  const LIMIT = 1024 * 1024;
  const unknown = { prog: 0x20000099, vers: 3, proc: 5 };
  const header = encodeCallRecord({ xid: 1, ...unknown }).length - 4;
  const fits = await RawRpcClient.connect(target());
  const r = await fits.call({ xid: 2, ...unknown, args: Buffer.alloc(LIMIT - header) });
  expect(r.stat === 'accepted' && r.acceptStat).toBe(ACCEPT.PROG_UNAVAIL);
  expect(fits.isOpen).toBe(true);
  await fits.end();
  // Only the mark and 1 KiB of the announced LIMIT + 1 bytes are sent: the close can only
  // come from the check on the mark, and nothing is answered.
  const over = await RawRpcClient.connect(target());
  over.write(u32(0x80000000 | (LIMIT + 1)));
  over.write(Buffer.alloc(1024));
  await closed(over);
  expect(over.records).toHaveLength(0);
  await stillServes();
});

test('a client vanishing mid-call does not hurt others', async () => {
  const c = await P11Client.open(target());
  const slot = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList[0];
  const s = (await c.call('C_OpenSession', { slotID: slot, flags: 6 })).session;
  void c.call('C_GenerateRandom', { session: s, length: 1024 }).catch(() => undefined);
  c.raw.destroy();
  await stillServes();
});

test('-debug-pkcs11 never prints PINs or secret attribute values', async () => {
  const c = await P11Client.open(target());
  const slot = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList[0];
  const s = (await c.call('C_OpenSession', { slotID: slot, flags: 6 })).session;
  const pin = 'PIN-9f3a7c';
  expect(await c.call('C_Login', { session: s, userType: p.CKU_USER, pin: Buffer.from(pin) })).toBe(p.CKR_PIN_INCORRECT);
  const secret = Buffer.from('5ec7e75ec7e75ec7e75ec7e75ec7e75e', 'hex');
  await c.call('C_CreateObject', {
    session: s,
    template: [ulong(p.CKA_CLASS, p.CKO_SECRET_KEY), ulong(p.CKA_KEY_TYPE, p.CKK_GENERIC_SECRET), bool(p.CKA_TOKEN, false), bool(p.CKA_PRIVATE, false), bytes(p.CKA_VALUE, secret)],
  });
  await c.close();
  // Log lines are written asynchronously (pino): wait, with a deadline, for the C_CreateObject line.
  for (const end = Date.now() + 10_000; !/C_CreateObject\(/.test(d.output()) && Date.now() < end; ) await new Promise((r) => setTimeout(r, 10));
  const log = d.output();
  expect(log).toMatch(/C_Login\(session=\d+, userType=CKU_USER, pin=<redacted>\) -> CKR_PIN_INCORRECT/);
  expect(log).toMatch(/CKA_VALUE=<16 bytes>/);
  expect(log).not.toContain(pin);
  expect(log).not.toContain(Buffer.from(pin).toString('hex'));
  expect(log).not.toContain(secret.toString('hex'));
});
