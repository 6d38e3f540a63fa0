/**
 * The real Parsec service for tests (../shared/parsec/README.md): found as
 * $PARSEC_BIN, then `parsec` on PATH, then ../shared/parsec/bin/parsec beside
 * the checkout (the repository is cloned next to shared/, here and in CI).
 * Each service gets its own run directory: a fresh SoftHSM2 token
 * `parsec-test` (user PIN 123456) behind the PKCS #11 provider (id 2) and the
 * Mbed Crypto provider (id 1), the key store, the socket and the log, as
 * start.sh sets them up. stop() and start() restart it on the same store.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ROOT } from './daemon';
import { SOFTHSM_MODULE } from './softhsm';

export const SHARED_PARSEC = path.resolve(ROOT, '..', 'shared', 'parsec');

function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const p = path.join(dir, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** The service binary and parsec-tool; throws naming every place looked at when there is none. */
export function findParsec(): { parsec: string; parsecTool: string } {
  const shared = path.join(SHARED_PARSEC, 'bin', 'parsec');
  const parsec = process.env.PARSEC_BIN || onPath('parsec') || (fs.existsSync(shared) ? shared : undefined);
  if (parsec === undefined || !fs.existsSync(parsec)) {
    throw new Error(
      `no Parsec service: set PARSEC_BIN, put \`parsec\` on PATH, or provide ${shared} ` +
        `(PARSEC_BIN=${process.env.PARSEC_BIN ?? '(unset)'})`,
    );
  }
  const beside = path.join(path.dirname(parsec), 'parsec-tool');
  const parsecTool = fs.existsSync(beside) ? beside : onPath('parsec-tool') ?? path.join(SHARED_PARSEC, 'bin', 'parsec-tool');
  if (!fs.existsSync(parsecTool)) throw new Error(`no parsec-tool beside ${parsec}, on PATH or in ${SHARED_PARSEC}/bin`);
  // The binaries link these Debian libraries (make deps installs them).
  const missing = ['libmbedcrypto.so.7', 'libsqlite3.so.0'].filter((l) => !execFileSync('ldconfig', ['-p'], { encoding: 'utf8' }).includes(l));
  if (missing.length > 0) throw new Error(`Parsec needs ${missing.join(', ')}: apt-get install libmbedcrypto7 libsqlite3-0 (make deps)`);
  return { parsec, parsecTool };
}

export type ParsecAuthType = 'UnixPeerCredentials' | 'Direct';

export interface ParsecService {
  readonly dir: string;
  readonly socket: string;
  readonly auth: ParsecAuthType;
  /** The environment parsec-tool needs (PARSEC_SERVICE_ENDPOINT). */
  readonly env: NodeJS.ProcessEnv;
  /** Runs parsec-tool against this service (stdout and stderr merged). */
  tool(args: string[]): { status: number | null; out: string };
  /** Sends a signal to the running service (SIGSTOP: it accepts connections into the backlog and answers none). */
  signal(sig: NodeJS.Signals): void;
  /** Stops the service (SIGTERM, then waits for its exit). */
  stop(): Promise<void>;
  /** Starts it again on the same key store and token. */
  start(): Promise<void>;
  /** Stops it and removes the run directory. */
  cleanup(): Promise<void>;
}

/** Whether the socket accepts a connection. */
function accepts(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ path: socket });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export async function startParsec(auth: ParsecAuthType = 'UnixPeerCredentials'): Promise<ParsecService> {
  const { parsec, parsecTool } = findParsec();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p11pd-parsec-'));
  fs.mkdirSync(path.join(dir, 'tokens'));
  fs.mkdirSync(path.join(dir, 'kim'));
  const softhsmConf = path.join(dir, 'softhsm2.conf');
  fs.writeFileSync(softhsmConf, `directories.tokendir = ${dir}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n`);
  const hsmEnv = { ...process.env, SOFTHSM2_CONF: softhsmConf };
  execFileSync('softhsm2-util', ['--init-token', '--free', '--label', 'parsec-test', '--so-pin', '12345678', '--pin', '123456'], {
    env: hsmEnv,
    stdio: 'ignore',
  });
  const serial = /Serial number:\s+(\S+)/.exec(execFileSync('softhsm2-util', ['--show-slots'], { env: hsmEnv, encoding: 'utf8' }))?.[1];
  if (!serial) throw new Error('softhsm2-util --show-slots printed no serial number');
  const socket = path.join(dir, 'parsec.sock');
  const config = path.join(dir, 'config.toml');
  fs.writeFileSync(
    config,
    [
      '[core_settings]',
      'allow_root = true',
      'thread_pool_size = 4',
      'log_level = "info"',
      'log_error_details = true',
      '[listener]',
      'listener_type = "DomainSocket"',
      'timeout = 200',
      `socket_path = "${socket}"`,
      '[authenticator]',
      `auth_type = "${auth}"`,
      '[[key_manager]]',
      'name = "sqlite-manager"',
      'manager_type = "SQLite"',
      `store_path = "${dir}/kim/kim.sqlite3"`,
      '[[provider]]',
      'name = "pkcs11-provider"',
      'provider_type = "Pkcs11"',
      'key_info_manager = "sqlite-manager"',
      `library_path = "${SOFTHSM_MODULE}"`,
      `serial_number = "${serial}"`,
      'user_pin = "123456"',
      'software_public_operations = false',
      'allow_export = true',
      '[[provider]]',
      'name = "mbed-crypto-provider"',
      'provider_type = "MbedCrypto"',
      'key_info_manager = "sqlite-manager"',
      '',
    ].join('\n'),
  );
  const log = path.join(dir, 'parsec.log');
  let proc: ChildProcess | null = null;

  const start = async (): Promise<void> => {
    fs.rmSync(socket, { force: true });
    const fd = fs.openSync(log, 'a');
    // The Mbed Crypto provider keeps its keys in files of the working directory.
    const p = spawn(parsec, ['--config', config], { cwd: dir, env: hsmEnv, stdio: ['ignore', fd, fd] });
    fs.closeSync(fd);
    proc = p;
    let exited: number | null | undefined;
    p.once('exit', (code) => (exited = code));
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (exited !== undefined) throw new Error(`parsec exited with ${exited} before it was ready:\n${fs.readFileSync(log, 'utf8')}`);
      if (fs.existsSync(socket) && (await accepts(socket))) return;
      if (Date.now() > deadline) throw new Error(`parsec not ready within 20 s:\n${fs.readFileSync(log, 'utf8')}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const stop = (): Promise<void> =>
    new Promise((resolve) => {
      const p = proc;
      proc = null;
      if (p === null || p.exitCode !== null || p.signalCode !== null) return resolve();
      p.once('exit', () => resolve());
      p.kill('SIGTERM');
    });

  await start();
  const env = { ...process.env, PARSEC_SERVICE_ENDPOINT: `unix:${socket}` };
  return {
    dir,
    socket,
    auth,
    env,
    tool: (args) => {
      const r = spawnSync(parsecTool, args, { env, encoding: 'utf8', timeout: 60_000 });
      return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
    },
    signal: (sig) => {
      if (proc === null) throw new Error('parsec is not running');
      proc.kill(sig);
    },
    stop,
    start,
    cleanup: async () => {
      proc?.kill('SIGCONT');
      await stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
