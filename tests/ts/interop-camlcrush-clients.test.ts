import fs from 'node:fs';
import path from 'node:path';
import { startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { pkcs11Tool } from './helpers/pkcs11-tool';
import { SOFTHSM_MODULE, USER_PIN } from './helpers/softhsm';

/**
 * Debian's Caml Crush client libraries (caml-crush-clients) against our
 * daemon, driven by pkcs11-tool: the drop-in promise.
 */
const CC_DIR = '/usr/lib/x86_64-linux-gnu/caml-crush';
const UNIX_CLIENT = path.join(CC_DIR, 'libp11clientunix.so');
const TCP_CLIENT = path.join(CC_DIR, 'libp11clienttcp.so');

let d: RunningDaemon;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  expect(fs.existsSync(UNIX_CLIENT)).toBe(true);
  d = await startDaemon({ tcp: true, workers: 2 });
  env = { ...process.env, PKCS11PROXY_SOCKET_PATH: d.socketPath, PKCS11PROXY_LIBNAME: 'softhsm' };
});
afterAll(async () => {
  await d?.stop();
});

/** Same key set on both sides so `--test` walks the same objects. */
function makeKeys(module: string, e: NodeJS.ProcessEnv): void {
  for (const [type, id, label] of [
    ['EC:prime256v1', '01', 'ec256'],
    ['rsa:2048', '02', 'rsa2048'],
  ]) {
    const r = pkcs11Tool(module, ['--login', '--pin', USER_PIN, '--keypairgen', '--key-type', type, '--id', id, '--label', label], e);
    expect(r.out).toMatch(/Key pair generated/);
    expect(r.status).toBe(0);
  }
}

test('-L lists the SoftHSM2 token through the unix client', () => {
  const r = pkcs11Tool(UNIX_CLIENT, ['-L'], env);
  expect(r.status).toBe(0);
  expect(r.out).toMatch(/token label\s+:\s+test/);
  expect(r.out).toMatch(/SoftHSM/);
});

test('-L through the TCP client', () => {
  const r = pkcs11Tool(TCP_CLIENT, ['-L'], { ...env, PKCS11PROXY_SOCKET_PATH: `127.0.0.1:${d.tcpPort}` });
  expect(r.status).toBe(0);
  expect(r.out).toMatch(/token label\s+:\s+test/);
});

test('--keypairgen EC P-256 and RSA 2048, -O --login, --sign', () => {
  makeKeys(UNIX_CLIENT, env);
  const list = pkcs11Tool(UNIX_CLIENT, ['-O', '--login', '--pin', USER_PIN], env);
  expect(list.status).toBe(0);
  expect(list.out).toMatch(/Private Key Object; EC/);
  expect(list.out).toMatch(/Private Key Object; RSA/);
  expect(list.out).toMatch(/Public Key Object; RSA 2048 bits/);
  const input = path.join(d.hsm.dir, 'msg.bin');
  fs.writeFileSync(input, Buffer.alloc(32, 9));
  for (const [id, m, len] of [
    ['01', 'ECDSA', 64],
    ['02', 'RSA-PKCS', 256],
  ] as const) {
    const out = path.join(d.hsm.dir, `sig-${id}.bin`);
    const r = pkcs11Tool(UNIX_CLIENT, ['--login', '--pin', USER_PIN, '--sign', '--id', id, '-m', m, '--input-file', input, '--output-file', out], env);
    expect(r.status).toBe(0);
    expect(fs.readFileSync(out).length).toBe(len);
  }
});

test('--test gives the same report as SoftHSM2 used directly on the same token', async () => {
  // A store with a single key: SoftHSM2 returns objects in a per-process
  // order, and pkcs11-tool's report depends on which key comes first.
  const d2 = await startDaemon({ workers: 1 });
  try {
    const e2 = { ...env, PKCS11PROXY_SOCKET_PATH: d2.socketPath };
    const login = ['--login', '--pin', USER_PIN];
    const gen = pkcs11Tool(UNIX_CLIENT, [...login, '--keypairgen', '--key-type', 'rsa:2048', '--id', '03', '--label', 'rsa-t'], e2);
    expect(gen.status).toBe(0);
    const viaProxy = pkcs11Tool(UNIX_CLIENT, [...login, '--test'], e2, 300_000);
    const viaDirect = pkcs11Tool(SOFTHSM_MODULE, [...login, '--test'], d2.hsm.env, 300_000);
    expect(viaDirect.out).toMatch(/RSA-PKCS-OAEP/);
    // Same report up to the RSA-OAEP step. Caml Crush's client sends
    // CK_RSA_PKCS_OAEP_PARAMS as raw struct bytes (its pSourceData a pointer
    // into the client's memory): the daemon refuses it with
    // CKR_MECHANISM_PARAM_INVALID, which pkcs11-tool reports as "Mechanism not
    // supported" and goes on. SoftHSM2 used directly fails on the label step.
    const norm = (s: string) => s.replace(/Using slot .*\n/g, '').replace(/^OAEP parameters: .*\n?/gm, '');
    const oaep = '    RSA-PKCS-OAEP: mgf not set, defaulting to MGF1-SHA256\n';
    const [directHead] = norm(viaDirect.out).split(oaep);
    const [proxyHead, ...proxyRest] = norm(viaProxy.out).split(oaep);
    expect(proxyHead).toBe(directHead);
    expect(proxyRest).toEqual(['Mechanism not supported\n', 'Mechanism not supported\n    RSA-X-509: OK\nNo errors\n']);
    expect(viaDirect.status).toBe(1);
    expect(viaProxy.status).toBe(0);
  } finally {
    await d2.stop();
  }
});
