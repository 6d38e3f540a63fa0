import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import * as p from 'pkcs11js';
import { C_GenerateRandom_argsCodec, PKCS11_PROG, PKCS11_V3, PROCEDURES, xdrEncode } from '../../src/generated/pkcs11_rpc';
import { startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { P11Client } from './helpers/p11-client';
import { encodeCallRecord, RawRpcClient } from './helpers/raw-rpc-client';

/**
 * Per-connection bounds (issue 7, finding 6): a connection that pipelines
 * C_GenerateRandom calls and never reads its replies is paused, then dropped;
 * the daemon's memory stays bounded and other connections keep being served.
 */
const STALL_MS = 3000;
const MIB = 1024 * 1024;
const CALLS = 2000;
let d: RunningDaemon;
beforeAll(async () => {
  d = await startDaemon({ workers: 2, processorExtra: `stall_timeout_ms = ${STALL_MS};` });
});
afterAll(async () => {
  await d?.stop();
});

function daemonPids(): number[] {
  return [d.proc.pid!, ...execFileSync('pgrep', ['-P', String(d.proc.pid)], { encoding: 'utf8' }).trim().split('\n').filter(Boolean).map(Number)];
}

/** VmRSS of the primary and its workers, bytes. */
function daemonRss(pids: number[]): number {
  let total = 0;
  for (const pid of pids) {
    const m = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    if (m) total += Number(m[1]) * 1024;
  }
  return total;
}

async function sessionOn(c: P11Client): Promise<number> {
  const slot = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList[0];
  const r = await c.call('C_OpenSession', { slotID: slot, flags: p.CKF_SERIAL_SESSION });
  expect(r.rv).toBe(p.CKR_OK);
  return r.session;
}

const GENERATE_RANDOM = PROCEDURES.find((x) => x.name === 'C_GenerateRandom')!;

/** Open descriptors of the primary and its workers. */
function daemonFds(pids: number[]): number {
  return pids.reduce((n, pid) => n + fs.readdirSync(`/proc/${pid}/fd`).length, 0);
}

/** Opens a session, then writes `calls` pipelined C_GenerateRandom(1 MiB) and never reads again. */
async function flooder(calls: number): Promise<RawRpcClient> {
  const c = await P11Client.open({ path: d.socketPath });
  const session = await sessionOn(c);
  const args = xdrEncode(C_GenerateRandom_argsCodec, { session, length: MIB });
  const one = (xid: number) => encodeCallRecord({ xid, prog: PKCS11_PROG, vers: PKCS11_V3, proc: GENERATE_RANDOM.proc, args });
  c.raw.socket.pause();
  const records: Buffer[] = [];
  for (let i = 0; i < calls; i++) records.push(one(10_000 + i));
  c.raw.socket.write(Buffer.concat(records));
  return c.raw;
}

function percentile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

test('8 connections flooding C_GenerateRandom(1 MiB) without reading: bounded RSS, others served, flooders dropped', async () => {
  const other = await P11Client.open({ path: d.socketPath });
  const otherSession = await sessionOn(other);
  const pids = daemonPids();
  expect(pids).toHaveLength(3);
  const baseline = daemonRss(pids);
  const baselineFds = daemonFds(pids);
  const floods = await Promise.all(Array.from({ length: 8 }, () => flooder(CALLS)));
  let peak = 0;
  const sampler = setInterval(() => (peak = Math.max(peak, daemonRss(pids))), 50);
  const latencies: number[] = [];
  const until = Date.now() + STALL_MS - 500;
  while (Date.now() < until) {
    const t0 = process.hrtime.bigint();
    expect((await other.call('C_GetSessionInfo', { session: otherSession })).rv).toBe(p.CKR_OK);
    latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  clearInterval(sampler);
  peak = Math.max(peak, daemonRss(pids));
  // Each flooder holds at most max_reply_bytes (4 MiB) of replies plus the call being answered.
  // Bound: 8 x (4 MiB held + the call in flight and its copies) plus the garbage V8 has not
  // collected yet (it frees a dropped reply buffer at its next GC). Unbounded, 8 flooders grew
  // the daemon by gigabytes.
  expect(peak - baseline).toBeLessThan(128 * MIB);
  expect(latencies.length).toBeGreaterThan(50);
  expect(percentile(latencies, 0.99)).toBeLessThan(50);
  // A reader that takes nothing for stall_timeout_ms is dropped: the daemon's descriptors fall
  // back to what they were before the flood. (A paused client socket sees no EOF, so the
  // daemon's side is what is watched.)
  const fdDeadline = Date.now() + STALL_MS + 10_000;
  while (daemonFds(pids) > baselineFds && Date.now() < fdDeadline) await new Promise((r) => setTimeout(r, 100));
  expect(daemonFds(pids)).toBe(baselineFds);
  // Reading now, each flooder gets what was already sent, then the close: far fewer than CALLS replies.
  for (const f of floods) f.socket.resume();
  await Promise.all(floods.map((f) => f.closed));
  for (const f of floods) expect(f.records.length).toBeLessThan(CALLS / 4);
  // The connection that reads its replies is untouched.
  expect((await other.call('C_GetSessionInfo', { session: otherSession })).rv).toBe(p.CKR_OK);
  await other.close();
  // Not asserted: glibc and V8 keep some freed pages, so RSS after the flood says little.
  const after = daemonRss(pids);
  console.log(
    `daemon RSS: baseline ${(baseline / MIB).toFixed(0)} MiB, peak ${(peak / MIB).toFixed(0)} MiB, after ${(after / MIB).toFixed(0)} MiB; ` +
      `other C_GetSessionInfo p99 ${percentile(latencies, 0.99).toFixed(2)} ms over ${latencies.length} calls`,
  );
}, 60_000);
