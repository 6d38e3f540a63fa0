/**
 * `pkcs11proxyd -check-filter FILE`, and a configured module whose library
 * cannot be loaded (Debian's filter.conf names opencryptoki, not installed):
 * the daemon starts, C_LoadModule for that alias answers CKR_FUNCTION_FAILED,
 * the other aliases are served.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ck } from '../../src/pkcs11/constants';
import { CLI, startDaemon } from './helpers/daemon';
import { P11Client } from './helpers/p11-client';
import { SOFTHSM_MODULE } from './helpers/softhsm';

const MISSING = '/usr/local/lib/opencryptoki/libopencryptoki.so';
let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p11pd-check-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function check(text: string): { status: number | null; out: string; err: string; file: string } {
  const file = path.join(dir, `f${Math.random().toString(36).slice(2)}.conf`);
  fs.writeFileSync(file, text);
  const r = spawnSync(process.execPath, [CLI, '-check-filter', file], { encoding: 'utf8' });
  return { status: r.status, out: r.stdout, err: r.stderr, file };
}

const MODULES = `modules = [("softhsm", "${SOFTHSM_MODULE}"), ("opencryptoki", "${MISSING}")]\n`;

describe('-check-filter', () => {
  test('prints the compiled policy per alias and the module that cannot be loaded', () => {
    const r = check(
      MODULES +
        'forbidden_mechanisms = [("sof.*", [CKM_RSA_X_509]), ("opencrypto.*", [CKM_MD5])]\n' +
        'forbidden_functions = [(".*", [C_DigestKey])]\n' +
        'allowed_labels = [("softhsm", ["app_.*"])]\n' +
        'forbid_admin_operations = [("opencryptoki", yes)]\n' +
        'remove_padding_oracles = [("softhsm", [wrap, unwrap])]\n',
    );
    expect(r.err).toBe('');
    expect(r.status).toBe(0);
    const section = (alias: string) => r.out.split(`alias ${alias}:\n`)[1].split(/\nalias /)[0];
    expect(r.out).toContain(`softhsm (default) -> ${SOFTHSM_MODULE}: loads`);
    expect(r.out).toContain(`opencryptoki -> ${MISSING}: CANNOT BE LOADED`);
    expect(section('softhsm')).toContain('forbidden mechanisms: CKM_RSA_X_509\n');
    expect(section('opencryptoki')).toContain('forbidden mechanisms: CKM_MD5\n');
    expect(section('softhsm')).toContain('forbidden functions: C_DigestKey\n');
    expect(section('softhsm')).toContain('allowed labels: "app_.*"\n');
    expect(section('opencryptoki')).toContain('allowed labels: any (not filtered)\n');
    expect(section('softhsm')).toContain('forbid admin operations: no\n');
    expect(section('opencryptoki')).toContain('forbid admin operations: yes\n');
    expect(section('softhsm')).toContain('padding oracles removed at: wrap, unwrap\n');
    expect(section('opencryptoki')).toContain('padding oracles removed at: (none)\n');
  });

  test('a pass-through policy says so', () => {
    const r = check(`modules = [("softhsm", "${SOFTHSM_MODULE}")]\n`);
    expect(r.status).toBe(0);
    expect(r.out).toContain('pass-through: no rule applies');
  });

  test('rules beyond Caml Crush, profiles, shadow mode and the profile map are shown', () => {
    const r = check(
      `modules = [("softhsm", "${SOFTHSM_MODULE}")]\n` +
        'max_random_length = [(".*", 64)]\n' +
        'profiles = { trial = { shadow = yes  allowed_mechanisms = [(".*", [CKM_ECDSA])] } }\n' +
        'profile_map = [("uid:1001", trial)]\n',
    );
    expect(r.err).toBe('');
    expect(r.status).toBe(0);
    const [top, trial] = r.out.split('profile trial, alias softhsm:\n');
    expect(top).not.toContain('pass-through');
    expect(top).toContain(`C_GenerateRandom: max_random_length (${r.file}:2:`);
    expect(top).not.toContain('SHADOW');
    expect(trial).toContain('SHADOW MODE');
    expect(trial).toContain(`C_SignInit: allowed_mechanisms (${r.file}:3:`);
    expect(r.out).toContain(`uid:1001 -> trial (${r.file}:4:`);
  });

  test('errors are file:line:col and exit 78; every action not implemented is listed', () => {
    const bad = check(MODULES + 'forbidden_mechanisms = [("sof.*", [CKM_NOPE])]\n');
    expect(bad.status).toBe(78);
    expect(bad.err).toMatch(new RegExp(`^${bad.file.replace(/[.]/g, '\\.')}:2:\\d+: .*unknown mechanism 'CKM_NOPE'`));
    expect(bad.out).toBe('');
    // Until the actions land (or if one is missing) each use is reported with its position.
    const actions = check(MODULES + 'filter_actions_post = [(".*", [(C_Login, c_Login_hook), (C_CloseSession, identity)])]\n');
    if (actions.status !== 0) {
      expect(actions.status).toBe(78);
      for (const line of actions.err.trim().split('\n')) expect(line).toMatch(/:2:\d+: .*action '(c_Login_hook|identity)' is not enforced yet$/);
    }
    const syntax = check(MODULES + 'debug = \n');
    expect(syntax.status).toBe(78);
    expect(syntax.err).toMatch(/:\d+:\d+: /);
  });

  test('no loadable module: exit 1', () => {
    const r = check(`modules = [("opencryptoki", "${MISSING}")]\n`);
    expect(r.status).toBe(1);
    expect(r.err).toContain('no module can be loaded');
  });
});

describe('a module that cannot be loaded', () => {
  const preamble = async (c: P11Client, alias: string | null) => {
    expect(await c.call('C_SetupArch', { arch: 1 })).toBeGreaterThan(0);
    const load = alias === null ? null : await c.call('C_LoadModule', { alias: Buffer.from(alias) });
    const init = await c.call('C_Initialize', undefined as never);
    const slots = await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 });
    return { load, init, slots: slots.rv };
  };

  test('second module missing: the daemon starts, logs it once, its alias gets CKR_FUNCTION_FAILED, the first alias is served', async () => {
    const d = await startDaemon({ workers: 2, modules: [{ alias: 'softhsm', path: SOFTHSM_MODULE }, { alias: 'opencryptoki', path: MISSING }] });
    try {
      const missing = await P11Client.connect({ path: d.socketPath });
      expect(await preamble(missing, 'opencryptoki')).toEqual({
        load: ck.CKR_FUNCTION_FAILED,
        // Not the default module instead: the connection stays uninitialized.
        init: ck.CKR_GENERAL_ERROR,
        slots: ck.CKR_CRYPTOKI_NOT_INITIALIZED,
      });
      await missing.close();
      const ok = await P11Client.connect({ path: d.socketPath });
      expect(await preamble(ok, 'softhsm')).toEqual({ load: ck.CKR_OK, init: ck.CKR_OK, slots: ck.CKR_OK });
      await ok.close();
      // One line naming alias and path, although two workers each tried to load it.
      const lines = d.output().split('\n').filter((l) => l.includes(`'opencryptoki' (${MISSING}) cannot be loaded`));
      expect(lines).toHaveLength(1);
    } finally {
      await d.stop();
    }
  });

  test('default module missing: the daemon starts; the default alias is refused, with or without C_LoadModule; the other is served', async () => {
    const d = await startDaemon({ modules: [{ alias: 'opencryptoki', path: MISSING }, { alias: 'softhsm', path: SOFTHSM_MODULE }] });
    try {
      const byName = await P11Client.connect({ path: d.socketPath });
      expect((await preamble(byName, 'opencryptoki')).load).toBe(ck.CKR_FUNCTION_FAILED);
      await byName.close();
      const byDefault = await P11Client.connect({ path: d.socketPath });
      expect((await preamble(byDefault, '')).load).toBe(ck.CKR_FUNCTION_FAILED);
      await byDefault.close();
      // Without C_LoadModule the default alias applies: C_Initialize fails and nothing else runs.
      const implicit = await P11Client.connect({ path: d.socketPath });
      expect(await preamble(implicit, null)).toEqual({ load: null, init: ck.CKR_GENERAL_ERROR, slots: ck.CKR_CRYPTOKI_NOT_INITIALIZED });
      await implicit.close();
      const ok = await P11Client.connect({ path: d.socketPath });
      expect(await preamble(ok, 'softhsm')).toEqual({ load: ck.CKR_OK, init: ck.CKR_OK, slots: ck.CKR_OK });
      await ok.close();
    } finally {
      await d.stop();
    }
  });

  test('no module can be loaded: the daemon refuses to start (exit 1)', async () => {
    await expect(startDaemon({ modules: [{ alias: 'opencryptoki', path: MISSING }] })).rejects.toThrow(/exited with 1 before READY[\s\S]*no module can be loaded/);
  });
});
