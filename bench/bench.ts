import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import * as p from 'pkcs11js';
import { startDaemon } from '../tests/ts/helpers/daemon';
import { P11Client } from '../tests/ts/helpers/p11-client';
import { ecKeyPairTemplates, mech } from '../tests/ts/helpers/attrs';
import { SOFTHSM_MODULE, USER_PIN } from '../tests/ts/helpers/softhsm';

/**
 * `npm run bench`: round-trip latency and throughput through the daemon (Unix
 * socket) against SoftHSM2 used directly, 1 and 4 client processes.
 * Env: BENCH_MS (per cell, default 3000), BENCH_WORKERS (daemon workers, default cores).
 */
const MS = Number(process.env.BENCH_MS ?? 3000);
const WORKERS = Number(process.env.BENCH_WORKERS ?? os.availableParallelism());
const CLIENT = path.join(__dirname, 'bench-client.js');

interface Cell {
  opsPerSec: number;
  p50: number;
  p99: number;
}

async function runCell(mode: 'proxy' | 'direct', target: string, workload: string, clients: number, env: NodeJS.ProcessEnv): Promise<Cell> {
  const procs = [];
  const outs: Array<Promise<{ ops: number; p50: number; p99: number }>> = [];
  // One client at a time up to "ready": SoftHSM2 races when processes initialize one store at once.
  for (let i = 0; i < clients; i++) {
    const c = spawn(process.execPath, [CLIENT, mode, target, workload, String(MS)], { env, stdio: ['pipe', 'pipe', 'inherit'] });
    procs.push(c);
    let s = '';
    const ready = new Promise<void>((resolve) => c.stdout.on('data', (b: Buffer) => {
      s += b.toString();
      if (s.startsWith('ready\n')) resolve();
    }));
    outs.push(
      new Promise((resolve, reject) =>
        c.once('exit', (code) => (code === 0 ? resolve(JSON.parse(s.slice('ready\n'.length))) : reject(new Error(`client exited ${code}`)))),
      ),
    );
    await Promise.race([ready, outs[i]]);
  }
  for (const c of procs) c.stdin.write('go\n');
  const res = await Promise.all(outs);
  const ops = res.reduce((a, r) => a + r.ops, 0);
  return {
    opsPerSec: ops / (MS / 1000),
    p50: res.reduce((a, r) => a + r.p50, 0) / res.length,
    p99: Math.max(...res.map((r) => r.p99)),
  };
}

async function main(): Promise<void> {
  const d = await startDaemon({ workers: WORKERS });
  try {
    const c = await P11Client.open({ path: d.socketPath });
    const slot = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList[0];
    const s = (await c.call('C_OpenSession', { slotID: slot, flags: p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION })).session;
    await c.call('C_Login', { session: s, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) });
    const kp = await c.call('C_GenerateKeyPair', { session: s, mechanism: mech(p.CKM_EC_KEY_PAIR_GEN), ...ecKeyPairTemplates('bench-ec', true) });
    if (kp.rv !== 0) throw new Error(`keygen rv ${kp.rv}`);
    await c.close();

    const rows: string[] = [];
    rows.push(`workload            clients  mode     ops/s      p50 µs   p99 µs`);
    for (const workload of ['C_GetSessionInfo', 'ECDSA-P256-sign']) {
      for (const clients of [1, 4]) {
        for (const mode of ['direct', 'proxy'] as const) {
          const cell = await runCell(mode, mode === 'direct' ? SOFTHSM_MODULE : d.socketPath, workload, clients, d.hsm.env);
          rows.push(
            `${workload.padEnd(20)}${String(clients).padEnd(9)}${mode.padEnd(9)}${cell.opsPerSec.toFixed(0).padStart(8)}   ${cell.p50.toFixed(1).padStart(7)}  ${cell.p99.toFixed(1).padStart(7)}`,
          );
          process.stdout.write(rows[rows.length - 1] + '\n');
        }
      }
    }
    process.stdout.write(`\n(daemon workers: ${WORKERS}, cores: ${os.availableParallelism()}, ${MS} ms per cell)\n`);
  } finally {
    await d.stop();
  }
}

void main();
