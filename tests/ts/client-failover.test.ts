/**
 * Daemon redundancy in our C client (issue 10 item 6): PKCS11PROXY_SOCKET_PATH
 * names two real daemons (separate SoftHSM2 stores, each with a token
 * "test" and the same PIN); the first is killed with SIGKILL. The
 * application is tests/c/failover_driver.c, through client/build/libp11client.so
 * (under valgrind in the first case). Which daemon serves is told by the
 * token's serial number, read from each store with softhsm2-util.
 *
 * Documented behaviour (client/README.md "Several daemons"): the call that
 * finds its session's connection dead gets CKR_DEVICE_ERROR and the
 * session's later calls CKR_SESSION_HANDLE_INVALID; the next C_OpenSession
 * (or C_Finalize + C_Initialize) is served by the next daemon, not logged
 * in; with every daemon down, C_GetSlotList answers CKR_FUNCTION_FAILED and
 * C_Initialize CKR_DEVICE_ERROR.
 */
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ck } from '../../src/pkcs11/constants';
import { ROOT, startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { pkcs11Tool } from './helpers/pkcs11-tool';
import { USER_PIN } from './helpers/softhsm';

const CLIENT = path.join(ROOT, 'client', 'build', 'libp11client.so');
const DRIVER_SRC = path.join(ROOT, 'tests', 'c', 'failover_driver.c');
const VALGRIND = [
  'valgrind',
  '--quiet',
  '--error-exitcode=97',
  '--leak-check=full',
  '--errors-for-leak-kinds=definite,possible',
  `--suppressions=${path.join(ROOT, 'tests', 'c', 'valgrind.supp')}`,
];
const hex = (rv: number) => `0x${rv.toString(16)}`;

let dir: string;
let driver: string;
let clientConf: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p11pd-failover-'));
  driver = path.join(dir, 'failover_driver');
  execFileSync('cc', ['-Wall', '-Wextra', '-Werror', '-I/usr/include/p11-kit-1', '-o', driver, DRIVER_SRC, '-ldl']);
  clientConf = path.join(dir, 'client.conf');
  fs.writeFileSync(clientConf, '');
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

let daemons: RunningDaemon[] = [];
const drivers: Driver[] = [];
afterEach(async () => {
  for (const d of drivers.splice(0)) d.kill();
  // stop() waits for an exit that a killed daemon already had.
  await Promise.all(daemons.map((d) => (d.proc.signalCode !== null ? d.hsm.cleanup() : d.stop())));
  daemons = [];
});

async function twoDaemons(): Promise<[RunningDaemon, RunningDaemon]> {
  // One after the other: each has its own store, but two SoftHSM2 initialisations at once are not needed here.
  const a = await startDaemon();
  daemons.push(a);
  const b = await startDaemon();
  daemons.push(b);
  return [a, b];
}

/** The serial number of the store's token "test" (softhsm2-util, straight on the store). */
function serialOf(d: RunningDaemon): string {
  const out = execFileSync('softhsm2-util', ['--show-slots'], { env: d.hsm.env, encoding: 'utf8' });
  const m = /Serial number:\s+(\S+)/.exec(out);
  if (!m) throw new Error(`no serial in ${out}`);
  return m[1];
}

async function kill9(d: RunningDaemon): Promise<void> {
  if (d.proc.exitCode !== null || d.proc.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => d.proc.once('exit', () => resolve()));
  d.proc.kill('SIGKILL');
  await exited;
}

/** The driver process: one command in, one result line out. */
class Driver {
  private buf = '';
  private waiting: Array<(line: string) => void> = [];
  private err = '';
  readonly exited: Promise<number | null>;
  private readonly p: ChildProcessWithoutNullStreams;

  constructor(socketPath: string, opts: { valgrind?: boolean } = {}) {
    const argv = [...(opts.valgrind ? VALGRIND : []), driver, CLIENT, USER_PIN];
    this.p = spawn(argv[0], argv.slice(1), {
      env: { ...process.env, PKCS11PROXY_SOCKET_PATH: socketPath, PKCS11PROXY_LIBNAME: 'softhsm', PKCS11PROXY_CONF: clientConf },
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
    drivers.push(this);
  }

  kill(): void {
    if (this.p.exitCode === null && this.p.signalCode === null) this.p.kill('SIGKILL');
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

test('first daemon killed mid-run: the dead session answers CKR_DEVICE_ERROR then CKR_SESSION_HANDLE_INVALID, the next C_OpenSession is served by the second daemon, logged out; then all down', async () => {
  const [d1, d2] = await twoDaemons();
  const s1 = serialOf(d1);
  const s2 = serialOf(d2);
  expect(s1).not.toBe(s2);
  const app = new Driver(`${d1.socketPath},${d2.socketPath}`, { valgrind: true });
  expect(await app.step('init')).toEqual(['0x0']);
  expect(await app.step('open')).toEqual(['0x0', s1]);
  expect(await app.step('login')).toEqual(['0x0']);
  expect(await app.step('sign')).toEqual(['0x0', '64']);
  expect(await app.step('info')).toEqual(['0x0', String(ck.CKS_RW_USER_FUNCTIONS)]);

  await kill9(d1);
  // The session's connection is found dead by this call: the outcome on the daemon is unknown.
  expect(await app.step('sign')).toEqual([hex(ck.CKR_DEVICE_ERROR), 'C_GenerateKeyPair']);
  expect(await app.step('info')).toEqual([hex(ck.CKR_SESSION_HANDLE_INVALID)]);
  // The next session is on the second daemon; the login was the first daemon's.
  expect(await app.step('open')).toEqual(['0x0', s2]);
  expect(await app.step('info')).toEqual(['0x0', String(ck.CKS_RW_PUBLIC_SESSION)]);
  expect(await app.step('sign')).toEqual([hex(ck.CKR_USER_NOT_LOGGED_IN), 'C_GenerateKeyPair']);
  expect(await app.step('login')).toEqual(['0x0']);
  expect(await app.step('sign')).toEqual(['0x0', '64']);
  expect(await app.step('slots')).toEqual(['0x0', '2']); // the token and SoftHSM2's free slot

  // Both down: slot-level calls and C_OpenSession fail as with one dead daemon, C_Initialize too.
  await kill9(d2);
  expect(await app.step('info')).toEqual([hex(ck.CKR_DEVICE_ERROR)]);
  expect(await app.step('open')).toEqual([hex(ck.CKR_FUNCTION_FAILED), 'C_GetSlotList']);
  expect(await app.step('fin')).toEqual(['0x0']);
  expect(await app.step('init')).toEqual([hex(ck.CKR_DEVICE_ERROR)]);
  expect(await app.end()).toEqual({ code: 0, stderr: '' });
});

test('first daemon killed mid-run: C_Finalize then C_Initialize connects to the second', async () => {
  const [d1, d2] = await twoDaemons();
  const app = new Driver(`${d1.socketPath}, unix:${d2.socketPath}`);
  expect(await app.step('init')).toEqual(['0x0']);
  expect(await app.step('open')).toEqual(['0x0', serialOf(d1)]);
  expect(await app.step('login')).toEqual(['0x0']);
  await kill9(d1);
  expect(await app.step('fin')).toEqual(['0x0']);
  expect(await app.step('init')).toEqual(['0x0']);
  expect(await app.step('info')).toEqual([hex(ck.CKR_SESSION_HANDLE_INVALID)]);
  expect(await app.step('open')).toEqual(['0x0', serialOf(d2)]);
  expect(await app.step('info')).toEqual(['0x0', String(ck.CKS_RW_PUBLIC_SESSION)]);
  expect(await app.step('login')).toEqual(['0x0']);
  expect(await app.step('sign')).toEqual(['0x0', '64']);
  expect(await app.end()).toEqual({ code: 0, stderr: '' });
});

test('first daemon down at start: the client connects to the second (driver and pkcs11-tool)', async () => {
  const [d1, d2] = await twoDaemons();
  await kill9(d1);
  const list = `${d1.socketPath},${d2.socketPath}`;
  const app = new Driver(list);
  expect(await app.step('init')).toEqual(['0x0']);
  expect(await app.step('open')).toEqual(['0x0', serialOf(d2)]);
  expect(await app.step('login')).toEqual(['0x0']);
  expect(await app.step('sign')).toEqual(['0x0', '64']);
  expect(await app.end()).toEqual({ code: 0, stderr: '' });

  const r = pkcs11Tool(CLIENT, ['-T'], { ...process.env, PKCS11PROXY_SOCKET_PATH: list, PKCS11PROXY_LIBNAME: 'softhsm', PKCS11PROXY_CONF: clientConf });
  expect(r.status).toBe(0);
  expect(r.out).toContain(serialOf(d2));
});

test('a bad list refuses C_Initialize with CKR_GENERAL_ERROR: empty entry, more than 16 daemons', async () => {
  const d1 = await startDaemon();
  daemons.push(d1);
  for (const list of [`${d1.socketPath},`, `,${d1.socketPath}`, Array(17).fill(d1.socketPath).join(',')]) {
    const app = new Driver(list);
    expect(await app.step('init')).toEqual([hex(ck.CKR_GENERAL_ERROR)]);
    expect(await app.end()).toEqual({ code: 0, stderr: '' });
  }
  const ok = new Driver(Array(16).fill(d1.socketPath).join(','));
  expect(await ok.step('init')).toEqual(['0x0']);
  expect(await ok.step('fin')).toEqual(['0x0']);
  await ok.end();
});
