import { createHash } from 'node:crypto';
import { startDaemon } from '../tests/ts/helpers/daemon';
import { P11Client } from '../tests/ts/helpers/p11-client';
import { createKeyTemplate, runBench, startPoolDaemon } from '../tests/ts/helpers/pool';
import type { PoolDaemon } from '../tests/ts/helpers/pool';
import { ck } from '../src/pkcs11/constants';

/**
 * `npm run bench:pool`: pools, indicative (the machine is shared).
 *  1. Throughput of ECDSA P-256 signatures (C_SignInit + C_Sign) from 4 C
 *     client processes (bench/c/bench.c over our client) through a
 *     round-robin pool of 1 and of 2 members, members in the worker and in
 *     helper processes.
 *  2. Failover time: one client signing in a loop on a primary-standby pool;
 *     the primary fails (its helper killed with SIGKILL; C_Sign answering
 *     CKR_DEVICE_ERROR); the time from the failure to the end of the first
 *     signature started after it (the standby opens a session and logs in
 *     on first use: included).
 * Env: BENCH_MS (throughput cell, default 3000), BENCH_ROUNDS (failover
 * repetitions, default 5).
 * Members are the fault-injection wrapper over SoftHSM2 (the wrapper reads
 * its control file on every call: the same cost with 1 and 2 members).
 */
const MS = Number(process.env.BENCH_MS ?? 3000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const HELPER = 'mode = "helper" call_timeout_ms = 10000';

async function throughput(template: ReturnType<typeof createKeyTemplate>, members: number, isolation?: string): Promise<string> {
  const d = await startPoolDaemon(template, { members, isolation, pool: 'strategy = "round-robin"' });
  try {
    const r = await runBench(d.env(), 'ecdsa', MS / 1000, 4);
    if (r.status !== 'ok') return `error: ${r.out.trim()}`;
    return `${Number(r.fields.ops_s).toFixed(0)} ops/s (p50 ${r.fields.p50_us} us, p99 ${r.fields.p99_us} us)`;
  } finally {
    await d.stop();
  }
}

/** Milliseconds from `fail()` to the next signature completed by a client signing in a loop. */
async function failoverMs(d: PoolDaemon, fail: () => Promise<void> | void): Promise<number> {
  const c = await P11Client.open({ path: d.daemon.socketPath }, 'pool');
  try {
    const slot = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList[0];
    const session = (await c.call('C_OpenSession', { slotID: slot, flags: ck.CKF_SERIAL_SESSION | ck.CKF_RW_SESSION })).session;
    if ((await c.call('C_Login', { session, userType: ck.CKU_USER, pin: Buffer.from('1234') })) !== 0) throw new Error('C_Login failed');
    const cls = Buffer.alloc(8);
    cls.writeBigUInt64LE(BigInt(ck.CKO_PRIVATE_KEY));
    await c.call('C_FindObjectsInit', { session, template: [{ type: ck.CKA_CLASS, value: cls, valueLen: 8 }, { type: ck.CKA_LABEL, value: Buffer.from('bench-ec'), valueLen: 8 }] });
    const key = (await c.call('C_FindObjects', { session, maxObjectCount: 1 })).objects[0];
    await c.call('C_FindObjectsFinal', { session });
    const digest = createHash('sha256').update('x').digest();
    const sign = async (): Promise<void> => {
      const rv = await c.call('C_SignInit', { session, mechanism: { mechanism: ck.CKM_ECDSA, parameter: Buffer.alloc(0) }, key });
      if (rv !== 0) throw new Error(`C_SignInit: 0x${rv.toString(16)}`);
      const r = await c.call('C_Sign', { session, data: digest });
      if (r.rv !== 0) throw new Error(`C_Sign: 0x${r.rv.toString(16)}`);
    };
    for (let i = 0; i < 50; i++) await sign();
    let failedAt = 0;
    const loop = (async () => {
      for (;;) {
        // A signature started after the failure and completed: the one in flight at the failure (replayed) ended before it.
        const after = failedAt > 0;
        await sign();
        if (after) return performance.now() - failedAt;
      }
    })();
    await new Promise((r) => setTimeout(r, 100));
    failedAt = performance.now();
    await fail();
    return await loop;
  } finally {
    await c.close();
  }
}

async function failover(template: ReturnType<typeof createKeyTemplate>, kind: 'kill' | 'device-error'): Promise<string> {
  const times: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const d = await startPoolDaemon(template, {
      isolation: kind === 'kill' ? HELPER : undefined,
      pool: 'strategy = "primary-standby" retry_base_ms = 60000 probe_interval_ms = 60000',
    });
    try {
      times.push(
        await failoverMs(d, async () => {
          if (kind === 'kill') process.kill(await d.helperPid('m0'), 'SIGKILL');
          else d.members[0].faults.fail('C_Sign', ck.CKR_DEVICE_ERROR);
        }),
      );
    } finally {
      d.members[0].faults.heal();
      await d.stop();
    }
  }
  times.sort((a, b) => a - b);
  return `median ${times[Math.floor(times.length / 2)].toFixed(1)} ms, max ${times[times.length - 1].toFixed(1)} ms over ${times.length} rounds`;
}

async function main(): Promise<void> {
  // The daemon runs as root here without service.user (as bench/c/run.sh).
  process.env.PKCS11PROXYD_ALLOW_ROOT ??= '1';
  // A daemon start first: the build of the fault wrapper and of bench/c happen outside the measurements.
  await (await startDaemon()).stop();
  const template = createKeyTemplate();
  try {
    const out = (line: string): void => void process.stdout.write(`${line}\n`);
    out('ECDSA P-256 sign, 4 C clients, round-robin pool (ops/s):');
    out(`  in-worker members, 1 member:  ${await throughput(template, 1)}`);
    out(`  in-worker members, 2 members: ${await throughput(template, 2)}`);
    out(`  helper members,    1 member:  ${await throughput(template, 1, HELPER)}`);
    out(`  helper members,    2 members: ${await throughput(template, 2, HELPER)}`);
    out('Failover: failure of the primary -> next signature the client receives:');
    out(`  helper killed (SIGKILL):           ${await failover(template, 'kill')}`);
    out(`  C_Sign answers CKR_DEVICE_ERROR:   ${await failover(template, 'device-error')}`);
    out('(a hung call costs the pool call_timeout_ms before its replay)');
  } finally {
    template.cleanup();
  }
}

void main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(1);
  },
);
