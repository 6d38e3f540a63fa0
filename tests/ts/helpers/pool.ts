import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { ROOT, startDaemon } from './daemon';
import type { DaemonOptions, RunningDaemon } from './daemon';
import { faultyModule } from './faulty-module';
import type { FaultyModule } from './faulty-module';
import { createSoftHsm, SOFTHSM_MODULE, USER_PIN } from './softhsm';
import type { SoftHsmStore } from './softhsm';
import { readJsonLines } from './json-lines';

export const CLIENT = path.join(ROOT, 'client', 'build', 'libp11client.so');
const BENCH_DIR = path.join(ROOT, 'bench', 'c');

/**
 * A SoftHSM2 store with one token `bench` holding the keys bench/c/bench.c
 * uses (bench-ec: EC P-256 pair, id 21; bench-rsa: RSA-2048 pair, id 22;
 * bench-aes: AES-256, id 23) and two more for key wrapping (wrap-aes: AES-128
 * with CKA_WRAP, id 31; data-aes: extractable AES-128, id 32), made once;
 * members get copies of its token
 * directory, so every member holds the very same objects.
 */
export function createKeyTemplate(): SoftHsmStore {
  const t = createSoftHsm(['bench']);
  const tool = (...args: string[]) =>
    execFileSync('pkcs11-tool', ['--module', SOFTHSM_MODULE, '--token-label', 'bench', '--login', '--pin', USER_PIN, ...args], { env: t.env, stdio: 'ignore', timeout: 120_000 });
  tool('--keypairgen', '--key-type', 'EC:prime256v1', '--label', 'bench-ec', '--id', '21');
  tool('--keypairgen', '--key-type', 'rsa:2048', '--label', 'bench-rsa', '--id', '22');
  // pkcs11-tool cannot clear CKA_WRAP/CKA_UNWRAP; the AES key gets its whole template here (as bench/c/run.sh).
  execFileSync(
    process.execPath,
    [
      '-e',
      `const { PKCS11 } = require(process.argv[1]);
const p = new PKCS11(); p.load(process.argv[2]); p.C_Initialize();
const s = p.C_OpenSession(p.C_GetSlotList(true)[0], 6);
p.C_Login(s, 1, process.argv[3]);
const t = (type, value) => ({ type, value });
p.C_GenerateKey(s, { mechanism: 0x1080 }, [t(0x0, 4), t(0x1, true), t(0x3, 'bench-aes'), t(0x102, Buffer.from([0x23])), t(0x161, 32), t(0x104, true), t(0x105, true), t(0x106, false), t(0x107, false), t(0x103, true), t(0x162, false)]);
p.C_GenerateKey(s, { mechanism: 0x1080 }, [t(0x0, 4), t(0x1, true), t(0x3, 'wrap-aes'), t(0x102, Buffer.from([0x31])), t(0x161, 16), t(0x106, true), t(0x107, true), t(0x104, false), t(0x105, false), t(0x103, true), t(0x162, false)]);
p.C_GenerateKey(s, { mechanism: 0x1080 }, [t(0x0, 4), t(0x1, true), t(0x3, 'data-aes'), t(0x102, Buffer.from([0x32])), t(0x161, 16), t(0x104, true), t(0x105, true), t(0x103, false), t(0x162, true)]);
p.C_Logout(s); p.C_Finalize();`,
      path.join(ROOT, 'node_modules', 'pkcs11js'),
      SOFTHSM_MODULE,
      USER_PIN,
    ],
    { env: t.env, stdio: 'ignore', timeout: 60_000 },
  );
  return t;
}

/** One member: its own store (a copy of the template's token) behind its own fault-injection wrapper. */
export interface Member {
  alias: string;
  store: SoftHsmStore;
  faults: FaultyModule;
}

export function createMember(template: SoftHsmStore, alias: string): Member {
  const store = createSoftHsm([]);
  fs.cpSync(path.join(template.dir, 'tokens'), path.join(store.dir, 'tokens'), { recursive: true });
  return { alias, store, faults: faultyModule(path.join(store.dir, 'module'), store.conf) };
}

export interface PoolDaemon {
  daemon: RunningDaemon;
  members: Member[];
  /** Environment for our C client (and pkcs11-tool over it) loading alias `alias`. */
  env(alias?: string): NodeJS.ProcessEnv;
  /** Prometheus samples (metrics over a Unix socket), keyed `name{label=value,...}` with sorted labels. */
  metrics(): Promise<Map<string, number>>;
  /** The audit trail so far, one object per line. */
  audit(): Array<Record<string, unknown>>;
  /** Pid of the helper process (module_isolation "helper") that last became ready for `alias`; waits for one. */
  helperPid(alias: string): Promise<number>;
  /** Calls the pool sent to member `alias` for `procedure`, summed over workers. */
  memberCalls(alias: string, procedure: string): Promise<number>;
  stop(): Promise<void>;
}

