import fs from 'node:fs';
import path from 'node:path';
import * as p from 'pkcs11js';
import { bytes, mech, query } from './helpers/attrs';
import { ROOT, startDaemon } from './helpers/daemon';
import { P11Client } from './helpers/p11-client';
import { alive, ecKey, helperDaemon, helpersOf, openSession, sign, waitUntil, workersOf } from './helpers/helper-procs';
import type { HelperDaemon, Session } from './helpers/helper-procs';
import { pkcs11Tool } from './helpers/pkcs11-tool';
import { chownTree, ensureServiceUser, procStatus } from './helpers/service-user';
import { SOFTHSM_MODULE, USER_PIN } from './helpers/softhsm';

// module_isolation mode "helper": the module runs in a helper process of the worker and answers as it
// does in the worker; helpers run with the worker's privileges and never outlive it.

const CLIENT = path.join(ROOT, 'client', 'build', 'libp11client.so');
const CAML_CLIENT = '/usr/lib/x86_64-linux-gnu/caml-crush/libp11clientunix.so';

/** A transcript of a representative set of calls: CK_RVs and the values that do not depend on the store. */
async function transcript(x: Session): Promise<unknown[]> {
  const t: unknown[] = [];
  const info = await x.c.call('C_GetTokenInfo', { slotID: x.slot });
  t.push(['C_GetTokenInfo', info.rv, info.info.model.toString(), info.info.flags]);
  const mechs = await x.c.call('C_GetMechanismList', { slotID: x.slot, count: 512 });
  t.push(['C_GetMechanismList', mechs.rv, [...mechs.mechanismList].sort((a, b) => a - b)]);
  t.push(['C_GetSessionInfo', (await x.c.call('C_GetSessionInfo', { session: x.s })).info.state]);
  const key = await ecKey(x, 'eq');
  t.push(['C_FindObjectsInit', await x.c.call('C_FindObjectsInit', { session: x.s, template: [bytes(p.CKA_LABEL, 'eq')] })]);
  const found = await x.c.call('C_FindObjects', { session: x.s, maxObjectCount: 10 });
  t.push(['C_FindObjects', found.rv, found.objects.length, found.objects.includes(key)]);
  t.push(['C_FindObjectsFinal', await x.c.call('C_FindObjectsFinal', { session: x.s })]);
  const pub = found.objects.find((o) => o !== key)!;
  const attrs = await x.c.call('C_GetAttributeValue', { session: x.s, object: pub, template: [query(p.CKA_LABEL, 16), query(p.CKA_EC_PARAMS, 64), query(p.CKA_KEY_TYPE, 8)] });
  t.push(['C_GetAttributeValue', attrs.rv, attrs.template.map((a) => a.value.toString('hex'))]);
  const sens = await x.c.call('C_GetAttributeValue', { session: x.s, object: key, template: [query(p.CKA_VALUE, 64)] });
  t.push(['C_GetAttributeValue sensitive', sens.rv]);
  t.push(['C_SignInit', await x.c.call('C_SignInit', { session: x.s, mechanism: mech(p.CKM_ECDSA), key })]);
  const data = Buffer.alloc(32, 9);
  const sig = await x.c.call('C_Sign', { session: x.s, data });
  t.push(['C_Sign', sig.rv, sig.data.length]);
  t.push(['C_VerifyInit', await x.c.call('C_VerifyInit', { session: x.s, mechanism: mech(p.CKM_ECDSA), key: pub })]);
  t.push(['C_Verify', await x.c.call('C_Verify', { session: x.s, data, signature: sig.data })]);
  t.push(['C_VerifyInit', await x.c.call('C_VerifyInit', { session: x.s, mechanism: mech(p.CKM_ECDSA), key: pub })]);
  t.push(['C_Verify bad', await x.c.call('C_Verify', { session: x.s, data, signature: Buffer.alloc(64, 1) })]);
  const rnd = await x.c.call('C_GenerateRandom', { session: x.s, length: 48 });
  t.push(['C_GenerateRandom', rnd.rv, rnd.data.length]);
  // Large arguments and results cross the helper's channel in many chunks.
  const big = await x.c.call('C_GenerateRandom', { session: x.s, length: 700_000 });
  t.push(['C_GenerateRandom large', big.rv, big.data.length]);
  t.push(['C_DigestInit', await x.c.call('C_DigestInit', { session: x.s, mechanism: mech(p.CKM_SHA256) })]);
  const digest = await x.c.call('C_Digest', { session: x.s, data: Buffer.alloc(3_000_000, 0x5a) });
  t.push(['C_Digest large', digest.rv, digest.data.toString('hex')]);
  t.push(['C_GetSessionInfo unknown', (await x.c.call('C_GetSessionInfo', { session: 0x7ffffff0 })).rv]);
  t.push(['C_Logout', await x.c.call('C_Logout', { session: x.s })]);
  t.push(['C_GetSessionInfo', (await x.c.call('C_GetSessionInfo', { session: x.s })).info.state]);
  t.push(['C_CloseSession', await x.c.call('C_CloseSession', { session: x.s })]);
  t.push(['C_GetSessionInfo closed', (await x.c.call('C_GetSessionInfo', { session: x.s })).rv]);
  return t;
}

