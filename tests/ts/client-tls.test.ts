/**
 * Our C client over TLS (tls://host:port, OpenSSL): against Debian's Caml
 * Crush TLS daemon (GnuTLS, TLS 1.2, client certificate required) and, in
 * TLS 1.3 with session resumption, against our daemon's own TLS server with
 * two workers (shared ticket keys). Handshake counts come from the library's
 * PKCS11PROXY_TLS_STATS file (a state, rewritten after each handshake) and
 * from the daemon's `connection` audit events (`resumed`).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFile, execFileSync } from 'node:child_process';
import { startCamlCrushTls } from './helpers/camlcrush-tls-daemon';
import type { RunningCamlCrushTls } from './helpers/camlcrush-tls-daemon';
import { createTestPki } from './helpers/pki';
import type { TestPki } from './helpers/pki';
import { ROOT, startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { USER_PIN } from './helpers/softhsm';
import { readJsonLines } from './helpers/json-lines';

const LIB = path.join(ROOT, 'client', 'build', 'libp11client.so');
jest.setTimeout(180_000);

interface Stats {
  full_handshakes: number;
  resumed_handshakes: number;
}

let work: string;
let pki: TestPki;

beforeAll(() => {
  execFileSync('make', ['-C', path.join(ROOT, 'client')], { stdio: 'ignore' });
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'p11pd-client-tls-'));
  pki = createTestPki();
});
afterAll(() => {
  pki.cleanup();
  fs.rmSync(work, { recursive: true, force: true });
});

function clientEnv(base: NodeJS.ProcessEnv, address: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const conf = path.join(work, 'client.conf');
  fs.writeFileSync(conf, '');
  return {
    ...base,
    PKCS11PROXY_CONF: conf,
    PKCS11PROXY_SOCKET_PATH: address,
    PKCS11PROXY_LIBNAME: 'softhsm',
    PKCS11PROXY_CA_FILE: pki.caCert,
    PKCS11PROXY_CERT_FILE: pki.client.cert,
    PKCS11PROXY_PRIVKEY_FILE: pki.client.key,
    ...extra,
  };
}

/** pkcs11-tool without blocking the event loop (the TLS server of the second suite runs in this process). */
function pkcs11Tool(module: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ status: number | null; out: string }> {
  return new Promise((resolve) => {
    execFile('pkcs11-tool', ['--module', module, ...args], { env, encoding: 'utf8', timeout: 120_000 }, (err, stdout, stderr) => {
      const status = err === null ? 0 : typeof err.code === 'number' ? err.code : null;
      resolve({ status, out: `${stdout}${stderr}` });
    });
  });
}

function readStats(file: string): Stats {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as Stats;
}

/** Keypair generation, ECDSA sign through the library, verified by openssl with the public key read back. */
async function signAndVerify(env: NodeJS.ProcessEnv, id: string): Promise<void> {
  const gen = await pkcs11Tool(LIB, ['--login', '--pin', USER_PIN, '--keypairgen', '--key-type', 'EC:prime256v1', '--label', `k${id}`, '--id', id], env);
  expect(gen.status).toBe(0);
  const listed = await pkcs11Tool(LIB, ['-O', '--login', '--pin', USER_PIN], env);
  expect(listed.status).toBe(0);
  expect(listed.out).toMatch(new RegExp(`label: *k${id}`));
  const data = path.join(work, `data${id}`);
  fs.writeFileSync(data, 'pkcs11proxyd client over TLS\n');
  const digest = execFileSync('openssl', ['dgst', '-sha256', '-binary', data]);
  fs.writeFileSync(`${data}.sha256`, digest);
  const sig = await pkcs11Tool(LIB, ['--login', '--pin', USER_PIN, '--sign', '--mechanism', 'ECDSA', '--signature-format', 'openssl', '--id', id, '-i', `${data}.sha256`, '-o', `${data}.sig`], env);
  expect(sig.status).toBe(0);
  expect((await pkcs11Tool(LIB, ['--read-object', '--type', 'pubkey', '--id', id, '-o', `${data}.der`], env)).status).toBe(0);
  execFileSync('openssl', ['pkey', '-pubin', '-inform', 'DER', '-in', `${data}.der`, '-out', `${data}.pem`]);
  // Throws on a bad signature.
  execFileSync('openssl', ['pkeyutl', '-verify', '-pubin', '-inkey', `${data}.pem`, '-in', `${data}.sha256`, '-sigfile', `${data}.sig`], { stdio: 'ignore' });
}

