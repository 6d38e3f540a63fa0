import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import * as p from 'pkcs11js';
import { startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { P11Client } from './helpers/p11-client';

/** A worker process that dies (module crash, OOM kill) is replaced; the daemon keeps serving. */
let d: RunningDaemon;
beforeAll(async () => {
  d = await startDaemon({ workers: 2 });
});
afterAll(async () => {
  await d?.stop();
});

function workerPids(): number[] {
  try {
    return execFileSync('pgrep', ['-P', String(d.proc.pid)], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

async function until(cond: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error('condition not reached');
}

test('a killed worker is restarted and new connections keep working', async () => {
  const before = workerPids();
  expect(before).toHaveLength(2);
  const victim = before[0];
  process.kill(victim, 'SIGKILL');
  // A connection handed over in the instant of the crash dies with the worker;
  // once the primary has seen the death, every new connection is served.
  await until(() => /worker \d exited \(SIGKILL\)/.test(d.output()));
  for (let i = 0; i < 10; i++) {
    const c = await P11Client.open({ path: d.socketPath });
    expect((await c.call('C_GetInfo', undefined)).rv).toBe(p.CKR_OK);
    await c.close();
  }
  await until(() => {
    const now = workerPids();
    return now.length === 2 && !now.includes(victim);
  });
  expect(d.output()).toMatch(/worker \d exited \(SIGKILL\)/);
  const c = await P11Client.open({ path: d.socketPath });
  expect((await c.call('C_GetSlotList', { tokenPresent: 1, count: 0 })).count).toBeGreaterThan(0);
  await c.close();
});

describe('node options per process (bin/pkcs11proxyd)', () => {
  let b: RunningDaemon;
  beforeAll(async () => {
    b = await startDaemon({ workers: 2, viaBin: true });
  });
  afterAll(async () => {
    await b?.stop();
  });
  const cmdline = (pid: number): string[] => fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);

  test('the primary runs with a small young generation, its workers with the default one', async () => {
    const kids = execFileSync('pgrep', ['-P', String(b.proc.pid)], { encoding: 'utf8' }).trim().split('\n').map(Number);
    expect(kids).toHaveLength(2);
    // The launcher is `env -S node ...`: env execs node, so the pid is node's.
    expect(cmdline(b.proc.pid!)).toContain('--max-semi-space-size=2');
    for (const k of kids) expect(cmdline(k).filter((a) => a.includes('semi-space'))).toEqual([]);
    const c = await P11Client.open({ path: b.socketPath });
    try {
      expect((await c.call('C_GetInfo', undefined)).rv).toBe(p.CKR_OK);
    } finally {
      c.raw.destroy();
    }
  });
});
