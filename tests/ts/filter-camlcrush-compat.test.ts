/**
 * Compatibility table against Caml Crush itself (issue 8, item 2): Debian's
 * /etc/pkcs11proxyd/filter.conf, with its SoftHSM module path changed to the
 * installed one and its commented wrapping_format_key example uncommented,
 * loaded by Debian's Caml Crush daemon and by ours. The same client (Caml
 * Crush's libp11clientunix.so, driven by tests/c/filter_compat_driver.c)
 * runs the same table of calls through each; the CK_RVs must be equal
 * except for the deliberate differences listed in DELIBERATE, which are
 * asserted as such.
 *
 * Group "admin" runs Debian's file with its two commented examples
 * forbid_admin_operations = [(".*", yes)] and
 * remove_padding_oracles = [(".*", [wrap, unwrap, encrypt])] uncommented.
 *
 * Each daemon gets its own SoftHSM2 store and they run one after the other
 * (SoftHSM2 2.6.1 races on concurrent C_Initialize of one store).
 * FILTER_COMPAT_TABLE=FILE writes the markdown table to FILE.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ck, rvName } from '../../src/pkcs11/constants';
import { CLI } from './helpers/daemon';
import { createSoftHsm, SO_PIN, SOFTHSM_MODULE, USER_PIN } from './helpers/softhsm';
import type { SoftHsmStore } from './helpers/softhsm';

const CC_CLIENT = '/usr/lib/x86_64-linux-gnu/caml-crush/libp11clientunix.so';
const CC_DAEMON = '/usr/bin/pkcs11proxyd';
const DEBIAN_FILTER = '/etc/pkcs11proxyd/filter.conf';
const DRIVER_SRC = path.join(__dirname, '..', 'c', 'filter_compat_driver.c');
const WRAPPING_KEY = '00112233445566778899aabbccddeeff';

type Daemon = 'camlcrush' | 'ours';
type Group = 'debian' | 'admin' | 'initialize' | 'gcm';

/** Debian's filter.conf with the two changes the issue names (and, for "admin", two of its own examples on). */
export function debianFilter(group: Group): string {
  let s = fs.readFileSync(DEBIAN_FILTER, 'utf8');
  const swap = (from: string, to: string) => {
    if (!s.includes(from)) throw new Error(`${DEBIAN_FILTER} changed: '${from}' not found`);
    s = s.replace(from, to);
  };
  swap('"/usr/lib/softhsm/libsofthsm.so"', JSON.stringify(SOFTHSM_MODULE));
  swap(`(*\nwrapping_format_key = "${WRAPPING_KEY}"\n*)`, `wrapping_format_key = "${WRAPPING_KEY}"`);
  if (group === 'admin') {
    swap('(*\nforbid_admin_operations = [(".*", yes)]\n*)', 'forbid_admin_operations = [(".*", yes)]');
    swap('(*\nremove_padding_oracles = [(".*", [wrap, unwrap, encrypt])]\n*)', 'remove_padding_oracles = [(".*", [wrap, unwrap, encrypt])]');
  }
  return s;
}

/** Caml Crush's netplex syntax, which both daemons load (see tests/c/netplex-conf.sh). */
function serverConf(dir: string, sock: string, filter: string): string {
  return `netplex {
  controller { max_level = "info"; socket_directory = "${dir}/netplex"; logging { type = "stderr"; }; };
  service {
    name = "PKCS#11 Filtering Proxy";
    conn_limit = 1;
    protocol { name = "rpc_pkcs11"; address { type = "local"; path = "${sock}"; }; };
    processor { type = "rpc_pkcs11"; filter_config = "${filter}"; use_ssl = false; };
    workload_manager { type = "dynamic"; max_jobs_per_thread = 1; min_free_jobs_capacity = 1; max_free_jobs_capacity = 1; max_threads = 100; };
  }
}
`;
}

