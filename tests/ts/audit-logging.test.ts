import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CLI, startDaemon } from './helpers/daemon';
import { P11Client } from './helpers/p11-client';

interface LogLine {
  time: string;
  level: string;
  pid: number;
  worker?: number;
  msg: string;
}

test('log_format = "json": every stderr line of the primary and the workers is one pino JSON object (time, level, pid, worker, msg)', async () => {
  const d = await startDaemon({ workers: 2, processorExtra: 'log_format = "json";' });
  try {
    const c = await P11Client.open({ path: d.socketPath });
    await c.close();
    d.proc.kill('SIGHUP');
    const end = Date.now() + 10_000;
    while (!/reloaded in every worker/.test(d.output()) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
  } finally {
    await d.stop();
  }
  const stderr = d
    .output()
    .split('\n')
    .filter((l) => l !== '' && !/^(READY|METRICS) /.test(l));
  const parsed = stderr.map((l) => JSON.parse(l) as LogLine);
  expect(parsed.length).toBeGreaterThan(3);
  for (const l of parsed) {
    expect(['debug', 'info', 'warn', 'error']).toContain(l.level);
    expect(Number.isNaN(Date.parse(l.time))).toBe(false);
    expect(typeof l.pid).toBe('number');
    expect(typeof l.msg).toBe('string');
  }
  // The primary's lines carry no worker; each worker's its index (a worker logs the reload it applied).
  expect(new Set(parsed.filter((l) => l.worker !== undefined).map((l) => l.worker))).toEqual(new Set([0, 1]));
  expect(parsed.some((l) => l.worker === undefined && /effective configuration/.test(l.msg))).toBe(true);
});

test('text lines by default keep their shape: <ISO time> <LEVEL> [worker N] <message>', async () => {
  const d = await startDaemon({ workers: 1 });
  await d.stop();
  const lines = d
    .output()
    .split('\n')
    .filter((l) => l !== '' && !/^(READY|METRICS) /.test(l));
  for (const l of lines) expect(l).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARN|ERROR) /);
});

test.each([
  ['metrics_listen = "nowhere";', /metrics_listen/],
  ['log_format = "xml";', /log_format/],
  ['audit_file = "";', /audit_file/],
])('bad key %s refuses to start with exit 78 naming it', (extra, key) => {
  const dir = fs.mkdtempSync('/tmp/p11pd-audit-conf-');
  try {
    fs.writeFileSync(path.join(dir, 'filter.conf'), 'modules = [("softhsm", "/usr/lib/softhsm/libsofthsm2.so")]\n');
    const conf = path.join(dir, 'pkcs11proxyd.conf');
    fs.writeFileSync(
      conf,
      `netplex { service { name = "t"; protocol { name = "rpc_pkcs11"; address { type = "local"; path = "${dir}/s"; }; };
         processor { type = "rpc_pkcs11"; filter_config = "filter.conf"; ${extra} }; }; };\n`,
    );
    const r = spawnSync(process.execPath, [CLI, '-fg', '-conf', conf], { encoding: 'utf8' });
    expect(r.status).toBe(78);
    expect(r.stderr).toMatch(key);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('an audit file that cannot be opened stops the start (exit 1), never a daemon without its trail', async () => {
  await expect(startDaemon({ processorExtra: 'audit_file = "/nonexistent-dir/audit.log";' })).rejects.toThrow(/exited with 1 before READY[\s\S]*audit trail/);
});
