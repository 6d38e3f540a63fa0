/**
 * The daemon's TLS server (use_ssl): mutual TLS 1.3 by default, the refusals
 * (no client certificate, unknown CA, expired, revoked by the CRL, a client
 * too slow to finish its handshake), each closing only that connection and
 * audited with its reason; TLS 1.2 only when configured; the certificate
 * identity reaching the authorisation table; a multi-session application of
 * our C client spread over several workers (the join ALPN name routes each
 * session's connection to the worker holding the application); SIGHUP
 * reloading the certificate.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import * as pkcs11js from 'pkcs11js';
import { startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { P11Client } from './helpers/p11-client';
import { createTestPki } from './helpers/pki';
import type { CertFiles, TestPki } from './helpers/pki';
import { USER_PIN } from './helpers/softhsm';
import { ROOT } from './helpers/daemon';
import { readJsonLines } from './helpers/json-lines';

const LIB = path.join(ROOT, 'client', 'build', 'libp11client.so');
const CKS_RW_USER_FUNCTIONS = 3;
jest.setTimeout(120_000);

let pki: TestPki;
beforeAll(() => {
  execFileSync('make', ['-C', path.join(ROOT, 'client')], { stdio: 'ignore' });
  pki = createTestPki();
});
afterAll(() => pki.cleanup());

/** The processor keys of a mutual-TLS daemon over the test PKI. */
function tlsKeys(extra = '', x509Extra = ''): string {
  return `tls { ${extra} x509 { key { crt_file = "${pki.server.cert}"; key_file = "${pki.server.key}" }; trust { crt_file = "${pki.caCert}" }; ${x509Extra} }; };`;
}

async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function clientOptions(cert: CertFiles | null, extra: tls.ConnectionOptions = {}): tls.ConnectionOptions {
  return {
    ca: fs.readFileSync(pki.caCert),
    servername: 'localhost',
    ...(cert !== null ? { cert: fs.readFileSync(cert.cert), key: fs.readFileSync(cert.key) } : {}),
    ...extra,
  };
}

/** Opens an application over TLS and answers C_GetInfo's CK_RV; throws when the daemon refuses the connection. */
async function getInfoOver(port: number, cert: CertFiles | null, extra: tls.ConnectionOptions = {}): Promise<number> {
  const c = await P11Client.open({ host: '127.0.0.1', port, tls: clientOptions(cert, extra) });
  try {
    return (await c.call('C_GetInfo', undefined)).rv;
  } finally {
    await c.close();
  }
}

