import * as p from 'pkcs11js';
import type { Backend, BackendContext } from '../src/bindings/backend';
import { HelperBackend } from '../src/bindings/helper/helper-backend';
import { LoadedModule, Pkcs11jsBackend } from '../src/bindings/pkcs11js-backend';
import { DEFAULT_APP_LIMITS } from '../src/server/settings';
import { ecKeyPairTemplates, mech } from '../tests/ts/helpers/attrs';
import { createSoftHsm, SOFTHSM_MODULE, USER_PIN } from '../tests/ts/helpers/softhsm';

/**
 * `npm run bench:helper-hop`: the cost of the helper process hop alone, at
 * the Backend interface (no client, no RPC, no layer stack): the same calls
 * on Pkcs11jsBackend (module in this process) and on HelperBackend (module in
 * a helper process, module_isolation "helper"), each over its own SoftHSM2
 * store. C_GetSessionInfo is nearly free in the module, so its difference is
 * the hop; ECDSA P-256 (C_SignInit + C_Sign) shows it next to real work.
 * `inflight` calls are outstanding at once (separate sessions).
 * Env: BENCH_MS per cell (default 2000).
 */
const MS = Number(process.env.BENCH_MS ?? 2000);
const ctx: BackendContext = Object.freeze({ appId: 1, alias: 'bench' });

async function session(b: Backend): Promise<{ s: number; key: number }> {
  const slot = (await b.C_GetSlotList(ctx, { tokenPresent: 1, count: 8 })).slotList[0];
  const s = (await b.C_OpenSession(ctx, { slotID: slot, flags: p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION })).session;
  return { s, key: 0 };
}

async function prepare(b: Backend, n: number): Promise<Array<{ s: number; key: number }>> {
  const all = [];
  for (let i = 0; i < n; i++) all.push(await session(b));
  await b.C_Login(ctx, { session: all[0].s, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) });
  for (const x of all) {
    const kp = await b.C_GenerateKeyPair(ctx, { session: x.s, mechanism: mech(p.CKM_EC_KEY_PAIR_GEN), ...ecKeyPairTemplates('bench') });
    x.key = kp.privateKey;
  }
  return all;
}

type Op = (b: Backend, x: { s: number; key: number }) => Promise<void>;
const WORKLOADS: Record<string, Op> = {
  sessioninfo: async (b, x) => {
    await b.C_GetSessionInfo(ctx, { session: x.s });
  },
  ecdsa: async (b, x) => {
    await b.C_SignInit(ctx, { session: x.s, mechanism: mech(p.CKM_ECDSA), key: x.key });
    await b.C_Sign(ctx, { session: x.s, data: Buffer.alloc(32, 7) });
  },
};

async function cell(b: Backend, sessions: Array<{ s: number; key: number }>, op: Op, inflight: number): Promise<{ opsPerSec: number; usPerOp: number }> {
  const end = performance.now() + MS;
  let ops = 0;
  const t0 = performance.now();
  await Promise.all(
    sessions.slice(0, inflight).map(async (x) => {
      while (performance.now() < end) {
        await op(b, x);
        ops++;
      }
    }),
  );
  const secs = (performance.now() - t0) / 1000;
  return { opsPerSec: ops / secs, usPerOp: (secs * 1e6 * inflight) / ops };
}

async function main(): Promise<void> {
  const a = createSoftHsm(['bench']);
  const h = createSoftHsm(['bench']);
  // Each backend initializes SoftHSM2 with the store named in the environment at that moment.
  process.env.SOFTHSM2_CONF = h.conf;
  const helper = new HelperBackend({ alias: 'bench', path: SOFTHSM_MODULE }, { mode: 'helper', processes: 1, callTimeoutMs: 30_000 }, DEFAULT_APP_LIMITS).asBackend();
  const hs = await prepare(helper, 4);
  process.env.SOFTHSM2_CONF = a.conf;
  const inWorker: Backend = new Pkcs11jsBackend(new LoadedModule('bench', SOFTHSM_MODULE), DEFAULT_APP_LIMITS);
  const ws = await prepare(inWorker, 4);
  console.log(`helper hop cost at the Backend interface, ${MS} ms per cell (indicative: shared machine)`);
  console.log('workload     inflight | in-worker ops/s  us/op | helper ops/s  us/op | extra us/op');
  for (const [name, op] of Object.entries(WORKLOADS)) {
    for (const inflight of [1, 4]) {
      // Alternated, so machine noise lands on both.
      const w = await cell(inWorker, ws, op, inflight);
      const x = await cell(helper, hs, op, inflight);
      console.log(
        `${name.padEnd(12)} ${String(inflight).padStart(8)} | ${w.opsPerSec.toFixed(0).padStart(15)} ${w.usPerOp.toFixed(1).padStart(6)} | ` +
          `${x.opsPerSec.toFixed(0).padStart(12)} ${x.usPerOp.toFixed(1).padStart(6)} | ${(x.usPerOp - w.usPerOp).toFixed(1).padStart(11)}`,
      );
    }
  }
  helper.finalize();
  inWorker.finalize();
  a.cleanup();
  h.cleanup();
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
