import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { CAMLCRUSH_DAEMON } from './camlcrush-daemon';
import { createSoftHsm, SOFTHSM_MODULE } from './softhsm';
import type { SoftHsmStore } from './softhsm';

/** PEM file paths of one test PKI made with the openssl CLI (EC P-256). */
export interface TestPki {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
}

/**
 * A CA, a server certificate whose subjectAltName is `serverSan` (e.g.
 * `DNS:localhost,IP:127.0.0.1`; the subject CN is `cn`, never used for host
 * matching) and a client certificate, in `dir` (created).
 */
export function makeTestPki(dir: string, serverSan: string, cn = 'pkcs11proxyd-test'): TestPki {
  fs.mkdirSync(dir, { recursive: true });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl(dir, ['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=client-tls test CA']);
  const issue = (name: string, subject: string, ext: string) => {
    fs.writeFileSync(path.join(dir, `${name}.ext`), ext);
    openssl(dir, ['req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject]);
    openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`]);
  };
  issue('server', `/CN=${cn}`, `subjectAltName=${serverSan}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
  issue('client', '/CN=client-tls test client', 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n');
  const p = (f: string) => path.join(dir, f);
  return { dir, ca: p('ca.pem'), serverCert: p('server.pem'), serverKey: p('server.key'), clientCert: p('client.pem'), clientKey: p('client.key') };
}

/** A free TCP port on 127.0.0.1 (bound then released). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export interface RunningCamlCrushTls {
  port: number;
  hsm: SoftHsmStore;
  output(): string;
  stop(): Promise<void>;
}

/**
 * Debian's Caml Crush daemon with `use_ssl = true` and the netplex `tls`
 * block (GnuTLS, TLS 1.2 only, client certificate required) on
 * 127.0.0.1:PORT, in front of a fresh SoftHSM2 store; resolves once the
 * port accepts connections.
 */
export async function startCamlCrushTls(pki: TestPki, timeoutMs = 30_000): Promise<RunningCamlCrushTls> {
  const hsm = createSoftHsm(['test']);
  const port = await freePort();
  const filterConf = path.join(hsm.dir, 'cc-filter.conf');
  fs.writeFileSync(filterConf, `modules = [("softhsm", "${SOFTHSM_MODULE}")]\n`);
  fs.mkdirSync(path.join(hsm.dir, 'netplex'));
  const conf = path.join(hsm.dir, 'cc-tls.conf');
  fs.writeFileSync(
    conf,
    `netplex {
  controller { max_level = "info"; socket_directory = "${path.join(hsm.dir, 'netplex')}"; logging { type = "stderr"; }; };
  service {
    name = "PKCS#11 Filtering Proxy";
    conn_limit = 1;
    protocol { name = "rpc_pkcs11"; address { type = "internet"; bind = "127.0.0.1:${port}"; }; };
    processor { type = "rpc_pkcs11"; filter_config = "${filterConf}"; use_ssl = true;
      tls {
        algorithms = "SECURE256:+SECURE128:-VERS-TLS-ALL:+VERS-TLS1.2:-RSA:-DHE-DSS:-CAMELLIA-128-CBC:-CAMELLIA-256-CBC";
        peer_auth = "required";
        x509 { key { crt_file = "${pki.serverCert}"; key_file = "${pki.serverKey}"; }; trust { crt_file = "${pki.ca}"; }; }
      };
    };
    workload_manager { type = "dynamic"; max_jobs_per_thread = 1; min_free_jobs_capacity = 1; max_free_jobs_capacity = 1; max_threads = 20; };
  }
}
`,
  );
  const proc = spawn(CAMLCRUSH_DAEMON, ['-fg', '-conf', conf], { env: hsm.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const deadline = Date.now() + timeoutMs;
  // Poll with a deadline: Caml Crush prints no readiness line; a TCP connect succeeds once it listens.
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`Caml Crush exited before listening:\n${out}`);
    const up = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (up) break;
    if (Date.now() > deadline) {
      process.kill(-proc.pid!, 'SIGKILL');
      throw new Error(`Caml Crush did not listen on ${port} in ${timeoutMs} ms:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    hsm,
    output: () => out,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        process.kill(-proc.pid!, 'SIGTERM');
        const killer = setTimeout(() => {
          try {
            process.kill(-proc.pid!, 'SIGKILL');
          } catch {
            // already gone
          }
        }, 5000);
        await exited;
        clearTimeout(killer);
      }
      hsm.cleanup();
    },
  };
}
