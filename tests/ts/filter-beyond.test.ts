/**
 * filter.conf rules beyond Caml Crush (issue 8 item 3). Each rule kind: the
 * call allowed without the rule, refused (exact CK_RV) or rewritten with it.
 * Per-rule tests run the in-process stack over one SoftHSM2 store and swap
 * the policy with the stack's own reload; profiles, shadow mode and SIGHUP
 * run the real daemon on a Unix socket.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as p from 'pkcs11js';
import type { px_attribute } from '../../src/generated/pkcs11_rpc';
import { bool, bytes, ecKeyPairTemplates, mech, ulong } from './helpers/attrs';
import { startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { faultyModule } from './helpers/faulty-module';
import { startInProcess } from './helpers/in-process';
import type { InProcessClient, InProcessStack } from './helpers/in-process';
import { P11Client } from './helpers/p11-client';
import { createSoftHsm, USER_PIN } from './helpers/softhsm';
import type { SoftHsmStore } from './helpers/softhsm';

const RW = p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION;
/** A read of up to `n` bytes of `type`. */
const want = (type: number, n: number): px_attribute => ({ type, value: Buffer.alloc(n), valueLen: n });
/** The filter file's first two lines; its module path is the one the stack loaded (a reload may not change it). */
let MODULES = '';
const P384 = Buffer.from('06052b81040022', 'hex');

let hsm: SoftHsmStore;
let stack: InProcessStack;
let filterFile: string;
let logs: string[] = [];

beforeAll(() => {
  hsm = createSoftHsm(['test']);
  filterFile = path.join(hsm.dir, 'filter.conf');
  // A module file of this store's own (the module reads its SOFTHSM2_CONF), as the in-process helper needs.
  const module = faultyModule(path.join(hsm.dir, 'module'), hsm.conf).path;
  MODULES = `modules = [("softhsm", "${module}")]\ndebug = 1\n`;
  fs.writeFileSync(filterFile, MODULES);
  stack = startInProcess([{ alias: 'softhsm', path: module }], undefined, { filterFile, log: (_l, m) => logs.push(m) });
});
afterAll(() => {
  stack.finalize();
  hsm.cleanup();
});

/** Swaps the policy for MODULES plus `rules` (the stack's SIGHUP path). */
function policy(rules = ''): void {
  const text = `${MODULES}${rules}\n`;
  fs.writeFileSync(filterFile, text);
  expect(stack.stack.reloadFilter(text)).toEqual(expect.any(Number));
  logs = [];
}

interface Open {
  c: InProcessClient;
  s: number;
}
async function open(): Promise<Open> {
  const c = await stack.open();
  const slot = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList[0];
  const r = await c.call('C_OpenSession', { slotID: slot, flags: RW });
  expect(r.rv).toBe(p.CKR_OK);
  expect(await c.call('C_Login', { session: r.session, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) })).toBe(p.CKR_OK);
  return { c, s: r.session };
}

const aesTemplate = (extra: ReturnType<typeof bool>[] = []) => [bool(p.CKA_TOKEN, false), ulong(p.CKA_VALUE_LEN, 16), ...extra];
async function aesKey(o: Open, extra: ReturnType<typeof bool>[] = []): Promise<{ rv: number; object: number }> {
  return o.c.call('C_GenerateKey', { session: o.s, mechanism: mech(p.CKM_AES_KEY_GEN), template: aesTemplate(extra) });
}
async function boolAttr(o: Open, h: number, type: number): Promise<boolean> {
  const r = await o.c.call('C_GetAttributeValue', { session: o.s, object: h, template: [want(type, 1)] });
  expect(r.rv).toBe(p.CKR_OK);
  return r.template[0].value[0] !== 0;
}
const dataObject = (label: string) => [ulong(p.CKA_CLASS, p.CKO_DATA), bool(p.CKA_TOKEN, false), bytes(p.CKA_LABEL, label), bytes(p.CKA_VALUE, 'payload')];
/** An imported generic secret with a label and an id (data objects have no CKA_ID). */
const keyObject = (label: string, id = '01') => [
  ulong(p.CKA_CLASS, p.CKO_SECRET_KEY), ulong(p.CKA_KEY_TYPE, p.CKK_GENERIC_SECRET), bool(p.CKA_TOKEN, false),
  bytes(p.CKA_LABEL, label), bytes(p.CKA_ID, Buffer.from(id, 'hex')), bytes(p.CKA_VALUE, Buffer.alloc(16, 1)),
];
/** The line of `text` in the filter file after MODULES. */
const lineOf = (n: number): number => MODULES.split('\n').length - 1 + n;

