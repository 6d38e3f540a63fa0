import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as p from 'pkcs11js';
import { CLI, ROOT } from './helpers/daemon';
import { ModuleProcess, OUR_CLIENT } from './helpers/module-process';
import { pkcs11Tool } from './helpers/pkcs11-tool';
import { SOFTHSM_MODULE } from './helpers/softhsm';
import { prepareEmbeddedDefault } from '../../src/server/embedded-default';

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
  fs.writeFileSync(filter, 'modules = [("softhsm", "/usr/lib/softhsm/libsofthsm2.so")]\n');
  const conf = path.join(tmp, 'p.conf');
  // The service's startup_timeout: worker start timeouts are not enforced, so the key is refused rather than ignored.
  fs.writeFileSync(
    conf,
    `netplex { service { name = "x"; startup_timeout = 5.0; protocol { name = "rpc_pkcs11"; address { type = "local"; path = "${tmp}/s"; }; }; processor { type = "rpc_pkcs11"; filter_config = "${filter}"; }; }; };`,
  );
  const u = run(['-fg', '-conf', conf]);
  expect(u.status).toBe(78);
  expect(u.stderr).toContain(`${conf}:1:33: key 'netplex.service[0].startup_timeout': not enforced yet`);
  expect(fs.existsSync(`${tmp}/s`)).toBe(false);
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

