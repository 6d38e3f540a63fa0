/**
 * The reference deployment of docs/deployment.md: our client talks to one
 * address, a real HAProxy (Debian's haproxy, mode tcp) in front of two real
 * daemons on TCP, d2 a backup server: every connection of a client reaches
 * the same daemon (px_JoinApp needs that), d2 only once HAProxy's health
 * check has marked d1 down. The client's socket_path names only HAProxy
 * (a Unix socket of it here, so the test needs no free TCP port), so the
 * client's own list plays no part: the daemon death is seen as on a single
 * daemon that restarted, with the same results (CKR_DEVICE_ERROR, then
 * CKR_SESSION_HANDLE_INVALID, a new session on d2, logged out).
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ck } from '../../src/pkcs11/constants';
import { startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { Driver, buildDriver, hex, kill9, release, serialOf } from './helpers/failover-driver';

let dir: string;
let driver: string;
let clientConf: string;
let haproxy: ChildProcess | undefined;
const daemons: RunningDaemon[] = [];
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p11pd-haproxy-'));
  ({ driver, clientConf } = buildDriver(dir));
});
afterAll(async () => {
  Driver.killAll();
  haproxy?.kill('SIGKILL');
  await Promise.all(daemons.map(release));
  fs.rmSync(dir, { recursive: true, force: true });
});

/** One command on HAProxy's stats socket. */
function admin(cmd: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    const s = net.connect(path.join(dir, 'admin.sock'), () => s.write(`${cmd}\n`));
    s.on('data', (d: Buffer) => (out += d.toString()));
    s.on('end', () => resolve(out));
    s.on('error', reject);
  });
}

/** Server name -> status (UP, DOWN, ...) from `show stat` (CSV: pxname, svname, ..., status is column 18). */
async function serverStates(): Promise<Record<string, string>> {
  const csv = await admin('show stat');
  const rows = csv.split('\n').map((l) => l.split(','));
  return Object.fromEntries(rows.filter((r) => r[0] === 'daemons' && /^d\d$/.test(r[1])).map((r) => [r[1], r[17]]));
}

async function waitStates(want: Record<string, string>): Promise<void> {
  const end = Date.now() + 20_000;
  for (;;) {
    let got: Record<string, string> = {};
    try {
      got = await serverStates();
    } catch {
      // not listening yet
    }
    if (Object.entries(want).every(([k, v]) => got[k] === v)) return;
    if (Date.now() > end) throw new Error(`HAProxy servers ${JSON.stringify(got)}, waited for ${JSON.stringify(want)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('HAProxy (mode tcp, d2 backup) in front of two daemons, d1 killed: the application sees CKR_DEVICE_ERROR then CKR_SESSION_HANDLE_INVALID, its next session is served by d2', async () => {
  const d1 = await startDaemon({ tcp: true });
  daemons.push(d1);
  const d2 = await startDaemon({ tcp: true });
  daemons.push(d2);
  const front = path.join(dir, 'front.sock');
  const cfg = path.join(dir, 'haproxy.cfg');
  fs.writeFileSync(
    cfg,
    `global
  stats socket ${path.join(dir, 'admin.sock')} mode 600 level admin
defaults
  mode tcp
  timeout connect 2s
  timeout client 1h
  timeout server 1h
frontend pkcs11
  bind ${front}
  default_backend daemons
backend daemons
  option redispatch
  retries 2
  server d1 127.0.0.1:${d1.tcpPort} check inter 100ms fall 1 rise 1
  server d2 127.0.0.1:${d2.tcpPort} check inter 100ms fall 1 rise 1 backup
`,
  );
  haproxy = spawn('haproxy', ['-db', '-f', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
  await waitStates({ d1: 'UP', d2: 'UP' });

  const app = new Driver(driver, clientConf, front);
  expect(await app.step('init')).toEqual(['0x0']);
  expect(await app.step('open')).toEqual(['0x0', serialOf(d1)]);
  expect(await app.step('login')).toEqual(['0x0']);
  expect(await app.step('sign')).toEqual(['0x0', '64']);

  await kill9(d1);
  await waitStates({ d1: 'DOWN', d2: 'UP' });
  expect(await app.step('sign')).toEqual([hex(ck.CKR_DEVICE_ERROR), 'C_GenerateKeyPair']);
  expect(await app.step('info')).toEqual([hex(ck.CKR_SESSION_HANDLE_INVALID)]);
  expect(await app.step('open')).toEqual(['0x0', serialOf(d2)]);
  expect(await app.step('info')).toEqual(['0x0', String(ck.CKS_RW_PUBLIC_SESSION)]);
  expect(await app.step('login')).toEqual(['0x0']);
  expect(await app.step('sign')).toEqual(['0x0', '64']);
  expect(await app.end()).toEqual({ code: 0, stderr: '' });
});
