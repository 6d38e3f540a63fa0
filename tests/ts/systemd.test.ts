/**
 * systemd integration (issue 9 item 6): readiness and stop notification on a
 * real AF_UNIX datagram NOTIFY_SOCKET (tests/ts/fixtures/notify-listener.c),
 * socket activation through systemd-socket-activate (LISTEN_FDS), and SIGTERM
 * with a call in flight: the call is answered, the socket file removed, exit 0.
 */
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as p from 'pkcs11js';
import { bool, mech, ulong } from './helpers/attrs';
import { CLI, ROOT, startDaemon } from './helpers/daemon';
import { P11Client } from './helpers/p11-client';
import { chownTree, childPids, ensureServiceUser, procStatus } from './helpers/service-user';
import { createSoftHsm, SOFTHSM_MODULE, USER_PIN } from './helpers/softhsm';

const RW = p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION;
let tmp: string;
let listenerBin: string;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'p11pd-systemd-'));
  fs.chmodSync(tmp, 0o755);
  listenerBin = path.join(tmp, 'notify-listener');
  execFileSync('cc', ['-Wall', '-Wextra', '-Werror', '-o', listenerBin, path.join(ROOT, 'tests', 'ts', 'fixtures', 'notify-listener.c')]);
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Output lines of a child, and a wait for the first line matching `re` (bounded). */
function lines(proc: ChildProcess): { all: string[]; wait(re: RegExp, ms?: number): Promise<string> } {
  const all: string[] = [];
  let buf = '';
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    const parts = buf.split('\n');
    buf = parts.pop()!;
    all.push(...parts);
  });
  return {
    all,
    wait: (re, ms = 30_000) =>
      new Promise((resolve, reject) => {
        const deadline = Date.now() + ms;
        const poll = (): void => {
          const hit = all.find((l) => re.test(l));
          if (hit !== undefined) return resolve(hit);
          if (Date.now() > deadline) return reject(new Error(`no line ${re} in ${JSON.stringify(all)}`));
          setTimeout(poll, 20);
        };
        poll();
      }),
  };
}

const exited = (proc: ChildProcess): Promise<number | null> =>
  proc.exitCode !== null ? Promise.resolve(proc.exitCode) : new Promise((resolve) => proc.once('exit', (code) => resolve(code)));

test('NOTIFY_SOCKET: READY=1 with MAINPID once serving, STOPPING=1 on SIGTERM, from a daemon that dropped root', async () => {
  const sock = path.join(tmp, 'notify');
  const nl = spawn(listenerBin, [sock], { stdio: ['ignore', 'pipe', 'inherit'] });
  const got = lines(nl);
  try {
    await got.wait(/^LISTENING$/);
    const user = ensureServiceUser();
    const d = await startDaemon({
      workers: 1,
      env: { NOTIFY_SOCKET: sock },
      serviceExtra: `user = "${user.name}";`,
      prepare: (hsm) => chownTree(hsm.dir, user.uid, user.gid),
    });
    const ready = await got.wait(/^READY=1\|/);
    expect(ready).toContain(`|MAINPID=${d.proc.pid}|`);
    expect(procStatus(d.proc.pid!).uid[1]).toBe(user.uid);
    // Workers do not inherit it.
    const [worker] = childPids(d.proc.pid!);
    expect(fs.readFileSync(`/proc/${worker}/environ`, 'utf8').split('\0').some((e) => e.startsWith('NOTIFY_SOCKET='))).toBe(false);
    d.proc.kill('SIGTERM');
    expect(await exited(d.proc)).toBe(0);
    expect(got.all).toContain('STOPPING=1|');
    expect(fs.existsSync(d.socketPath)).toBe(false);
    await d.stop();
  } finally {
    nl.kill();
  }
});