describe('mutual TLS 1.3 (default) with a CRL', () => {
  let d: RunningDaemon;
  let audit: string;
  beforeAll(async () => {
    d = await startDaemon({
      tls: tlsKeys('handshake_timeout_ms = 1500;', `revoke { crl_file = "${pki.crl}" };`),
      processorExtra: 'audit_file = "audit.log";',
    });
    audit = path.join(d.hsm.dir, 'audit.log');
  });
  afterAll(async () => d?.stop());

  test('a client with a certificate of the trusted CA is served, over TLS 1.3', async () => {
    const sock = tls.connect({ host: '127.0.0.1', port: d.tcpPort!, ...clientOptions(pki.client) });
    await new Promise<void>((resolve, reject) => sock.once('secureConnect', resolve).once('error', reject));
    expect(sock.getProtocol()).toBe('TLSv1.3');
    sock.destroy();
    expect(await getInfoOver(d.tcpPort!, pki.client)).toBe(pkcs11js.CKR_OK);
    await until(() => readJsonLines(audit).some((e) => e.event === 'connection' && e.subject === 'O=pkcs11proxyd tests,CN=client1'), 'the connection event');
  });

  const refusals: Array<[string, () => CertFiles | null, string]> = [
    ['without a client certificate', () => null, 'no_certificate'],
    ['with a certificate of an unknown CA', () => pki.otherCaClient, 'unknown_ca'],
    ['with an expired certificate', () => pki.expired, 'expired'],
    ['with a revoked certificate', () => pki.revoked, 'revoked'],
  ];
  test.each(refusals)('a client %s is refused, audited with its reason', async (_what, cert, reason) => {
    const before = readJsonLines(audit).length;
    await expect(getInfoOver(d.tcpPort!, cert())).rejects.toThrow();
    await until(() => readJsonLines(audit).slice(before).some((e) => e.event === 'authentication_failure'), 'the refusal event');
    const ev = readJsonLines(audit)
      .slice(before)
      .find((e) => e.event === 'authentication_failure')!;
    expect(ev.reason).toBe(reason);
    // Served again right after: the refusal touched only that connection.
    expect(await getInfoOver(d.tcpPort!, pki.client)).toBe(pkcs11js.CKR_OK);
  });

  test('a client too slow to finish its handshake is dropped; a connection open meanwhile is served', async () => {
    const good = await P11Client.open({ host: '127.0.0.1', port: d.tcpPort!, tls: clientOptions(pki.client) });
    // Silent TCP client: never sends a ClientHello.
    const silent = net.connect(d.tcpPort!, '127.0.0.1');
    const silentClosed = new Promise<void>((resolve) => silent.on('close', () => resolve()).on('error', () => undefined));
    // A client that stops in the middle of its ClientHello.
    const half = net.connect(d.tcpPort!, '127.0.0.1', () => half.write(Buffer.from([22, 3, 1, 0, 200, 1, 0])));
    const halfClosed = new Promise<void>((resolve) => half.on('close', () => resolve()).on('error', () => undefined));
    const t0 = Date.now();
    await Promise.all([silentClosed, halfClosed]);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1000);
    expect((await good.call('C_GetInfo', undefined)).rv).toBe(pkcs11js.CKR_OK);
    await good.close();
    expect(readJsonLines(audit).filter((e) => e.event === 'authentication_failure' && e.reason === 'handshake_timeout').length).toBeGreaterThanOrEqual(2);
  });

  test('TLS 1.2 is refused unless configured', async () => {
    await expect(getInfoOver(d.tcpPort!, pki.client, { maxVersion: 'TLSv1.2' })).rejects.toThrow();
  });
});

describe('TLS 1.2 allowed by min_version', () => {
  let d: RunningDaemon;
  beforeAll(async () => {
    d = await startDaemon({ tls: tlsKeys('min_version = "1.2";') });
  });
  afterAll(async () => d?.stop());

  test('a TLS 1.2 client is served with an ECDHE AEAD suite', async () => {
    const sock = tls.connect({ host: '127.0.0.1', port: d.tcpPort!, ...clientOptions(pki.client, { maxVersion: 'TLSv1.2' }) });
    await new Promise<void>((resolve, reject) => sock.once('secureConnect', resolve).once('error', reject));
    expect(sock.getProtocol()).toBe('TLSv1.2');
    expect(sock.getCipher().name).toMatch(/^ECDHE-(ECDSA|RSA)-(AES\d+-GCM|CHACHA20)/);
    sock.destroy();
    expect(await getInfoOver(d.tcpPort!, pki.client, { maxVersion: 'TLSv1.2' })).toBe(pkcs11js.CKR_OK);
  });
});

describe('certificate identity and authorisation', () => {
  let d: RunningDaemon;
  beforeAll(async () => {
    d = await startDaemon({
      tls: tlsKeys(),
      filterExtra: 'authorization = { apps = { identities = ["subject:O=pkcs11proxyd tests,CN=client1"] aliases = ["softhsm"] } }',
    });
  });
  afterAll(async () => d?.stop());

  test('the certificate subject is the identity the authorisation table matches', async () => {
    expect(await getInfoOver(d.tcpPort!, pki.client)).toBe(pkcs11js.CKR_OK);
    // client2 holds a good certificate but no authorisation: C_LoadModule answers CKR_FUNCTION_FAILED.
    const c = await P11Client.connect({ host: '127.0.0.1', port: d.tcpPort!, tls: clientOptions(pki.client2) });
    await c.call('C_SetupArch', { arch: 1 });
    expect(await c.call('C_LoadModule', { alias: Buffer.from('softhsm') })).toBe(pkcs11js.CKR_FUNCTION_FAILED);
    await c.close();
  });
});

