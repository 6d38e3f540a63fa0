import path from 'node:path';
import * as p from 'pkcs11js';
import { bool, bytes, ecKeyPairTemplates, mech, query, ulong } from './helpers/attrs';
import { faultyModule } from './helpers/faulty-module';
import type { startInProcess as StartInProcess } from './helpers/in-process';
import { createSoftHsm, USER_PIN } from './helpers/softhsm';
import type { SoftHsmStore } from './helpers/softhsm';
import { PX_MP_NONE, PX_MP_RAW } from '../../src/generated/pkcs11_rpc';
import type { px_attribute, px_mechanism_typed } from '../../src/generated/pkcs11_rpc';
import { p11call } from '../../src/bindings/p11call';
import type { P11CallAddon, P11CallModule } from '../../src/bindings/p11call';

/**
 * C_GetAttributeValue through the native/p11call addon (one module call)
 * answers exactly what the pkcs11js path (a length query, then the values)
 * answers, for every per-attribute outcome: a value, a buffer too small, a
 * length query, a sensitive value, an unknown type, and all of them mixed.
 * The same asks run through the whole in-process stack twice, once with the
 * addon and once without (PKCS11PROXYD_NO_P11CALL, read when the backend
 * module is first loaded).
 */
const RW = p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION;
const UNKNOWN_TYPE = 0x7fff0000;
let store: SoftHsmStore;

beforeAll(() => {
  store = createSoftHsm(['t']);
});
afterAll(() => store.cleanup());

const ASKS: Record<string, px_attribute[]> = {
  'value in a large enough buffer': [{ type: p.CKA_LABEL, value: Buffer.alloc(64), valueLen: 64 }],
  'buffer too small': [{ type: p.CKA_LABEL, value: Buffer.alloc(2), valueLen: 2 }],
  'length only': [query(p.CKA_LABEL)],
  'sensitive value': [{ type: p.CKA_VALUE, value: Buffer.alloc(32), valueLen: 32 }],
  'unknown type': [{ type: UNKNOWN_TYPE, value: Buffer.alloc(8), valueLen: 8 }],
  mixed: [
    { type: p.CKA_LABEL, value: Buffer.alloc(64), valueLen: 64 },
    { type: p.CKA_VALUE, value: Buffer.alloc(32), valueLen: 32 },
    query(p.CKA_ID),
    { type: p.CKA_CLASS, value: Buffer.alloc(8), valueLen: 8 },
    { type: UNKNOWN_TYPE, value: Buffer.alloc(8), valueLen: 8 },
  ],
};

type Answers = Record<string, { rv: number; template: Array<{ type: number; value: string; valueLen: number }> }>;

type Client = Awaited<ReturnType<ReturnType<typeof StartInProcess>['open']>>;

/** Runs `fn` on a logged-in session of a fresh in-process stack, with or without the addon. */
async function withSession<T>(disable: boolean, dir: string, fn: (c: Client, s: number) => Promise<T>): Promise<T> {
  if (disable) process.env.PKCS11PROXYD_NO_P11CALL = '1';
  else delete process.env.PKCS11PROXYD_NO_P11CALL;
  let start!: typeof StartInProcess;
  let addonSeen: unknown;
  jest.isolateModules(() => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    start = (require('./helpers/in-process') as { startInProcess: typeof StartInProcess }).startInProcess;
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    addonSeen = (require('../../src/bindings/p11call') as { p11call: typeof p11call }).p11call();
  });
  expect(addonSeen === null).toBe(disable);
  const stack = start([{ alias: 'm', path: faultyModule(path.join(store.dir, dir), store.conf).path }]);
  try {
    const c = await stack.open();
    const slot = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList[0];
    const s = (await c.call('C_OpenSession', { slotID: slot, flags: RW })).session;
    expect(await c.call('C_Login', { session: s, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) })).toBe(p.CKR_OK);
    const out = await fn(c, s);
    await c.close();
    return out;
  } finally {
    stack.finalize();
  }
}

