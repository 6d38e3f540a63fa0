import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import path from 'node:path';
import * as p from 'pkcs11js';
import type { px_attribute } from '../../src/generated/pkcs11_rpc';
import { aesCmac } from '../../src/filter/actions/cmac';
import { attributeBytes, boundAttributes, decodeBoundAttributes, encodeBoundAttributes, openBlob, sealBlob } from '../../src/filter/actions/wrapping-format';
import { bool, bytes, mech, ulong } from './helpers/attrs';
import { startCamlCrush } from './helpers/camlcrush-daemon';
import type { RunningCamlCrush } from './helpers/camlcrush-daemon';
import { ROOT, startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { P11Client } from './helpers/p11-client';
import { USER_PIN } from './helpers/softhsm';

/**
 * wrapping_format_patch (src/filter/actions/wrapping-format.ts): the blob is
 * W || A || AES-CMAC(wrapping_format_key, W || A), byte-compatible with Caml
 * Crush's, checked against Debian's Caml Crush daemon in both directions.
 */

const FORMAT_KEY = Buffer.from('5f0e2b8a91c34d7e86a1b2c3d4e5f601', 'hex');
const FILTER = `wrapping_format_key = "${FORMAT_KEY.toString('hex')}"
filter_actions_post = [(".*", [(C_WrapKey, wrapping_format_patch), (C_UnwrapKey, wrapping_format_patch)])]
`;
const OUR_CLIENT = path.join(ROOT, 'client', 'build', 'libp11client.so');
const CKM_AES_KEY_WRAP = 0x2109;
const CKM_AES_KEY_WRAP_PAD = 0x210a;
const CMAC = 16;
/** CK_UNAVAILABLE_INFORMATION as the codec decodes it. */
const UNAVAILABLE = -1;
/** Bound attribute block without do_segregate_usage: CKA_CLASS (4 bytes) and 10 booleans. */
const A_BYTES = 14;

const WRAPPING_VALUE = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
const TARGET_VALUE = Buffer.from('a0a1a2a3a4a5a6a7a8a9aaabacadaeaf', 'hex');

/** The target: secret, extractable, not sensitive (so the test can read the unwrapped copy), encrypt only. */
const TARGET_TEMPLATE = [
  ulong(p.CKA_CLASS, p.CKO_SECRET_KEY), ulong(p.CKA_KEY_TYPE, p.CKK_AES), bytes(p.CKA_VALUE, TARGET_VALUE), bool(p.CKA_TOKEN, false),
  bool(p.CKA_PRIVATE, true), bool(p.CKA_SENSITIVE, false), bool(p.CKA_EXTRACTABLE, true), bool(p.CKA_ENCRYPT, true),
  bool(p.CKA_DECRYPT, false), bool(p.CKA_WRAP, false), bool(p.CKA_UNWRAP, false), bool(p.CKA_DERIVE, false),
];
/**
 * A of the target, written out by hand in blob order: CKA_CLASS big-endian,
 * SENSITIVE, EXTRACTABLE, ALWAYS_SENSITIVE, NEVER_EXTRACTABLE, ENCRYPT,
 * DECRYPT, WRAP, UNWRAP, PRIVATE, DERIVE.
 */
const TARGET_A = Buffer.from('00000004' + '00' + '01' + '00' + '00' + '01' + '00' + '00' + '00' + '01' + '00', 'hex');
/** An unwrap template that agrees with every bound attribute of the target. */
const AGREEING = [
  ulong(p.CKA_CLASS, p.CKO_SECRET_KEY), ulong(p.CKA_KEY_TYPE, p.CKK_AES), bool(p.CKA_TOKEN, false), bool(p.CKA_SENSITIVE, false),
  bool(p.CKA_EXTRACTABLE, true), bool(p.CKA_ENCRYPT, true),
];

describe('AES-CMAC (RFC 4493 section 4 vectors)', () => {
  const key = Buffer.from('2b7e151628aed2a6abf7158809cf4f3c', 'hex');
  const m = Buffer.from(
    '6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710',
    'hex',
  );
  it.each([
    [0, 'bb1d6929e95937287fa37d129b756746'],
    [16, '070a16b46b4d4144f79bdd9dd04a287c'],
    [40, 'dfa66747de9ae63030ca32611497c827'],
    [64, '51f0bebf7e3b9d92fc49741779363cfe'],
  ])('Mlen = %i', (len, tag) => {
    expect(aesCmac(key, m.subarray(0, len)).toString('hex')).toBe(tag);
  });
  it('refuses a key that is not an AES key', () => {
    expect(() => aesCmac(Buffer.alloc(15), Buffer.alloc(0))).toThrow(RangeError);
  });
  it("verifies a blob Caml Crush's daemon produced (key 000102...0f, AES-CBC wrap)", () => {
    const blob = Buffer.from('914f1280a9a52f6b4639517d8ccdd2bc0000000400010000010101010100cfbbae5c44ee7b724c00537e6baccb5a', 'hex');
    const k = Buffer.from('000102030405060708090a0b0c0d0e0f', 'hex');
    expect(aesCmac(k, blob.subarray(0, blob.length - CMAC))).toEqual(blob.subarray(blob.length - CMAC));
  });
});

describe('blob encoding (Caml Crush critical attributes)', () => {
  const le = (v: number) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    return b;
  };
  it('A is 14 bytes, 18 with do_segregate_usage (CKA_SIGN, CKA_VERIFY, CKA_SIGN_RECOVER, CKA_VERIFY_RECOVER appended)', () => {
    expect(attributeBytes(boundAttributes(false))).toBe(14);
    expect(boundAttributes(true).slice(11)).toEqual([p.CKA_SIGN, p.CKA_VERIFY, p.CKA_SIGN_RECOVER, p.CKA_VERIFY_RECOVER]);
    expect(attributeBytes(boundAttributes(true))).toBe(18);
  });
  it('CKA_CLASS big-endian 32-bit, booleans 01/00, ff for an attribute the key lacks; decoding inverts it', () => {
    const types = boundAttributes(true);
    const values = new Map<number, Buffer | null>([
      [p.CKA_CLASS, le(p.CKO_PRIVATE_KEY)], [p.CKA_SENSITIVE, Buffer.from([1])], [p.CKA_EXTRACTABLE, Buffer.from([0])],
      [p.CKA_ENCRYPT, null], [p.CKA_SIGN, Buffer.from([1])],
    ]);
    const a = encodeBoundAttributes(types, values);
    expect(a.toString('hex')).toBe('00000003' + '01' + '00' + 'ff'.repeat(8) + '01' + 'ffffff');
    expect(decodeBoundAttributes(types, a)).toEqual(
      new Map([[p.CKA_CLASS, le(p.CKO_PRIVATE_KEY)], [p.CKA_SENSITIVE, Buffer.from([1])], [p.CKA_EXTRACTABLE, Buffer.from([0])], [p.CKA_SIGN, Buffer.from([1])]]),
    );
    expect(encodeBoundAttributes(types, new Map()).toString('hex')).toBe('ff'.repeat(18));
  });
  it('a boolean byte other than 00/01 binds nothing', () => {
    const types = boundAttributes(false);
    const a = Buffer.from('00000004' + '02' + 'ff'.repeat(9), 'hex');
    expect([...decodeBoundAttributes(types, a).keys()]).toEqual([p.CKA_CLASS]);
  });
  it('openBlob verifies the CMAC and splits W from A', () => {
    const a = Buffer.alloc(14, 0xff);
    const blob = sealBlob(FORMAT_KEY, Buffer.from('wrapped'), a);
    expect(openBlob(FORMAT_KEY, blob, 14)).toEqual({ wrapped: Buffer.from('wrapped'), a });
    expect(openBlob(Buffer.alloc(16), blob, 14)).toBeNull();
    expect(openBlob(FORMAT_KEY, blob.subarray(1), 14)).toBeNull();
    expect(openBlob(FORMAT_KEY, Buffer.alloc(29), 14)).toBeNull();
  });
});

