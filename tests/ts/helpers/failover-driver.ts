import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from './daemon';
import type { RunningDaemon } from './daemon';
import { USER_PIN } from './softhsm';

/**
 * P11CLIENT_SANITIZERS=1: the ASan + UBSan build of our client (client/build-san/, made by
 * `SANITIZERS=1 tests/c/run.sh`) and a driver built with them, instead of valgrind.
 */
const SANITIZERS = process.env.P11CLIENT_SANITIZERS === '1';
const SANITIZE = ['-fsanitize=address,undefined', '-fno-sanitize-recover=all', '-fno-omit-frame-pointer'];

/** Our client library, and the command-driven test program of tests/c/failover_driver.c. */
export const CLIENT = path.join(ROOT, 'client', SANITIZERS ? 'build-san' : 'build', 'libp11client.so');
/** The plain build, for programs not built with the sanitizers (pkcs11-tool). */
export const PLAIN_CLIENT = path.join(ROOT, 'client', 'build', 'libp11client.so');
const DRIVER_SRC = path.join(ROOT, 'tests', 'c', 'failover_driver.c');
const VALGRIND = [
  'valgrind',
  '--quiet',
  '--error-exitcode=97',
  '--leak-check=full',
  '--errors-for-leak-kinds=definite,possible',
  `--suppressions=${path.join(ROOT, 'tests', 'c', 'valgrind.supp')}`,
];

export const hex = (rv: number): string => `0x${rv.toString(16)}`;

/** Builds the driver and an empty client config file into dir. */
export function buildDriver(dir: string): { driver: string; clientConf: string } {
  const driver = path.join(dir, 'failover_driver');
  // ASan resolves the SunRPC XDR functions at start-up: libtirpc must be linked in (tests/c/Makefile).
  const san = SANITIZERS ? [...SANITIZE, '-Wl,--no-as-needed', '-ltirpc', '-Wl,--as-needed'] : [];
  execFileSync('cc', ['-Wall', '-Wextra', '-Werror', '-I/usr/include/p11-kit-1', '-o', driver, DRIVER_SRC, '-ldl', ...san]);
  const clientConf = path.join(dir, 'client.conf');
  fs.writeFileSync(clientConf, '');
  return { driver, clientConf };
}

/** The serial number of the store's token (softhsm2-util, straight on the store). */
export function serialOf(d: RunningDaemon): string {
  const out = execFileSync('softhsm2-util', ['--show-slots'], { env: d.hsm.env, encoding: 'utf8' });
  const m = /Serial number:\s+(\S+)/.exec(out);
  if (!m) throw new Error(`no serial in ${out}`);
  return m[1];
}

/** SIGKILL, resolved once the daemon is gone. */
export async function kill9(d: RunningDaemon): Promise<void> {
  if (d.proc.exitCode !== null || d.proc.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => d.proc.once('exit', () => resolve()));
  d.proc.kill('SIGKILL');
  await exited;
}

/** Stops a daemon, or only removes the store of one that was killed (stop() would wait for a second exit). */
export async function release(d: RunningDaemon): Promise<void> {
  if (d.proc.signalCode !== null) d.hsm.cleanup();
  else await d.stop();
}

/** The driver process: one command in, one result line out (see tests/c/failover_driver.c). */
export class Driver {
  private static live: Driver[] = [];
  private buf = '';
  private waiting: Array<(line: string) => void> = [];
  private err = '';
  readonly exited: Promise<number | null>;
  private readonly p: ChildProcessWithoutNullStreams;

  constructor(driver: string, clientConf: string, socketPath: string, opts: { valgrind?: boolean; env?: NodeJS.ProcessEnv } = {}) {
    const argv = [...(opts.valgrind && !SANITIZERS ? VALGRIND : []), driver, CLIENT, USER_PIN];
    const san = SANITIZERS ? { ASAN_OPTIONS: 'detect_leaks=1:exitcode=98', UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1' } : {};
    this.p = spawn(argv[0], argv.slice(1), {
      env: { ...process.env, PKCS11PROXY_SOCKET_PATH: socketPath, PKCS11PROXY_LIBNAME: 'softhsm', PKCS11PROXY_CONF: clientConf, ...san, ...opts.env },
    });
    this.p.stdout.on('data', (d: Buffer) => {
      this.buf += d.toString();
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        this.waiting.shift()?.(line);
      }
    });
    this.p.stderr.on('data', (d: Buffer) => (this.err += d.toString()));
    this.exited = new Promise((resolve) => this.p.once('exit', (code) => resolve(code)));
    Driver.live.push(this);
  }

  /** Kills every driver still running (afterEach). */
  static killAll(): void {
    for (const d of Driver.live.splice(0)) if (d.p.exitCode === null && d.p.signalCode === null) d.p.kill('SIGKILL');
  }

  /** Runs one command; resolves with its rv (hex) and detail words. */
  step(cmd: string): Promise<string[]> {
    return new Promise((resolve, reject) => {
      const onExit = () => reject(new Error(`driver exited during '${cmd}': ${this.err}`));
      this.p.once('exit', onExit);
      this.waiting.push((line) => {
        this.p.off('exit', onExit);
        const [name, ...rest] = line.split(' ');
        if (name !== cmd) reject(new Error(`expected a reply to '${cmd}', got '${line}'`));
        else resolve(rest);
      });
      this.p.stdin.write(`${cmd}\n`);
    });
  }

  async end(): Promise<{ code: number | null; stderr: string }> {
    this.p.stdin.end();
    const code = await this.exited;
    return { code, stderr: this.err };
  }
}