describe("against Caml Crush's TLS daemon (GnuTLS, TLS 1.2)", () => {
  let cc: RunningCamlCrushTls;
  beforeAll(async () => {
    cc = await startCamlCrushTls(pki);
  });
  afterAll(async () => cc.stop());

  test('pkcs11-tool -L, keypairgen, -O, ECDSA sign verified by openssl', async () => {
    const stats = path.join(work, 'cc-stats.json');
    const env = clientEnv(cc.hsm.env, `tls://localhost:${cc.port}`, { PKCS11PROXY_TLS_STATS: stats });
    const l = await pkcs11Tool(LIB, ['-L'], env);
    expect(l.status).toBe(0);
    expect(l.out).toMatch(/token label *: test/);
    expect(readStats(stats).full_handshakes + readStats(stats).resumed_handshakes).toBe(1);
    await signAndVerify(env, '21');
  });

  test('a server certificate from another CA is refused (CKR_DEVICE_ERROR)', async () => {
    const env = clientEnv(cc.hsm.env, `tls://localhost:${cc.port}`, { PKCS11PROXY_CA_FILE: pki.otherCaCert });
    const r = await pkcs11Tool(LIB, ['-L'], env);
    expect(r.status).not.toBe(0);
    expect(r.out).toMatch(/C_Initialize.*CKR_DEVICE_ERROR/);
  });

  test('an address the certificate does not name is refused', async () => {
    // The server certificate names DNS:localhost and IP:127.0.0.1 only; 127.0.0.2 is the same loopback daemon.
    const ok = await pkcs11Tool(LIB, ['-L'], clientEnv(cc.hsm.env, `tls://127.0.0.1:${cc.port}`));
    expect(ok.status).toBe(0);
    const r = await pkcs11Tool(LIB, ['-L'], clientEnv(cc.hsm.env, `tls://127.0.0.2:${cc.port}`));
    expect(r.status).not.toBe(0);
    expect(r.out).toMatch(/C_Initialize.*CKR_DEVICE_ERROR/);
  });

  test('without a client certificate the daemon refuses the handshake', async () => {
    const env = clientEnv(cc.hsm.env, `tls://localhost:${cc.port}`);
    delete env.PKCS11PROXY_CERT_FILE;
    delete env.PKCS11PROXY_PRIVKEY_FILE;
    const r = await pkcs11Tool(LIB, ['-L'], env);
    expect(r.status).not.toBe(0);
    expect(r.out).toMatch(/C_Initialize.*CKR_DEVICE_ERROR/);
  });

  test('settings that cannot work fail C_Initialize with CKR_GENERAL_ERROR', async () => {
    const noCa = clientEnv(cc.hsm.env, `tls://localhost:${cc.port}`);
    delete noCa.PKCS11PROXY_CA_FILE;
    expect((await pkcs11Tool(LIB, ['-L'], noCa)).out).toMatch(/C_Initialize.*CKR_GENERAL_ERROR/);
    const keyless = clientEnv(cc.hsm.env, `tls://localhost:${cc.port}`);
    delete keyless.PKCS11PROXY_PRIVKEY_FILE;
    expect((await pkcs11Tool(LIB, ['-L'], keyless)).out).toMatch(/C_Initialize.*CKR_GENERAL_ERROR/);
    const wrongKey = clientEnv(cc.hsm.env, `tls://localhost:${cc.port}`, { PKCS11PROXY_PRIVKEY_FILE: pki.client2.key });
    expect((await pkcs11Tool(LIB, ['-L'], wrongKey)).out).toMatch(/C_Initialize.*CKR_GENERAL_ERROR/);
  });
});

describe("TLS 1.3 with session resumption, against our daemon's TLS server (2 workers)", () => {
  let daemon: RunningDaemon;
  let audit: string;
  beforeAll(async () => {
    daemon = await startDaemon({
      workers: 2,
      tls: `tls { x509 { key { crt_file = "${pki.server.cert}"; key_file = "${pki.server.key}" }; trust { crt_file = "${pki.caCert}" }; }; };`,
      processorExtra: 'audit_file = "audit.log";',
    });
    audit = path.join(daemon.hsm.dir, 'audit.log');
  });
  afterAll(async () => daemon.stop());

  /** The daemon's view: one `connection` audit event per TLS connection it let in. */
  function serverHandshakes(): { full: number; resumed: number } {
    const events = readJsonLines<{ event: string; transport?: string; resumed?: boolean }>(audit);
    const conns = events.filter((e) => e.event === 'connection' && e.transport === 'tls');
    return { full: conns.filter((e) => e.resumed === false).length, resumed: conns.filter((e) => e.resumed === true).length };
  }

  test('the connection of each session resumes the control connection’s session', async () => {
    const stats = path.join(work, 'ours-stats.json');
    const env = clientEnv(daemon.hsm.env, `tls://localhost:${daemon.tcpPort!}`, { PKCS11PROXY_TLS_STATS: stats });
    // pkcs11-tool --sign: the control connection, then one connection for its session.
    await signAndVerify(env, '31');
    const s = readStats(stats);
    expect(s.full_handshakes).toBe(1);
    expect(s.resumed_handshakes).toBeGreaterThanOrEqual(1);
    // Over the four pkcs11-tool runs: one full handshake per process, the daemon agrees.
    const h = serverHandshakes();
    expect(h.full).toBe(4);
    expect(h.resumed).toBeGreaterThanOrEqual(4);
  });
});