interface Sess {
  c: P11Client;
  s: number;
}

async function login(socketPath: string): Promise<Sess> {
  const c = await P11Client.open({ path: socketPath });
  const slot = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList[0];
  const s = (await c.call('C_OpenSession', { slotID: slot, flags: p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION })).session;
  const rv = await c.call('C_Login', { session: s, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) });
  expect([p.CKR_OK, p.CKR_USER_ALREADY_LOGGED_IN]).toContain(rv);
  return { c, s };
}

async function create(x: Sess, template: px_attribute[]): Promise<number> {
  const r = await x.c.call('C_CreateObject', { session: x.s, template });
  expect(r.rv).toBe(p.CKR_OK);
  return r.object;
}

const aesWrappingKey = (x: Sess): Promise<number> =>
  create(x, [
    ulong(p.CKA_CLASS, p.CKO_SECRET_KEY), ulong(p.CKA_KEY_TYPE, p.CKK_AES), bytes(p.CKA_VALUE, WRAPPING_VALUE), bool(p.CKA_TOKEN, false),
    bool(p.CKA_WRAP, true), bool(p.CKA_UNWRAP, true),
  ]);

async function wrap(x: Sess, m: number, wrappingKey: number, key: number, parameter = Buffer.alloc(0)) {
  return x.c.call('C_WrapKey', { session: x.s, mechanism: mech(m, parameter), wrappingKey, key });
}
async function unwrap(x: Sess, m: number, unwrappingKey: number, wrappedKey: Buffer, template: px_attribute[]) {
  return x.c.call('C_UnwrapKey', { session: x.s, mechanism: mech(m), unwrappingKey, wrappedKey, template });
}

