import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { P11Client } from './helpers/p11-client';

/**
 * Supervision of worker processes (issue 7, finding 5): a connection handed
 * to a worker that dies before taking it is re-routed or closed, never left
 * waiting, and the primary releases its descriptor; a worker that keeps dying
 * is restarted later and later.
 */
let d: RunningDaemon;
beforeEach(async () => {
  d = await startDaemon({ workers: 2 });
});
afterEach(async () => {
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

/** Descriptors the primary holds (its listener, IPC channels, stdio and any connection it kept). */
function primaryFds(): number {
  return fs.readdirSync(`/proc/${d.proc.pid}/fd`).length;
}

async function until(what: string, cond: () => boolean, deadlineMs = 15_000): Promise<void> {
  const end = Date.now() + deadlineMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`not reached within ${deadlineMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

type Outcome = 'reply' | 'closed' | 'hung';

/** Polls until a new connection is served (replacement workers are ready). */
async function untilServes(deadlineMs = 30_000): Promise<void> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    const o = await oneCall(10_000);
    if (o === 'reply') return;
    if (o === 'hung') throw new Error('a connection hung');
    if (Date.now() > end) throw new Error(`not served within ${deadlineMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Connects and makes one call; answers how it ended within `ms`. */
async function oneCall(ms: number): Promise<Outcome> {
  let c: P11Client;
  try {
    c = await P11Client.connect({ path: d.socketPath });
  } catch {
    return 'closed';
  }
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<Outcome>((r) => (timer = setTimeout(() => r('hung'), ms)));
  const call = c.call('C_SetupArch', { arch: 1 }).then(
    (): Outcome => 'reply',
    (): Outcome => 'closed',
  );
  const outcome = await Promise.race([call, hung]);
  clearTimeout(timer);
  c.raw.destroy();
  return outcome;
}

test('connections opened around a worker SIGKILL each get a reply or a close, and the primary keeps no descriptor', async () => {
  await until('both workers up', () => workerPids().length === 2);
  const baseline = primaryFds();
  for (let round = 0; round < 3; round++) {
    const before = workerPids();
    const outcomes: Array<Promise<Outcome>> = [];
    for (let i = 0; i < 10; i++) {
      if (i === 5) for (const pid of before) process.kill(pid, 'SIGKILL');
      outcomes.push(oneCall(10_000));
    }
    const got = await Promise.all(outcomes);
    expect(got.filter((o) => o === 'hung')).toEqual([]);
    await until('workers replaced', () => {
      const now = workerPids();
      return now.length === 2 && now.every((p) => !before.includes(p));
    });
    // Every client is gone: whatever the primary still holds is a leak.
    await until(`primary back to ${baseline} descriptors (round ${round})`, () => primaryFds() === baseline);
    // And the replacements serve.
    await untilServes();
  }
});

test('while no worker can take a connection it is closed at once, logged once, and restarts back off', async () => {
  await until('both workers up', () => workerPids().length === 2);
  // Kill every worker as soon as it appears, and note when each one appeared.
  const seen = new Map<number, number>();
  const firstKill = Date.now();
  const killer = setInterval(() => {
    for (const pid of workerPids()) {
      if (!seen.has(pid)) seen.set(pid, Date.now());
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  }, 5);
  try {
    await until('both workers dead', () => workerPids().length === 0, 5_000);
    const logBefore = d.output().split('\n').length;
    // While no worker is ready: 30 connections, each closed without waiting for a timeout.
    const outcomes: Outcome[] = [];
    for (let i = 0; i < 30; i++) outcomes.push(await oneCall(1_000));
    expect(outcomes.filter((o) => o === 'hung')).toEqual([]);
    // Log volume follows worker state changes, not refused connections.
    const linesAdded = d.output().split('\n').length - logBefore;
    expect(linesAdded).toBeLessThan(12);
    // Four restarts of each worker: 200, 400, 800, 1600 ms nominal (+-25% jitter).
    await until('4 restarts per worker', () => seen.size >= 2 + 8, 30_000);
  } finally {
    clearInterval(killer);
  }
  const starts = [...seen.values()].sort((a, b) => a - b);
  // The last restarts come at least 1.2 s (1600 ms - 25%) after the previous round.
  expect(starts[starts.length - 1] - firstKill).toBeGreaterThan(0.15 + 0.3 + 0.6 + 1.2 * 1000);
  const gapLast = starts[starts.length - 1] - starts[starts.length - 3];
  expect(gapLast).toBeGreaterThan(1_000);
  // Recovery: once left alone, workers come back and serve.
  await until('workers back', () => workerPids().length === 2, 30_000);
  await untilServes();
}, 90_000);
