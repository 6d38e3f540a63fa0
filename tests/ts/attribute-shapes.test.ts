import path from 'node:path';
import * as p from 'pkcs11js';
import type { px_attribute } from '../../src/generated/pkcs11_rpc';
import { bool, bytes, mech, query } from './helpers/attrs';
import { ROOT, startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { P11Client } from './helpers/p11-client';
import { pkcs11Tool } from './helpers/pkcs11-tool';
import { SOFTHSM_MODULE, USER_PIN } from './helpers/softhsm';

/**
 * Attribute values by their shape (rpc/attributes.table) across the daemon:
 * finding 7 (CKA_ALLOWED_MECHANISMS through our C client, with pkcs11-tool),
 * CK_ULONG and CK_ULONG-array values of clients in every CK_ULONG layout,
 * and nested templates, whose raw bytes are the sender's pointers.
 */
const OUR_CLIENT = path.join(ROOT, 'client', 'build', 'libp11client.so');
const UNAVAILABLE = -1;
/** The daemon's own CK_ULONG layout on this machine (x86-64): little-endian 64-bit. */
const NATIVE_ARCH = 1;

let d: RunningDaemon;
let env: NodeJS.ProcessEnv;
beforeAll(async () => {
  d = await startDaemon({ workers: 1 });
  env = { ...d.hsm.env, PKCS11PROXY_SOCKET_PATH: d.socketPath, PKCS11PROXY_LIBNAME: 'softhsm' };
});
afterAll(async () => {
  await d?.stop();
}, 120_000);

/** The "Allowed mechanisms:" line pkcs11-tool prints for the private key with this ID. */
function allowedLine(module: string, e: NodeJS.ProcessEnv, id: string): string | undefined {
  const r = pkcs11Tool(module, ['--login', '--pin', USER_PIN, '-O', '--type', 'privkey', '--id', id], e);
  expect(r.status).toBe(0);
  return /^\s*Allowed mechanisms: (.*)$/m.exec(r.out)?.[1];
}

interface Layout {
  name: string;
  arch: number;
  size: 4 | 8;
  enc(values: number[]): Buffer;
}
const layout = (name: string, arch: number, size: 4 | 8, le: boolean): Layout => ({
  name,
  arch,
  size,
  enc: (values) => {
    const b = Buffer.alloc(values.length * size);
    values.forEach((v, i) => {
      if (size === 8) {
        if (le) b.writeBigUInt64LE(BigInt(v), i * 8);
        else b.writeBigUInt64BE(BigInt(v), i * 8);
      } else if (le) b.writeUInt32LE(v, i * 4);
      else b.writeUInt32BE(v, i * 4);
    });
    return b;
  },
});
const LAYOUTS = [layout('LE64', 1, 8, true), layout('LE32', 2, 4, true), layout('BE64', 3, 8, false), layout('BE32', 4, 4, false)];

/** A logged-in session of a raw client that declared `arch`. */
async function session(arch: number): Promise<{ c: P11Client; s: number }> {
  const c = await P11Client.connect({ path: d.socketPath });
  expect(await c.call('C_SetupArch', { arch })).toBe(1);
  expect(await c.call('C_LoadModule', { alias: Buffer.from('softhsm') })).toBe(p.CKR_OK);
  expect(await c.call('C_Initialize', undefined)).toBe(p.CKR_OK);
  const slot = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList[0];
  const s = (await c.call('C_OpenSession', { slotID: slot, flags: 6 })).session;
  const rv = await c.call('C_Login', { session: s, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) });
  expect([p.CKR_OK, p.CKR_USER_ALREADY_LOGGED_IN]).toContain(rv);
  return { c, s };
}