/** Attribute values as read through a proxy (value buffers of `room` bytes); null when unavailable. */
async function read(x: Sess, object: number, types: number[], room = 32): Promise<Map<number, Buffer | null>> {
  const r = await x.c.call('C_GetAttributeValue', {
    session: x.s,
    object,
    template: types.map((type) => ({ type, value: Buffer.alloc(room), valueLen: room })),
  });
  expect([p.CKR_OK, p.CKR_ATTRIBUTE_SENSITIVE, p.CKR_ATTRIBUTE_TYPE_INVALID]).toContain(r.rv);
  return new Map(r.template.map((a) => [a.type, a.valueLen === UNAVAILABLE ? null : a.value.subarray(0, a.valueLen)]));
}

/** RFC 3394 key wrap with the default IV, computed here, independent of the token. */
function aesKeyWrap(kek: Buffer, key: Buffer): Buffer {
  const c = crypto.createCipheriv('id-aes128-wrap', kek, Buffer.from('a6a6a6a6a6a6a6a6', 'hex'));
  return Buffer.concat([c.update(key), c.final()]);
}

const flip = (b: Buffer, at: number): Buffer => {
  const out = Buffer.from(b);
  out[at] ^= 0x01;
  return out;
};

/** Run by node in a child process: wraps and unwraps through our C client loaded by pkcs11js; prints JSON. */
const C_CLIENT_PROBE = `
const p = require('pkcs11js');
const e = process.env;
const m = new p.PKCS11();
m.load(e.CLIENT);
m.C_Initialize();
const out = {};
try {
  const s = m.C_OpenSession(m.C_GetSlotList(true)[0], p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION);
  m.C_Login(s, p.CKU_USER, e.PIN);
  const secret = (value, more) => [{ type: p.CKA_CLASS, value: p.CKO_SECRET_KEY }, { type: p.CKA_KEY_TYPE, value: p.CKK_AES },
    { type: p.CKA_VALUE, value: Buffer.from(value, 'hex') }, { type: p.CKA_TOKEN, value: false }, ...more];
  const target = m.C_CreateObject(s, secret(e.TARGET, [{ type: p.CKA_SENSITIVE, value: false }, { type: p.CKA_EXTRACTABLE, value: true },
    { type: p.CKA_ENCRYPT, value: true }, { type: p.CKA_DECRYPT, value: false }, { type: p.CKA_WRAP, value: false },
    { type: p.CKA_UNWRAP, value: false }, { type: p.CKA_DERIVE, value: false }, { type: p.CKA_PRIVATE, value: true }]));
  const wk = m.C_CreateObject(s, secret(e.WRAPPING, [{ type: p.CKA_WRAP, value: true }, { type: p.CKA_UNWRAP, value: true }]));
  const template = [{ type: p.CKA_CLASS, value: p.CKO_SECRET_KEY }, { type: p.CKA_KEY_TYPE, value: p.CKK_AES }, { type: p.CKA_TOKEN, value: false },
    { type: p.CKA_SENSITIVE, value: false }, { type: p.CKA_EXTRACTABLE, value: true }, { type: p.CKA_ENCRYPT, value: true }];
  const kw = { mechanism: 0x2109 };
  const blob = m.C_WrapKey(s, kw, wk, target, Buffer.alloc(256));
  out.aesBlob = blob.length;
  out.aesCopy = m.C_GetAttributeValue(s, m.C_UnwrapKey(s, kw, wk, blob, template), [{ type: p.CKA_VALUE }])[0].value.toString('hex');
  const kp = m.C_GenerateKeyPair(s, { mechanism: p.CKM_RSA_PKCS_KEY_PAIR_GEN },
    [{ type: p.CKA_TOKEN, value: false }, { type: p.CKA_WRAP, value: true }, { type: p.CKA_MODULUS_BITS, value: 2048 }, { type: p.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) }],
    [{ type: p.CKA_TOKEN, value: false }, { type: p.CKA_UNWRAP, value: true }, { type: p.CKA_SENSITIVE, value: true }]);
  const oaep = { mechanism: p.CKM_RSA_PKCS_OAEP, parameter: { type: p.CK_PARAMS_RSA_OAEP, hashAlg: p.CKM_SHA_1, mgf: p.CKG_MGF1_SHA1, source: 1 } };
  const ob = m.C_WrapKey(s, oaep, kp.publicKey, target, Buffer.alloc(1024));
  out.oaepBlob = ob.length;
  out.oaepCopy = m.C_GetAttributeValue(s, m.C_UnwrapKey(s, oaep, kp.privateKey, ob, template), [{ type: p.CKA_VALUE }])[0].value.toString('hex');
  const bad = Buffer.from(ob);
  bad[257] ^= 1;
  try { m.C_UnwrapKey(s, oaep, kp.privateKey, bad, template); out.oaepTampered = 'CKR_OK'; }
  catch (err) { out.oaepTampered = /CKR_[A-Z_]+/.exec(String(err))[0]; }
  m.C_CloseSession(s);
} finally {
  m.C_Finalize();
}
process.stdout.write(JSON.stringify(out));
`;