export interface PoolDaemonOptions {
  members?: number;
  /** Keys of the pool block after `members` (e.g. `strategy = "primary-standby"`). */
  pool?: string;
  /** More filter.conf text (slot_nat, module_isolation, ...). */
  filterExtra?: string;
  /** More modules before the members. */
  modules?: DaemonOptions['modules'];
  workers?: number;
  env?: NodeJS.ProcessEnv;
  /** Run every member in a helper process (module_isolation) with this block, e.g. `mode = "helper" call_timeout_ms = 2000`. */
  isolation?: string;
  /** -debug-pkcs11 */
  trace?: boolean;
}

/** The daemon with pool `pool` over `members` members (aliases m0, m1, ...) all holding `template`'s keys. */
export async function startPoolDaemon(template: SoftHsmStore, o: PoolDaemonOptions = {}): Promise<PoolDaemon> {
  const members = Array.from({ length: o.members ?? 2 }, (_, i) => createMember(template, `m${i}`));
  const metricsSock = path.join(members[0].store.dir, 'metrics.sock');
  const auditFile = path.join(members[0].store.dir, 'audit.log');
  const list = members.map((m) => `("${m.alias}", "pkcs11:token=bench")`).join(' ');
  const isolation = o.isolation === undefined ? '' : `module_isolation = { ${members.map((m) => `${m.alias} = { ${o.isolation} }`).join(' ')} }`;
  const daemon = await startDaemon({
    workers: o.workers ?? 0,
    trace: o.trace,
    modules: [...(o.modules ?? []), ...members.map((m) => ({ alias: m.alias, path: m.faults.path }))],
    filterExtra: `pools = { pool = { members = [${list}] label = "bench" ${o.pool ?? ''} } }\n${isolation}\n${o.filterExtra ?? ''}`,
    processorExtra: `metrics_listen = "${metricsSock}"; audit_file = "${auditFile}";`,
    env: o.env,
  });
  const metrics = (): Promise<Map<string, number>> => scrapeMetrics(metricsSock);
  const audit = (): Array<Record<string, unknown>> =>
    readJsonLines(auditFile);
  return {
    daemon,
    members,
    audit,
    helperPid: (alias) =>
      waitFor(
        `a ready helper for ${alias}`,
        () => {
          const ready = audit().filter((e) => e.event === 'module_helper' && e.alias === alias && e.state === 'ready');
          const pid = ready[ready.length - 1]?.pid;
          return typeof pid === 'number' && fs.existsSync(`/proc/${pid}`) ? pid : 0;
        },
        (pid) => pid > 0,
      ),
    env: (alias = 'pool') => ({ ...members[0].store.env, PKCS11PROXY_SOCKET_PATH: daemon.socketPath, PKCS11PROXY_LIBNAME: alias }),
    metrics,
    async memberCalls(alias, procedure) {
      const m = await metrics();
      let n = 0;
      for (const [k, v] of m) if (k.startsWith('pkcs11proxyd_pool_member_calls_total{') && k.includes(`member=${alias},`) && k.includes(`procedure=${procedure},`)) n += v;
      return n;
    },
    async stop() {
      await daemon.stop();
      for (const m of members) m.store.cleanup();
    },
  };
}

/** Prometheus text format → value by `name{a=x,b=y}` (labels sorted). */
/** One scrape of the daemon's metrics endpoint on a Unix socket (processor.metrics_listen). */
export function scrapeMetrics(socketPath: string): Promise<Map<string, number>> {
  return new Promise((resolve, reject) => {
    http
      .get({ socketPath, path: '/metrics' }, (res) => {
        let body = '';
        res.on('data', (b: Buffer) => (body += b.toString()));
        res.on('end', () => resolve(parseMetrics(body)));
      })
      .on('error', reject);
  });
}

export function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels = m[2] ? [...m[2].matchAll(/([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"/g)].map((x) => `${x[1]}=${x[2]}`).sort() : [];
    out.set(`${m[1]}{${labels.join(',')}}`, Number(m[3]));
  }
  return out;
}

/** Polls `check` until it holds or `ms` pass; returns its last value. */
export async function waitFor<T>(what: string, check: () => Promise<T> | T, ok: (v: T) => boolean, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (ok(v)) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(v)})`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function buildBench(): string {
  execFileSync('make', ['-s', '-C', BENCH_DIR, 'build/bench'], { stdio: 'inherit' });
  return path.join(BENCH_DIR, 'build', 'bench');
}

export interface BenchResult {
  status: string;
  fields: Record<string, string>;
  out: string;
}

/** Runs bench/c/bench.c (real C client processes) over the pool; resolves with its RESULT line. */
export function runBench(env: NodeJS.ProcessEnv, workload: string, seconds: number, procs: number): Promise<BenchResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(buildBench(), ['-m', CLIENT, '-w', workload, '-t', String(seconds), '-p', String(procs), '-T', 'bench'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('exit', () => {
      const m = /^RESULT (.*)$/m.exec(out);
      if (!m) return reject(new Error(`bench printed no RESULT:\n${out}`));
      const fields = Object.fromEntries(m[1].split(' ').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
      resolve({ status: fields.status, fields, out });
    });
  });
}
