import * as p from 'pkcs11js';
import { P11Client } from '../tests/ts/helpers/p11-client';
import { bool, bytes, mech } from '../tests/ts/helpers/attrs';
import { USER_PIN } from '../tests/ts/helpers/softhsm';

/**
 * One benchmark client process: `node bench-client.js proxy|direct SOCKET|MODULE WORKLOAD MS`.
 * Prints one JSON line {ops, latUs: sorted latencies in microseconds}.
 */
type Op = () => Promise<void>;

async function proxyOps(socket: string, workload: string): Promise<{ op: Op; close(): Promise<void> }> {
  const c = await P11Client.open({ path: socket });
  const slot = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList[0];
  const s = (await c.call('C_OpenSession', { slotID: slot, flags: p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION })).session;
  await c.call('C_Login', { session: s, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) });
  await c.call('C_FindObjectsInit', { session: s, template: [bytes(p.CKA_LABEL, 'bench-ec'), bool(p.CKA_SIGN, true)] });
  const keys = (await c.call('C_FindObjects', { session: s, maxObjectCount: 4 })).objects;
  await c.call('C_FindObjectsFinal', { session: s });
  const priv = keys[0];
  const digest = Buffer.alloc(32, 3);
  const op: Op =
    workload === 'C_GetSessionInfo'
      ? async () => {
          const r = await c.call('C_GetSessionInfo', { session: s });
          if (r.rv !== 0) throw new Error(`rv ${r.rv}`);
        }
      : async () => {
          // pkcs11-tool order: private key found by the CKA_SIGN search below.
          if ((await c.call('C_SignInit', { session: s, mechanism: mech(p.CKM_ECDSA), key: priv })) !== 0) throw new Error('SignInit');
          const r = await c.call('C_Sign', { session: s, data: digest });
          if (r.rv !== 0) throw new Error(`rv ${r.rv}`);
        };
  return { op, close: () => c.close() };
}

async function directOps(module: string, workload: string): Promise<{ op: Op; close(): Promise<void> }> {
  const m = new p.PKCS11();
  m.load(module);
  m.C_Initialize();
  const slot = m.C_GetSlotList(true)[0];
  const s = m.C_OpenSession(slot, p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION);
  m.C_Login(s, p.CKU_USER, USER_PIN);
  m.C_FindObjectsInit(s, [{ type: p.CKA_LABEL, value: 'bench-ec' }, { type: p.CKA_SIGN, value: true }]);
  const priv = m.C_FindObjects(s, 1)[0];
  m.C_FindObjectsFinal(s);
  const digest = Buffer.alloc(32, 3);
  const out = Buffer.alloc(256);
  const op: Op =
    workload === 'C_GetSessionInfo'
      ? async () => {
          m.C_GetSessionInfo(s);
        }
      : async () => {
          m.C_SignInit(s, { mechanism: p.CKM_ECDSA }, priv);
          m.C_Sign(s, digest, out);
        };
  return { op, close: async () => m.C_Finalize() };
}

async function main(): Promise<void> {
  const [mode, target, workload, msArg] = process.argv.slice(2);
  const { op, close } = mode === 'direct' ? await directOps(target, workload) : await proxyOps(target, workload);
  for (let i = 0; i < 200; i++) await op();
  process.stdout.write('ready\n');
  // Start together: the parent sends "go" on stdin.
  await new Promise<void>((resolve) => process.stdin.once('data', () => resolve()));
  const end = Date.now() + Number(msArg);
  const lat: number[] = [];
  while (Date.now() < end) {
    const t0 = process.hrtime.bigint();
    await op();
    lat.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  await close();
  lat.sort((a, b) => a - b);
  const pick = (q: number) => lat[Math.min(lat.length - 1, Math.floor(q * lat.length))];
  process.stdout.write(JSON.stringify({ ops: lat.length, p50: pick(0.5), p99: pick(0.99) }) + '\n');
  process.exit(0);
}

void main();