async function answers(disable: boolean, dir: string): Promise<Answers> {
  return withSession(disable, dir, async (c, s) => {
    const key = await c.call('C_GenerateKey', {
      session: s,
      mechanism: { mechanism: p.CKM_AES_KEY_GEN, parameter: Buffer.alloc(0) },
      template: [
        ulong(p.CKA_CLASS, p.CKO_SECRET_KEY), bool(p.CKA_TOKEN, false), bool(p.CKA_SENSITIVE, true),
        ulong(p.CKA_VALUE_LEN, 32), bytes(p.CKA_LABEL, 'p11call-key'), bytes(p.CKA_ID, Buffer.from([1, 2, 3])),
      ],
    });
    expect(key.rv).toBe(p.CKR_OK);
    const out: Answers = {};
    for (const [name, template] of Object.entries(ASKS)) {
      const r = await c.call('C_GetAttributeValue', { session: s, object: key.object, template });
      out[name] = { rv: r.rv, template: r.template.map((a) => ({ type: a.type, value: a.value.toString('hex'), valueLen: a.valueLen })) };
    }
    return out;
  });
}

test('one direct module call answers as the two pkcs11js calls do, for every per-attribute outcome', async () => {
  const direct = await answers(false, 'direct');
  const viaPkcs11js = await answers(true, 'pkcs11js');
  expect(direct).toEqual(viaPkcs11js);
  // And the answers are the spec's (PKCS#11 2.40 section 5.7).
  const label = Buffer.from('p11call-key').toString('hex');
  expect(direct['value in a large enough buffer']).toEqual({ rv: p.CKR_OK, template: [{ type: p.CKA_LABEL, value: label, valueLen: 11 }] });
  expect(direct['buffer too small']).toEqual({ rv: p.CKR_BUFFER_TOO_SMALL, template: [{ type: p.CKA_LABEL, value: '', valueLen: -1 }] });
  expect(direct['length only']).toEqual({ rv: p.CKR_OK, template: [{ type: p.CKA_LABEL, value: '', valueLen: 11 }] });
  expect(direct['sensitive value']).toEqual({ rv: p.CKR_ATTRIBUTE_SENSITIVE, template: [{ type: p.CKA_VALUE, value: '', valueLen: -1 }] });
  expect(direct['unknown type']).toEqual({ rv: p.CKR_ATTRIBUTE_TYPE_INVALID, template: [{ type: UNKNOWN_TYPE, value: '', valueLen: -1 }] });
  const mixed = direct.mixed.template;
  expect(mixed[0]).toEqual({ type: p.CKA_LABEL, value: label, valueLen: 11 });
  expect(mixed[1].valueLen).toBe(-1);
  expect(mixed[2]).toEqual({ type: p.CKA_ID, value: '', valueLen: 3 });
  expect(mixed[3].valueLen).toBe(8);
  expect(mixed[4].valueLen).toBe(-1);
});

test('the addon is built by npm run build and found by the backend', () => {
  delete process.env.PKCS11PROXYD_NO_P11CALL;
  expect(p11call()).not.toBeNull();
});

/**
 * The other direct calls (C_GetSessionInfo, C_FindObjects*, the key *Init
 * calls with a raw parameter and their typed forms with a flat one, C_Sign/C_Encrypt/C_Decrypt/C_Digest/C_Verify)
 * against pkcs11js, step by step: each step's CK_RV and output, successes
 * and errors alike (bad session, operation not initialized, bad IV length,
 * data length, wrong signature, empty input). Keys are made from fixed
 * values so the outputs can be compared byte for byte.
 */
type Step = { step: string; rv: number; out?: unknown };
const AES_KEY = Buffer.alloc(32, 0x11);
const HMAC_KEY = Buffer.alloc(32, 0x22);
const IV = Buffer.alloc(16, 0x33);