describe('our C client over TLS against several workers', () => {
  let d: RunningDaemon;
  beforeAll(async () => {
    d = await startDaemon({ tls: tlsKeys(), workers: 3 });
  });
  afterAll(async () => d?.stop());

  // Runs in its own process: the client library reads its settings from the real environment.
  const APP = `
    const p = require('pkcs11js');
    const mod = new p.PKCS11();
    mod.load(process.env.LIB);
    mod.C_Initialize();
    const slot = mod.C_GetSlotList(true)[0];
    const sessions = Array.from({ length: 10 }, () => mod.C_OpenSession(slot, p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION));
    mod.C_Login(sessions[0], p.CKU_USER, process.env.PIN);
    const states = sessions.map((s) => mod.C_GetSessionInfo(s).state);
    const key = mod.C_GenerateKey(sessions[1], { mechanism: p.CKM_AES_KEY_GEN }, [
      { type: p.CKA_VALUE_LEN, value: 32 }, { type: p.CKA_ENCRYPT, value: true }, { type: p.CKA_TOKEN, value: false },
    ]);
    mod.C_EncryptInit(sessions[9], { mechanism: p.CKM_AES_ECB }, key);
    const ct = mod.C_Encrypt(sessions[9], Buffer.alloc(16), Buffer.alloc(16));
    mod.C_Logout(sessions[0]);
    mod.C_Finalize();
    process.stdout.write(JSON.stringify({ states, ctLength: ct.length }));
  `;

  test('ten sessions of one application share its login and objects: each session connection reached its worker', () => {
    const conf = path.join(d.hsm.dir, 'client.conf');
    fs.writeFileSync(conf, '');
    const out = execFileSync(process.execPath, ['-e', APP], {
      cwd: ROOT,
      encoding: 'utf8',
      env: {
        ...d.hsm.env,
        LIB,
        PIN: USER_PIN,
        PKCS11PROXY_CONF: conf,
        PKCS11PROXY_SOCKET_PATH: `tls://localhost:${d.tcpPort!}`,
        PKCS11PROXY_LIBNAME: 'softhsm',
        PKCS11PROXY_CA_FILE: pki.caCert,
        PKCS11PROXY_CERT_FILE: pki.client.cert,
        PKCS11PROXY_PRIVKEY_FILE: pki.client.key,
      },
    });
    const r = JSON.parse(out) as { states: number[]; ctLength: number };
    // A session whose connection reached another worker would be a new application there: not logged in.
    expect(r.states).toEqual(Array(10).fill(CKS_RW_USER_FUNCTIONS));
    // A session object made through one session's connection is used through another's.
    expect(r.ctLength).toBe(16);
  });
});

describe('SIGHUP reloads the TLS material', () => {
  let d: RunningDaemon;
  let certFile: string;
  let keyFile: string;
  beforeAll(async () => {
    const dir = fs.mkdtempSync(path.join(pki.dir, 'reload-'));
    certFile = path.join(dir, 'server.pem');
    keyFile = path.join(dir, 'server.key');
    fs.copyFileSync(pki.server.cert, certFile);
    fs.copyFileSync(pki.server.key, keyFile);
    d = await startDaemon({
      tls: `tls { x509 { key { crt_file = "${certFile}"; key_file = "${keyFile}" }; trust { crt_file = "${pki.caCert}" }; }; };`,
      workers: 2,
      processorExtra: 'audit_file = "audit.log";',
    });
  });
  afterAll(async () => d?.stop());

  const tlsReloads = (outcome: string): number =>
    readJsonLines(path.join(d.hsm.dir, 'audit.log')).filter((e) => e.event === 'config_reload' && e.what === 'tls' && e.outcome === outcome).length;

  async function servedSerial(): Promise<string> {
    const sock = tls.connect({ host: '127.0.0.1', port: d.tcpPort!, ...clientOptions(pki.client) });
    await new Promise<void>((resolve, reject) => sock.once('secureConnect', resolve).once('error', reject));
    const serial = sock.getPeerCertificate().serialNumber;
    sock.destroy();
    return serial;
  }

  test('new connections get the new certificate; a bad pair keeps the old one', async () => {
    const first = await servedSerial();
    const next = pki.issueServer('localhost-2');
    fs.copyFileSync(next.cert, certFile);
    fs.copyFileSync(next.key, keyFile);
    const nextSerial = new (await import('node:crypto')).X509Certificate(fs.readFileSync(next.cert)).serialNumber;
    d.proc.kill('SIGHUP');
    // Each worker swaps on its own: wait until both serve the new one (connections alternate between them).
    const deadline = Date.now() + 10_000;
    let seen = 0;
    while (seen < 4) {
      if (Date.now() > deadline) throw new Error('new certificate not served');
      seen = (await servedSerial()) === nextSerial ? seen + 1 : 0;
    }
    expect(nextSerial).not.toBe(first);
    // A key that does not match its certificate: refused, the loaded pair stays.
    fs.copyFileSync(pki.client.key, keyFile);
    d.proc.kill('SIGHUP');
    await until(() => tlsReloads('error') >= 2, 'both workers refusing');
    for (let i = 0; i < 4; i++) expect(await servedSerial()).toBe(nextSerial);
  });
});

