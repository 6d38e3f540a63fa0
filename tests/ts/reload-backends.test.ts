/**
 * The filter.conf in force with workers: the primary holds the text it last
 * accepted and every worker starts from it, so a worker that restarts after
 * an edit not yet applied (or a broken one) runs its siblings' policy. A
 * SIGHUP that would change what a process opened at start (modules, their
 * isolation, pools, slot NAT) is refused whole instead of half applied.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as p from 'pkcs11js';
import { startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { waitUntil, workersOf } from './helpers/helper-procs';
import { readJsonLines } from './helpers/json-lines';
import { P11Client } from './helpers/p11-client';
import { scrapeMetrics } from './helpers/pool';
import { SOFTHSM_MODULE } from './helpers/softhsm';

const RW = p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION;
const SMALL = 'max_random_length = [(".*", 16)]';

interface Running {
  d: RunningDaemon;
  file: string;
  modules: string;
  audit(): Array<Record<string, unknown>>;
  workersReady(): Promise<number | undefined>;
}

async function start(workers = 2): Promise<Running> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p11pd-reload-'));
  const d = await startDaemon({ workers, processorExtra: `metrics_listen = "${dir}/metrics.sock"; audit_file = "${dir}/audit.log";` });
  const file = path.join(d.hsm.dir, 'filter.conf');
  return {
    d,
    file,
    modules: fs.readFileSync(file, 'utf8').split('\n')[0],
    audit: () => readJsonLines(path.join(dir, 'audit.log')),
    workersReady: async () => (await scrapeMetrics(path.join(dir, 'metrics.sock'))).get('pkcs11proxyd_workers{}'),
  };
}

/** C_GenerateRandom(32) on a new connection: CKR_OK, or CKR_ARGUMENTS_BAD under SMALL. */
async function randomRv(d: RunningDaemon): Promise<number> {
  const c = await P11Client.open({ path: d.socketPath });
  const slot = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList[0];
  const s = await c.call('C_OpenSession', { slotID: slot, flags: RW });
  const r = await c.call('C_GenerateRandom', { session: s.session, length: 32 });
  await c.close();
  return r.rv;
}

/** Connections go to the ready workers in turn: four of them reach both. */
async function fourAnswers(d: RunningDaemon): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < 4; i++) out.push(await randomRv(d));
  return out;
}

/** SIGKILLs `pids` and waits until as many others have replaced them and every worker is ready. */
async function replaceWorkers(r: Running, pids: number[]): Promise<void> {
  for (const pid of pids) process.kill(pid, 'SIGKILL');
  await waitUntil('the workers replaced and ready', async () => {
    const now = workersOf(r.d.proc.pid!);
    return now.length === 2 && now.every((x) => !pids.includes(x)) && (await r.workersReady()) === 2;
  });
}

/** SIGHUP, then the config_reload event it caused. */
async function reload(r: Running): Promise<Record<string, unknown>> {
  const before = r.audit().filter((e) => e.event === 'config_reload').length;
  r.d.proc.kill('SIGHUP');
  return waitUntil('the config_reload event', () => r.audit().filter((e) => e.event === 'config_reload')[before]);
}

test('a worker that restarts runs the policy in force: not an edit made since, nor a broken one; after SIGHUP, the new one', async () => {
  const r = await start();
  try {
    await waitUntil('both workers ready', async () => (await r.workersReady()) === 2);
    expect(await fourAnswers(r.d)).toEqual([p.CKR_OK, p.CKR_OK, p.CKR_OK, p.CKR_OK]);
    // A valid edit, not applied: one worker restarts and still serves the policy in force.
    fs.writeFileSync(r.file, `${r.modules}\n${SMALL}\n`);
    await replaceWorkers(r, workersOf(r.d.proc.pid!).slice(0, 1));
    expect(await fourAnswers(r.d)).toEqual([p.CKR_OK, p.CKR_OK, p.CKR_OK, p.CKR_OK]);
    // A broken file on disk does not keep workers from starting.
    fs.writeFileSync(r.file, `${r.modules}\nmax_random_length = [(".*", banana)]\n`);
    await replaceWorkers(r, workersOf(r.d.proc.pid!));
    expect(await fourAnswers(r.d)).toEqual([p.CKR_OK, p.CKR_OK, p.CKR_OK, p.CKR_OK]);
    // Applied by SIGHUP: every worker, and the one that starts afterwards.
    fs.writeFileSync(r.file, `${r.modules}\n${SMALL}\n`);
    expect(await reload(r)).toMatchObject({ outcome: 'ok' });
    expect(await fourAnswers(r.d)).toEqual([p.CKR_ARGUMENTS_BAD, p.CKR_ARGUMENTS_BAD, p.CKR_ARGUMENTS_BAD, p.CKR_ARGUMENTS_BAD]);
    await replaceWorkers(r, workersOf(r.d.proc.pid!).slice(0, 1));
    expect(await fourAnswers(r.d)).toEqual([p.CKR_ARGUMENTS_BAD, p.CKR_ARGUMENTS_BAD, p.CKR_ARGUMENTS_BAD, p.CKR_ARGUMENTS_BAD]);
  } finally {
    await r.d.stop();
  }
});

// -workers 0: the stack's own reload checks; with workers, the primary before it sends the text.
describe.each([0, 2])('SIGHUP with a change to what a process opened at start (%i workers): refused whole, the old policy stays', (workers) => {
  let r: Running;
  beforeAll(async () => {
    r = await start(workers);
  });
  afterAll(async () => r.d.stop());

  // Each variant also tightens the policy (SMALL): a reload applied even in part would answer CKR_ARGUMENTS_BAD.
  const variants: Array<[key: string, text: () => string]> = [
    ['modules', () => `modules = [("softhsm", "${path.join(path.dirname(SOFTHSM_MODULE), 'other.so')}")]`],
    ['modules', () => `modules = [("softhsm", "${SOFTHSM_MODULE}"); ("extra", "${SOFTHSM_MODULE}")]`],
    ['module_isolation', () => `${r.modules}\nmodule_isolation = { softhsm = { mode = "helper" } }`],
    ['pools', () => `${r.modules}\npools = { p = { members = [("softhsm", "pkcs11:token=t0")] } }`],
    ['slot_nat', () => `${r.modules}\nslot_nat = { n = ["softhsm"] }`],
  ];
  test.each(variants)('%s', async (key, text) => {
    fs.writeFileSync(r.file, `${text()}\n${SMALL}\n`);
    const ev = await reload(r);
    expect(ev).toMatchObject({ outcome: 'error' });
    expect(String(ev.error)).toContain(`a reload cannot change \`${key}\``);
    expect(await fourAnswers(r.d)).toEqual([p.CKR_OK, p.CKR_OK, p.CKR_OK, p.CKR_OK]);
  });

  test('the same file with only the policy changed is applied', async () => {
    fs.writeFileSync(r.file, `${r.modules}\n${SMALL}\n`);
    expect(await reload(r)).toMatchObject({ outcome: 'ok' });
    expect(await fourAnswers(r.d)).toEqual([p.CKR_ARGUMENTS_BAD, p.CKR_ARGUMENTS_BAD, p.CKR_ARGUMENTS_BAD, p.CKR_ARGUMENTS_BAD]);
  });
});
