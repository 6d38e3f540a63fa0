import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, parseFilterConfig } from '../../src/config';
import { CLI, startDaemon } from './helpers/daemon';
import { SOFTHSM_MODULE } from './helpers/softhsm';

// filter.conf `module_isolation`: per alias, where the module runs; refused at line:column when wrong.
const MODULES = 'modules = [("softhsm", "/x/libsofthsm2.so"), ("other", "/x/other.so")]\n';

function refusal(text: string): ConfigError {
  try {
    parseFilterConfig(MODULES + text, '/etc/filter.conf');
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error('accepted');
}

test('accepted: helper mode with its timeout, the default timeout, in-worker spelled out; others stay in the worker', () => {
  const cfg = parseFilterConfig(
    `${MODULES}module_isolation = {
  softhsm = { mode = "helper" processes = 1 call_timeout_ms = 2500 }
  other = { mode = "in-worker" }
}`,
    '/etc/filter.conf',
  );
  expect(cfg.modules).toEqual([
    { alias: 'softhsm', path: '/x/libsofthsm2.so', isolation: { mode: 'helper', processes: 1, callTimeoutMs: 2500 } },
    { alias: 'other', path: '/x/other.so' },
  ]);
  const dflt = parseFilterConfig(`${MODULES}module_isolation = { other = { mode = "helper" } }`, 'f');
  expect(dflt.modules[1].isolation).toEqual({ mode: 'helper', processes: 1, callTimeoutMs: 30000 });
  expect(parseFilterConfig(MODULES, 'f').modules.every((m) => m.isolation === undefined)).toBe(true);
});

test.each([
  ['unknown alias', 'module_isolation = { nope = { mode = "helper" } }', 2, 22, /unknown module alias "nope"/],
  ['unknown key', 'module_isolation = { softhsm = { mode = "helper" procs = 2 } }', 2, 50, /procs/],
  ['bad mode', 'module_isolation = { softhsm = { mode = "fork" } }', 2, 41, /must be "in-worker" or "helper"/],
  ['mode missing', 'module_isolation = { softhsm = { call_timeout_ms = 10 } }', 2, 22, /mode/],
  ['processes > 1', 'module_isolation = { softhsm = { mode = "helper" processes = 2 } }', 2, 62, /only 1 helper process per module is supported/],
  ['timeout 0', 'module_isolation = { softhsm = { mode = "helper" call_timeout_ms = 0 } }', 2, 68, /call_timeout_ms|>= 1/],
])('refused at line:column: %s', (_name, text, line, column, rule) => {
  const e = refusal(text);
  expect({ line: e.line, column: e.column }).toEqual({ line, column });
  expect(`${e.key ?? ''} ${e.message}`).toMatch(rule);
});

test('the daemon refuses to start (exit 78) with processes = 2: fail closed', async () => {
  await expect(startDaemon({ filterExtra: 'module_isolation = { softhsm = { mode = "helper" processes = 2 } }' })).rejects.toThrow(
    /exited with 78 before READY[\s\S]*only 1 helper process/,
  );
});

test('-check-filter names the helper aliases and what a helper alias that cannot load answers', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p11pd-helper-check-'));
  try {
    const file = path.join(dir, 'filter.conf');
    fs.writeFileSync(file, `modules = [("ok", "${SOFTHSM_MODULE}"), ("bad", "/nonexistent/lib.so")]\nmodule_isolation = { ok = { mode = "helper" } bad = { mode = "helper" } }\n`);
    const r = spawnSync(process.execPath, [CLI, '-check-filter', file], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(`  ok (default) -> ${SOFTHSM_MODULE} (helper process): loads\n`);
    expect(r.stdout).toMatch(/ {2}bad -> \/nonexistent\/lib\.so \(helper process\): CANNOT BE LOADED \(.*\); its calls answer CKR_DEVICE_ERROR/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