describe('template_rules', () => {
  const RULES = `template_rules = [(".*", [
  (CKO_SECRET_KEY, CKK_GENERIC_SECRET, CKA_EXTRACTABLE, allow, TRUE),
  (any, any, CKA_EXTRACTABLE, force, FALSE),
  (CKO_SECRET_KEY, any, CKA_SENSITIVE, default, TRUE),
  (CKO_SECRET_KEY, any, CKA_SENSITIVE, refuse, FALSE)])]`;

  test('default: an imported secret key the client did not make sensitive is sensitive', async () => {
    const imported = (o: Open) =>
      o.c.call('C_CreateObject', {
        session: o.s,
        template: [ulong(p.CKA_CLASS, p.CKO_SECRET_KEY), ulong(p.CKA_KEY_TYPE, p.CKK_AES), bool(p.CKA_TOKEN, false), bytes(p.CKA_VALUE, Buffer.alloc(16, 7))],
      });
    policy();
    let o = await open();
    expect(await boolAttr(o, (await imported(o)).object, p.CKA_SENSITIVE)).toBe(false);
    await o.c.close();
    policy(RULES);
    o = await open();
    expect(await boolAttr(o, (await imported(o)).object, p.CKA_SENSITIVE)).toBe(true);
    await o.c.close();
  });

  test('force: CKA_EXTRACTABLE=TRUE becomes FALSE, except where an allow rule comes first; C_CopyObject too', async () => {
    policy();
    let o = await open();
    const plain = await aesKey(o, [bool(p.CKA_EXTRACTABLE, true), bool(p.CKA_SENSITIVE, false)]);
    expect(await boolAttr(o, plain.object, p.CKA_EXTRACTABLE)).toBe(true);
    expect((await o.c.call('C_CopyObject', { session: o.s, object: plain.object, template: [bool(p.CKA_SENSITIVE, false)] })).rv).toBe(p.CKR_OK);
    await o.c.close();
    policy(RULES);
    o = await open();
    expect(await boolAttr(o, (await aesKey(o, [bool(p.CKA_EXTRACTABLE, true)])).object, p.CKA_EXTRACTABLE)).toBe(false);
    const generic = await o.c.call('C_GenerateKey', {
      session: o.s, mechanism: mech(p.CKM_GENERIC_SECRET_KEY_GEN), template: [...aesTemplate(), bool(p.CKA_EXTRACTABLE, true)],
    });
    expect(generic.rv).toBe(p.CKR_OK);
    expect(await boolAttr(o, generic.object, p.CKA_EXTRACTABLE)).toBe(true);
    // The copy's class and key type come from the source: CKA_SENSITIVE=FALSE on a secret key's copy is refused.
    const copy = await o.c.call('C_CopyObject', { session: o.s, object: generic.object, template: [bool(p.CKA_SENSITIVE, false)] });
    expect(copy.rv).toBe(p.CKR_ATTRIBUTE_VALUE_INVALID);
    await o.c.close();
  });

  test('refuse: CKA_SENSITIVE=FALSE on a secret key is CKR_ATTRIBUTE_VALUE_INVALID, logged with the rule and the client', async () => {
    policy();
    let o = await open();
    expect((await aesKey(o, [bool(p.CKA_SENSITIVE, false)])).rv).toBe(p.CKR_OK);
    await o.c.close();
    policy(RULES);
    o = await open();
    expect((await aesKey(o, [bool(p.CKA_SENSITIVE, false)])).rv).toBe(p.CKR_ATTRIBUTE_VALUE_INVALID);
    expect(logs.join('\n')).toContain(`template_rules (${filterFile}:${lineOf(5)}:3)`);
    expect(logs.join('\n')).toContain('(in-process)');
    await o.c.close();
  });
});