describe('in helper mode', () => {
  let h: HelperDaemon;
  beforeAll(async () => {
    h = await helperDaemon({ w: null, h: 'mode = "helper"' }, { trace: true, env: { PKCS11PROXYD_LOG: 'debug' } });
  });
  afterAll(async () => h.stop());

  test('a representative set of calls answers as in the worker, and the module runs in a helper process', async () => {
    const inWorker = await transcript(await openSession(h.d, 'w', true));
    const inHelper = await transcript(await openSession(h.d, 'h', true));
    expect(inHelper).toEqual(inWorker);
    expect(inHelper[inHelper.length - 1]).toEqual(['C_GetSessionInfo closed', p.CKR_SESSION_HANDLE_INVALID]);
    // One helper, a child of the serving process, with the module mapped; the in-worker module is the daemon's own.
    const helpers = helpersOf(h.server());
    expect(helpers).toEqual([await h.helperPid('h')]);
    const maps = (pid: number) => fs.readFileSync(`/proc/${pid}/maps`, 'utf8');
    expect(maps(helpers[0])).toContain(h.aliases.h.faulty.path);
    expect(maps(h.server())).not.toContain(h.aliases.h.faulty.path);
    expect(maps(h.server())).toContain(h.aliases.w.faulty.path);
  });

  test('PINs never reach a log line, in the worker or in the helper (debug log, call trace on)', async () => {
    const x = await openSession(h.d, 'h');
    const secret = 'hsecret-4711-pin';
    expect(await x.c.call('C_Login', { session: x.s, userType: p.CKU_USER, pin: Buffer.from(secret) })).toBe(p.CKR_PIN_INCORRECT);
    expect(await x.c.call('C_Login', { session: x.s, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) })).toBe(p.CKR_OK);
    // The helper logged at debug level (its module load), so its lines are in the output.
    await waitUntil('the helper\'s debug line', () => /\[helper h \d+\] .*loaded/.test(h.d.output()));
    expect(h.d.output()).not.toContain(secret);
  });

  test('calls of several connections are in flight at once: every answer reaches its caller', async () => {
    const clients = await Promise.all([0, 1, 2, 3].map(() => openSession(h.d, 'h', true)));
    const keys = await Promise.all(clients.map((x, i) => ecKey(x, `conc${i}`)));
    // Mixed calls (sign, random of a length of its own, session info) from 4 connections, all outstanding together.
    const rounds = await Promise.all(
      clients.map(async (x, i) => {
        const out: unknown[] = [];
        for (let n = 0; n < 25; n++) {
          const [rv, rnd, info] = await Promise.all([
            sign(x, keys[i]),
            (async () => {
              const y = await x.c.call('C_GenerateRandom', { session: x.s, length: 8 + i });
              return y.data.length;
            })(),
            (async () => (await x.c.call('C_GetSessionInfo', { session: x.s })).rv)(),
          ]);
          out.push([rv, rnd, info]);
        }
        return out;
      }),
    );
    rounds.forEach((out, i) => expect(out).toEqual(Array(25).fill([p.CKR_OK, 8 + i, p.CKR_OK])));
  });

  test('pkcs11-tool through our C client: key pair, signature and object list on a helper alias', () => {
    const env = { ...process.env, PKCS11PROXY_SOCKET_PATH: h.d.socketPath, PKCS11PROXY_LIBNAME: 'h' };
    expect(pkcs11Tool(CLIENT, ['--login', '--pin', USER_PIN, '--keypairgen', '--key-type', 'EC:prime256v1', '--id', '42', '--label', 'tool'], env)).toMatchObject({ status: 0 });
    const input = path.join(h.aliases.h.store.dir, 'in');
    const out = path.join(h.aliases.h.store.dir, 'sig');
    fs.writeFileSync(input, Buffer.alloc(32, 7));
    expect(pkcs11Tool(CLIENT, ['--login', '--pin', USER_PIN, '--sign', '--mechanism', 'ECDSA', '--id', '42', '-i', input, '-o', out], env)).toMatchObject({ status: 0 });
    expect(fs.statSync(out).size).toBe(64);
    const list = pkcs11Tool(CLIENT, ['--login', '--pin', USER_PIN, '-O'], env);
    expect(list.status).toBe(0);
    expect(list.out).toMatch(/label:\s+tool/);
    // Debian's Caml Crush client library sees the same token and key.
    const caml = pkcs11Tool(CAML_CLIENT, ['--login', '--pin', USER_PIN, '-O'], env);
    expect(caml.status).toBe(0);
    expect(caml.out).toMatch(/label:\s+tool/);
  });
});

