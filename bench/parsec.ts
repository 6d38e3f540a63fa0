/**
 * npm run bench:parsec: ECDSA P-256 signatures of a 32-byte hash through a
 * Parsec slot of the daemon (our TS RPC client: C_SignInit + C_Sign, one
 * Parsec request) against the same PsaSignHash request sent straight to the
 * service by the daemon's own Parsec client, one caller, in the same run.
 * Indicative: on a shared machine the numbers move from run to run.
 *
 *   BENCH_MS=3000 BENCH_PROVIDERS="1 2" npm run bench:parsec
 */
import { createHash } from 'node:crypto';
import * as p from 'pkcs11js';
import { ParsecClient } from '../src/bindings/parsec/client';
import * as generateKey from '../src/generated/parsec/psa_generate_key_pb';
import * as signHash from '../src/generated/parsec/psa_sign_hash_pb';
import { startDaemon } from '../tests/ts/helpers/daemon';
import { P11Client } from '../tests/ts/helpers/p11-client';
import { mech } from '../tests/ts/helpers/attrs';
import { startParsec } from '../tests/ts/helpers/parsec';

const MS = Number(process.env.BENCH_MS ?? 3000);
const PROVIDERS = (process.env.BENCH_PROVIDERS ?? '1 2').split(/\s+/).filter(Boolean).map(Number);
const HASH = createHash('sha256').update('bench').digest();
const ALG = { variant: { case: 'ecdsa' as const, value: { hashAlg: { variant: { case: 'specific' as const, value: 7 } } } } };

async function timed(fn: () => Promise<void>): Promise<number> {
  for (let i = 0; i < 20; i++) await fn();
  let n = 0;
  const start = process.hrtime.bigint();
  const end = start + BigInt(MS) * 1_000_000n;
  while (process.hrtime.bigint() < end) {
    await fn();
    n++;
  }
  return n / (Number(process.hrtime.bigint() - start) / 1e9);
}

async function main(): Promise<void> {
  const svc = await startParsec('UnixPeerCredentials');
  const d = await startDaemon({ modules: [{ alias: 'parsec', path: `parsec:${svc.socket}` }] });
  try {
    const direct = new ParsecClient({ socket: svc.socket, timeoutMs: 10_000, maxResponseBytes: 1 << 20 });
    const auth = { type: 'unix' as const, uid: process.getuid?.() ?? 0 };
    process.stdout.write('provider  path                      ops/s\n');
    for (const provider of PROVIDERS) {
      const name = `bench-${provider}`;
      await direct.call(provider, 'PsaGenerateKey', generateKey.OperationSchema, {
        keyName: name,
        attributes: {
          keyType: { variant: { case: 'eccKeyPair', value: { curveFamily: 2 } } },
          keyBits: 256,
          keyPolicy: { keyUsageFlags: { signHash: true, verifyHash: true }, keyAlgorithm: { variant: { case: 'asymmetricSignature', value: ALG } } },
        },
      }, generateKey.ResultSchema, auth);
      const directOps = await timed(async () => {
        await direct.call(provider, 'PsaSignHash', signHash.OperationSchema, { keyName: name, alg: ALG, hash: HASH }, signHash.ResultSchema, auth);
      });
      const c = await P11Client.open({ path: d.socketPath }, 'parsec');
      const s = (await c.call('C_OpenSession', { slotID: provider, flags: p.CKF_SERIAL_SESSION })).session;
      if ((await c.call('C_Login', { session: s, userType: p.CKU_USER, pin: Buffer.alloc(0) })) !== 0) throw new Error('C_Login failed');
      await c.call('C_FindObjectsInit', {
        session: s,
        template: [
          { type: p.CKA_CLASS, value: Buffer.from([3, 0, 0, 0, 0, 0, 0, 0]), valueLen: 8 },
          { type: p.CKA_LABEL, value: Buffer.from(name), valueLen: name.length },
        ],
      });
      const key = (await c.call('C_FindObjects', { session: s, maxObjectCount: 1 })).objects[0];
      await c.call('C_FindObjectsFinal', { session: s });
      const proxyOps = await timed(async () => {
        if ((await c.call('C_SignInit', { session: s, mechanism: mech(p.CKM_ECDSA), key })) !== 0) throw new Error('C_SignInit failed');
        const r = await c.call('C_Sign', { session: s, data: HASH });
        if (r.rv !== 0 || r.data.length !== 64) throw new Error(`C_Sign rv ${r.rv}`);
      });
      await c.close();
      process.stdout.write(`${String(provider).padEnd(10)}direct PsaSignHash        ${directOps.toFixed(0).padStart(6)}\n`);
      process.stdout.write(`${String(provider).padEnd(10)}proxy C_SignInit+C_Sign   ${proxyOps.toFixed(0).padStart(6)}   (${((proxyOps / directOps) * 100).toFixed(0)}% of direct)\n`);
    }
    process.stdout.write(`\n(${MS} ms per cell, one caller, daemon workers 0)\n`);
  } finally {
    await d.stop();
    await svc.cleanup();
  }
}

void main();