test('hidden_attributes: CKA_VALUE of data objects is unavailable, other attributes of the same call answered', async () => {
  policy();
  let o = await open();
  let h = (await o.c.call('C_CreateObject', { session: o.s, template: dataObject('d') })).object;
  let r = await o.c.call('C_GetAttributeValue', { session: o.s, object: h, template: [want(p.CKA_VALUE, 16), want(p.CKA_LABEL, 16)] });
  expect(r.rv).toBe(p.CKR_OK);
  expect(r.template[0].value.toString()).toBe('payload');
  await o.c.close();
  policy('hidden_attributes = [(".*", [(CKO_DATA, any, CKA_VALUE)])]');
  o = await open();
  h = (await o.c.call('C_CreateObject', { session: o.s, template: dataObject('d') })).object;
  r = await o.c.call('C_GetAttributeValue', { session: o.s, object: h, template: [want(p.CKA_VALUE, 16), want(p.CKA_LABEL, 16)] });
  expect(r.rv).toBe(p.CKR_ATTRIBUTE_SENSITIVE);
  expect(r.template[0].value.length).toBe(0);
  expect(r.template[0].valueLen).toBe(-1);
  expect(r.template[1].value.toString()).toBe('d');
  await o.c.close();
});

test('allowed_mechanisms: others refused at *Init and C_GetMechanismInfo, hidden from C_GetMechanismList', async () => {
  policy();
  let o = await open();
  const slot = (await o.c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList[0];
  expect(await o.c.call('C_DigestInit', { session: o.s, mechanism: mech(p.CKM_SHA256) })).toBe(p.CKR_OK);
  expect((await o.c.call('C_GetMechanismList', { slotID: slot, count: 0 })).count).toBeGreaterThan(2);
  await o.c.close();
  policy('allowed_mechanisms = [(".*", [CKM_SHA_1, CKM_AES_KEY_GEN])]');
  o = await open();
  expect(await o.c.call('C_DigestInit', { session: o.s, mechanism: mech(p.CKM_SHA256) })).toBe(p.CKR_MECHANISM_INVALID);
  expect(await o.c.call('C_DigestInit', { session: o.s, mechanism: mech(p.CKM_SHA_1) })).toBe(p.CKR_OK);
  expect((await o.c.call('C_GetMechanismInfo', { slotID: slot, type: p.CKM_SHA256 })).rv).toBe(p.CKR_MECHANISM_INVALID);
  const list = await o.c.call('C_GetMechanismList', { slotID: slot, count: 16 });
  expect(new Set(list.mechanismList)).toEqual(new Set([p.CKM_SHA_1, p.CKM_AES_KEY_GEN]));
  await o.c.close();
});

test('allowed_functions: a function outside the list is CKR_FUNCTION_NOT_SUPPORTED', async () => {
  policy();
  let o = await open();
  expect((await o.c.call('C_GenerateRandom', { session: o.s, length: 8 })).rv).toBe(p.CKR_OK);
  await o.c.close();
  policy('allowed_functions = [(".*", [C_Initialize, C_Finalize, C_GetSlotList, C_OpenSession, C_CloseSession, C_Login, C_Logout])]');
  o = await open();
  expect((await o.c.call('C_GenerateRandom', { session: o.s, length: 8 })).rv).toBe(p.CKR_FUNCTION_NOT_SUPPORTED);
  await o.c.close();
});

describe('denied_labels / denied_ids', () => {
  async function scenario(o: Open, label: string, id: string) {
    const h = (await o.c.call('C_CreateObject', { session: o.s, template: keyObject(label, id) })).object;
    expect(await o.c.call('C_FindObjectsInit', { session: o.s, template: [ulong(p.CKA_CLASS, p.CKO_SECRET_KEY)] })).toBe(p.CKR_OK);
    const found = (await o.c.call('C_FindObjects', { session: o.s, maxObjectCount: 16 })).objects;
    expect(await o.c.call('C_FindObjectsFinal', { session: o.s })).toBe(p.CKR_OK);
    const read = (await o.c.call('C_GetAttributeValue', { session: o.s, object: h, template: [want(p.CKA_LABEL, 32)] })).rv;
    return { h, found, read };
  }
  test.each([
    ['denied_labels', 'denied_labels = [(".*", ["secret-.*"])]', 'secret-1', '01'],
    ['denied_ids', 'denied_ids = [(".*", ["ff.*"])]', 'plain', 'ff01'],
  ])('%s: matching objects are invisible and cannot be created', async (_k, rule, label, id) => {
    policy();
    let o = await open();
    const before = await scenario(o, label, id);
    expect(before.found).toContain(before.h);
    expect(before.read).toBe(p.CKR_OK);
    await o.c.close();
    policy(rule);
    o = await open();
    expect((await o.c.call('C_CreateObject', { session: o.s, template: keyObject(label, id) })).rv).toBe(p.CKR_ATTRIBUTE_VALUE_INVALID);
    const other = (await o.c.call('C_CreateObject', { session: o.s, template: keyObject('fine', '02') })).object;
    policy();
    const hidden = (await o.c.call('C_CreateObject', { session: o.s, template: keyObject(label, id) })).object;
    policy(rule);
    expect(await o.c.call('C_FindObjectsInit', { session: o.s, template: [ulong(p.CKA_CLASS, p.CKO_SECRET_KEY)] })).toBe(p.CKR_OK);
    const found = (await o.c.call('C_FindObjects', { session: o.s, maxObjectCount: 16 })).objects;
    expect(await o.c.call('C_FindObjectsFinal', { session: o.s })).toBe(p.CKR_OK);
    expect(found).toEqual([other]);
    expect((await o.c.call('C_GetAttributeValue', { session: o.s, object: hidden, template: [want(p.CKA_LABEL, 32)] })).rv).toBe(p.CKR_OBJECT_HANDLE_INVALID);
    await o.c.close();
  });
});

describe('argument limits', () => {
  test('max_random_length', async () => {
    policy();
    let o = await open();
    expect((await o.c.call('C_GenerateRandom', { session: o.s, length: 64 })).rv).toBe(p.CKR_OK);
    await o.c.close();
    policy('max_random_length = [(".*", 100), ("soft.*", 32)]');
    o = await open();
    expect((await o.c.call('C_GenerateRandom', { session: o.s, length: 64 })).rv).toBe(p.CKR_ARGUMENTS_BAD);
    expect((await o.c.call('C_GenerateRandom', { session: o.s, length: 32 })).rv).toBe(p.CKR_OK);
    await o.c.close();
  });

  test('max_template_attributes', async () => {
    policy();
    let o = await open();
    expect((await o.c.call('C_CreateObject', { session: o.s, template: dataObject('t') })).rv).toBe(p.CKR_OK);
    await o.c.close();
    policy('max_template_attributes = [(".*", 4)]');
    o = await open();
    expect((await o.c.call('C_CreateObject', { session: o.s, template: [...dataObject('t'), bool(p.CKA_PRIVATE, false)] })).rv).toBe(p.CKR_ARGUMENTS_BAD);
    expect((await o.c.call('C_CreateObject', { session: o.s, template: dataObject('t') })).rv).toBe(p.CKR_OK);
    await o.c.close();
  });

  test('min_rsa_modulus_bits', async () => {
    const gen = (o: Open, bits: number) =>
      o.c.call('C_GenerateKeyPair', {
        session: o.s, mechanism: mech(p.CKM_RSA_PKCS_KEY_PAIR_GEN),
        publicKeyTemplate: [bool(p.CKA_TOKEN, false), ulong(p.CKA_MODULUS_BITS, bits), bytes(p.CKA_PUBLIC_EXPONENT, Buffer.from([1, 0, 1]))],
        privateKeyTemplate: [bool(p.CKA_TOKEN, false), bool(p.CKA_SIGN, true)],
      });
    policy();
    let o = await open();
    expect((await gen(o, 1024)).rv).toBe(p.CKR_OK);
    await o.c.close();
    policy('min_rsa_modulus_bits = [(".*", 2048)]');
    o = await open();
    expect((await gen(o, 1024)).rv).toBe(p.CKR_ATTRIBUTE_VALUE_INVALID);
    await o.c.close();
  });

  test('allowed_ec_curves', async () => {
    const gen = (o: Open, params: Buffer) => {
      const t = ecKeyPairTemplates('ec');
      t.publicKeyTemplate = t.publicKeyTemplate.map((a) => (a.type === p.CKA_EC_PARAMS ? bytes(p.CKA_EC_PARAMS, params) : a));
      return o.c.call('C_GenerateKeyPair', { session: o.s, mechanism: mech(p.CKM_EC_KEY_PAIR_GEN), ...t });
    };
    policy();
    let o = await open();
    expect((await gen(o, Buffer.from('06082a8648ce3d030107', 'hex'))).rv).toBe(p.CKR_OK);
    await o.c.close();
    policy('allowed_ec_curves = [(".*", [secp384r1])]');
    o = await open();
    expect((await gen(o, Buffer.from('06082a8648ce3d030107', 'hex'))).rv).toBe(p.CKR_ATTRIBUTE_VALUE_INVALID);
    expect((await gen(o, P384)).rv).toBe(p.CKR_OK);
    await o.c.close();
  });
});

// ---- the real daemon: identity, shadow mode, SIGHUP ----

const MY_UID = process.getuid!();

async function randomRv(d: RunningDaemon, length = 32): Promise<number> {
  const c = await P11Client.open({ path: d.socketPath });
  const slot = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList[0];
  const s = await c.call('C_OpenSession', { slotID: slot, flags: RW });
  const r = await c.call('C_GenerateRandom', { session: s.session, length });
  await c.close();
  return r.rv;
}

/** Polls `f` until it is true, for at most `ms`. */
async function until(f: () => boolean | Promise<boolean>, ms = 10000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await f())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setImmediate(r));
  }
}

