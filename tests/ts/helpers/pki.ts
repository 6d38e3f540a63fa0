/**
 * Test PKI made with the openssl CLI in a temp dir: a CA, a server
 * certificate for localhost / 127.0.0.1, and client certificates (good, from
 * another CA, expired, revoked) with the CA's CRL listing the revoked one.
 * Every key is ECDSA P-256 (fast to make); files are PEM.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface CertFiles {
  cert: string;
  key: string;
}

export interface TestPki {
  dir: string;
  /** The CA that signs the server and the good, expired and revoked clients. */
  caCert: string;
  caKey: string;
  /** A second CA nobody trusts; signs `otherCaClient`. */
  otherCaCert: string;
  /** CN=localhost, SAN DNS:localhost, IP:127.0.0.1, signed by the CA. */
  server: CertFiles;
  /** CN=client1, SAN DNS:client1.example, URI:urn:pkcs11proxyd:client1. */
  client: CertFiles;
  /** Same CA, a second identity: CN=client2. */
  client2: CertFiles;
  /** CN=stranger, signed by the other CA. */
  otherCaClient: CertFiles;
  /** CN=expired: notBefore 2000-01-01, notAfter 2000-01-02. */
  expired: CertFiles;
  /** CN=revoked, listed in `crl`. */
  revoked: CertFiles;
  /** The CA's CRL (PEM) revoking `revoked`. */
  crl: string;
  /** An empty CRL of the CA (nothing revoked). */
  emptyCrl: string;
  /** Extra client certificate of the CA with its own subject. */
  issueClient(name: string): CertFiles;
  /** Extra server certificate of the CA (CN=name, SAN DNS:localhost, IP:127.0.0.1), with a new key. */
  issueServer(name: string): CertFiles;
  cleanup(): void;
}

function openssl(cwd: string, args: string[]): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

function newKey(dir: string, name: string): string {
  const key = path.join(dir, `${name}.key`);
  openssl(dir, ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key]);
  return key;
}

const CA_CONF = (dir: string, name: string): string => `
[ ca ]
default_ca = ca_${name}
[ ca_${name} ]
dir = ${dir}/${name}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
crlnumber = $dir/crlnumber
default_md = sha256
default_crl_days = 3650
policy = policy_any
unique_subject = no
copy_extensions = copy
[ policy_any ]
commonName = supplied
organizationName = optional
[ v3_ca ]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ v3_server ]
basicConstraints = CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
[ v3_client ]
basicConstraints = CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
`;

interface Ca {
  name: string;
  conf: string;
  cert: string;
  key: string;
}

function makeCa(dir: string, name: string, cn: string): Ca {
  const d = path.join(dir, name);
  fs.mkdirSync(path.join(d, 'newcerts'), { recursive: true });
  fs.writeFileSync(path.join(d, 'index.txt'), '');
  fs.writeFileSync(path.join(d, 'serial'), '1000\n');
  fs.writeFileSync(path.join(d, 'crlnumber'), '01\n');
  const conf = path.join(d, 'ca.cnf');
  fs.writeFileSync(conf, CA_CONF(dir, name));
  const key = newKey(dir, `${name}-ca`);
  const cert = path.join(dir, `${name}-ca.pem`);
  openssl(dir, ['req', '-new', '-x509', '-key', key, '-out', cert, '-days', '3650', '-subj', `/O=pkcs11proxyd tests/CN=${cn}`, '-config', conf, '-extensions', 'v3_ca']);
  return { name, conf, cert, key };
}

function issue(
  dir: string,
  ca: Ca,
  name: string,
  o: { ext: 'v3_server' | 'v3_client'; san?: string; startDate?: string; endDate?: string },
): CertFiles {
  const key = newKey(dir, name);
  const csr = path.join(dir, `${name}.csr`);
  const cert = path.join(dir, `${name}.pem`);
  const reqArgs = ['req', '-new', '-key', key, '-out', csr, '-subj', `/O=pkcs11proxyd tests/CN=${name}`];
  if (o.san !== undefined) reqArgs.push('-addext', `subjectAltName=${o.san}`);
  openssl(dir, reqArgs);
  const caArgs = ['ca', '-batch', '-notext', '-config', ca.conf, '-cert', ca.cert, '-keyfile', ca.key, '-in', csr, '-out', cert, '-extensions', o.ext];
  if (o.startDate !== undefined) caArgs.push('-startdate', o.startDate, '-enddate', o.endDate!);
  else caArgs.push('-days', '3650');
  openssl(dir, caArgs);
  return { cert, key };
}

function crlOf(dir: string, ca: Ca, file: string): string {
  const out = path.join(dir, file);
  openssl(dir, ['ca', '-gencrl', '-config', ca.conf, '-cert', ca.cert, '-keyfile', ca.key, '-out', out]);
  return out;
}

/** Makes the whole PKI in a fresh temp dir (a few hundred ms). */
export function createTestPki(): TestPki {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p11pd-pki-'));
  const ca = makeCa(dir, 'main', 'Test CA');
  const other = makeCa(dir, 'other', 'Other CA');
  const server = issue(dir, ca, 'localhost', { ext: 'v3_server' });
  const client = issue(dir, ca, 'client1', { ext: 'v3_client', san: 'DNS:client1.example,URI:urn:pkcs11proxyd:client1' });
  const client2 = issue(dir, ca, 'client2', { ext: 'v3_client' });
  const otherCaClient = issue(dir, other, 'stranger', { ext: 'v3_client' });
  const expired = issue(dir, ca, 'expired', { ext: 'v3_client', startDate: '20000101000000Z', endDate: '20000102000000Z' });
  const emptyCrl = crlOf(dir, ca, 'empty-crl.pem');
  const revoked = issue(dir, ca, 'revoked', { ext: 'v3_client' });
  openssl(dir, ['ca', '-config', ca.conf, '-cert', ca.cert, '-keyfile', ca.key, '-revoke', revoked.cert]);
  const crl = crlOf(dir, ca, 'crl.pem');
  return {
    dir,
    caCert: ca.cert,
    caKey: ca.key,
    otherCaCert: other.cert,
    server,
    client,
    client2,
    otherCaClient,
    expired,
    revoked,
    crl,
    emptyCrl,
    issueClient: (name) => issue(dir, ca, name, { ext: 'v3_client' }),
    issueServer: (name) => issue(dir, ca, name, { ext: 'v3_server' }),
    cleanup: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}