test('finding 7: pkcs11-tool --keypairgen --allowed-mechanisms RSA-PKCS-PSS through our client', async () => {
  const gen = pkcs11Tool(
    OUR_CLIENT,
    ['--login', '--pin', USER_PIN, '--keypairgen', '--key-type', 'rsa:2048', '--allowed-mechanisms', 'RSA-PKCS-PSS', '--id', '21', '--label', 'pss'],
    env,
    300_000,
  );
  expect(gen.out).toMatch(/Key pair generated/);
  expect(gen.status).toBe(0);
  expect(allowedLine(OUR_CLIENT, env, '21')).toBe('RSA-PKCS-PSS');
  expect(allowedLine(SOFTHSM_MODULE, d.hsm.env, '21')).toBe('RSA-PKCS-PSS');

  // The exact value: one CK_MECHANISM_TYPE, CKM_RSA_PKCS_PSS.
  const { c, s } = await session(1);
  const find = [
    { type: p.CKA_CLASS, value: Buffer.from([p.CKO_PRIVATE_KEY, 0, 0, 0, 0, 0, 0, 0]), valueLen: 8 },
    bytes(p.CKA_ID, Buffer.from([0x21])),
  ];
  expect(await c.call('C_FindObjectsInit', { session: s, template: find })).toBe(p.CKR_OK);
  const found = await c.call('C_FindObjects', { session: s, maxObjectCount: 2 });
  expect(found.objects).toHaveLength(1);
  await c.call('C_FindObjectsFinal', { session: s });
  const r = await c.call('C_GetAttributeValue', {
    session: s,
    object: found.objects[0],
    template: [{ type: p.CKA_ALLOWED_MECHANISMS, value: Buffer.alloc(64), valueLen: 64 }],
  });
  expect(r.rv).toBe(p.CKR_OK);
  expect(r.template[0].value).toEqual(LAYOUTS[0].enc([p.CKM_RSA_PKCS_PSS]));
  await c.close();
});

describe.each(LAYOUTS)('a $name client', (l) => {
  const pss = [p.CKM_RSA_PKCS_PSS, p.CKM_SHA256_RSA_PKCS_PSS];
  const ul = (type: number, v: number): px_attribute => ({ type, value: l.enc([v]), valueLen: l.size });

  test('sets CK_ULONG and CK_ULONG-array values in its layout and reads them back in it', async () => {
    const { c, s } = await session(l.arch);
    const kp = await c.call('C_GenerateKeyPair', {
      session: s,
      mechanism: mech(p.CKM_RSA_PKCS_KEY_PAIR_GEN),
      publicKeyTemplate: [bool(p.CKA_TOKEN, false), ul(p.CKA_MODULUS_BITS, 1024), bytes(p.CKA_PUBLIC_EXPONENT, Buffer.from([1, 0, 1]))],
      privateKeyTemplate: [
        bool(p.CKA_TOKEN, false),
        bool(p.CKA_SIGN, true),
        { type: p.CKA_ALLOWED_MECHANISMS, value: l.enc(pss), valueLen: 2 * l.size },
      ],
    });
    expect(kp.rv).toBe(p.CKR_OK);
    const get = (object: number, template: px_attribute[]) => c.call('C_GetAttributeValue', { session: s, object, template });

    // Size queries answer in the client's layout.
    const sizes = await get(kp.privateKey, [query(p.CKA_ALLOWED_MECHANISMS), query(p.CKA_CLASS), query(p.CKA_SIGN)]);
    expect(sizes.rv).toBe(p.CKR_OK);
    expect(sizes.template.map((a) => a.valueLen)).toEqual([2 * l.size, l.size, 1]);

    // Exact buffers, and a buffer with room for two CK_ULONGs and a spare byte.
    for (const room of [2 * l.size, 2 * l.size + 1]) {
      const v = await get(kp.privateKey, [
        { type: p.CKA_ALLOWED_MECHANISMS, value: Buffer.alloc(room), valueLen: room },
        { type: p.CKA_CLASS, value: Buffer.alloc(l.size), valueLen: l.size },
      ]);
      expect(v.rv).toBe(p.CKR_OK);
      expect(v.template.map((a) => a.value)).toEqual([l.enc(pss), l.enc([p.CKO_PRIVATE_KEY])]);
      expect(v.template.map((a) => a.valueLen)).toEqual([2 * l.size, l.size]);
    }
    const bits = await get(kp.publicKey, [{ type: p.CKA_MODULUS_BITS, value: Buffer.alloc(l.size), valueLen: l.size }]);
    expect(bits.template[0].value).toEqual(l.enc([1024]));

    // A short buffer: unavailable, CKR_BUFFER_TOO_SMALL; the other attribute still answered.
    const short = await get(kp.privateKey, [
      { type: p.CKA_ALLOWED_MECHANISMS, value: Buffer.alloc(2 * l.size - 1), valueLen: 2 * l.size - 1 },
      { type: p.CKA_CLASS, value: Buffer.alloc(l.size), valueLen: l.size },
    ]);
    expect(short.rv).toBe(p.CKR_BUFFER_TOO_SMALL);
    expect(short.template[0].valueLen).toBe(UNAVAILABLE);
    expect(short.template[1].value).toEqual(l.enc([p.CKO_PRIVATE_KEY]));
    await c.close();
  });

  test('a CK_ULONG of another size than its layout is refused', async () => {
    const { c, s } = await session(l.arch);
    const wrong = Buffer.alloc(l.size === 8 ? 4 : 8);
    wrong[0] = p.CKO_DATA;
    const rv = (
      await c.call('C_CreateObject', {
        session: s,
        template: [{ type: p.CKA_CLASS, value: wrong, valueLen: wrong.length }, bool(p.CKA_TOKEN, false)],
      })
    ).rv;
    await c.close();
    // In the daemon's own layout the value passes unconverted and the module
    // judges it (SoftHSM2 2.6.1: CKR_TEMPLATE_INCOMPLETE, having found no CK_ULONG class).
    if (l.arch === NATIVE_ARCH) expect(rv).not.toBe(p.CKR_OK);
    else expect(rv).toBe(p.CKR_ATTRIBUTE_VALUE_INVALID);
  });
});

