import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT, startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { P11Client } from './helpers/p11-client';
import { startParsec } from './helpers/parsec';
import type { ParsecService } from './helpers/parsec';
import { pkcs11Tool } from './helpers/pkcs11-tool';

/**
 * The Parsec backend against the real Parsec service (UnixPeerCredentials:
 * the daemon's uid is the Parsec client, as parsec-tool run here), through
 * our C client with pkcs11-tool, results checked by openssl and parsec-tool.
 * Slot 2 is the PKCS #11 provider (SoftHSM2), slot 1 Mbed Crypto.
 */
const CLIENT = path.join(ROOT, 'client', 'build', 'libp11client.so');
const CKR_OK = 0;
const CKR_DEVICE_ERROR = 0x30;
const CKU_USER = 1;
const CKF_SERIAL_RW = 0x6;

let svc: ParsecService;
let d: RunningDaemon;
let env: NodeJS.ProcessEnv;
let tmp: string;

beforeAll(async () => {
  svc = await startParsec('UnixPeerCredentials');
  d = await startDaemon({
    modules: [
      { alias: 'parsec', path: `parsec:${svc.socket}?timeout_ms=10000` },
      // The same service with a short deadline, for the hung-service case.
      { alias: 'impatient', path: `parsec:${svc.socket}?timeout_ms=400` },
    ],
  });
  env = { ...process.env, PKCS11PROXY_SOCKET_PATH: d.socketPath, PKCS11PROXY_LIBNAME: 'parsec' };
  tmp = fs.mkdtempSync(path.join(d.hsm.dir, 'files-'));
  fs.writeFileSync(path.join(tmp, 'msg'), 'hello parsec\n');
}, 60_000);
afterAll(async () => {
  await d?.stop();
  await svc?.cleanup();
}, 60_000);

/** pkcs11-tool on a slot, logged in (no PIN: the token has a protected authentication path). */
function tool(slot: number, args: string[]): { status: number | null; out: string } {
  return pkcs11Tool(CLIENT, ['--slot', String(slot), '--login', ...args], env);
}
function ok(slot: number, args: string[]): string {
  const r = tool(slot, args);
  if (r.status !== 0) throw new Error(`pkcs11-tool ${args.join(' ')} -> ${r.status}\n${r.out}`);
  return r.out;
}
const f = (name: string): string => path.join(tmp, name);
const hexId = (name: string): string => Buffer.from(name).toString('hex');
/** The public key of a key pair as a PEM file, from the proxy (--read-object gives SubjectPublicKeyInfo DER). */
function publicPem(slot: number, name: string): string {
  ok(slot, ['--read-object', '--type', 'pubkey', '--id', hexId(name), '-o', f(`${name}.der`)]);
  execFileSync('openssl', ['pkey', '-pubin', '-inform', 'DER', '-in', f(`${name}.der`), '-out', f(`${name}.pem`)]);
  return f(`${name}.pem`);
}
function parsecKeys(): string {
  const r = svc.tool(['list-keys']);
  expect(r.status).toBe(0);
  return r.out;
}

