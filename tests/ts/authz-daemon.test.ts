/**
 * Authorisation through the real daemon and SoftHSM2: Unix peer uids
 * (pkcs11-tool over our C client run as another uid), unknown identities
 * refused, the slot view, login throttling and lock-out, SIGHUP reload of
 * the table in every worker (good and bad file).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as p from '../../src/pkcs11/constants';
import { ROOT, startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { P11Client } from './helpers/p11-client';
import { USER_PIN } from './helpers/softhsm';

const CLIENT = path.join(ROOT, 'client', 'build', 'libp11client.so');
const NOBODY = 65534;
const STRANGER = 65533;
const ck = p.ck;

const CAML_CRUSH_UNIX_CLIENT = '/usr/lib/x86_64-linux-gnu/caml-crush/libp11clientunix.so';

/** pkcs11-tool over a client library (default: ours) as `uid` (a real process of that uid: SO_PEERCRED names it). */
function toolAs(uid: number, d: RunningDaemon, args: string[], module = CLIENT): { status: number | null; out: string } {
  const r = spawnSync('pkcs11-tool', ['--module', module, ...args], {
    uid,
    gid: uid,
    env: { PATH: process.env.PATH, PKCS11PROXY_SOCKET_PATH: d.socketPath, PKCS11PROXY_LIBNAME: 'softhsm' },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

/** Lets other uids reach the daemon's socket (the store dir is 0700). */
function openToAll(d: RunningDaemon): void {
  fs.chmodSync(d.hsm.dir, 0o711);
}

/** Polls `f` until it is true, for at most `ms`. */
async function until(f: () => boolean | Promise<boolean>, ms = 10000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await f())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

const SOCKET_MODE = 'local_chmod = "0o777";';

const TABLE = `authorization = {
  nobody = { identities = ["user:nobody"] aliases = ["softhsm"] tokens = ["label:b"] }
  root = { identities = ["uid:0"] aliases = ["softhsm"] tokens = ["pkcs11:token=a"] }
}`;

describe('Unix peers', () => {
  let d: RunningDaemon;
  beforeAll(async () => {
    d = await startDaemon({ tokens: ['a', 'b'], filterExtra: TABLE, protocolExtra: SOCKET_MODE });
    openToAll(d);
  });
  afterAll(async () => {
    await d.stop();
  });

  test('uid mapping: nobody sees only token b as slot 0, logs in and generates a key (one connection per session, joined)', () => {
    const list = toolAs(NOBODY, d, ['-L']);
    expect(list.status).toBe(0);
    expect(list.out).toMatch(/Slot 0 \(0x0\)/);
    expect(list.out).not.toMatch(/Slot 1 /);
    expect(list.out).toMatch(/token label\s*: b\n/);
    const gen = toolAs(NOBODY, d, ['--slot', '0', '--login', '--pin', USER_PIN, '--keygen', '--key-type', 'AES:16', '--label', 'k']);
    expect(gen.out).toMatch(/Secret Key Object/);
    expect(gen.status).toBe(0);
  });

  test("Debian's Caml Crush client as nobody: the same view, and refused as a stranger", () => {
    const list = toolAs(NOBODY, d, ['-L'], CAML_CRUSH_UNIX_CLIENT);
    expect(list.status).toBe(0);
    expect(list.out).toMatch(/token label\s*: b\n/);
    expect(list.out).not.toMatch(/token label\s*: a\n/);
    expect(toolAs(STRANGER, d, ['-L'], CAML_CRUSH_UNIX_CLIENT).status).not.toBe(0);
  });

  test('an identity with no entry is refused at C_LoadModule with CKR_FUNCTION_FAILED', () => {
    const r = toolAs(STRANGER, d, ['-L']);
    expect(r.status).not.toBe(0);
    expect(r.out).toMatch(/CKR_FUNCTION_FAILED/);
  });

  test('slot view of root: token a renumbered, others CKR_SLOT_ID_INVALID, sessions report the virtual slot', async () => {
    const c = await P11Client.open({ path: d.socketPath });
    try {
      expect(await c.call('C_GetSlotList', { tokenPresent: 0, count: 0 })).toEqual({ rv: p.CKR_OK, slotList: [], count: 1 });
      expect(await c.call('C_GetSlotList', { tokenPresent: 1, count: 8 })).toEqual({ rv: p.CKR_OK, slotList: [0], count: 1 });
      const t = await c.call('C_GetTokenInfo', { slotID: 0 });
      expect(t.info.label.toString().trimEnd()).toBe('a');
      for (const slotID of [1, 2, 0x7fffffff]) {
        expect((await c.call('C_GetSlotInfo', { slotID })).rv).toBe(ck.CKR_SLOT_ID_INVALID);
        expect((await c.call('C_GetTokenInfo', { slotID })).rv).toBe(ck.CKR_SLOT_ID_INVALID);
        expect((await c.call('C_OpenSession', { slotID, flags: p.CKF_SERIAL_SESSION })).rv).toBe(ck.CKR_SLOT_ID_INVALID);
        expect((await c.call('C_GetMechanismList', { slotID, count: 0 })).rv).toBe(ck.CKR_SLOT_ID_INVALID);
      }
      const s = await c.call('C_OpenSession', { slotID: 0, flags: p.CKF_SERIAL_SESSION });
      expect(s.rv).toBe(p.CKR_OK);
      expect(await c.call('C_GetSessionInfo', { session: s.session })).toMatchObject({ rv: p.CKR_OK, info: { slotID: 0 } });
      expect((await c.call('C_GetMechanismList', { slotID: 0, count: 0 })).count).toBeGreaterThan(0);
    } finally {
      await c.close();
    }
  });
});

test('login throttling: failures slow down exponentially, lock-out answers CKR_PIN_LOCKED for the identity and token only, then ends', async () => {
  const d = await startDaemon({
    tokens: ['a'],
    protocolExtra: SOCKET_MODE,
    filterExtra: 'login_throttle = { base_delay_ms = 400  max_delay_ms = 800  lockout_failures = 4  lockout_seconds = 2 }',
  });
  openToAll(d);
  const c = await P11Client.open({ path: d.socketPath });
  try {
    const slot = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 8 })).slotList;
    let session = 0;
    for (const slotID of slot) {
      if ((await c.call('C_GetTokenInfo', { slotID })).info.flags & ck.CKF_TOKEN_INITIALIZED) session = (await c.call('C_OpenSession', { slotID, flags: p.CKF_SERIAL_SESSION })).session;
    }
    const login = async (pin: string): Promise<{ rv: number; at: number }> => {
      const rv = await c.call('C_Login', { session, userType: ck.CKU_USER, pin: Buffer.from(pin) });
      return { rv, at: Date.now() };
    };
    const f1 = await login('0000');
    expect(f1.rv).toBe(ck.CKR_PIN_INCORRECT);
    const f2 = await login('0000');
    expect(f2.rv).toBe(ck.CKR_PIN_INCORRECT);
    expect(f2.at - f1.at).toBeGreaterThanOrEqual(395); // 400 ms after the first failure
    const f3 = await login('0000');
    expect(f3.at - f2.at).toBeGreaterThanOrEqual(795); // doubled
    const f4 = await login('0000');
    expect(f4.at - f3.at).toBeGreaterThanOrEqual(795); // capped at max_delay_ms
    expect(f4.at - f3.at).toBeLessThan(1500);
    expect(f4.rv).toBe(ck.CKR_PIN_INCORRECT); // the fourth failure locks
    // The right PIN does not reach the module during the lock-out.
    const locked = await login(USER_PIN);
    expect(locked.rv).toBe(ck.CKR_PIN_LOCKED);
    // Another identity on the same token is not locked out.
    const other = toolAs(NOBODY, d, ['--login', '--pin', USER_PIN, '--list-objects']);
    expect(other.status).toBe(0);
    await until(async () => (await login(USER_PIN)).rv === p.CKR_OK, 6000);
    expect(Date.now() - f4.at).toBeGreaterThanOrEqual(1990);
  } finally {
    await c.close();
    await d.stop();
  }
});

