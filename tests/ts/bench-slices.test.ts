/**
 * bench/c/bench.c with several systems in one cell (-S): the systems take
 * turns in slices, each gets its own RESULT line, and one that cannot start
 * does not stop the others. The systems are SoftHSM2 itself over two copies
 * of one store (and a third with no store); bench:c runs its proxies this way.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { buildBench, createKeyTemplate } from './helpers/pool';
import { createSoftHsm, SOFTHSM_MODULE } from './helpers/softhsm';
import type { SoftHsmStore } from './helpers/softhsm';

let stores: SoftHsmStore[] = [];
let bench = '';

beforeAll(() => {
  bench = buildBench();
  const template = createKeyTemplate();
  const copy = createSoftHsm([]);
  fs.cpSync(path.join(template.dir, 'tokens'), path.join(copy.dir, 'tokens'), { recursive: true });
  stores = [template, copy];
}, 180_000);

interface Run {
  code: number | null;
  results: Map<string, Record<string, string>>;
  slices: string[];
}

function run(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(bench, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => {
      const results = new Map<string, Record<string, string>>();
      for (const m of out.matchAll(/^RESULT sys=(\S+) (.*)$/gm)) {
        // reason= is last and holds spaces.
        const [head, reason] = m[2].split(/ reason=/);
        const f = Object.fromEntries(head.split(' ').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
        results.set(m[1], reason === undefined ? f : { ...f, reason });
      }
      const slices = [...err.matchAll(/^slice (\d+) (\S+)$/gm)].map((m) => `${m[1]}:${m[2]}`);
      resolve({ code, results, slices });
    });
  });
}

const system = (name: string, conf: string) => ['-S', `${name} 0 ${SOFTHSM_MODULE} SOFTHSM2_CONF=${conf}`];

test('systems take turns slice by slice, the first of each round rotating, and each gets its time', async () => {
  const r = await run([...system('a', stores[0].conf), ...system('b', stores[1].conf), '-w', 'sessioninfo', '-p', '2', '-t', '0.4', '-q', '0.1', '-o', '1', '-v']);
  expect(r.code).toBe(0);
  // Round r starts with system (r + 1) % 2.
  expect(r.slices).toEqual(['0:b', '0:a', '1:a', '1:b', '2:b', '2:a', '3:a', '3:b']);
  for (const name of ['a', 'b']) {
    const f = r.results.get(name)!;
    expect(f.status).toBe('ok');
    expect(f.procs).toBe('2');
    expect(Number(f.ops)).toBeGreaterThan(0);
    // Four slices of 0.1 s each, measured by the parent around the slice (a loaded machine only adds to it).
    expect(Number(f.secs)).toBeGreaterThanOrEqual(0.39);
    expect(Number(f.secs)).toBeLessThan(10);
  }
}, 60_000);

test('a system that cannot start reports its error; the others run all their slices', async () => {
  const none = createSoftHsm([]);
  const r = await run([...system('a', stores[0].conf), ...system('empty', none.conf), ...system('b', stores[1].conf), '-w', 'getattr', '-t', '0.2', '-q', '0.1', '-v']);
  expect(r.code).toBe(1);
  expect(r.results.get('empty')).toMatchObject({ status: 'error' });
  expect(r.results.get('empty')!.reason).toMatch(/^no token labelled 'bench'/);
  expect(r.results.get('a')).toMatchObject({ status: 'ok', procs: '1' });
  expect(r.results.get('b')).toMatchObject({ status: 'ok', procs: '1' });
  expect(r.slices).toEqual(['0:a', '0:b', '1:b', '1:a']);
}, 60_000);

test('the one-system form prints its RESULT line without sys=', async () => {
  const child = spawn(bench, ['-m', SOFTHSM_MODULE, '-w', 'sessioninfo', '-t', '0.1'], { env: { ...process.env, ...stores[0].env }, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  expect(code).toBe(0);
  expect(out).toMatch(/^RESULT status=ok procs=1 ops=[1-9]\d* /m);
}, 60_000);