async function hotCalls(disable: boolean, dir: string): Promise<Step[]> {
  return withSession(disable, dir, async (c, s) => {
    const steps: Step[] = [];
    const note = (step: string, r: { rv: number } | number, out?: unknown): void => {
      steps.push(typeof r === 'number' ? { step, rv: r } : { step, rv: r.rv, out });
    };
    const info = await c.call('C_GetSessionInfo', { session: s });
    note('C_GetSessionInfo', info, { state: info.info.state, flags: info.info.flags, deviceError: info.info.deviceError });
    note('C_GetSessionInfo bad session', await c.call('C_GetSessionInfo', { session: s + 1000 }));
    const secret = (label: string, value: Buffer, use: number[]) =>
      c.call('C_CreateObject', {
        session: s,
        template: [
          ulong(p.CKA_CLASS, p.CKO_SECRET_KEY), ulong(p.CKA_KEY_TYPE, label === 'aes' ? p.CKK_AES : p.CKK_GENERIC_SECRET),
          bool(p.CKA_TOKEN, false), bytes(p.CKA_LABEL, `hot-${label}`), bytes(p.CKA_VALUE, value), ...use.map((u) => bool(u, true)),
        ],
      });
    const aes = await secret('aes', AES_KEY, [p.CKA_ENCRYPT, p.CKA_DECRYPT]);
    const hmac = await secret('hmac', HMAC_KEY, [p.CKA_SIGN, p.CKA_VERIFY]);
    expect([aes.rv, hmac.rv]).toEqual([p.CKR_OK, p.CKR_OK]);
    const ec = await c.call('C_GenerateKeyPair', { session: s, mechanism: mech(p.CKM_EC_KEY_PAIR_GEN), ...ecKeyPairTemplates('hot-ec') });
    expect(ec.rv).toBe(p.CKR_OK);

    // Find: a two-attribute template, one handle per call, then the rest; the handles are compared as sets.
    note('C_FindObjects before init', await c.call('C_FindObjects', { session: s, maxObjectCount: 4 }));
    note('C_FindObjectsInit', await c.call('C_FindObjectsInit', { session: s, template: [ulong(p.CKA_CLASS, p.CKO_SECRET_KEY), bool(p.CKA_TOKEN, false)] }));
    const first = await c.call('C_FindObjects', { session: s, maxObjectCount: 1 });
    const rest = await c.call('C_FindObjects', { session: s, maxObjectCount: 10 });
    note('C_FindObjects', first, first.count);
    note('C_FindObjects rest', rest, rest.count);
    expect(new Set([...first.objects, ...rest.objects])).toEqual(new Set([aes.object, hmac.object]));
    note('C_FindObjectsFinal', await c.call('C_FindObjectsFinal', { session: s }));
    note('C_FindObjectsFinal again', await c.call('C_FindObjectsFinal', { session: s }));
    note('C_FindObjectsInit empty', await c.call('C_FindObjectsInit', { session: s, template: [] }));
    const all = await c.call('C_FindObjects', { session: s, maxObjectCount: 100 });
    note('C_FindObjects all', all, all.count);
    await c.call('C_FindObjectsFinal', { session: s });

    // AES-CBC: a parameter checked by the module, a data length it refuses, a round trip.
    note('C_EncryptInit short IV', await c.call('C_EncryptInit', { session: s, mechanism: mech(p.CKM_AES_CBC, IV.subarray(0, 8)), key: aes.object }));
    note('C_EncryptInit', await c.call('C_EncryptInit', { session: s, mechanism: mech(p.CKM_AES_CBC, IV), key: aes.object }));
    note('C_Encrypt bad length', await c.call('C_Encrypt', { session: s, data: Buffer.alloc(15) }));
    await c.call('C_EncryptInit', { session: s, mechanism: mech(p.CKM_AES_CBC, IV), key: aes.object });
    const plain = Buffer.alloc(4096, 0x5a);
    const ct = await c.call('C_Encrypt', { session: s, data: plain });
    note('C_Encrypt', ct, ct.data.toString('hex'));
    note('C_DecryptInit', await c.call('C_DecryptInit', { session: s, mechanism: mech(p.CKM_AES_CBC, IV), key: aes.object }));
    const pt = await c.call('C_Decrypt', { session: s, data: ct.data });
    note('C_Decrypt', pt, pt.data.equals(plain));
    note('C_Encrypt not initialized', await c.call('C_Encrypt', { session: s, data: plain }));
    note('C_EncryptInit wrong key', await c.call('C_EncryptInit', { session: s, mechanism: mech(p.CKM_AES_CBC, IV), key: hmac.object }));
    // The typed procedures (what our client sends) with a flat parameter: raw IV bytes, or none.
    const cbc = (iv: Buffer): px_mechanism_typed => ({ mechanism: p.CKM_AES_CBC, param: { tag: PX_MP_RAW, value: iv } });
    note('px_EncryptInitTyped short IV', await c.call('px_EncryptInitTyped', { session: s, mechanism: cbc(IV.subarray(0, 8)), key: aes.object }));
    note('px_EncryptInitTyped', await c.call('px_EncryptInitTyped', { session: s, mechanism: cbc(IV), key: aes.object }));
    const ctTyped = await c.call('C_Encrypt', { session: s, data: plain });
    note('C_Encrypt after px_EncryptInitTyped', ctTyped, ctTyped.data.equals(ct.data));
    note('px_DecryptInitTyped', await c.call('px_DecryptInitTyped', { session: s, mechanism: cbc(IV), key: aes.object }));
    const ptTyped = await c.call('C_Decrypt', { session: s, data: ct.data });
    note('C_Decrypt after px_DecryptInitTyped', ptTyped, ptTyped.data.equals(plain));

    // HMAC: deterministic signature, verified, and refused when altered.
    note('C_SignInit', await c.call('C_SignInit', { session: s, mechanism: mech(p.CKM_SHA256_HMAC), key: hmac.object }));
    const mac = await c.call('C_Sign', { session: s, data: Buffer.from('hot path') });
    note('C_Sign', mac, mac.data.toString('hex'));
    await c.call('C_VerifyInit', { session: s, mechanism: mech(p.CKM_SHA256_HMAC), key: hmac.object });
    note('C_Verify', await c.call('C_Verify', { session: s, data: Buffer.from('hot path'), signature: mac.data }));
    const none = (m: number): px_mechanism_typed => ({ mechanism: m, param: { tag: PX_MP_NONE } });
    note('px_SignInitTyped', await c.call('px_SignInitTyped', { session: s, mechanism: none(p.CKM_SHA256_HMAC), key: hmac.object }));
    const macTyped = await c.call('C_Sign', { session: s, data: Buffer.from('hot path') });
    note('C_Sign after px_SignInitTyped', macTyped, macTyped.data.equals(mac.data));
    note('px_VerifyInitTyped', await c.call('px_VerifyInitTyped', { session: s, mechanism: none(p.CKM_SHA256_HMAC), key: hmac.object }));
    note('C_Verify after px_VerifyInitTyped', await c.call('C_Verify', { session: s, data: Buffer.from('hot path'), signature: mac.data }));
    note('px_DigestInitTyped', await c.call('px_DigestInitTyped', { session: s, mechanism: none(p.CKM_SHA256) }));
    const emptyTyped = await c.call('C_Digest', { session: s, data: Buffer.alloc(0) });
    note('C_Digest after px_DigestInitTyped', emptyTyped, emptyTyped.data.toString('hex'));
    await c.call('C_VerifyInit', { session: s, mechanism: mech(p.CKM_SHA256_HMAC), key: hmac.object });
    note('C_Verify altered', await c.call('C_Verify', { session: s, data: Buffer.from('hot patH'), signature: mac.data }));

    // ECDSA: random signatures, so only their length and the verdict are compared.
    await c.call('C_SignInit', { session: s, mechanism: mech(p.CKM_ECDSA), key: ec.privateKey });
    const sig = await c.call('C_Sign', { session: s, data: Buffer.alloc(32, 7) });
    note('C_Sign ECDSA', sig, sig.data.length);
    await c.call('C_VerifyInit', { session: s, mechanism: mech(p.CKM_ECDSA), key: ec.publicKey });
    note('C_Verify ECDSA', await c.call('C_Verify', { session: s, data: Buffer.alloc(32, 7), signature: sig.data }));

    // Digest of an empty input (a valid pointer with length 0 reaches the module) and of data.
    note('C_DigestInit', await c.call('C_DigestInit', { session: s, mechanism: mech(p.CKM_SHA256) }));
    const empty = await c.call('C_Digest', { session: s, data: Buffer.alloc(0) });
    note('C_Digest empty', empty, empty.data.toString('hex'));
    await c.call('C_DigestInit', { session: s, mechanism: mech(p.CKM_SHA512) });
    const d = await c.call('C_Digest', { session: s, data: plain });
    note('C_Digest', d, d.data.toString('hex'));
    note('C_Digest not initialized', await c.call('C_Digest', { session: s, data: plain }));
    return steps;
  });
}

