/**
 * npm run bench:idle [-- CONNECTIONS [WORKERS]]
 * Holds CONNECTIONS (default 10000) idle connections to one daemon (each has
 * done the client preamble: C_SetupArch, C_LoadModule, C_Initialize), then
 * prints the daemon's total RSS (primary + workers, VmRSS) and the latency
 * of new clients served meanwhile (connect + preamble + C_GetInfo).
 * Target (issue 7): 10,000 connections, RSS <= 400 MB, new client p50 <= 5 ms.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { startDaemon } from '../tests/ts/helpers/daemon';
import { P11Client } from '../tests/ts/helpers/p11-client';

function rss(pids: number[]): number {
  let total = 0;
  for (const pid of pids) {
    const m = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    if (m) total += Number(m[1]) * 1024;
  }
  return total;
}

function pct(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

async function newClients(target: { path: string }, n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    const c = await P11Client.open(target);
    await c.call('C_GetInfo', undefined);
    out.push(Number(process.hrtime.bigint() - t0) / 1e6);
    c.raw.destroy();
  }
  return out;
}

async function main(): Promise<void> {
  const total = Number(process.argv[2] ?? 10_000);
  const workers = Number(process.argv[3] ?? 2);
  // As users start it (bin/pkcs11proxyd), with the primary's node flags.
  const d = await startDaemon({ workers, viaBin: true });
  try {
    const pids = [d.proc.pid!, ...execFileSync('pgrep', ['-P', String(d.proc.pid)], { encoding: 'utf8' }).trim().split('\n').map(Number)];
    const target = { path: d.socketPath };
    const empty = rss(pids);
    const emptyEach = pids.map((p) => rss([p]));
    const before = await newClients(target, 200);
    const held: P11Client[] = [];
    const t0 = Date.now();
    while (held.length < total) {
      const batch = Math.min(200, total - held.length);
      held.push(...(await Promise.all(Array.from({ length: batch }, () => P11Client.open(target)))));
    }
    const openMs = Date.now() - t0;
    const full = rss(pids);
    const each = pids.map((p) => rss([p]));
    const during = await newClients(target, 200);
    const mb = (b: number) => (b / 1e6).toFixed(0);
    console.log(`workers ${workers}; ${total} idle connections opened in ${(openMs / 1000).toFixed(1)} s`);
    console.log(`daemon RSS (primary + workers): ${mb(empty)} MB empty, ${mb(full)} MB with ${total} connections (${((full - empty) / total / 1024).toFixed(1)} KiB per connection)`);
    console.log(`  primary ${mb(emptyEach[0])} -> ${mb(each[0])} MB, workers ${emptyEach.slice(1).map((e, i) => `${mb(e)} -> ${mb(each[i + 1])}`).join(', ')} MB`);
    console.log(`new client (connect + preamble + C_GetInfo): p50 ${pct(before, 0.5).toFixed(2)} ms, p99 ${pct(before, 0.99).toFixed(2)} ms idle; p50 ${pct(during, 0.5).toFixed(2)} ms, p99 ${pct(during, 0.99).toFixed(2)} ms with ${total} connections held`);
    for (const c of held) c.raw.destroy();
  } finally {
    await d.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