const PROFILE = (uid: number, shadow: boolean) => `debug = 1
profiles = { small = { ${shadow ? 'shadow = yes ' : ''}max_random_length = [(".*", 16)] } }
profile_map = [("uid:${uid}", small)]`;

test('profile_map: the peer uid of the Unix socket picks the profile', async () => {
  const other = await startDaemon({ filterExtra: PROFILE(MY_UID + 4242, false) });
  try {
    expect(await randomRv(other)).toBe(p.CKR_OK);
  } finally {
    await other.stop();
  }
  const mine = await startDaemon({ filterExtra: PROFILE(MY_UID, false) });
  try {
    expect(await randomRv(mine)).toBe(p.CKR_ARGUMENTS_BAD);
    expect(await randomRv(mine, 16)).toBe(p.CKR_OK);
    await until(() => mine.output().includes(`uid ${MY_UID} `));
  } finally {
    await mine.stop();
  }
});

test('shadow mode: the refused call goes through and the daemon logs what it would have refused', async () => {
  const d = await startDaemon({ filterExtra: PROFILE(MY_UID, true) });
  try {
    expect(await randomRv(d)).toBe(p.CKR_OK);
    await until(() => /C_GenerateRandom would be refused \(shadow mode, not enforced\) with CKR_ARGUMENTS_BAD by max_random_length \(.*filter\.conf:3:\d+\)/.test(d.output()));
  } finally {
    await d.stop();
  }
});

