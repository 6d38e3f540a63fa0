import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLI, ROOT } from './helpers/daemon';
import { pkcs11Tool } from './helpers/pkcs11-tool';

const CC_CLIENT = '/usr/lib/x86_64-linux-gnu/caml-crush/libp11clientunix.so';

function run(args: string[], env: NodeJS.ProcessEnv = process.env) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env, timeout: 60_000 });
}

/** Like run() but without blocking this process (the detached daemon's startup is observable meanwhile). */
function runAsync(args: string[], env: NodeJS.ProcessEnv): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [CLI, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    c.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    c.once('exit', (status) => resolve({ status, stdout, stderr }));
  });
}

const exitOk = (e: unknown) => JSON.stringify(e) === JSON.stringify({ code: 0, signal: null });

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'p11pd-cli-'));
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('-version and -help exit 0', () => {
  const v = run(['-version']);
  expect(v.status).toBe(0);
  expect(v.stdout).toMatch(/^pkcs11proxyd \d+\.\d+\.\d+/);
  const h = run(['-help']);
  expect(h.status).toBe(0);
  expect(h.stdout).toMatch(/-debug-pkcs11/);
  expect(JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).bin.pkcs11proxyd).toBe('bin/pkcs11proxyd');
});

test('an unknown option exits 64 with the usage', () => {
  const r = run(['-frobnicate']);
  expect(r.status).toBe(64);
  expect(r.stderr).toMatch(/unknown option '-frobnicate'/);
});

test('an invalid configuration refuses to start with file:line:column (exit 78)', () => {
  const conf = path.join(tmp, 'bad.conf');
  fs.writeFileSync(
    conf,
    `netplex {\n  service {\n    colour = "blue";\n    name = "x";\n    protocol { name = "rpc_pkcs11"; address { type = "local"; path = "${tmp}/s"; }; };\n    processor { type = "rpc_pkcs11"; filter_config = "${tmp}/f"; };\n  };\n};\n`,
  );
  const r = run(['-fg', '-conf', conf]);
  expect(r.status).toBe(78);
  expect(r.stderr).toContain(`${conf}:3:5`);
});

test('an invalid filter.conf refuses to start (fail closed)', () => {
  const filter = path.join(tmp, 'filter.conf');
  fs.writeFileSync(filter, 'modules = [("softhsm", "/usr/lib/softhsm/libsofthsm2.so")]\nforbidden_mechanisms = [("sof.*", [CKM_NOT_A_MECHANISM])]\n');
  const conf = path.join(tmp, 'p.conf');
  fs.writeFileSync(
    conf,
    `netplex { service { name = "x"; protocol { name = "rpc_pkcs11"; address { type = "local"; path = "${tmp}/s"; }; }; processor { type = "rpc_pkcs11"; filter_config = "${filter}"; }; }; };`,
  );
  const r = run(['-fg', '-conf', conf]);
  expect(r.status).toBe(78);
  expect(r.stderr).toMatch(new RegExp(`${filter}:2:\\d+`));
});

test('a policy key not enforced yet refuses to start: exit 78, file:line:col, the key (finding 1)', () => {
  const filter = path.join(tmp, 'filter.conf');
  fs.writeFileSync(filter, 'modules = [("softhsm", "/usr/lib/softhsm/libsofthsm2.so")]\nwrapping_format_key = "00112233445566778899aabbccddeeff"\n');
  const conf = path.join(tmp, 'p.conf');
  fs.writeFileSync(
    conf,
    `netplex { service { name = "x"; protocol { name = "rpc_pkcs11"; address { type = "local"; path = "${tmp}/s"; }; }; processor { type = "rpc_pkcs11"; filter_config = "${filter}"; }; }; };`,
  );
  const r = run(['-fg', '-conf', conf]);
  expect(r.status).toBe(78);
  expect(r.stderr).toContain(`${filter}:2:1: key 'wrapping_format_key': not enforced yet`);
  expect(fs.existsSync(`${tmp}/s`)).toBe(false);
  // The same file with the service's user set: the server file is refused first.
  fs.writeFileSync(conf, fs.readFileSync(conf, 'utf8').replace('name = "x";', 'name = "x"; user = "nobody";'));
  const u = run(['-fg', '-conf', conf]);
  expect(u.status).toBe(78);
  expect(u.stderr).toContain(`${conf}:1:33: key 'netplex.service[0].user': not enforced yet`);
});

test('embedded default: creates a token once, serves it, and detaches with a pid file', async () => {
  const env = { ...process.env, PKCS11PROXYD_STATE_DIR: tmp };
  // Without -fg: the command returns once the daemon serves.
  const pidFile = path.join(tmp, 'd.pid');
  const r = await runAsync(['-pid', pidFile, '-workers', '1'], env);
  const log = fs.existsSync(path.join(tmp, 'd.log')) ? fs.readFileSync(path.join(tmp, 'd.log'), 'utf8') : '';
  expect({ status: r.status, err: r.stderr, log: r.status === 0 ? '' : log }).toEqual({ status: 0, err: '', log: '' });
  const pid = Number(fs.readFileSync(pidFile, 'utf8'));
  expect(pid).toBeGreaterThan(0);
  try {
    const sock = path.join(tmp, 'pkcs11proxyd.sock');
    const l = pkcs11Tool(CC_CLIENT, ['-L'], { ...process.env, PKCS11PROXY_SOCKET_PATH: sock, PKCS11PROXY_LIBNAME: 'softhsm' });
    expect(l.status).toBe(0);
    expect(l.out).toMatch(/token label\s+:\s+pkcs11proxyd/);
  } finally {
    process.kill(pid, 'SIGTERM');
  }
  await new Promise<void>((resolve) => {
    const check = () => {
      try {
        process.kill(pid, 0);
        setTimeout(check, 20);
      } catch {
        resolve();
      }
    };
    check();
  });
  // Second start in the foreground reuses the token and prints the client hint.
  const fg = spawn(process.execPath, [CLI, '-fg', '-workers', '0'], { env });
  let out = '';
  fg.stdout.on('data', (b: Buffer) => (out += b.toString()));
  await new Promise<void>((resolve, reject) => {
    fg.stdout.on('data', () => /READY/.test(out) && resolve());
    fg.once('exit', (code) => reject(new Error(`exited ${code}: ${out}`)));
  });
  expect(out).toMatch(/pkcs11-tool --module/);
  expect(out).not.toMatch(/created now/);
  // Served a call: the daemon is past startup.
  const probe = pkcs11Tool(CC_CLIENT, ['-I'], { ...process.env, PKCS11PROXY_SOCKET_PATH: path.join(tmp, 'pkcs11proxyd.sock'), PKCS11PROXY_LIBNAME: 'softhsm' });
  expect(probe.status).toBe(0);
  let err = '';
  fg.stderr.on('data', (b: Buffer) => (err += b.toString()));
  const exited = new Promise((resolve) => fg.once('exit', (code, signal) => resolve({ code, signal })));
  fg.kill('SIGTERM');
  expect({ exit: await exited, err: exitOk(await exited) ? '' : err }).toEqual({ exit: { code: 0, signal: null }, err: '' });
});