test('SIGTERM with an RSA 4096 key generation in flight: the call is answered, sessions closed, socket removed, exit 0', async () => {
  const d = await startDaemon({ workers: 1, processorExtra: 'shutdown_timeout_ms = 120000;' });
  const c = await P11Client.open({ path: d.socketPath });
  const idle = await P11Client.open({ path: d.socketPath });
  const slot = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 8 })).slotList[0];
  const s = await c.call('C_OpenSession', { slotID: slot, flags: RW });
  expect(s.rv).toBe(p.CKR_OK);
  expect(await c.call('C_Login', { session: s.session, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) })).toBe(p.CKR_OK);
  const [worker] = childPids(d.proc.pid!);
  const cpu = (): number => {
    const f = fs.readFileSync(`/proc/${worker}/stat`, 'utf8').split(') ')[1].split(' ');
    return Number(f[11]) + Number(f[12]); // utime + stime, clock ticks
  };
  const before = cpu();
  const gen = c.call('C_GenerateKeyPair', {
    session: s.session,
    mechanism: mech(p.CKM_RSA_PKCS_KEY_PAIR_GEN),
    publicKeyTemplate: [ulong(p.CKA_MODULUS_BITS, 4096), bool(p.CKA_TOKEN, false), bool(p.CKA_VERIFY, true)],
    privateKeyTemplate: [bool(p.CKA_TOKEN, false), bool(p.CKA_SIGN, true)],
  });
  let settled = false;
  void gen.finally(() => (settled = true));
  // The worker is in the call once it burns CPU (an idle worker uses none).
  const deadline = Date.now() + 20_000;
  while (cpu() < before + 5 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  expect(settled).toBe(false);
  const t0 = Date.now();
  d.proc.kill('SIGTERM');
  const kp = await gen;
  expect(kp.rv).toBe(p.CKR_OK);
  expect(kp.privateKey).toBeGreaterThan(0);
  expect(await exited(d.proc)).toBe(0);
  // The idle connection did not hold the exit up to the deadline.
  expect(Date.now() - t0).toBeLessThan(60_000);
  expect(fs.existsSync(d.socketPath)).toBe(false);
  await Promise.allSettled([c.close(), idle.close()]);
  await d.stop();
});

test('socket activation: the listener inherited from systemd-socket-activate serves; the configured address is not bound', async () => {
  const hsm = createSoftHsm(['act']);
  const configured = path.join(hsm.dir, 'configured.sock');
  const activated = path.join(hsm.dir, 'activated.sock');
  const filter = path.join(hsm.dir, 'filter.conf');
  fs.writeFileSync(filter, `modules = [("softhsm", "${SOFTHSM_MODULE}")]\n`);
  const conf = path.join(hsm.dir, 'p.conf');
  fs.writeFileSync(
    conf,
    `netplex { service { name = "a"; protocol { name = "rpc_pkcs11"; address { type = "local"; path = "${configured}"; }; }; processor { type = "rpc_pkcs11"; filter_config = "${filter}"; }; }; };`,
  );
  const act = spawn(
    'systemd-socket-activate',
    ['-l', activated, '--fdname=pkcs11', '-E', `SOFTHSM2_CONF=${hsm.conf}`, '-E', 'PKCS11PROXYD_ALLOW_ROOT=1', process.execPath, CLI, '-fg', '-workers', '1', '-conf', conf],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const out = lines(act);
  try {
    // systemd-socket-activate binds first, then starts the daemon at the first connection.
    const deadline = Date.now() + 20_000;
    while (!fs.existsSync(activated) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const c = await P11Client.open({ path: activated });
    const info = await c.call('C_GetSlotList', { tokenPresent: 1, count: 8 });
    expect(info.rv).toBe(p.CKR_OK);
    expect(info.slotList.length).toBeGreaterThan(0);
    await out.wait(/^READY /);
    expect(fs.existsSync(configured)).toBe(false);
    // systemd-socket-activate execs the daemon in its own process.
    expect(fs.readFileSync(`/proc/${act.pid}/cmdline`, 'utf8')).toContain(CLI);
    expect(childPids(act.pid!).length).toBe(1);
    await c.close();
    act.kill('SIGTERM');
    expect(await exited(act)).toBe(0);
    // The socket file is the manager's: left in place.
    expect(fs.existsSync(activated)).toBe(true);
  } finally {
    if (act.exitCode === null) act.kill();
    await exited(act);
    hsm.cleanup();
  }
});
