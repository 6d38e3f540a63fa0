import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spawnCamlCrush, stopProcessGroup } from './camlcrush-daemon';
import { createSoftHsm, SOFTHSM_MODULE } from './softhsm';
import type { SoftHsmStore } from './softhsm';
import type { TestPki } from './pki';

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
 * 0.0.0.0:PORT (so 127.0.0.2 reaches it too), in front of a fresh SoftHSM2 store; resolves once the
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
    protocol { name = "rpc_pkcs11"; address { type = "internet"; bind = "0.0.0.0:${port}"; }; };
    processor { type = "rpc_pkcs11"; filter_config = "${filterConf}"; use_ssl = true;
      tls {
        algorithms = "SECURE256:+SECURE128:-VERS-TLS-ALL:+VERS-TLS1.2:-RSA:-DHE-DSS:-CAMELLIA-128-CBC:-CAMELLIA-256-CBC";
        peer_auth = "required";
        x509 { key { crt_file = "${pki.server.cert}"; key_file = "${pki.server.key}"; }; trust { crt_file = "${pki.caCert}"; }; }
      };
    };
    workload_manager { type = "dynamic"; max_jobs_per_thread = 1; min_free_jobs_capacity = 1; max_free_jobs_capacity = 1; max_threads = 20; };
  }
}
`,
  );
  // A TCP connect succeeds once it listens.
  const listening = () =>
    new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
  const { proc, out, exited } = await spawnCamlCrush(hsm, conf, listening, `listen on ${port}`, timeoutMs);
  return {
    port,
    hsm,
    output: out,
    stop: async () => {
      await stopProcessGroup(proc, exited);
      hsm.cleanup();
    },
  };
}
