/**
 * use_ssl and its keys as the daemon loads them (config/tls-config.ts): Caml
 * Crush's tls block and legacy keys, our min_version and
 * handshake_timeout_ms, GnuTLS priority strings, and every refusal at the
 * file:line:column of the key that causes it, material checked at load.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, loadDaemonConfig } from '../../src/config';
import { versionsOfPriority } from '../../src/config/tls-config';
import { createTestPki } from './helpers/pki';
import type { TestPki } from './helpers/pki';

let pki: TestPki;
let dir: string;
beforeAll(() => {
  pki = createTestPki();
});
afterAll(() => pki.cleanup());
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p11pd-tlsconf-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Server conf with a TCP address; `processor` goes on line 4, `address` replaces the TCP one. */
function write(processor: string, address = 'address { type = "internet"; bind = "127.0.0.1:0"; };'): string {
  const filterFile = path.join(dir, 'filter.conf');
  fs.writeFileSync(filterFile, 'modules = [("softhsm", "/usr/lib/softhsm/libsofthsm2.so")]\n');
  const file = path.join(dir, 'pkcs11proxyd.conf');
  fs.writeFileSync(
    file,
    [
      'netplex { service { name = "t";',
      `  protocol { name = "rpc_pkcs11"; ${address} };`,
      `  processor { type = "rpc_pkcs11"; filter_config = "${filterFile}";`,
      `    ${processor}`,
      '  }; }; };',
      '',
    ].join('\n'),
  );
  return file;
}

const block = (extra = '', x509Extra = ''): string =>
  `use_ssl = true; tls { ${extra} x509 { key { crt_file = "${pki.server.cert}"; key_file = "${pki.server.key}" }; trust { crt_file = "${pki.caCert}" }; ${x509Extra} }; };`;

function refusal(file: string): ConfigError {
  try {
    loadDaemonConfig(file);
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error('loaded');
}

/** Column (1-based) of `needle` on line 4 of the file. */
function columnOf(file: string, needle: string): number {
  return fs.readFileSync(file, 'utf8').split('\n')[3].indexOf(needle) + 1;
}

test('defaults: TLS 1.3 only, client certificates required, 10 s handshake timeout, ECDHE AEAD list for 1.2', () => {
  const { tls } = loadDaemonConfig(write(block()));
  expect(tls).toMatchObject({
    certFile: pki.server.cert,
    keyFile: pki.server.key,
    caFile: pki.caCert,
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
    peerAuth: 'required',
    handshakeTimeoutMs: 10_000,
    ciphers: 'ECDHE+AESGCM:ECDHE+CHACHA20',
  });
});

test('use_ssl false: the TLS keys are inert (as in Caml Crush)', () => {
  expect(loadDaemonConfig(write('use_ssl = false; certfile = "/nonexistent.pem";')).tls).toBeNull();
});

test('legacy OpenSSL keys of Caml Crush', () => {
  const { tls } = loadDaemonConfig(
    write(`use_ssl = true; cafile = "${pki.caCert}"; certfile = "${pki.server.cert}"; certkey = "${pki.server.key}"; cipher_suite = "ECDHE-ECDSA-AES256-GCM-SHA384"; verify_depth = 2;`),
  );
  expect(tls).toMatchObject({ caFile: pki.caCert, ciphers: 'ECDHE-ECDSA-AES256-GCM-SHA384', verifyDepth: 2, minVersion: 'TLSv1.3' });
});

test("Debian's Caml Crush algorithms string means TLS 1.2 only", () => {
  const debian = 'SECURE256:+SECURE128:-VERS-TLS-ALL:+VERS-TLS1.2:-RSA:-DHE-DSS:-CAMELLIA-128-CBC:-CAMELLIA-256-CBC';
  const { tls } = loadDaemonConfig(write(block(`algorithms = "${debian}";`)));
  expect(tls).toMatchObject({ minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' });
  expect(versionsOfPriority('NORMAL')).toEqual(new Set(['TLSv1.2', 'TLSv1.3']));
  expect(versionsOfPriority('NORMAL:-VERS-TLS1.2')).toEqual(new Set(['TLSv1.3']));
});

test('min_version "1.2" allows both versions; handshake_timeout_ms is ours', () => {
  const { tls } = loadDaemonConfig(write(block('min_version = "1.2"; handshake_timeout_ms = 2500;')));
  expect(tls).toMatchObject({ minVersion: 'TLSv1.2', maxVersion: 'TLSv1.3', handshakeTimeoutMs: 2500 });
});

test('CRL, allowed_clients_cert_path', () => {
  const allowed = path.join(dir, 'allowed');
  fs.mkdirSync(allowed);
  fs.copyFileSync(pki.client.cert, path.join(allowed, 'client1.pem'));
  const { tls } = loadDaemonConfig(write(`${block('', `revoke { crl_file = "${pki.crl}" };`)} allowed_clients_cert_path = "${allowed}";`));
  expect(tls).toMatchObject({ crlFile: pki.crl, allowedClientsCertPath: allowed });
});

describe('refusals name the key at file:line:column', () => {
  test('a local address in a TLS service', () => {
    const file = write(block(), 'address { type = "local"; path = "/tmp/x.sock"; };');
    const e = refusal(file);
    expect([e.line, e.column]).toEqual([4, columnOf(file, 'use_ssl')]);
    expect(e.rule).toMatch(/TLS on internet addresses only/);
  });

  test('peer_auth required without trusted CAs', () => {
    const file = write(`use_ssl = true; tls { peer_auth = "required"; x509 { key { crt_file = "${pki.server.cert}"; key_file = "${pki.server.key}" }; }; };`);
    const e = refusal(file);
    expect([e.line, e.column]).toEqual([4, columnOf(file, 'peer_auth')]);
    expect(e.rule).toMatch(/needs trusted client CAs/);
  });

  test('a key that does not match its certificate, at key_file', () => {
    const file = write(`use_ssl = true; tls { x509 { key { crt_file = "${pki.server.cert}"; key_file = "${pki.client.key}" }; trust { crt_file = "${pki.caCert}" }; }; };`);
    const e = refusal(file);
    expect(e.line).toBe(4);
    expect(e.column).toBe(columnOf(file, `"${pki.client.key}"`));
    expect(e.rule).toMatch(/does not match the certificate/);
  });

  test('a missing CA file, at its crt_file', () => {
    const file = write(`use_ssl = true; tls { x509 { key { crt_file = "${pki.server.cert}"; key_file = "${pki.server.key}" }; trust { crt_file = "/nonexistent/ca.pem" }; }; };`);
    const e = refusal(file);
    expect(e.column).toBe(columnOf(file, '"/nonexistent/ca.pem"'));
    expect(e.rule).toMatch(/cannot read \/nonexistent\/ca.pem: ENOENT/);
  });

  test('a GnuTLS priority that adds algorithms, or a version below 1.2', () => {
    for (const algorithms of ['NORMAL:+ARCFOUR-128', 'NORMAL:+VERS-TLS1.0', 'ARCFOUR-128']) {
      const file = write(block(`algorithms = "${algorithms}";`));
      const e = refusal(file);
      expect(e.column).toBe(columnOf(file, `"${algorithms}"`));
    }
  });

  test('min_version and algorithms that leave no version', () => {
    const file = write(block('algorithms = "NORMAL:-VERS-TLS1.3"; min_version = "1.3";'));
    expect(refusal(file).rule).toMatch(/no TLS version is left/);
  });
});
