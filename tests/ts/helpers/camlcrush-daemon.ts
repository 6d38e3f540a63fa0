import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createSoftHsm, SOFTHSM_MODULE } from './softhsm';
import type { SoftHsmStore } from './softhsm';

/** Debian's Caml Crush daemon (caml-crush-server). */
export const CAMLCRUSH_DAEMON = '/usr/bin/pkcs11proxyd';

export interface RunningCamlCrush {
  socketPath: string;
  hsm: SoftHsmStore;
  proc: ChildProcess;
  output(): string;
  stop(): Promise<void>;
}

/**
 * Starts Caml Crush's daemon in the foreground on a temp Unix socket in
 * front of a fresh SoftHSM2 store, with `modules = [("softhsm", SoftHSM2)]`
 * plus `filterExtra`, and resolves once its socket exists (netplex creates it
 * when the service listens). The daemon forks a process per connection: it
 * runs in its own process group, which stop() ends.
 */
export async function startCamlCrush(filterExtra = '', timeoutMs = 30_000): Promise<RunningCamlCrush> {
  const hsm = createSoftHsm(['test']);
  const socketPath = path.join(hsm.dir, 'cc.sock');
  const filterConf = path.join(hsm.dir, 'cc-filter.conf');
  fs.writeFileSync(filterConf, `modules = [("softhsm", "${SOFTHSM_MODULE}")]\n${filterExtra}\n`);
  const serverConf = path.join(hsm.dir, 'cc-pkcs11proxyd.conf');
  fs.mkdirSync(path.join(hsm.dir, 'netplex'));
  // The workload_manager block is what Caml Crush requires: one connection per process.
  fs.writeFileSync(
    serverConf,
    `netplex {
  controller { max_level = "info"; socket_directory = "${path.join(hsm.dir, 'netplex')}"; logging { type = "stderr"; }; };
  service {
    name = "PKCS#11 Filtering Proxy";
    conn_limit = 1;
    protocol { name = "rpc_pkcs11"; address { type = "local"; path = "${socketPath}"; }; };
    processor { type = "rpc_pkcs11"; filter_config = "${filterConf}"; use_ssl = false; };
    workload_manager { type = "dynamic"; max_jobs_per_thread = 1; min_free_jobs_capacity = 1; max_free_jobs_capacity = 1; max_threads = 20; };
  }
}
`,
  );
  // Caml Crush prints no readiness line: netplex creates the socket when the service listens.
  const { proc, out, exited } = await spawnCamlCrush(hsm, serverConf, () => fs.existsSync(socketPath), `create ${socketPath}`, timeoutMs);
  return {
    socketPath,
    hsm,
    proc,
    output: out,
    stop: async () => {
      await stopProcessGroup(proc, exited);
      hsm.cleanup();
    },
  };
}

/**
 * Runs Caml Crush's daemon on `conf` in its own process group and waits until `ready()` says it
 * listens, with a deadline; it prints no readiness line. `out` is everything it wrote so far.
 */
export async function spawnCamlCrush(
  hsm: SoftHsmStore,
  conf: string,
  ready: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs: number,
): Promise<{ proc: ChildProcess; out: () => string; exited: Promise<void> }> {
  const proc = spawn(CAMLCRUSH_DAEMON, ['-fg', '-conf', conf], { env: hsm.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let text = '';
  proc.stdout!.on('data', (d: Buffer) => (text += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (text += d.toString()));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const deadline = Date.now() + timeoutMs;
  while (!(await ready())) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`Caml Crush exited before listening:\n${text}`);
    if (Date.now() > deadline) {
      process.kill(-proc.pid!, 'SIGKILL');
      throw new Error(`Caml Crush did not ${what} in ${timeoutMs} ms:\n${text}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { proc, out: () => text, exited };
}

/** SIGTERM to a detached daemon's process group (Caml Crush forks its workers), SIGKILL after 5 s; resolves on exit. */
export async function stopProcessGroup(proc: ChildProcess, exited: Promise<void>): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
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
