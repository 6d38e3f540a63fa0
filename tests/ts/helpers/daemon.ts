import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createSoftHsm, SOFTHSM_MODULE } from './softhsm';
import type { SoftHsmStore } from './softhsm';

/** The checkout: the nearest folder up with package.json (this file also runs compiled, from dist/). */
export const ROOT = ((): string => {
  let dir = __dirname;
  while (!fs.existsSync(path.join(dir, 'package.json')) || path.basename(path.dirname(dir)) === 'dist') dir = path.dirname(dir);
  return dir;
})();
export const CLI = path.join(ROOT, 'dist', 'src', 'cli.js');
/** The launcher users run (package.json `bin`), with the primary's node flags in its #! line. */
export const BIN = path.join(ROOT, 'bin', 'pkcs11proxyd');

export interface DaemonOptions {
  workers?: number;
  /** Start through bin/pkcs11proxyd instead of `node dist/src/cli.js`. */
  viaBin?: boolean;
  /** -debug-pkcs11; 'json': -debug-pkcs11-json. */
  trace?: boolean | 'json';
  /** Extra filter.conf text appended after `modules`. */
  filterExtra?: string;
  /** Listen on TCP 127.0.0.1 port 0 as well. */
  tcp?: boolean;
  tokens?: string[];
  maxRecordSize?: number;
  env?: NodeJS.ProcessEnv;
  /** Extra keys for the netplex protocol block (e.g. local_chmod). */
  protocolExtra?: string;
  /** Extra keys for the netplex processor block (e.g. plain_parameter_mechanisms, max_reply_bytes, max_sessions_per_app). */
  processorExtra?: string;
  /** Extra keys for the netplex service block (e.g. user, group). */
  serviceExtra?: string;
  /** Called with the fresh store before the daemon starts (e.g. to chown it to the service user). */
  prepare?: (hsm: SoftHsmStore) => void;
  /**
   * Serve TLS: `use_ssl = true` plus these processor keys (the tls block...). The
   * service then has only its TCP address (127.0.0.1 port 0): TLS is refused on local sockets.
   */
  tls?: string;
  /** filter.conf `modules`, first is the default; default: SoftHSM2 as "softhsm" on the daemon's store. */
  modules?: Array<{ alias: string; path: string }>;
}

export interface RunningDaemon {
  socketPath: string;
  tcpPort?: number;
  hsm: SoftHsmStore;
  proc: ChildProcess;
  /** Everything the daemon wrote to stdout and stderr so far. */
  output(): string;
  stop(): Promise<number | null>;
}

/**
 * Starts the real daemon (`dist/src/cli.js -fg`) on a temp Unix socket in
 * front of a fresh SoftHSM2 store, and resolves once it prints READY.
 */
export async function startDaemon(o: DaemonOptions = {}): Promise<RunningDaemon> {
  const hsm = createSoftHsm(o.tokens ?? ['test']);
  const socketPath = path.join(hsm.dir, 'p11pd.sock');
  const filterConf = path.join(hsm.dir, 'filter.conf');
  const modules = (o.modules ?? [{ alias: 'softhsm', path: SOFTHSM_MODULE }]).map((m) => `("${m.alias}", "${m.path}")`).join('; ');
  fs.writeFileSync(filterConf, `modules = [${modules}]\n${o.filterExtra ?? ''}\n`);
  const tcp = o.tcp || o.tls !== undefined ? `address { type = "internet"; bind = "127.0.0.1:0"; };` : '';
  const local = o.tls !== undefined ? '' : `address { type = "local"; path = "${socketPath}"; };`;
  const tls = o.tls !== undefined ? `use_ssl = true; ${o.tls}` : '';
  const serverConf = path.join(hsm.dir, 'pkcs11proxyd.conf');
  fs.writeFileSync(
    serverConf,
    `netplex { service { name = "t"; ${o.serviceExtra ?? ''} protocol { name = "rpc_pkcs11"; ${o.protocolExtra ?? ''} ${local} ${tcp} };
       processor { type = "rpc_pkcs11"; filter_config = "${filterConf}"; ${tls} ${o.processorExtra ?? ''} ${o.maxRecordSize ? `max_record_size = ${o.maxRecordSize};` : ''} }; }; };\n`,
  );
  o.prepare?.(hsm);
  const args = ['-fg', '-conf', serverConf, '-workers', String(o.workers ?? 0)];
  if (o.trace) args.push(o.trace === 'json' ? '-debug-pkcs11-json' : '-debug-pkcs11');
  const [cmd, argv] = o.viaBin ? [BIN, args] : [process.execPath, [CLI, ...args]];
  const proc = spawn(cmd, argv, { env: { ...hsm.env, ...o.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const endpoints = await new Promise<Array<{ path?: string; port?: number }>>((resolve, reject) => {
    const onData = () => {
      const m = /^READY (.*)$/m.exec(out);
      if (m) {
        proc.stdout!.off('data', onData);
        resolve(JSON.parse(m[1]));
      }
    };
    proc.stdout!.on('data', onData);
    proc.once('exit', (code) => reject(new Error(`daemon exited with ${code} before READY:\n${out}`)));
  });
  const tcpPort = endpoints.find((e) => e.port !== undefined)?.port;
  // 'exit' can come before the last of the daemon's output is read from its pipes; 'close' comes after.
  // A worker that outlived the primary would keep the pipes open: then 5 s after the exit is enough.
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const done = Promise.race([
    new Promise<number | null>((resolve) => proc.once('close', (code) => resolve(code))),
    exited.then((code) => new Promise<number | null>((resolve) => setTimeout(() => resolve(code), 5000).unref())),
  ]);
  return {
    socketPath,
    tcpPort,
    hsm,
    proc,
    output: () => out,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      const code = await done;
      hsm.cleanup();
      return code;
    },
  };
}