/** A foreground daemon on the embedded default; resolves once it prints READY (rejects with its output if it exits first). */
async function startEmbedded(env: NodeJS.ProcessEnv): Promise<{ proc: ChildProcess; output(): string; stop(): Promise<unknown> }> {
  const proc = spawn(process.execPath, [CLI, '-fg', '-workers', '0'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  proc.stderr!.on('data', (b: Buffer) => (out += b.toString()));
  await new Promise<void>((resolve, reject) => {
    proc.stdout!.on('data', () => /^READY /m.test(out) && resolve());
    proc.once('exit', (code) => reject(new Error(`exited ${code}: ${out}`)));
  });
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  return {
    proc,
    output: () => out,
    stop: () => {
      proc.kill('SIGTERM');
      return exited;
    },
  };
}

test('embedded default: filter.conf.example with a wrapping format key made on the first run (mode 0600), reused by the next: a key wrapped in one run unwraps in the next', async () => {
  const env = { ...process.env, PKCS11PROXYD_STATE_DIR: tmp };
  const filterConf = path.join(tmp, 'filter.conf');
  const clientEnv = { ...process.env, PKCS11PROXY_SOCKET_PATH: path.join(tmp, 'pkcs11proxyd.sock'), PKCS11PROXY_LIBNAME: 'softhsm' };
  const RW = p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION;
  const KEY_WRAP = { mechanism: p.CKM_AES_KEY_WRAP };
  const probe = Buffer.alloc(16, 0x42);
  const aes = (label: string, usage: Array<[number, boolean]>, token: boolean) => [
    { type: p.CKA_CLASS, value: p.CKO_SECRET_KEY },
    { type: p.CKA_KEY_TYPE, value: p.CKK_AES },
    { type: p.CKA_TOKEN, value: token },
    { type: p.CKA_LABEL, value: label },
    { type: p.CKA_SENSITIVE, value: true },
    ...usage.map(([type, value]) => ({ type, value })),
  ];
  const DATA: Array<[number, boolean]> = [[p.CKA_ENCRYPT, true], [p.CKA_DECRYPT, true], [p.CKA_WRAP, false], [p.CKA_UNWRAP, false], [p.CKA_EXTRACTABLE, true]];
  const login = async (m: ModuleProcess) => {
    await m.must('C_Initialize');
    const slot = (await m.must<number[]>('C_GetSlotList', true))[0];
    const s = await m.must<Buffer>('C_OpenSession', slot, RW);
    await m.must('C_Login', s, p.CKU_USER, '1234');
    return s;
  };
  const encrypt = async (m: ModuleProcess, s: Buffer, key: Buffer) => {
    await m.must('C_EncryptInit', s, { mechanism: p.CKM_AES_ECB }, key);
    return m.must<Buffer>('C_Encrypt', s, probe, Buffer.alloc(16));
  };

  // First run: filter.conf is written from filter.conf.example, with a key, mode 0600.
  const first = await startEmbedded(env);
  let blob: Buffer;
  let reference: Buffer;
  let conf: string;
  let key: string | undefined;
  try {
    conf = fs.readFileSync(filterConf, 'utf8');
    expect(fs.statSync(filterConf).mode & 0o777).toBe(0o600);
    const example = fs.readFileSync(path.join(ROOT, 'filter.conf.example'), 'utf8');
    expect(conf.startsWith(example.replace(/^modules = .*$/m, `modules = [("softhsm", "${SOFTHSM_MODULE}")]`))).toBe(true);
    key = /^wrapping_format_key = "([0-9a-f]{32})"$/m.exec(conf)?.[1];
    expect(key).toBeDefined();
    expect(first.output()).toMatch(/generated a wrapping_format_key/);
    expect(first.output()).not.toContain(key!);

    const m = await ModuleProcess.start(OUR_CLIENT, clientEnv);
    try {
      const s = await login(m);
      const kw = await m.must<Buffer>('C_GenerateKey', s, { mechanism: p.CKM_AES_KEY_GEN }, [
        ...aes('kw', [[p.CKA_WRAP, true], [p.CKA_UNWRAP, true], [p.CKA_ENCRYPT, false], [p.CKA_DECRYPT, false], [p.CKA_EXTRACTABLE, false]], true),
        { type: p.CKA_VALUE_LEN, value: 16 },
      ]);
      const data = await m.must<Buffer>('C_GenerateKey', s, { mechanism: p.CKM_AES_KEY_GEN }, [...aes('d', DATA, false), { type: p.CKA_VALUE_LEN, value: 16 }]);
      reference = await encrypt(m, s, data);
      blob = await m.must<Buffer>('C_WrapKey', s, KEY_WRAP, kw, data, Buffer.alloc(1024));
      // wrapping_format_patch: the module's 24-byte RFC 3394 blob plus the attributes and their CMAC.
      expect(blob.length).toBeGreaterThan(24);
      await m.call('C_Finalize');
    } finally {
      await m.stop();
    }
  } finally {
    await first.stop();
  }

  // Second run: the same file, the same key; the blob of the first run unwraps.
  const second = await startEmbedded(env);
  try {
    expect(fs.readFileSync(filterConf, 'utf8')).toBe(conf);
    expect(second.output()).not.toMatch(/generated a wrapping_format_key/);
    expect(second.output()).not.toContain(key!);
    const m = await ModuleProcess.start(OUR_CLIENT, clientEnv);
    try {
      const s = await login(m);
      await m.must('C_FindObjectsInit', s, [{ type: p.CKA_LABEL, value: 'kw' }]);
      const found = await m.must<Buffer[]>('C_FindObjects', s, 2);
      await m.must('C_FindObjectsFinal', s);
      expect(found).toHaveLength(1);
      const copy = await m.must<Buffer>('C_UnwrapKey', s, KEY_WRAP, found[0], blob, aes('d2', DATA, false));
      expect(await encrypt(m, s, copy)).toEqual(reference);
      // The same bytes with one attribute byte changed: the CMAC no longer matches.
      const forged = Buffer.from(blob);
      forged[24] ^= 1;
      expect((await m.call('C_UnwrapKey', s, KEY_WRAP, found[0], forged, aes('d3', DATA, false))).rv).toBe(p.CKR_FUNCTION_FAILED);
      await m.call('C_Finalize');
    } finally {
      await m.stop();
    }
  } finally {
    await second.stop();
  }
});

describe('embedded default files (prepareEmbeddedDefault)', () => {
  const EXAMPLE = path.join(ROOT, 'filter.conf.example');
  const KEY_LINE = /^wrapping_format_key = "([0-9a-f]{32})"$/m;

  test('the first run writes filter.conf from filter.conf.example with a new key, mode 0600; the next run keeps it', () => {
    const a = prepareEmbeddedDefault(tmp, EXAMPLE);
    expect({ created: a.createdWrappingKey, exposed: a.filterConfExposed, mode: fs.statSync(a.filterConf).mode & 0o777 }).toEqual({
      created: true,
      exposed: null,
      mode: 0o600,
    });
    const text = fs.readFileSync(a.filterConf, 'utf8');
    expect(KEY_LINE.exec(text)?.[1]).toMatch(/^[0-9a-f]{32}$/);
    const b = prepareEmbeddedDefault(tmp, EXAMPLE);
    expect(b.createdWrappingKey).toBe(false);
    expect(fs.readFileSync(b.filterConf, 'utf8')).toBe(text);
    // Another state dir gets another key.
    const other = fs.mkdtempSync(path.join(os.tmpdir(), 'p11pd-cli-'));
    try {
      const c = prepareEmbeddedDefault(other, EXAMPLE);
      expect(KEY_LINE.exec(fs.readFileSync(c.filterConf, 'utf8'))?.[1]).not.toBe(KEY_LINE.exec(text)?.[1]);
    } finally {
      fs.rmSync(other, { recursive: true, force: true });
    }
  });

  test("an older version's pass-through filter.conf is replaced; an edited one is kept as written; one readable by others is reported", () => {
    const filterConf = path.join(tmp, 'filter.conf');
    fs.writeFileSync(filterConf, `(* Written by pkcs11proxyd for the embedded default; edit freely. *)\nmodules = [("softhsm", "${SOFTHSM_MODULE}")]\n`, { mode: 0o600 });
    expect(prepareEmbeddedDefault(tmp, EXAMPLE).createdWrappingKey).toBe(true);
    expect(fs.readFileSync(filterConf, 'utf8')).toMatch(KEY_LINE);

    const edited = `modules = [("softhsm", "${SOFTHSM_MODULE}")]\nfilter_actions_post = [(".*", [(C_WrapKey, wrapping_format_patch)])]\n`;
    fs.writeFileSync(filterConf, edited);
    fs.chmodSync(filterConf, 0o644);
    const e = prepareEmbeddedDefault(tmp, EXAMPLE);
    expect({ created: e.createdWrappingKey, exposed: e.filterConfExposed, text: fs.readFileSync(filterConf, 'utf8') }).toEqual({
      created: false,
      exposed: 0o644,
      text: edited,
    });
  });

  test('a missing filter.conf.example is a clear error, not a pass-through filter', () => {
    expect(() => prepareEmbeddedDefault(tmp, path.join(tmp, 'no-such-example'))).toThrow(expect.objectContaining({ code: 'EMBEDDED_DEFAULT' }));
    expect(fs.existsSync(path.join(tmp, 'filter.conf'))).toBe(false);
  });
});
