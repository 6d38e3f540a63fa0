/**
 * `make install` (issue 9 item 9): into a temporary root, the daemon runs
 * from the installed tree, the systemd units pass `systemd-analyze verify`
 * and the offline security check, and p11-kit finds the client through the
 * installed module registration: `p11tool --list-tokens` without --provider
 * lists the daemon's token. p11-kit reads a user's ~/.config/pkcs11/modules
 * only for non-root programs, so p11tool runs as the test's service user
 * with HOME in the temporary root (the system's module directories are not
 * touched).
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ROOT } from './helpers/daemon';
import { ensureServiceUser } from './helpers/service-user';
import { createSoftHsm, SOFTHSM_MODULE } from './helpers/softhsm';

let t: string;
let usr: string;
let etc: string;

beforeAll(() => {
  t = fs.mkdtempSync(path.join(os.tmpdir(), 'p11pd-install-'));
  fs.chmodSync(t, 0o755);
  usr = path.join(t, 'usr');
  etc = path.join(t, 'etc');
  execFileSync('make', ['-s', 'install', `PREFIX=${usr}`, `SYSCONFDIR=${etc}`], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
}, 120_000);
afterAll(() => fs.rmSync(t, { recursive: true, force: true }));

test('installs the daemon, the client, /etc examples, the units and the p11-kit module file', () => {
  for (const f of [
    'sbin/pkcs11proxyd',
    'lib/pkcs11proxyd/dist/src/cli.js',
    'lib/pkcs11proxyd/native/privilege/build/Release/privilege.node',
    'lib/pkcs11proxyd/node_modules/pkcs11js/package.json',
    'lib/pkcs11/libp11client.so',
    'lib/systemd/system/pkcs11proxyd.service',
    'lib/systemd/system/pkcs11proxyd.socket',
    'lib/sysusers.d/pkcs11proxyd.conf',
  ]) {
    expect([f, fs.existsSync(path.join(usr, f))]).toEqual([f, true]);
  }
  // Development dependencies stay out.
  expect(fs.existsSync(path.join(usr, 'lib/pkcs11proxyd/node_modules/jest'))).toBe(false);
  for (const f of ['pkcs11proxyd.conf', 'pkcs11proxyd.conf.example', 'filter.conf', 'filter.conf.example', 'client.conf']) {
    expect([f, fs.existsSync(path.join(etc, 'pkcs11proxyd', f))]).toEqual([f, true]);
  }
  const module = fs.readFileSync(path.join(usr, 'share/p11-kit/modules/pkcs11proxyd.module'), 'utf8');
  expect(/^module: (.*)$/m.exec(module)?.[1]).toBe(path.join(usr, 'lib/pkcs11/libp11client.so'));
  const unit = fs.readFileSync(path.join(usr, 'lib/systemd/system/pkcs11proxyd.service'), 'utf8');
  expect(/^ExecStart=(\S+) .*-conf (\S+)$/m.exec(unit)?.slice(1)).toEqual([path.join(usr, 'sbin/pkcs11proxyd'), path.join(etc, 'pkcs11proxyd/pkcs11proxyd.conf')]);
  // The installed server file drops privileges to the sysusers.d account.
  expect(fs.readFileSync(path.join(etc, 'pkcs11proxyd/pkcs11proxyd.conf'), 'utf8')).toMatch(/^\s*user = "pkcs11proxyd";$/m);
});

test('DESTDIR stages the files; the paths inside them are the final ones', () => {
  const stage = path.join(t, 'stage');
  execFileSync('make', ['-s', 'install', `DESTDIR=${stage}`, 'PREFIX=/usr'], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
  expect(fs.readFileSync(path.join(stage, 'usr/share/p11-kit/modules/pkcs11proxyd.module'), 'utf8')).toMatch(/^module: \/usr\/lib\/pkcs11\/libp11client.so$/m);
  expect(fs.readFileSync(path.join(stage, 'usr/sbin/pkcs11proxyd'), 'utf8')).toContain(' /usr/lib/pkcs11proxyd/dist/src/cli.js ');
  expect(fs.existsSync(path.join(stage, 'etc/pkcs11proxyd/pkcs11proxyd.conf'))).toBe(true);
});

test('systemd-analyze verify accepts both units, and the sandbox rates below 3.0 (offline security check)', () => {
  const units = ['pkcs11proxyd.service', 'pkcs11proxyd.socket'].map((u) => path.join(usr, 'lib/systemd/system', u));
  const v = spawnSync('systemd-analyze', ['verify', ...units], { encoding: 'utf8', cwd: t });
  // verify exits 0 on unknown keys too: a clean run prints nothing.
  expect({ status: v.status, stderr: v.stderr, stdout: v.stdout }).toEqual({ status: 0, stderr: '', stdout: '' });
  const s = spawnSync('systemd-analyze', ['security', '--offline=yes', units[0]], { encoding: 'utf8', cwd: t });
  const level = /Overall exposure level for pkcs11proxyd\.service: ([0-9.]+)/.exec(`${s.stdout}${s.stderr}`);
  expect(level).not.toBeNull();
  expect(Number(level![1])).toBeLessThan(3.0);
});

test('p11tool --list-tokens without --provider sees the token served by the installed daemon', async () => {
  const user = ensureServiceUser();
  const hsm = createSoftHsm(['viaproxy']);
  const empty = createSoftHsm([]);
  let d: ChildProcess | null = null;
  try {
    const sock = path.join(hsm.dir, 's');
    fs.writeFileSync(path.join(hsm.dir, 'filter.conf'), `modules = [("softhsm", "${SOFTHSM_MODULE}")]\n`);
    const conf = path.join(hsm.dir, 'p.conf');
    fs.writeFileSync(
      conf,
      `netplex { service { name = "i"; protocol { name = "rpc_pkcs11"; local_chmod = "0o666"; address { type = "local"; path = "${sock}"; }; }; processor { type = "rpc_pkcs11"; filter_config = "filter.conf"; allow_root = true; }; }; };`,
    );
    fs.chmodSync(hsm.dir, 0o755);
    d = spawn(path.join(usr, 'sbin/pkcs11proxyd'), ['-fg', '-workers', '1', '-conf', conf], { env: hsm.env, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    d.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    await new Promise<void>((resolve, reject) => {
      d!.stdout!.on('data', () => /^READY /m.test(out) && resolve());
      d!.once('exit', (code) => reject(new Error(`installed daemon exited ${code}`)));
    });
    const home = path.join(t, 'home');
    fs.mkdirSync(path.join(home, '.config/pkcs11/modules'), { recursive: true });
    fs.copyFileSync(path.join(usr, 'share/p11-kit/modules/pkcs11proxyd.module'), path.join(home, '.config/pkcs11/modules/pkcs11proxyd.module'));
    execFileSync('chown', ['-R', `${user.uid}:${user.gid}`, home]);
    fs.chmodSync(empty.dir, 0o755);
    execFileSync('chown', ['-R', `${user.uid}:${user.gid}`, empty.dir]);
    const r = spawnSync('p11tool', ['--list-tokens'], {
      uid: user.uid,
      gid: user.gid,
      cwd: home,
      encoding: 'utf8',
      timeout: 60_000,
      // SoftHSM2 loaded by p11-kit directly sees an empty store: the token comes through the proxy.
      env: { PATH: process.env.PATH, HOME: home, SOFTHSM2_CONF: empty.conf, PKCS11PROXY_SOCKET_PATH: sock },
    });
    expect(r.status).toBe(0);
    const block = r.stdout.split(/\n(?=Token \d+:)/).find((b) => /token=viaproxy/.test(b));
    expect(block).toBeDefined();
    expect(block).toMatch(new RegExp(`Module: ${path.join(usr, 'lib/pkcs11/libp11client.so').replace(/[.]/g, '\\.')}`));
  } finally {
    if (d !== null && d.exitCode === null) {
      const done = new Promise((resolve) => d!.once('exit', resolve));
      d.kill('SIGTERM');
      await done;
    }
    hsm.cleanup();
    empty.cleanup();
  }
});