test('SIGHUP: a valid file changes the answer in every worker; an invalid one keeps the old policy and the daemon serving', async () => {
  const d = await startDaemon({ workers: 2 });
  const file = path.join(d.hsm.dir, 'filter.conf');
  const modules = fs.readFileSync(file, 'utf8');
  try {
    expect(await randomRv(d)).toBe(p.CKR_OK);
    fs.writeFileSync(file, `${modules}max_random_length = [(".*", 16)]\n`);
    d.proc.kill('SIGHUP');
    await until(() => d.output().includes('reloaded in every worker'));
    // Connections go to the workers in turn: four of them reach both.
    for (let i = 0; i < 4; i++) expect(await randomRv(d)).toBe(p.CKR_ARGUMENTS_BAD);
    fs.writeFileSync(file, `${modules}max_random_length = [(".*", banana)]\n`);
    d.proc.kill('SIGHUP');
    await until(() => d.output().includes('filter reload refused'));
    expect(d.output()).toMatch(/filter\.conf:\d+:\d+: key 'max_random_length\[0\]\[1\]'/);
    for (let i = 0; i < 4; i++) expect(await randomRv(d)).toBe(p.CKR_ARGUMENTS_BAD);
    expect(await randomRv(d, 16)).toBe(p.CKR_OK);
  } finally {
    await d.stop();
  }
});