/** The pkcs11js functions the addon replaces, with the number of calls they get while `fn` runs. */
const REPLACED = ['C_GetSessionInfo', 'C_FindObjectsInit', 'C_FindObjects', 'C_FindObjectsFinal', 'C_SignInit', 'C_VerifyInit',
  'C_EncryptInit', 'C_DecryptInit', 'C_DigestInit', 'C_Sign', 'C_Verify', 'C_Encrypt', 'C_Decrypt', 'C_Digest'] as const;
async function countingPkcs11js<T>(fn: () => Promise<T>): Promise<[T, number]> {
  // The native class every pkcs11js instance (and jest module registry) shares; instances bind its methods when built.
  const native = Object.getPrototypeOf(p.PKCS11.prototype) as Record<string, (...args: unknown[]) => unknown>;
  const spies = REPLACED.map((name) => jest.spyOn(native, name));
  try {
    const r = await fn();
    return [r, spies.reduce((n, sp) => n + sp.mock.calls.length, 0)];
  } finally {
    for (const sp of spies) sp.mockRestore();
  }
}

test('the hot calls made directly answer as pkcs11js does, errors included', async () => {
  const [direct, pkcs11jsCallsDirect] = await countingPkcs11js(() => hotCalls(false, 'hot-direct'));
  const [viaPkcs11js, pkcs11jsCalls] = await countingPkcs11js(() => hotCalls(true, 'hot-pkcs11js'));
  expect(direct).toEqual(viaPkcs11js);
  // With the addon none of these reach pkcs11js (its async variants are other functions).
  expect(pkcs11jsCallsDirect).toBe(0);
  expect(pkcs11jsCalls).toBeGreaterThan(20);
  const by = new Map(direct.map((x) => [x.step, x]));
  expect(by.get('C_GetSessionInfo')).toEqual({ step: 'C_GetSessionInfo', rv: p.CKR_OK, out: { state: 3 /* CKS_RW_USER_FUNCTIONS */, flags: RW, deviceError: 0 } });
  expect(by.get('C_GetSessionInfo bad session')?.rv).toBe(p.CKR_SESSION_HANDLE_INVALID);
  expect(by.get('C_FindObjects before init')?.rv).toBe(p.CKR_OPERATION_NOT_INITIALIZED);
  expect(by.get('C_FindObjects')?.out).toBe(1);
  expect(by.get('C_FindObjects rest')?.out).toBe(1);
  expect(by.get('C_FindObjects all')?.out).toBe(4);
  expect(by.get('C_EncryptInit short IV')?.rv).toBe(p.CKR_MECHANISM_PARAM_INVALID);
  expect(by.get('C_Encrypt bad length')?.rv).toBe(p.CKR_DATA_LEN_RANGE);
  expect(by.get('C_Decrypt')?.out).toBe(true);
  expect(by.get('C_Encrypt not initialized')?.rv).toBe(p.CKR_OPERATION_NOT_INITIALIZED);
  expect(by.get('C_EncryptInit wrong key')?.rv).toBe(p.CKR_KEY_TYPE_INCONSISTENT);
  expect(by.get('px_EncryptInitTyped short IV')?.rv).toBe(p.CKR_MECHANISM_PARAM_INVALID);
  expect(by.get('C_Encrypt after px_EncryptInitTyped')).toEqual({ step: 'C_Encrypt after px_EncryptInitTyped', rv: p.CKR_OK, out: true });
  expect(by.get('C_Decrypt after px_DecryptInitTyped')?.out).toBe(true);
  expect(by.get('C_Sign after px_SignInitTyped')?.out).toBe(true);
  expect(by.get('C_Verify after px_VerifyInitTyped')?.rv).toBe(p.CKR_OK);
  expect(by.get('C_Digest after px_DigestInitTyped')?.out).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  expect(by.get('C_Verify')?.rv).toBe(p.CKR_OK);
  expect(by.get('C_Verify altered')?.rv).toBe(p.CKR_SIGNATURE_INVALID);
  expect(by.get('C_Sign ECDSA')?.out).toBe(64);
  expect(by.get('C_Verify ECDSA')?.rv).toBe(p.CKR_OK);
  expect(by.get('C_Digest empty')?.out).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  expect(by.get('C_Digest not initialized')?.rv).toBe(p.CKR_OPERATION_NOT_INITIALIZED);
});