test('SIGHUP: a good file changes the table in every worker, a bad one keeps it', async () => {
  const d = await startDaemon({ workers: 2, filterExtra: 'authorization = { other = { identities = ["uid:4242"] aliases = ["softhsm"] } }' });
  const file = path.join(d.hsm.dir, 'filter.conf');
  const modules = fs.readFileSync(file, 'utf8').split('\n')[0];
  const loadRv = async (): Promise<number> => {
    const c = await P11Client.connect({ path: d.socketPath });
    await c.call('C_SetupArch', { arch: 1 });
    const rv = await c.call('C_LoadModule', { alias: Buffer.from('softhsm') });
    await c.close();
    return rv;
  };
  try {
    // Connections go to the workers in turn: four of them reach both.
    for (let i = 0; i < 4; i++) expect(await loadRv()).toBe(ck.CKR_FUNCTION_FAILED);
    fs.writeFileSync(file, `${modules}\nauthorization = { root = { identities = ["uid:0"] aliases = ["softhsm"] } }\n`);
    d.proc.kill('SIGHUP');
    await until(() => d.output().includes('reloaded in every worker'));
    for (let i = 0; i < 4; i++) expect(await loadRv()).toBe(p.CKR_OK);
    fs.writeFileSync(file, `${modules}\nauthorization = { root = { identities = ["uid:0"] aliases = ["nope"] } }\n`);
    d.proc.kill('SIGHUP');
    await until(() => d.output().includes('filter reload refused'));
    for (let i = 0; i < 4; i++) expect(await loadRv()).toBe(p.CKR_OK);
  } finally {
    await d.stop();
  }
});