test('-L lists one slot per provider in ListProviders order (PKCS #11 first, Mbed Crypto next), Core excluded', () => {
  const out = pkcs11Tool(CLIENT, ['-L'], env).out;
  const slots = [...out.matchAll(/^Slot \d+ \(0x([0-9a-f]+)\)/gm)].map((m) => Number.parseInt(m[1], 16));
  expect(slots).toEqual([2, 1]);
  expect(out).toMatch(/token label\s+: Parsec PKCS #11/);
  expect(out).toMatch(/token label\s+: Parsec Mbed Crypto/);
  expect(out).toMatch(/token flags\s+: login required, PIN pad present/);
});

test('-O lists a key pair parsec-tool created as a private and a public object with its name as label and id', () => {
  expect(svc.tool(['-p', '2', 'create-ecc-key', '-k', 'from-tool']).status).toBe(0);
  const out = ok(2, ['-O']);
  const objs = [...out.matchAll(/^(Private|Public) Key Object; EC[\s\S]*?label:\s+(\S+)\n\s+ID:\s+(\S+)/gm)].map((m) => `${m[1]} ${m[2]} ${m[3]}`);
  expect(objs).toEqual(expect.arrayContaining([`Private from-tool ${hexId('from-tool')}`, `Public from-tool ${hexId('from-tool')}`]));
  // Without login only the public half is visible.
  const pub = pkcs11Tool(CLIENT, ['--slot', '2', '-O'], env).out;
  expect(pub).toMatch(/Public Key Object; EC/);
  expect(pub).not.toMatch(/Private Key Object/);
});

test('--keypairgen EC P-256, --sign ECDSA-SHA256 verified by openssl with the exported public key; parsec-tool sees the key', () => {
  ok(2, ['--keypairgen', '--key-type', 'EC:prime256v1', '--label', 'ec256']);
  ok(2, ['--sign', '-m', 'ECDSA-SHA256', '--id', hexId('ec256'), '-i', f('msg'), '-o', f('ec256.sig'), '--signature-format', 'openssl']);
  const pem = publicPem(2, 'ec256');
  const v = execFileSync('openssl', ['dgst', '-sha256', '-verify', pem, '-signature', f('ec256.sig'), f('msg')], { encoding: 'utf8' });
  expect(v).toContain('Verified OK');
  expect(parsecKeys()).toMatch(/\* ec256 \(PKCS #11 provider, EccKeyPair \{ curve_family: SecpR1 \}, 256 bits/);
  // CKM_ECDSA: the caller hashes; the same key signs a SHA-256 value.
  fs.writeFileSync(f('msg.sha256'), execFileSync('openssl', ['dgst', '-sha256', '-binary', f('msg')]));
  ok(2, ['--sign', '-m', 'ECDSA', '--id', hexId('ec256'), '-i', f('msg.sha256'), '-o', f('ec256r.sig'), '--signature-format', 'openssl']);
  const raw = execFileSync('openssl', ['pkeyutl', '-verify', '-pubin', '-inkey', pem, '-in', f('msg.sha256'), '-sigfile', f('ec256r.sig')], { encoding: 'utf8' });
  expect(raw).toContain('Signature Verified Successfully');
});

test('the OpenSSL pkcs11 engine (libp11) signs with a Parsec key by URI, logging in without a PIN; openssl verifies', () => {
  const uri = 'pkcs11:token=Parsec%20PKCS%20%2311;object=ec256;type=private';
  execFileSync('openssl', ['pkeyutl', '-engine', 'pkcs11', '-keyform', 'engine', '-inkey', uri, '-sign', '-in', f('msg.sha256'), '-out', f('engine.sig')], {
    env: { ...env, PKCS11_MODULE_PATH: CLIENT },
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 60_000,
  });
  const v = execFileSync('openssl', ['pkeyutl', '-verify', '-pubin', '-inkey', publicPem(2, 'ec256'), '-in', f('msg.sha256'), '-sigfile', f('engine.sig')], { encoding: 'utf8' });
  expect(v).toContain('Signature Verified Successfully');
});

test('--keypairgen EC P-384 and RSA 3072 on the PKCS #11 provider; a signature verifies through the proxy', () => {
  ok(2, ['--keypairgen', '--key-type', 'EC:secp384r1', '--label', 'ec384', '--usage-sign']);
  ok(2, ['--keypairgen', '--key-type', 'rsa:3072', '--label', 'rsa3072', '--usage-sign']);
  ok(2, ['--sign', '-m', 'ECDSA-SHA384', '--id', hexId('ec384'), '-i', f('msg'), '-o', f('ec384.sig')]);
  expect(ok(2, ['--verify', '-m', 'ECDSA-SHA384', '--id', hexId('ec384'), '-i', f('msg'), '--signature-file', f('ec384.sig')])).toContain(
    'Signature is valid',
  );
  const keys = parsecKeys();
  expect(keys).toMatch(/\* ec384 \(PKCS #11 provider, EccKeyPair \{ curve_family: SecpR1 \}, 384 bits, permitted algorithm: AsymmetricSignature\(Ecdsa \{ hash_alg: Specific\(Sha384\) \}\)\)/);
  expect(keys).toMatch(/\* rsa3072 \(PKCS #11 provider, RsaKeyPair, 3072 bits, permitted algorithm: AsymmetricSignature\(RsaPkcs1v15Sign/);
  // An RSA-PKCS#1 signature of the 3072-bit key, verified by openssl.
  ok(2, ['--sign', '-m', 'SHA256-RSA-PKCS', '--id', hexId('rsa3072'), '-i', f('msg'), '-o', f('rsa3072.sig')]);
  const v = execFileSync('openssl', ['dgst', '-sha256', '-verify', publicPem(2, 'rsa3072'), '-signature', f('rsa3072.sig'), f('msg')], { encoding: 'utf8' });
  expect(v).toContain('Verified OK');
});

test('RSA-PSS (Mbed Crypto): --keypairgen with allowed PSS mechanisms, --sign SHA256-RSA-PKCS-PSS verified by openssl', () => {
  ok(1, ['--keypairgen', '--key-type', 'rsa:2048', '--label', 'pss', '--usage-sign', '--allowed-mechanisms', 'RSA-PKCS-PSS,SHA256-RSA-PKCS-PSS']);
  ok(1, ['--sign', '-m', 'SHA256-RSA-PKCS-PSS', '--id', hexId('pss'), '-i', f('msg'), '-o', f('pss.sig')]);
  const v = execFileSync(
    'openssl',
    ['dgst', '-sha256', '-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:32', '-verify', publicPem(1, 'pss'), '-signature', f('pss.sig'), f('msg')],
    { encoding: 'utf8' },
  );
  expect(v).toContain('Verified OK');
  expect(parsecKeys()).toMatch(/\* pss \(Mbed Crypto provider, RsaKeyPair, 2048 bits, permitted algorithm: AsymmetricSignature\(RsaPss \{ hash_alg: Specific\(Sha256\) \}\)\)/);
  // PSA's PSS salt is the hash length: another salt cannot be expressed.
  const r = tool(1, ['--sign', '-m', 'SHA256-RSA-PKCS-PSS', '--salt-len', '20', '--id', hexId('pss'), '-i', f('msg'), '-o', f('pss20.sig')]);
  expect(r.status).not.toBe(0);
  expect(r.out).toContain('CKR_MECHANISM_PARAM_INVALID');
});

test('RSA-OAEP (Mbed Crypto): openssl encrypts with the exported public key, the proxy decrypts', () => {
  ok(1, ['--keypairgen', '--key-type', 'rsa:2048', '--label', 'oaep', '--usage-decrypt']);
  execFileSync('openssl', [
    'pkeyutl', '-encrypt', '-pubin', '-inkey', publicPem(1, 'oaep'), '-pkeyopt', 'rsa_padding_mode:oaep', '-pkeyopt', 'rsa_oaep_md:sha256',
    '-pkeyopt', 'rsa_mgf1_md:sha256', '-in', f('msg'), '-out', f('msg.oaep'),
  ]);
  ok(1, ['--decrypt', '-m', 'RSA-PKCS-OAEP', '--hash-algorithm', 'SHA256', '--mgf', 'MGF1-SHA256', '--id', hexId('oaep'), '-i', f('msg.oaep'), '-o', f('msg.dec')]);
  expect(fs.readFileSync(f('msg.dec'), 'utf8')).toBe('hello parsec\n');
  // The key's one algorithm is OAEP: signing with it is refused before the service is asked.
  const r = tool(1, ['--sign', '-m', 'SHA256-RSA-PKCS', '--id', hexId('oaep'), '-i', f('msg'), '-o', f('x.sig')]);
  expect(r.out).toContain('CKR_KEY_FUNCTION_NOT_PERMITTED');
});

test('C_CreateObject of a public key is PsaImportKey: openssl\'s EC key signs, the imported key verifies through the proxy', () => {
  execFileSync('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', f('ext.key')]);
  execFileSync('openssl', ['pkey', '-in', f('ext.key'), '-pubout', '-outform', 'DER', '-out', f('ext.pub.der')]);
  execFileSync('openssl', ['dgst', '-sha256', '-sign', f('ext.key'), '-out', f('ext.sig'), f('msg')]);
  ok(1, ['--write-object', f('ext.pub.der'), '--type', 'pubkey', '--label', 'imported', '--usage-sign']);
  expect(parsecKeys()).toMatch(/\* imported \(Mbed Crypto provider, EccPublicKey \{ curve_family: SecpR1 \}, 256 bits/);
  expect(ok(1, ['--verify', '-m', 'ECDSA-SHA256', '--id', hexId('imported'), '-i', f('msg'), '--signature-file', f('ext.sig'), '--signature-format', 'openssl'])).toContain(
    'Signature is valid',
  );
  // A signature of other data is CKR_SIGNATURE_INVALID, not a crash or a false OK.
  fs.writeFileSync(f('other'), 'other data\n');
  const bad = tool(1, ['--verify', '-m', 'ECDSA-SHA256', '--id', hexId('imported'), '-i', f('other'), '--signature-file', f('ext.sig'), '--signature-format', 'openssl']);
  expect(bad.out).toContain('Invalid signature');
});

test('what one PSA key cannot be is refused precisely: RSA for both signing and decryption, a key size PSA does not generate', () => {
  // pkcs11-tool's default RSA usage asks for sign and decrypt: one PSA algorithm cannot serve both.
  expect(tool(2, ['--keypairgen', '--key-type', 'rsa:2048', '--label', 'both']).out).toContain('CKR_TEMPLATE_INCONSISTENT');
  expect(tool(2, ['--keypairgen', '--key-type', 'rsa:1024', '--label', 'small', '--usage-sign']).out).toContain('CKR_KEY_SIZE_RANGE');
  expect(tool(2, ['--keypairgen', '--key-type', 'EC:secp521r1', '--label', 'p521', '--usage-sign']).out).toContain('CKR_DOMAIN_PARAMS_INVALID');
  expect(parsecKeys()).not.toMatch(/\* (both|small|p521) /);
});

test('--delete-object destroys the Parsec key (both objects go)', () => {
  ok(2, ['--keypairgen', '--key-type', 'EC:prime256v1', '--label', 'doomed', '--usage-sign']);
  expect(parsecKeys()).toContain('* doomed ');
  ok(2, ['--delete-object', '--type', 'privkey', '--id', hexId('doomed')]);
  expect(parsecKeys()).not.toContain('* doomed ');
  expect(ok(2, ['-O'])).not.toContain('doomed');
});

test('a PIN is refused (CKR_PIN_INCORRECT); digest and random are served', () => {
  const r = pkcs11Tool(CLIENT, ['--slot', '2', '--login', '--pin', '1234', '-O'], env);
  expect(r.out).toContain('CKR_PIN_INCORRECT');
  // Slot 2 has no PsaHashCompute (the daemon hashes), slot 1 has it; a long input is hashed by the daemon.
  fs.writeFileSync(f('long'), Buffer.alloc(200_000, 0x61));
  for (const [slot, file, m, alg] of [[2, 'msg', 'SHA256', '-sha256'], [1, 'msg', 'SHA384', '-sha384'], [1, 'long', 'SHA512', '-sha512']] as const) {
    const digest = execFileSync('pkcs11-tool', ['--module', CLIENT, '--slot', String(slot), '--hash', '-m', m, '-i', f(file)], { env, stdio: ['ignore', 'pipe', 'ignore'] });
    expect(digest.toString('hex')).toBe(execFileSync('openssl', ['dgst', alg, '-binary', f(file)]).toString('hex'));
  }
  const random = execFileSync('pkcs11-tool', ['--module', CLIENT, '--slot', '1', '--generate-random', '32'], { env });
  expect(random.length).toBe(32);
});

test('a stopped service answers CKR_DEVICE_ERROR, and after its restart the same session and keys are served again', async () => {
  const c = await P11Client.open({ path: d.socketPath }, 'parsec');
  try {
    const { rv: orv, session } = await c.call('C_OpenSession', { slotID: 2, flags: CKF_SERIAL_RW });
    expect(orv).toBe(CKR_OK);
    expect(await c.call('C_Login', { session, userType: CKU_USER, pin: Buffer.alloc(0) })).toBe(CKR_OK);
    await svc.stop();
    expect((await c.call('C_GetSlotList', { tokenPresent: 1, count: 0 })).rv).toBe(CKR_DEVICE_ERROR);
    expect(await c.call('C_FindObjectsInit', { session, template: [] })).toBe(CKR_DEVICE_ERROR);
    await svc.start();
    const list = await c.call('C_GetSlotList', { tokenPresent: 1, count: 8 });
    expect(list.rv).toBe(CKR_OK);
    expect(list.slotList).toEqual([2, 1]);
    expect(await c.call('C_FindObjectsInit', { session, template: [{ type: 0x3 /* CKA_LABEL */, value: Buffer.from('ec256'), valueLen: 5 }] })).toBe(CKR_OK);
    const found = await c.call('C_FindObjects', { session, maxObjectCount: 8 });
    expect(found.rv).toBe(CKR_OK);
    expect(found.objects).toHaveLength(2);
    expect(await c.call('C_FindObjectsFinal', { session })).toBe(CKR_OK);
  } finally {
    await c.close();
  }
});

test('a hung service (SIGSTOP) answers CKR_DEVICE_ERROR once the deadline passes, and serves again when it resumes', async () => {
  const c = await P11Client.open({ path: d.socketPath }, 'impatient');
  try {
    const { session } = await c.call('C_OpenSession', { slotID: 1, flags: CKF_SERIAL_RW });
    svc.signal('SIGSTOP');
    const started = Date.now();
    try {
      expect((await c.call('C_GenerateRandom', { session, length: 16 })).rv).toBe(CKR_DEVICE_ERROR);
    } finally {
      svc.signal('SIGCONT');
    }
    expect(Date.now() - started).toBeGreaterThanOrEqual(400);
    const r = await c.call('C_GenerateRandom', { session, length: 16 });
    expect(r.rv).toBe(CKR_OK);
    expect(r.data).toHaveLength(16);
  } finally {
    await c.close();
  }
});
