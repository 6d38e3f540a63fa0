/**
 * Summary of a `bench/c/run.sh` results file that holds several interleaved
 * runs (BENCH_RUNS=N): per cell, the median ops/s of each system, the median
 * of the per-run ratios (each ratio taken within one run, so both sides saw
 * the same machine state) with every run's ratio beside it, and the median
 * server CPU per operation.
 *
 *   node dist/bench/c-summary.js RESULTS "SYSTEMS"
 *
 * A results line is `WORKLOAD CLIENTS SYSTEM key=value... run=N`, the keys
 * those of bench.c's RESULT line.
 */
import fs from 'node:fs';

interface Cell {
  readonly workload: string;
  readonly clients: string;
  /** By system, one entry per run that completed, in run order. */
  readonly byRun: Map<string, Map<number, Record<string, string>>>;
}

/** Ratios printed when both systems ran: [numerator, denominator, column title]. */
const RATIOS: readonly (readonly [string, string, string])[] = [
  ['ours-unix', 'camlcrush', 'ours/caml'],
  ['ours-unix', 'p11kit', 'ours/p11k'],
  ['ours-b', 'ours-unix', 'b/ours'],
  ['ours-filter', 'caml-filter', 'filt/cfil'],
];

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function fields(words: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const w of words) {
    const eq = w.indexOf('=');
    if (eq > 0) out[w.slice(0, eq)] = w.slice(eq + 1);
  }
  return out;
}

function parse(text: string): Cell[] {
  const cells = new Map<string, Cell>();
  for (const line of text.split('\n')) {
    const words = line.trim().split(/\s+/);
    if (words.length < 4) continue;
    const [workload, clients, system] = words;
    const f = fields(words.slice(3));
    if (f.status !== 'ok') continue;
    const key = `${workload} ${clients}`;
    let cell = cells.get(key);
    if (cell === undefined) {
      cell = { workload, clients, byRun: new Map() };
      cells.set(key, cell);
    }
    let runs = cell.byRun.get(system);
    if (runs === undefined) cell.byRun.set(system, (runs = new Map()));
    runs.set(Number(f.run ?? '1'), f);
  }
  return [...cells.values()];
}

function num(f: Record<string, string> | undefined, key: string): number | undefined {
  const v = f?.[key];
  return v === undefined || v === '' ? undefined : Number(v);
}

function ratioColumn(cell: Cell, a: string, b: string): string {
  const ra = cell.byRun.get(a);
  const rb = cell.byRun.get(b);
  if (ra === undefined || rb === undefined) return '-';
  const per: number[] = [];
  for (const [run, fa] of ra) {
    const x = num(fa, 'ops_s');
    const y = num(rb.get(run), 'ops_s');
    if (x !== undefined && y !== undefined && y > 0) per.push(x / y);
  }
  if (per.length === 0) return '-';
  return `${median(per).toFixed(2)} (${per.map((r) => r.toFixed(2)).join(' ')})`;
}

function main(): void {
  const [file, systemList] = process.argv.slice(2);
  if (file === undefined || systemList === undefined) {
    process.stderr.write('usage: c-summary RESULTS "SYSTEMS"\n');
    process.exit(2);
  }
  const systems = systemList.split(/\s+/).filter((s) => s !== '');
  const cells = parse(fs.readFileSync(file, 'utf8'));
  const runs = new Set<number>();
  for (const c of cells) for (const r of c.byRun.values()) for (const n of r.keys()) runs.add(n);
  const ratios = RATIOS.filter(([a, b]) => systems.includes(a) && systems.includes(b));
  const pad = (s: string, n: number): string => s.padEnd(n);
  const out: string[] = [];
  out.push(`Median of ${runs.size} interleaved runs: ops/s per system; ratios are medians of per-run ratios (each run's in brackets)`);
  out.push('');
  out.push(
    [pad('workload x procs', 16), ...systems.map((s) => pad(s, 11)), ...ratios.map(([, , t]) => pad(t, 24))].join(' | '),
  );
  for (const c of cells) {
    const row = [pad(`${c.workload} x${c.clients}`, 16)];
    for (const s of systems) {
      const v = [...(c.byRun.get(s)?.values() ?? [])].map((f) => num(f, 'ops_s')).filter((x): x is number => x !== undefined);
      row.push(pad(v.length > 0 ? String(Math.round(median(v))) : '-', 11));
    }
    for (const [a, b] of ratios) row.push(pad(ratioColumn(c, a, b), 24));
    out.push(row.join(' | '));
  }
  out.push('');
  out.push('Server CPU per operation (µs), median of the runs');
  out.push([pad('workload x procs', 16), ...systems.map((s) => pad(s, 11))].join(' | '));
  for (const c of cells) {
    const row = [pad(`${c.workload} x${c.clients}`, 16)];
    for (const s of systems) {
      const v = [...(c.byRun.get(s)?.values() ?? [])].map((f) => num(f, 'server_cpu_us_op')).filter((x): x is number => x !== undefined);
      row.push(pad(v.length > 0 ? median(v).toFixed(0) : '-', 11));
    }
    out.push(row.join(' | '));
  }
  process.stdout.write(out.join('\n') + '\n');
}

main();