/**
 * Runs `fn` with the addon over a raw copy of the module (its own copy, so this
 * instance is not the one the stacks above initialized), initialized by
 * pkcs11js, on a session opened with `flags`; the session and the module are
 * closed after.
 */
function withRawModule(dir: string, flags: number, fn: (addon: P11CallAddon, m: P11CallModule, pk: p.PKCS11, h: Buffer, session: number) => void): void {
  delete process.env.PKCS11PROXYD_NO_P11CALL;
  const addon = p11call()!;
  const pk = new p.PKCS11();
  const conf = process.env.SOFTHSM2_CONF;
  process.env.SOFTHSM2_CONF = store.conf;
  try {
    const lib = faultyModule(path.join(store.dir, dir), store.conf).path;
    pk.load(lib);
    pk.C_Initialize();
    const m = addon.open(lib);
    const h = pk.C_OpenSession(pk.C_GetSlotList(true)[0], flags);
    fn(addon, m, pk, h, Number(h.readBigUInt64LE()));
    pk.C_CloseSession(h);
    pk.C_Finalize();
  } finally {
    if (conf === undefined) delete process.env.SOFTHSM2_CONF;
    else process.env.SOFTHSM2_CONF = conf;
  }
}

test('a direct data call reports the length it needs on CKR_BUFFER_TOO_SMALL and keeps the operation', () => {
  withRawModule('raw', p.CKF_SERIAL_SESSION, (addon, m, _pk, _h, session) => {
    const o = new Float64Array(4);
    expect(addon.init(m, 4 /* C_DigestInit */, session, p.CKM_SHA256, null, 0)).toBe(p.CKR_OK);
    expect(addon.data(m, 3 /* C_Digest */, session, Buffer.from('abc'), Buffer.alloc(8), o)).toBe(p.CKR_BUFFER_TOO_SMALL);
    expect(o[0]).toBe(32);
    const out = Buffer.alloc(o[0]);
    expect(addon.data(m, 3, session, Buffer.from('abc'), out, o)).toBe(p.CKR_OK);
    expect(out.toString('hex')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    // Bad arguments throw an Error naming the call's form; nothing reaches the module.
    expect(() => addon.data(m, 99, session, Buffer.alloc(1), out, o)).toThrow(/data\(handle/);
    expect(() => addon.getSessionInfo(m, session, new Float64Array(2))).toThrow(/getSessionInfo/);
    expect(() => addon.findObjects(m, session, 10, new Float64Array(4))).toThrow(/findObjects/);
  });
});

test('getAttributeValueInto writes values at the summed capacities over zeroed bytes and answers each length', () => {
  withRawModule('raw-attrs', RW, (addon, m, pk, h, session) => {
    pk.C_Login(h, p.CKU_USER, USER_PIN);
    const obj = pk.C_CreateObject(h, [
      { type: p.CKA_CLASS, value: p.CKO_DATA },
      { type: p.CKA_TOKEN, value: false },
      { type: p.CKA_LABEL, value: 'abc' },
      { type: p.CKA_VALUE, value: Buffer.from('0123456789') },
    ]);
    const object = Number(obj.readBigUInt64LE());
    // Bytes left from an earlier call: none of them may come back as part of this call's values.
    const out = Buffer.alloc(64, 0xaa);
    const spec = new Float64Array([p.CKA_LABEL, 16, p.CKA_VALUE, -1, p.CKA_VALUE, 4, p.CKA_VALUE, 12, UNKNOWN_TYPE, 8]);
    const rv = addon.getAttributeValueInto(m, session, object, spec, 5, out);
    // CKA_VALUE in 4 bytes is too small; an unknown type is invalid: either CK_RV may come first.
    expect([p.CKR_BUFFER_TOO_SMALL, p.CKR_ATTRIBUTE_TYPE_INVALID]).toContain(rv);
    expect([...spec.filter((_, i) => i % 2 === 1)]).toEqual([3, 10, -1, 10, -1]);
    expect(out.subarray(0, 3).toString()).toBe('abc');
    expect(out.subarray(3, 16).equals(Buffer.alloc(13))).toBe(true); // label capacity 16: zeroed beyond the value
    expect(out.subarray(16, 20).equals(Buffer.alloc(4))).toBe(true); // the too-small buffer
    expect(out.subarray(20, 30).toString()).toBe('0123456789'); // third value at 16 + 4
    expect(out.subarray(30, 40).equals(Buffer.alloc(10))).toBe(true); // rest of its 12, and the unknown type's 8
    expect(out.subarray(40).equals(Buffer.alloc(24, 0xaa))).toBe(true); // beyond the capacities: untouched
    // Capacities beyond the output buffer, or more pairs than spec holds, are refused before the module is called.
    expect(() => addon.getAttributeValueInto(m, session, object, new Float64Array([p.CKA_LABEL, 65]), 1, out)).toThrow(/getAttributeValueInto|capacities/);
    expect(() => addon.getAttributeValueInto(m, session, object, new Float64Array([p.CKA_LABEL, 4]), 2, out)).toThrow(/getAttributeValueInto/);
    pk.C_Logout(h);
  });
});

test("threadUsage reports the calling thread's CPU time, and a context switch only when the thread blocked", () => {
  const addon = p11call()!;
  const a = new Float64Array(2);
  const b = new Float64Array(2);
  const c = new Float64Array(2);
  addon.threadUsage(a);
  const t0 = process.hrtime.bigint();
  const end = performance.now() + 30;
  while (performance.now() < end);
  const busyWall = Number(process.hrtime.bigint() - t0) / 1000;
  addon.threadUsage(b);
  // Blocking in the kernel is a voluntary switch and takes no CPU time.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 30);
  addon.threadUsage(c);
  expect(b[0] - a[0]).toBeGreaterThan(0);
  expect(b[0] - a[0]).toBeLessThanOrEqual(busyWall + 1000);
  expect(c[1] - b[1]).toBeGreaterThanOrEqual(1);
  expect(c[0] - b[0]).toBeLessThan(10_000);
  expect(() => addon.threadUsage(new Float64Array(1))).toThrow(/threadUsage/);
});