async function waitFor(what: string, ok: () => boolean, proc: ChildProcess, out: () => string, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (proc.exitCode !== null) throw new Error(`${what}: exited with ${proc.exitCode}:\n${out()}`);
    if (Date.now() > deadline) throw new Error(`${what}: not ready after ${ms} ms:\n${out()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

interface Run {
  rows: Map<string, string>;
  output: string;
}

/** Starts `daemon` on a fresh store with the group's filter.conf, runs the driver through Caml Crush's client, stops it. */
async function runTable(daemon: Daemon, group: Group, driver: string): Promise<Run> {
  const hsm: SoftHsmStore = createSoftHsm(['test']);
  try {
    const sock = path.join(hsm.dir, 'sock');
    const filter = path.join(hsm.dir, 'filter.conf');
    const conf = path.join(hsm.dir, 'pkcs11proxyd.conf');
    fs.mkdirSync(path.join(hsm.dir, 'netplex'));
    fs.writeFileSync(filter, debianFilter(group === 'admin' ? 'admin' : 'debian'));
    fs.writeFileSync(conf, serverConf(hsm.dir, sock, filter));
    const argv = daemon === 'camlcrush' ? [CC_DAEMON, '-fg', '-conf', conf] : [process.execPath, CLI, '-fg', '-conf', conf, '-workers', '1'];
    const proc = spawn(argv[0], argv.slice(1), { env: hsm.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await waitFor(`${daemon} daemon`, () => (daemon === 'ours' ? /^READY /m.test(out) : fs.existsSync(sock)), proc, () => out);
      const r = spawnSync(driver, [CC_CLIENT, USER_PIN, SO_PIN, group], {
        encoding: 'utf8',
        timeout: 120_000,
        env: { ...hsm.env, PKCS11PROXY_SOCKET_PATH: sock, PKCS11PROXY_LIBNAME: group === 'initialize' ? 'opencryptoki' : 'softhsm' },
      });
      const rows = new Map<string, string>();
      for (const line of r.stdout.trim().split('\n').filter(Boolean)) {
        const [name, rv, ...detail] = line.split(' ');
        rows.set(`${group}/${name}`, [rvName(Number(rv)), ...detail].join(' '));
      }
      // Caml Crush's client ends the process when an RPC fails (its daemon's worker died): the row that was running says so.
      if (r.status !== 0 && group === 'gcm' && !rows.has('gcm/encryptinit_aes_gcm')) {
        rows.set('gcm/encryptinit_aes_gcm', 'RPC failure (client exits)');
      } else if (r.status !== 0) throw new Error(`driver (${daemon}, ${group}) exit ${r.status}: ${r.stderr}\n${out}`);
      return { rows, output: out };
    } finally {
      const exited = new Promise((r) => (proc.exitCode !== null ? r(null) : proc.once('exit', r)));
      proc.kill('SIGTERM');
      await exited;
    }
  } finally {
    hsm.cleanup();
  }
}

/**
 * Rows where our daemon answers differently on purpose, with the reason.
 * Every other row must give the same answer through both daemons.
 */
const EMPTY_PARAM =
  "Caml Crush hands the module a non-NULL pointer for an empty mechanism parameter, which SoftHSM2 refuses (CKR_ARGUMENTS_BAD) for every mechanism without one; ours passes NULL";
const DELIBERATE: Record<string, { ours: string; camlcrush: string; reason: string }> = {
  'debian/wrap_aes_key_wrap': { ours: rvName(ck.CKR_OK), camlcrush: rvName(ck.CKR_ARGUMENTS_BAD), reason: `${EMPTY_PARAM}; so CKM_AES_KEY_WRAP works through ours, in the wrapping format` },
  'debian/wrap_rsa_pkcs': {
    ours: rvName(ck.CKR_KEY_FUNCTION_NOT_PERMITTED),
    camlcrush: rvName(ck.CKR_ARGUMENTS_BAD),
    reason: `${EMPTY_PARAM}; ours reaches the module, which refuses the wrap itself`,
  },
  'gcm/encryptinit_aes_gcm': {
    ours: rvName(ck.CKR_MECHANISM_PARAM_INVALID),
    camlcrush: 'RPC failure (client exits)',
    reason:
      "Caml Crush's client sends CK_GCM_PARAMS as the raw bytes of the C struct, pointers into the client's memory included; Caml Crush hands them to the module, ours refuses parameters that hold pointers (tests/ts/mechanism-params.test.ts)",
  },
};

let driver: string;
let dir: string;
const results: Record<Daemon, Map<string, string>> = { camlcrush: new Map(), ours: new Map() };
const failures: string[] = [];

beforeAll(async () => {
  for (const f of [CC_CLIENT, CC_DAEMON, DEBIAN_FILTER]) expect(fs.existsSync(f)).toBe(true);
  dir = fs.mkdtempSync(path.join(process.env.TMPDIR ?? '/tmp', 'p11pd-compat-'));
  driver = path.join(dir, 'filter_compat_driver');
  execFileSync('cc', ['-Wall', '-Wextra', '-Werror', '-I/usr/include/p11-kit-1', '-o', driver, DRIVER_SRC, '-ldl']);
  // One daemon at a time, each on its own store.
  // CK_GCM_PARAMS from Caml Crush's client (pointers in the bytes) is covered by mechanism-params.test.ts.
  for (const group of ['debian', 'admin', 'initialize'] as const) {
    for (const daemon of ['camlcrush', 'ours'] as const) {
      try {
        for (const [k, v] of (await runTable(daemon, group, driver)).rows) results[daemon].set(k, v);
      } catch (e) {
        failures.push(`${daemon} ${group}: ${(e as Error).message}`);
      }
    }
  }
  const table = markdownTable();
  process.stdout.write(`${table}\n`);
  if (process.env.FILTER_COMPAT_TABLE) fs.writeFileSync(process.env.FILTER_COMPAT_TABLE, table + '\n');
}, 600_000);
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function markdownTable(): string {
  const rows = [...new Set([...results.camlcrush.keys(), ...results.ours.keys()])];
  const lines = ['| call | Caml Crush | pkcs11proxyd | note |', '|---|---|---|---|'];
  for (const r of rows) {
    const c = results.camlcrush.get(r) ?? '(not run)';
    const o = results.ours.get(r) ?? '(not run)';
    const note = DELIBERATE[r] ? `deliberate: ${DELIBERATE[r].reason}` : c === o ? 'same' : '**DIFFERENT**';
    lines.push(`| ${r} | ${c} | ${o} | ${note} |`);
  }
  for (const f of failures) lines.push(`| (run failed) | ${f.split('\n')[0]} | | |`);
  return lines.join('\n');
}

test('both daemons start on Debian\'s filter.conf (its opencryptoki module is not installed) and run the whole table', () => {
  expect(failures).toEqual([]);
  // The driver ran to its last row through both.
  for (const d of ['camlcrush', 'ours'] as const) {
    expect(results[d].has('debian/login_so')).toBe(true);
    expect(results[d].has('admin/login_so')).toBe(true);
  }
});

test('the refusals Debian\'s filter.conf exists for happen through Caml Crush (the reference is real)', () => {
  const cc = results.camlcrush;
  expect(cc.get('debian/mechlist_rsa_x509')).toBe(`${rvName(ck.CKR_OK)} hidden`);
  expect(cc.get('debian/encryptinit_rsa_x509')).toBe(rvName(ck.CKR_MECHANISM_INVALID));
  expect(cc.get('debian/genkey_aes_wrap_decrypt')).toBe(rvName(ck.CKR_ATTRIBUTE_VALUE_INVALID));
  expect(cc.get('debian/getattr_value_sensitive')).toBe(rvName(ck.CKR_ATTRIBUTE_SENSITIVE));
  expect(cc.get('admin/encryptinit_rsa_pkcs')).toBe(rvName(ck.CKR_MECHANISM_INVALID));
  expect(cc.get('debian/login_so')).toBe(rvName(ck.CKR_OK));
  expect(cc.get('admin/login_so')).toBe(rvName(ck.CKR_USER_TYPE_INVALID));
  // Caml Crush's client turns the daemon's failed C_LoadModule of the missing opencryptoki into this C_Initialize answer.
  expect(cc.get('initialize/initialize')).toBe(rvName(ck.CKR_DEVICE_ERROR));
});

test('every call gives the same CK_RV through both daemons, but for the deliberate differences', () => {
  const rows = [...new Set([...results.camlcrush.keys(), ...results.ours.keys()])];
  const got = Object.fromEntries(rows.map((r) => [r, { camlcrush: results.camlcrush.get(r), ours: results.ours.get(r) }]));
  const want = Object.fromEntries(
    rows.map((r) => {
      const d = DELIBERATE[r];
      const c = results.camlcrush.get(r);
      return [r, d ? { camlcrush: d.camlcrush, ours: d.ours } : { camlcrush: c, ours: c }];
    }),
  );
  expect(got).toEqual(want);
});