test('a module the helper cannot load: its alias answers CKR_DEVICE_ERROR (retried with backoff), the others are served', async () => {
  const d = await startDaemon({
    modules: [{ alias: 'softhsm', path: SOFTHSM_MODULE }, { alias: 'bad', path: '/nonexistent/libnothing.so' }],
    filterExtra: 'module_isolation = { bad = { mode = "helper" } }',
  });
  try {
    const bad = await P11Client.open({ path: d.socketPath }, 'bad');
    expect((await bad.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).rv).toBe(p.CKR_DEVICE_ERROR);
    const good = await openSession(d, 'softhsm', true);
    expect(await sign(good, await ecKey(good))).toBe(p.CKR_OK);
    expect(alive(d.proc.pid!)).toBe(true);
  } finally {
    await d.stop();
  }
});

describe('no orphan helpers', () => {
  const HELPER = 'mode = "helper" call_timeout_ms = 60000';

  test('SIGTERM of the daemon: the helpers exit with their worker', async () => {
    const h = await helperDaemon({ a: HELPER, b: HELPER }, { workers: 1 });
    const worker = h.server();
    await openSession(h.d, 'a', true);
    const helpers = helpersOf(worker);
    expect(helpers).toHaveLength(2);
    await h.stop();
    await waitUntil('helpers gone', () => helpers.every((x) => !alive(x)), 5000);
  });

  test('SIGKILL of the worker, helpers idle or blocked in the module: they die, the new worker starts its own', async () => {
    const h = await helperDaemon({ a: HELPER, b: HELPER }, { workers: 1 });
    try {
      const worker = h.server();
      const a = await openSession(h.d, 'a', true);
      const key = await ecKey(a);
      const blocked = await h.helperPid('a');
      const idle = await h.helperPid('b');
      // a's helper is blocked in C_Sign (the module hangs, the call timeout is far away): only its watchdog can end it.
      h.aliases.a.faulty.hang('C_Sign');
      void sign(a, key).catch(() => undefined);
      // The faulty module's hang polls its control file with nanosleep: a thread of the helper sleeps there.
      const inModule = () => fs.readdirSync(`/proc/${blocked}/task`).some((t) => fs.readFileSync(`/proc/${blocked}/task/${t}/wchan`, 'utf8') === 'hrtimer_nanosleep');
      await waitUntil('C_Sign blocked in the module', inModule);
      process.kill(worker, 'SIGKILL');
      await waitUntil('both helpers gone', () => !alive(blocked) && !alive(idle), 5000);
      // The primary's new worker has helpers of its own.
      const next = await waitUntil('a new worker', () => workersOf(h.d.proc.pid!).find((w) => w !== worker));
      h.aliases.a.faulty.heal();
      await waitUntil('its helpers', () => helpersOf(next).length === 2);
    } finally {
      await h.stop();
    }
  });
});

test('helpers run with the worker\'s dropped privileges, restarted ones too', async () => {
  expect(process.getuid!()).toBe(0);
  const user = ensureServiceUser();
  const h = await helperDaemon(
    { a: 'mode = "helper"' },
    { workers: 1, serviceExtra: `user = "${user.name}"; group = "${user.name}";` },
    (a) => chownTree(a.store.dir, user.uid, user.gid),
  );
  try {
    const expectDropped = (pid: number) => {
      const st = procStatus(pid);
      expect({ uid: st.uid, gid: st.gid, root: st.groups.includes(0), nnp: st.noNewPrivs }).toEqual({
        uid: [user.uid, user.uid, user.uid, user.uid],
        gid: [user.gid, user.gid, user.gid, user.gid],
        root: false,
        nnp: 1,
      });
    };
    const x = await openSession(h.d, 'a', true);
    expect(await sign(x, await ecKey(x))).toBe(p.CKR_OK);
    const first = await h.helperPid('a');
    expectDropped(h.server());
    expectDropped(first);
    process.kill(first, 'SIGKILL');
    const second = await waitUntil('a new helper', async () => {
      const pid = await h.helperPid('a');
      return pid !== first ? pid : undefined;
    });
    expectDropped(second);
    const y = await waitUntil('served again', () => openSession(h.d, 'a', true).catch(() => undefined));
    expect(await sign(y, await ecKey(y))).toBe(p.CKR_OK);
  } finally {
    await h.stop();
  }
});