describe('through our daemon', () => {
  let filtered: RunningDaemon;
  let plain: RunningDaemon;
  let f: Sess;
  let n: Sess;
  let fKeys: { wk: number; target: number };
  let nKeys: { wk: number; target: number };

  beforeAll(async () => {
    filtered = await startDaemon({ workers: 1, filterExtra: FILTER });
    plain = await startDaemon({ workers: 1 });
    f = await login(filtered.socketPath);
    n = await login(plain.socketPath);
    fKeys = { wk: await aesWrappingKey(f), target: await create(f, TARGET_TEMPLATE) };
    nKeys = { wk: await aesWrappingKey(n), target: await create(n, TARGET_TEMPLATE) };
  }, 60_000);
  afterAll(async () => {
    await f?.c.close();
    await n?.c.close();
    await filtered?.stop();
    await plain?.stop();
  });

  test('C_WrapKey with CKM_AES_KEY_WRAP: W || A || CMAC, W the token output unchanged', async () => {
    const raw = await wrap(n, CKM_AES_KEY_WRAP, nKeys.wk, nKeys.target);
    expect(raw.rv).toBe(p.CKR_OK);
    const W = aesKeyWrap(WRAPPING_VALUE, TARGET_VALUE);
    expect(raw.data).toEqual(W);
    const r = await wrap(f, CKM_AES_KEY_WRAP, fKeys.wk, fKeys.target);
    expect(r.rv).toBe(p.CKR_OK);
    expect(r.data.length).toBe(W.length + A_BYTES + CMAC);
    expect(r.data.subarray(0, W.length)).toEqual(W);
    expect(r.data.subarray(W.length, W.length + A_BYTES).toString('hex')).toBe(TARGET_A.toString('hex'));
    expect(r.data.subarray(W.length + A_BYTES)).toEqual(aesCmac(FORMAT_KEY, Buffer.concat([W, TARGET_A])));
  });

  test.each([
    ['CKM_AES_KEY_WRAP', CKM_AES_KEY_WRAP],
    ['CKM_AES_KEY_WRAP_PAD', CKM_AES_KEY_WRAP_PAD],
  ])('round trip with %s: the unwrapped key has the same value', async (_name, m) => {
    const w = await wrap(f, m, fKeys.wk, fKeys.target);
    expect(w.rv).toBe(p.CKR_OK);
    // RFC 3394 adds 8 bytes to 16; RFC 5649 pads 16 to 16 and adds 8.
    expect(w.data.length).toBe(24 + A_BYTES + CMAC);
    const u = await unwrap(f, m, fKeys.wk, w.data, AGREEING);
    expect(u.rv).toBe(p.CKR_OK);
    expect((await read(f, u.object, [p.CKA_VALUE])).get(p.CKA_VALUE)).toEqual(TARGET_VALUE);
  });

  test("attributes the template omits get Caml Crush's sanitized defaults, not the token's", async () => {
    const minimal = [ulong(p.CKA_CLASS, p.CKO_SECRET_KEY), ulong(p.CKA_KEY_TYPE, p.CKK_AES), bool(p.CKA_TOKEN, false)];
    const types = [p.CKA_DECRYPT, p.CKA_WRAP, p.CKA_SENSITIVE, p.CKA_EXTRACTABLE];
    const raw = await wrap(n, CKM_AES_KEY_WRAP, nKeys.wk, nKeys.target);
    const un = await unwrap(n, CKM_AES_KEY_WRAP, nKeys.wk, raw.data, minimal);
    expect(un.rv).toBe(p.CKR_OK);
    // SoftHSM2's defaults for an unwrapped secret key: every usage TRUE.
    expect((await read(n, un.object, types)).get(p.CKA_DECRYPT)).toEqual(Buffer.from([1]));
    const w = await wrap(f, CKM_AES_KEY_WRAP, fKeys.wk, fKeys.target);
    const uf = await unwrap(f, CKM_AES_KEY_WRAP, fKeys.wk, w.data, minimal);
    expect(uf.rv).toBe(p.CKR_OK);
    const v = await read(f, uf.object, types);
    expect([v.get(p.CKA_DECRYPT), v.get(p.CKA_WRAP), v.get(p.CKA_SENSITIVE), v.get(p.CKA_EXTRACTABLE)]).toEqual([
      Buffer.from([0]), Buffer.from([0]), Buffer.from([1]), Buffer.from([0]),
    ]);
  });

  test('a template that contradicts a bound attribute: CKR_TEMPLATE_INCONSISTENT (the token alone allows it)', async () => {
    const widening = [...AGREEING, bool(p.CKA_DECRYPT, true)];
    const raw = await wrap(n, CKM_AES_KEY_WRAP, nKeys.wk, nKeys.target);
    expect((await unwrap(n, CKM_AES_KEY_WRAP, nKeys.wk, raw.data, widening)).rv).toBe(p.CKR_OK);
    const w = await wrap(f, CKM_AES_KEY_WRAP, fKeys.wk, fKeys.target);
    expect((await unwrap(f, CKM_AES_KEY_WRAP, fKeys.wk, w.data, widening)).rv).toBe(p.CKR_TEMPLATE_INCONSISTENT);
    // CKA_CLASS is bound too (4 bytes big-endian in the blob, a CK_ULONG in the template).
    const otherClass = [ulong(p.CKA_CLASS, p.CKO_PRIVATE_KEY), ...AGREEING.slice(1)];
    expect((await unwrap(f, CKM_AES_KEY_WRAP, fKeys.wk, w.data, otherClass)).rv).toBe(p.CKR_TEMPLATE_INCONSISTENT);
  });

  test('a tampered blob is refused with CKR_FUNCTION_FAILED: in W, in A, in the CMAC, truncated', async () => {
    const w = await wrap(f, CKM_AES_KEY_WRAP, fKeys.wk, fKeys.target);
    expect(w.rv).toBe(p.CKR_OK);
    const wLen = w.data.length - A_BYTES - CMAC;
    // A's SENSITIVE byte 00 -> 01, with a template that would then agree.
    const sensitiveAt = wLen + 4;
    const asSensitive = [...AGREEING.filter((a) => a.type !== p.CKA_SENSITIVE), bool(p.CKA_SENSITIVE, true)];
    expect((await unwrap(f, CKM_AES_KEY_WRAP, fKeys.wk, flip(w.data, sensitiveAt), asSensitive)).rv).toBe(p.CKR_FUNCTION_FAILED);
    for (const bad of [flip(w.data, 0), flip(w.data, wLen), flip(w.data, w.data.length - 1), w.data.subarray(0, A_BYTES + CMAC - 1)]) {
      expect((await unwrap(f, CKM_AES_KEY_WRAP, fKeys.wk, bad, AGREEING)).rv).toBe(p.CKR_FUNCTION_FAILED);
    }
    // The untampered blob still unwraps.
    expect((await unwrap(f, CKM_AES_KEY_WRAP, fKeys.wk, w.data, AGREEING)).rv).toBe(p.CKR_OK);
  });

  test('a raw blob (no wrapping format) is refused; the same bytes unwrap without the filter', async () => {
    const W = aesKeyWrap(WRAPPING_VALUE, TARGET_VALUE);
    expect((await unwrap(n, CKM_AES_KEY_WRAP, nKeys.wk, W, AGREEING)).rv).toBe(p.CKR_OK);
    expect((await unwrap(f, CKM_AES_KEY_WRAP, fKeys.wk, W, AGREEING)).rv).toBe(p.CKR_FUNCTION_FAILED);
  });

  test('an unwrap template without CKA_CLASS: CKR_FUNCTION_FAILED', async () => {
    const w = await wrap(f, CKM_AES_KEY_WRAP, fKeys.wk, fKeys.target);
    expect((await unwrap(f, CKM_AES_KEY_WRAP, fKeys.wk, w.data, AGREEING.slice(1))).rv).toBe(p.CKR_FUNCTION_FAILED);
  });

  test('C_WrapKey errors of the token come back unchanged, without a blob', async () => {
    const locked = await create(f, [...TARGET_TEMPLATE.filter((a) => a.type !== p.CKA_EXTRACTABLE), bool(p.CKA_EXTRACTABLE, false)]);
    const r = await wrap(f, CKM_AES_KEY_WRAP, fKeys.wk, locked);
    expect(r.rv).toBe(p.CKR_KEY_UNEXTRACTABLE);
    expect(r.data.length).toBe(0);
  });

  test('our C client (pkcs11js, own process): AES key wrap and RSA-OAEP (a typed-mechanism procedure) round trips', () => {
    // A child process: the C client reads PKCS11PROXY_* from the real environment, which jest's process.env does not reach.
    const r = spawnSync(process.execPath, ['-e', C_CLIENT_PROBE], {
      env: { ...process.env, PKCS11PROXY_SOCKET_PATH: filtered.socketPath, PKCS11PROXY_LIBNAME: 'softhsm', CLIENT: OUR_CLIENT, PIN: USER_PIN, TARGET: TARGET_VALUE.toString('hex'), WRAPPING: WRAPPING_VALUE.toString('hex') },
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({
      aesBlob: 24 + A_BYTES + CMAC,
      aesCopy: TARGET_VALUE.toString('hex'),
      oaepBlob: 256 + A_BYTES + CMAC,
      oaepCopy: TARGET_VALUE.toString('hex'),
      oaepTampered: 'CKR_FUNCTION_FAILED',
    });
  });
});

/** One RSA key pair of known value, imported into both proxies' tokens: the wrapping keys Caml Crush can use. */
function rsaTemplates(): { pub: px_attribute[]; priv: px_attribute[] } {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const j = privateKey.export({ format: 'jwk' });
  const b = (s: string | undefined) => Buffer.from(s!, 'base64url');
  const common = [ulong(p.CKA_KEY_TYPE, p.CKK_RSA), bool(p.CKA_TOKEN, false), bytes(p.CKA_MODULUS, b(j.n)), bytes(p.CKA_PUBLIC_EXPONENT, b(j.e))];
  return {
    pub: [ulong(p.CKA_CLASS, p.CKO_PUBLIC_KEY), ...common, bool(p.CKA_WRAP, true)],
    priv: [
      ulong(p.CKA_CLASS, p.CKO_PRIVATE_KEY), ...common, bool(p.CKA_PRIVATE, true), bool(p.CKA_SENSITIVE, true), bool(p.CKA_UNWRAP, true),
      bytes(p.CKA_PRIVATE_EXPONENT, b(j.d)), bytes(p.CKA_PRIME_1, b(j.p)), bytes(p.CKA_PRIME_2, b(j.q)), bytes(p.CKA_EXPONENT_1, b(j.dp)),
      bytes(p.CKA_EXPONENT_2, b(j.dq)), bytes(p.CKA_COEFFICIENT, b(j.qi)),
    ],
  };
}

/**
 * RSA-OAEP (SHA-1, MGF1-SHA1, no label) as each proxy takes it. Caml Crush's
 * v3 C_WrapKey passes an empty parameter to the module as a non-NULL pointer,
 * which SoftHSM2 refuses with CKR_ARGUMENTS_BAD for every mechanism without
 * a parameter (CKM_RSA_PKCS, CKM_AES_KEY_WRAP): OAEP, whose parameter is a
 * struct, is what it can wrap with and SoftHSM2 can unwrap. Caml Crush gets
 * the struct's raw bytes (LE64, pSourceData NULL); ours gets it typed
 * (px_WrapKeyTyped / px_UnwrapKeyTyped, as our C client sends it).
 */
const OAEP_RAW = (() => {
  const b = Buffer.alloc(40);
  b.writeBigUInt64LE(BigInt(p.CKM_SHA_1), 0);
  b.writeBigUInt64LE(BigInt(p.CKG_MGF1_SHA1), 8);
  b.writeBigUInt64LE(1n, 16); // CKZ_DATA_SPECIFIED
  return b;
})();
const OAEP_TYPED = {
  mechanism: p.CKM_RSA_PKCS_OAEP,
  param: { tag: 3 as const, value: { hashAlg: p.CKM_SHA_1, mgf: p.CKG_MGF1_SHA1, source: 1, sourceData: Buffer.alloc(0) } },
};

interface Side {
  name: string;
  x: Sess;
  pub: number;
  priv: number;
  target: number;
  wrap(): Promise<{ rv: number; data: Buffer }>;
  unwrap(blob: Buffer, template: px_attribute[]): Promise<{ rv: number; object: number }>;
}

describe("interop with Caml Crush's daemon (Debian caml-crush-server), same keys, same wrapping_format_key", () => {
  let cc: RunningCamlCrush;
  let ours: RunningDaemon;
  let C: Side;
  let O: Side;

  beforeAll(async () => {
    // Each daemon has its own SoftHSM2 store (no concurrent C_Initialize of one store); the keys are imported by value into both.
    cc = await startCamlCrush(FILTER);
    ours = await startDaemon({ workers: 1, filterExtra: FILTER });
    const rsa = rsaTemplates();
    const side = async (name: string, socketPath: string, typed: boolean): Promise<Side> => {
      const x = await login(socketPath);
      const pub = await create(x, rsa.pub);
      const priv = await create(x, rsa.priv);
      const target = await create(x, TARGET_TEMPLATE);
      return {
        name, x, pub, priv, target,
        wrap: () =>
          typed
            ? x.c.call('px_WrapKeyTyped', { session: x.s, mechanism: OAEP_TYPED, wrappingKey: pub, key: target })
            : x.c.call('C_WrapKey', { session: x.s, mechanism: mech(p.CKM_RSA_PKCS_OAEP, OAEP_RAW), wrappingKey: pub, key: target }),
        unwrap: (wrappedKey, template) =>
          typed
            ? x.c.call('px_UnwrapKeyTyped', { session: x.s, mechanism: OAEP_TYPED, unwrappingKey: priv, wrappedKey, template })
            : x.c.call('C_UnwrapKey', { session: x.s, mechanism: mech(p.CKM_RSA_PKCS_OAEP, OAEP_RAW), unwrappingKey: priv, wrappedKey, template }),
      };
    };
    C = await side('caml-crush', cc.socketPath, false);
    O = await side('ours', ours.socketPath, true);
  }, 60_000);
  afterAll(async () => {
    await C?.x.c.close();
    await O?.x.c.close();
    await cc?.stop();
    await ours?.stop();
  });

  test('Caml Crush wraps, ours unwraps the blob to the same key', async () => {
    const w = await C.wrap();
    expect(w.rv).toBe(p.CKR_OK);
    expect(w.data.length).toBe(256 + A_BYTES + CMAC);
    expect(w.data.subarray(256, 256 + A_BYTES).toString('hex')).toBe(TARGET_A.toString('hex'));
    const u = await O.unwrap(w.data, AGREEING);
    expect(u.rv).toBe(p.CKR_OK);
    expect((await read(O.x, u.object, [p.CKA_VALUE])).get(p.CKA_VALUE)).toEqual(TARGET_VALUE);
  });

  test('ours wraps, Caml Crush unwraps the blob to the same key', async () => {
    const w = await O.wrap();
    expect(w.rv).toBe(p.CKR_OK);
    expect(w.data.subarray(256, 256 + A_BYTES).toString('hex')).toBe(TARGET_A.toString('hex'));
    const u = await C.unwrap(w.data, AGREEING);
    expect(u.rv).toBe(p.CKR_OK);
    expect((await read(C.x, u.object, [p.CKA_VALUE], TARGET_VALUE.length)).get(p.CKA_VALUE)).toEqual(TARGET_VALUE);
  });

  test('refusals: both daemons answer the same CK_RV for each bad blob or template, whoever wrapped', async () => {
    const blobs = { 'caml-crush': (await C.wrap()).data, ours: (await O.wrap()).data };
    const wLen = 256;
    const cases: Array<[string, (blob: Buffer) => Buffer, px_attribute[], number]> = [
      ['as wrapped', (b) => b, AGREEING, p.CKR_OK],
      ['bound SENSITIVE byte flipped', (b) => flip(b, wLen + 4), AGREEING, p.CKR_FUNCTION_FAILED],
      ['bound CKA_CLASS byte flipped', (b) => flip(b, wLen + 3), AGREEING, p.CKR_FUNCTION_FAILED],
      ['W byte flipped', (b) => flip(b, 10), AGREEING, p.CKR_FUNCTION_FAILED],
      ['CMAC byte flipped', (b) => flip(b, b.length - 1), AGREEING, p.CKR_FUNCTION_FAILED],
      ['W only (no format)', (b) => b.subarray(0, wLen), AGREEING, p.CKR_FUNCTION_FAILED],
      ['shorter than A + CMAC', (b) => b.subarray(b.length - A_BYTES - CMAC + 1), AGREEING, p.CKR_FUNCTION_FAILED],
      ['template widens CKA_DECRYPT', (b) => b, [...AGREEING, bool(p.CKA_DECRYPT, true)], p.CKR_TEMPLATE_INCONSISTENT],
      ['template says sensitive', (b) => b, [...AGREEING.slice(0, 3), bool(p.CKA_SENSITIVE, true)], p.CKR_TEMPLATE_INCONSISTENT],
      ['template without CKA_CLASS', (b) => b, AGREEING.slice(1), p.CKR_FUNCTION_FAILED],
    ];
    const got: string[] = [];
    const want: string[] = [];
    for (const [name, edit, template, rv] of cases) {
      for (const [from, blob] of Object.entries(blobs)) {
        expect(blob.length).toBe(256 + A_BYTES + CMAC);
        const viaCc = (await C.unwrap(edit(blob), template)).rv;
        const viaOurs = (await O.unwrap(edit(blob), template)).rv;
        got.push(`${name} (wrapped by ${from}): caml-crush 0x${viaCc.toString(16)}, ours 0x${viaOurs.toString(16)}`);
        want.push(`${name} (wrapped by ${from}): caml-crush 0x${rv.toString(16)}, ours 0x${rv.toString(16)}`);
      }
    }
    expect(got).toEqual(want);
  });

  test('CKM_AES_KEY_WRAP: refused through Caml Crush (CKR_ARGUMENTS_BAD), wrapped in the format through ours', async () => {
    const wk = [
      ulong(p.CKA_CLASS, p.CKO_SECRET_KEY), ulong(p.CKA_KEY_TYPE, p.CKK_AES), bytes(p.CKA_VALUE, WRAPPING_VALUE), bool(p.CKA_TOKEN, false),
      bool(p.CKA_WRAP, true), bool(p.CKA_UNWRAP, true),
    ];
    const cw = await wrap(C.x, CKM_AES_KEY_WRAP, await create(C.x, wk), C.target);
    expect(cw.rv).toBe(p.CKR_ARGUMENTS_BAD);
    const ow = await wrap(O.x, CKM_AES_KEY_WRAP, await create(O.x, wk), O.target);
    expect(ow.rv).toBe(p.CKR_OK);
    expect(ow.data.length).toBe(24 + A_BYTES + CMAC);
    expect(ow.data.subarray(0, 24)).toEqual(aesKeyWrap(WRAPPING_VALUE, TARGET_VALUE));
  });
});