test('a nested template sent as raw bytes is refused, the worker and the connection live on', async () => {
  const { c, s } = await session(1);
  // What a raw-byte client such as Caml Crush's sends for CKA_WRAP_TEMPLATE:
  // one CK_ATTRIBUTE {CKA_KEY_TYPE, pValue, 8} with an address of its own memory.
  const inner = Buffer.alloc(24);
  inner.writeBigUInt64LE(BigInt(p.CKA_KEY_TYPE), 0);
  inner.writeBigUInt64LE(0x10n, 8);
  inner.writeBigUInt64LE(8n, 16);
  const key = (extra: px_attribute[]) =>
    c.call('C_CreateObject', {
      session: s,
      template: [
        { type: p.CKA_CLASS, value: LAYOUTS[0].enc([p.CKO_SECRET_KEY]), valueLen: 8 },
        { type: p.CKA_KEY_TYPE, value: LAYOUTS[0].enc([p.CKK_AES]), valueLen: 8 },
        bool(p.CKA_TOKEN, false),
        bytes(p.CKA_VALUE, Buffer.alloc(16, 7)),
        ...extra,
      ],
    });
  for (const type of [p.CKA_WRAP_TEMPLATE, p.CKA_UNWRAP_TEMPLATE, p.CKA_DERIVE_TEMPLATE]) {
    expect((await key([{ type, value: inner, valueLen: 24 }])).rv).toBe(p.CKR_ATTRIBUTE_VALUE_INVALID);
  }
  // An empty template holds no pointer and passes.
  const k = await key([{ type: p.CKA_UNWRAP_TEMPLATE, value: Buffer.alloc(0), valueLen: 0 }]);
  expect(k.rv).toBe(p.CKR_OK);

  // Reading one is never asked of the module: unavailable, the rest answered.
  const r = await c.call('C_GetAttributeValue', {
    session: s,
    object: k.object,
    template: [query(p.CKA_WRAP_TEMPLATE), { type: p.CKA_KEY_TYPE, value: Buffer.alloc(8), valueLen: 8 }, query(p.CKA_DERIVE_TEMPLATE)],
  });
  expect(r.rv).toBe(p.CKR_ATTRIBUTE_SENSITIVE);
  expect(r.template.map((a) => a.valueLen)).toEqual([UNAVAILABLE, 8, UNAVAILABLE]);
  expect(r.template[1].value).toEqual(LAYOUTS[0].enc([p.CKK_AES]));
  expect(d.output()).not.toMatch(/exited/);
  await c.close();
});
