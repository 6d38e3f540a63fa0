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
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ck } from '../../src/pkcs11/constants';
import { startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { Driver, PLAIN_CLIENT, buildDriver, hex, kill9, release, serialOf } from './helpers/failover-driver';
import { pkcs11Tool } from './helpers/pkcs11-tool';

let dir: string;
let driver: string;
let clientConf: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p11pd-failover-'));
  ({ driver, clientConf } = buildDriver(dir));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

let daemons: RunningDaemon[] = [];
afterEach(async () => {
  Driver.killAll();
  await Promise.all(daemons.map(release));
  daemons = [];
});

async function twoDaemons(): Promise<[RunningDaemon, RunningDaemon]> {
  const a = await startDaemon();
  daemons.push(a);
  const b = await startDaemon();
  daemons.push(b);
  return [a, b];
}

const newApp = (socketPath: string, valgrind = false) => new Driver(driver, clientConf, socketPath, { valgrind });

test('first daemon killed mid-run: the dead session answers CKR_DEVICE_ERROR then CKR_SESSION_HANDLE_INVALID, the next C_OpenSession is served by the second daemon, logged out; then all down', async () => {
  const [d1, d2] = await twoDaemons();
  const s1 = serialOf(d1);
  const s2 = serialOf(d2);
  expect(s1).not.toBe(s2);
  const app = newApp(`${d1.socketPath},${d2.socketPath}`, true);
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
  const app = newApp(`${d1.socketPath}, unix:${d2.socketPath}`);
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
  const app = newApp(list);
  expect(await app.step('init')).toEqual(['0x0']);
  expect(await app.step('open')).toEqual(['0x0', serialOf(d2)]);
  expect(await app.step('login')).toEqual(['0x0']);
  expect(await app.step('sign')).toEqual(['0x0', '64']);
  expect(await app.end()).toEqual({ code: 0, stderr: '' });

  const r = pkcs11Tool(PLAIN_CLIENT, ['-T'], { ...process.env, PKCS11PROXY_SOCKET_PATH: list, PKCS11PROXY_LIBNAME: 'softhsm', PKCS11PROXY_CONF: clientConf });
  expect(r.status).toBe(0);
  expect(r.out).toContain(serialOf(d2));
});

test('a bad list refuses C_Initialize with CKR_GENERAL_ERROR: empty entry, more than 16 daemons', async () => {
  const d1 = await startDaemon();
  daemons.push(d1);
  for (const list of [`${d1.socketPath},`, `,${d1.socketPath}`, Array(17).fill(d1.socketPath).join(',')]) {
    const app = newApp(list);
    expect(await app.step('init')).toEqual([hex(ck.CKR_GENERAL_ERROR)]);
    expect(await app.end()).toEqual({ code: 0, stderr: '' });
  }
  const ok = newApp(Array(16).fill(d1.socketPath).join(','));
  expect(await ok.step('init')).toEqual(['0x0']);
  expect(await ok.step('fin')).toEqual(['0x0']);
  await ok.end();
});

/**
 * A TCP listener whose accept queue is full drops new SYNs: connect(2) to it
 * hangs as to a host that is gone (python3, which can leave a queue full).
 */
const SILENT_LISTENER = `
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(0)
port = s.getsockname()[1]
held = []
while True:
    c = socket.socket(); c.settimeout(0.5)
    try:
        c.connect(("127.0.0.1", port)); held.append(c)
    except OSError:
        break
print(port, flush=True)
sys.stdin.read()
`;

test('first daemon silent (SYNs dropped): connect_timeout bounds the wait, the second serves', async () => {
  const [, d2] = await twoDaemons();
  const silent = spawn('python3', ['-c', SILENT_LISTENER], { stdio: ['pipe', 'pipe', 'inherit'] });
  try {
    const port = await new Promise<string>((resolve, reject) => {
      silent.stdout.once('data', (d: Buffer) => resolve(d.toString().trim()));
      silent.once('exit', (code) => reject(new Error(`listener exited with ${code}`)));
    });
    const app = new Driver(driver, clientConf, `tcp://127.0.0.1:${port},${d2.socketPath}`, { env: { PKCS11PROXY_CONNECT_TIMEOUT: '1' } });
    const t0 = Date.now();
    expect(await app.step('init')).toEqual(['0x0']);
    const waited = Date.now() - t0;
    // The first entry was tried for the whole second, not refused at once; far from the kernel's 2 minutes.
    expect(waited).toBeGreaterThanOrEqual(900);
    expect(waited).toBeLessThan(10_000);
    expect(await app.step('open')).toEqual(['0x0', serialOf(d2)]);
    expect(await app.end()).toEqual({ code: 0, stderr: '' });
  } finally {
    silent.kill('SIGKILL');
  }
});