describe("Debian's Caml Crush TLS client (libp11clienttcpssl.so) against our daemon", () => {
  const SSL_CLIENT = '/usr/lib/x86_64-linux-gnu/caml-crush/libp11clienttcpssl.so';
  let d: RunningDaemon;
  let work: string;
  beforeAll(async () => {
    d = await startDaemon({ tls: tlsKeys(), workers: 2 });
    work = fs.mkdtempSync(path.join(d.hsm.dir, 'cc-'));
  });
  afterAll(async () => d?.stop());

  const tool = (args: string[], cert: CertFiles = pki.client): { status: number | null; out: string } => {
    const env = {
      ...d.hsm.env,
      PKCS11PROXY_SOCKET_PATH: `127.0.0.1:${d.tcpPort!}`,
      PKCS11PROXY_LIBNAME: 'softhsm',
      PKCS11PROXY_CA_FILE: pki.caCert,
      PKCS11PROXY_CERT_FILE: cert.cert,
      PKCS11PROXY_PRIVKEY_FILE: cert.key,
    };
    try {
      return { status: 0, out: execFileSync('pkcs11-tool', ['--module', SSL_CLIENT, ...args], { env, encoding: 'utf8', stdio: 'pipe', timeout: 60_000 }) };
    } catch (e) {
      const x = e as { status: number | null; stdout?: string; stderr?: string };
      return { status: x.status, out: `${x.stdout ?? ''}${x.stderr ?? ''}` };
    }
  };

  test('pkcs11-tool -L, --keypairgen, -O, and an ECDSA signature openssl verifies', () => {
    const l = tool(['-L']);
    expect(l.status).toBe(0);
    expect(l.out).toMatch(/token label *: test/);
    expect(tool(['--login', '--pin', USER_PIN, '--keypairgen', '--key-type', 'EC:prime256v1', '--label', 'cc-tls', '--id', '4242']).status).toBe(0);
    const o = tool(['-O', '--login', '--pin', USER_PIN]);
    expect(o.status).toBe(0);
    expect(o.out).toMatch(/label: *cc-tls/);
    const data = path.join(work, 'data');
    fs.writeFileSync(data, 'signed through libp11clienttcpssl.so\n');
    fs.writeFileSync(`${data}.sha256`, execFileSync('openssl', ['dgst', '-sha256', '-binary', data]));
    const sig = tool(['--login', '--pin', USER_PIN, '--sign', '--mechanism', 'ECDSA', '--signature-format', 'openssl', '--id', '4242', '-i', `${data}.sha256`, '-o', `${data}.sig`]);
    expect(sig.status).toBe(0);
    expect(tool(['--read-object', '--type', 'pubkey', '--id', '4242', '-o', `${data}.der`]).status).toBe(0);
    execFileSync('openssl', ['pkey', '-pubin', '-inform', 'DER', '-in', `${data}.der`, '-out', `${data}.pem`]);
    // Throws on a bad signature.
    execFileSync('openssl', ['pkeyutl', '-verify', '-pubin', '-inkey', `${data}.pem`, '-in', `${data}.sha256`, '-sigfile', `${data}.sig`], { stdio: 'ignore' });
  });

  test('its client certificate from an unknown CA is refused', () => {
    expect(tool(['-L'], pki.otherCaClient).status).not.toBe(0);
  });
});
