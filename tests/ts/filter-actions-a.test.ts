import { execFileSync, spawn } from 'node:child_process';
import { createDecipheriv } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { px_attribute, px_mechanism_typed } from '../../src/generated/pkcs11_rpc';
import { ck } from '../../src/pkcs11/constants';
import { FRAMED_REPLY_PREFIX_SIZE } from '../../src/server/transport/types';
import { bool, bytes, mech, ulong, P256 } from './helpers/attrs';
import { startInProcess } from './helpers/in-process';
import type { InProcessClient, InProcessStack } from './helpers/in-process';
import { startDaemon } from './helpers/daemon';
import { faultyModule } from './helpers/faulty-module';
import { createSoftHsm, SOFTHSM_MODULE, USER_PIN } from './helpers/softhsm';
import type { SoftHsmStore } from './helpers/softhsm';

/**
 * The CryptokiX actions (conflicting, sticky, secure templates, sanitized
 * templates, usage segregation) and Caml Crush's sample hooks, each on each
 * of its triggers, in process over SoftHSM2: the call goes through with a
 * filter.conf that attaches nothing, and is answered with Caml Crush's CK_RV
 * with the action attached to that call.
 */

let store: SoftHsmStore;
let dir: string;
let stack: InProcessStack | null = null;
let modulePath: string;

beforeAll(() => {
  store = createSoftHsm(['actions-a']);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p11pd-actions-a-'));
  // A copy of SoftHSM2 behind the fault wrapper, which points it at this store; each stack loads it after the last one finalized.
  modulePath = faultyModule(path.join(store.dir, 'module'), store.conf).path;
});
afterEach(() => {
  stack?.finalize();
  stack = null;
});
afterAll(() => {
  store.cleanup();
  fs.rmSync(dir, { recursive: true, force: true });
});

const RW = ck.CKF_SERIAL_SESSION | ck.CKF_RW_SESSION;
const T = true;
const F = false;

interface Env {
  c: InProcessClient;
  /** A read-write session, user logged in. */
  s: number;
}

let files = 0;

/** A logged-in session through a stack enforcing `rules` (filter.conf lines after `modules`). */
async function open(rules: string): Promise<Env> {
  const file = path.join(dir, `filter-${files++}.conf`);
  fs.writeFileSync(file, `modules = [("m", "${modulePath}")]\n${rules}\n`);
  stack = startInProcess([{ alias: 'm', path: modulePath }], undefined, { filterFile: file });
  const c = await stack.open();
  let slot = -1;
  for (const id of (await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList) {
    if (((await c.call('C_GetTokenInfo', { slotID: id })).info.flags & ck.CKF_TOKEN_INITIALIZED) !== 0) slot = id;
  }
  const r = await c.call('C_OpenSession', { slotID: slot, flags: RW });
  expect(r.rv).toBe(ck.CKR_OK);
  expect(await c.call('C_Login', { session: r.session, userType: ck.CKU_USER, pin: Buffer.from(USER_PIN) })).toBe(ck.CKR_OK);
  return { c, s: r.session };
}

const post = (pairs: Array<[string, string]>): string => `filter_actions_post = [(".*", [${pairs.map(([f, a]) => `(${f}, ${a})`).join(', ')}])]`;

// ---- objects ----

const KNOWN = Buffer.from('00112233445566778899aabbccddeeff', 'hex');

function aesTemplate(flags: Record<string, boolean>, extra: px_attribute[] = []): px_attribute[] {
  return [
    ulong(ck.CKA_CLASS, ck.CKO_SECRET_KEY), ulong(ck.CKA_KEY_TYPE, ck.CKK_AES), bool(ck.CKA_TOKEN, false),
    ...Object.entries(flags).map(([k, v]) => bool(ck[k as keyof typeof ck] as number, v)), ...extra,
  ];
}

async function generateAes(e: Env, flags: Record<string, boolean>, label = 'k'): Promise<number> {
  const r = await e.c.call('C_GenerateKey', {
    session: e.s, mechanism: mech(ck.CKM_AES_KEY_GEN), template: aesTemplate(flags, [ulong(ck.CKA_VALUE_LEN, 16), bytes(ck.CKA_LABEL, label)]),
  });
  expect(r.rv).toBe(ck.CKR_OK);
  return r.object;
}

async function importAes(e: Env, flags: Record<string, boolean>): Promise<number> {
  const r = await e.c.call('C_CreateObject', { session: e.s, template: aesTemplate(flags, [bytes(ck.CKA_VALUE, KNOWN)]) });
  expect(r.rv).toBe(ck.CKR_OK);
  return r.object;
}

/** A key holding both CKA_WRAP and CKA_DECRYPT (and every other role). */
const CONFLICTING = { CKA_WRAP: T, CKA_UNWRAP: T, CKA_ENCRYPT: T, CKA_DECRYPT: T, CKA_SIGN: T, CKA_VERIFY: T, CKA_DERIVE: T, CKA_SENSITIVE: T, CKA_EXTRACTABLE: T };
const WRAP_ONLY = { CKA_WRAP: T, CKA_UNWRAP: T, CKA_ENCRYPT: F, CKA_DECRYPT: F, CKA_SENSITIVE: T };
const TARGET = { CKA_SENSITIVE: T, CKA_EXTRACTABLE: T, CKA_ENCRYPT: T, CKA_DECRYPT: F, CKA_WRAP: F, CKA_UNWRAP: F };

async function wrap(e: Env, wrappingKey: number, key: number): Promise<{ rv: number; data: Buffer }> {
  const r = await e.c.call('C_WrapKey', { session: e.s, mechanism: mech(ck.CKM_AES_KEY_WRAP), wrappingKey, key });
  return { rv: r.rv, data: r.data };
}

async function boolsOf(e: Env, object: number, types: number[]): Promise<Record<number, boolean>> {
  // A request value of N bytes asks for the value with an N-byte buffer.
  const r = await e.c.call('C_GetAttributeValue', { session: e.s, object, template: types.map((t) => ({ type: t, value: Buffer.alloc(1), valueLen: 1 })) });
  expect(r.rv).toBe(ck.CKR_OK);
  return Object.fromEntries(r.template.map((a) => [a.type, a.value[0] !== 0]));
}

const typed = (mechanism: number, param: px_mechanism_typed['param'] = { tag: 1 }): px_mechanism_typed => ({ mechanism, param });
// CK_AES_CBC_ENCRYPT_DATA_PARAMS (the ECB form's CK_KEY_DERIVATION_STRING_DATA cannot carry data through pkcs11js).
const deriveParam = typed(ck.CKM_AES_CBC_ENCRYPT_DATA, { tag: 11, value: { iv: Buffer.alloc(16, 1), data: Buffer.alloc(16, 7) } });

function ecPair(pub: px_attribute[], priv: px_attribute[]) {
  return {
    publicKeyTemplate: [ulong(ck.CKA_CLASS, ck.CKO_PUBLIC_KEY), bool(ck.CKA_TOKEN, false), bytes(ck.CKA_EC_PARAMS, P256), ...pub],
    privateKeyTemplate: [ulong(ck.CKA_CLASS, ck.CKO_PRIVATE_KEY), bool(ck.CKA_TOKEN, false), ...priv],
  };
}

const rvOf = (r: number | { rv: number }): number => (typeof r === 'number' ? r : r.rv);

// ---- one case per action and trigger ----

interface Case {
  name: string;
  /** (trigger, action) pairs attached in filter_actions_post. */
  attach: Array<[string, string]>;
  /** Sets up and makes the call under test; its CK_RV. */
  run(e: Env): Promise<number>;
  /** The CK_RV without the action: CKR_OK unless SoftHSM2 refuses by itself (then the case says why). */
  allowed?: number;
  refused: number;
  /** Attached in the run without the action under test (default: nothing). */
  without?: Array<[string, string]>;
}

const cases: Case[] = [
  // conflicting_attributes_patch: templates of new keys, fused for key pairs; C_SetAttributeValue and C_CopyObject against the object.
  {
    name: 'conflicting_attributes_patch / C_CreateObject: key with CKA_WRAP and CKA_DECRYPT',
    attach: [['C_CreateObject', 'conflicting_attributes_patch']],
    run: async (e) => rvOf(await e.c.call('C_CreateObject', { session: e.s, template: aesTemplate({ CKA_WRAP: T, CKA_DECRYPT: T }, [bytes(ck.CKA_VALUE, KNOWN)]) })),
    refused: ck.CKR_ATTRIBUTE_VALUE_INVALID,
  },
  {
    name: 'conflicting_attributes_patch / C_GenerateKey: key with CKA_UNWRAP and CKA_ENCRYPT',
    attach: [['C_GenerateKey', 'conflicting_attributes_patch']],
    run: async (e) => rvOf(await e.c.call('C_GenerateKey', { session: e.s, mechanism: mech(ck.CKM_AES_KEY_GEN), template: aesTemplate({ CKA_UNWRAP: T, CKA_ENCRYPT: T }, [ulong(ck.CKA_VALUE_LEN, 16)]) })),
    refused: ck.CKR_ATTRIBUTE_VALUE_INVALID,
  },
  {
    name: 'conflicting_attributes_patch / px_GenerateKeyTyped: CKA_SENSITIVE FALSE and CKA_EXTRACTABLE FALSE',
    attach: [['C_GenerateKey', 'conflicting_attributes_patch']],
    run: async (e) => rvOf(await e.c.call('px_GenerateKeyTyped', { session: e.s, mechanism: typed(ck.CKM_AES_KEY_GEN), template: aesTemplate({ CKA_SENSITIVE: F, CKA_EXTRACTABLE: F }, [ulong(ck.CKA_VALUE_LEN, 16)]) })),
    refused: ck.CKR_ATTRIBUTE_VALUE_INVALID,
  },
  {
    name: 'conflicting_attributes_patch / C_GenerateKeyPair: the fused templates conflict (public CKA_WRAP, private CKA_DECRYPT)',
    attach: [['C_GenerateKeyPair', 'conflicting_attributes_patch']],
    run: async (e) => rvOf(await e.c.call('C_GenerateKeyPair', {
      session: e.s, mechanism: mech(ck.CKM_EC_KEY_PAIR_GEN), ...ecPair([bool(ck.CKA_WRAP, T)], [bool(ck.CKA_DECRYPT, T), bool(ck.CKA_SENSITIVE, T)]),
    })),
    refused: ck.CKR_ATTRIBUTE_VALUE_INVALID,
  },
  {
    name: 'conflicting_attributes_patch / C_UnwrapKey: unwrapped as a wrap and decrypt key',
    attach: [['C_UnwrapKey', 'conflicting_attributes_patch']],
    run: async (e) => {
      const w = await generateAes(e, WRAP_ONLY);
      const blob = await wrap(e, w, await generateAes(e, TARGET));
      expect(blob.rv).toBe(ck.CKR_OK);
      return rvOf(await e.c.call('C_UnwrapKey', {
        session: e.s, mechanism: mech(ck.CKM_AES_KEY_WRAP), unwrappingKey: w, wrappedKey: blob.data, template: aesTemplate({ CKA_WRAP: T, CKA_DECRYPT: T }),
      }));
    },
    refused: ck.CKR_ATTRIBUTE_VALUE_INVALID,
  },
  {
    name: 'conflicting_attributes_patch / px_DeriveKeyTyped: derived as a wrap and decrypt key',
    attach: [['C_DeriveKey', 'conflicting_attributes_patch']],
    run: async (e) => {
      const base = await generateAes(e, { CKA_DERIVE: T, CKA_SENSITIVE: T });
      return rvOf(await e.c.call('px_DeriveKeyTyped', {
        session: e.s, mechanism: deriveParam, baseKey: base, template: aesTemplate({ CKA_WRAP: T, CKA_DECRYPT: T }, [ulong(ck.CKA_VALUE_LEN, 16)]),
      }));
    },
    refused: ck.CKR_ATTRIBUTE_VALUE_INVALID,
  },
  {
    name: 'conflicting_attributes_patch / C_SetAttributeValue: CKA_DECRYPT set on a wrap key',
    attach: [['C_SetAttributeValue', 'conflicting_attributes_patch']],
    run: async (e) => rvOf(await e.c.call('C_SetAttributeValue', { session: e.s, object: await generateAes(e, WRAP_ONLY), template: [bool(ck.CKA_DECRYPT, T)] })),
    refused: ck.CKR_ATTRIBUTE_VALUE_INVALID,
  },
  {
    name: 'conflicting_attributes_patch / C_CopyObject: a copy of a wrap key with CKA_DECRYPT',
    attach: [['C_CopyObject', 'conflicting_attributes_patch']],
    run: async (e) => rvOf(await e.c.call('C_CopyObject', { session: e.s, object: await generateAes(e, WRAP_ONLY), template: [bool(ck.CKA_DECRYPT, T)] })),
    refused: ck.CKR_ATTRIBUTE_VALUE_INVALID,
  },

  {
    // A CK_BBOOL is TRUE for any non-zero byte: the token reads 0x02 as TRUE, so the filter does too.
    name: 'conflicting_attributes_patch / C_GenerateKey: CKA_DECRYPT given as the byte 0x02',
    attach: [['C_GenerateKey', 'conflicting_attributes_patch']],
    run: async (e) => {
      const template = [...aesTemplate({ CKA_WRAP: T }, [ulong(ck.CKA_VALUE_LEN, 16)]), { type: ck.CKA_DECRYPT, value: Buffer.from([2]), valueLen: 1 }];
      const r = await e.c.call('C_GenerateKey', { session: e.s, mechanism: mech(ck.CKM_AES_KEY_GEN), template });
      if (r.rv === ck.CKR_OK) expect(await boolsOf(e, r.object, [ck.CKA_DECRYPT])).toEqual({ [ck.CKA_DECRYPT]: T });
      return r.rv;
    },
    refused: ck.CKR_ATTRIBUTE_VALUE_INVALID,
  },
  {
    name: 'conflicting_attributes_patch / px_GenerateKeyPairTyped: the private key is not sensitive and not extractable',
    attach: [['C_GenerateKeyPair', 'conflicting_attributes_patch']],
    run: async (e) => rvOf(await e.c.call('px_GenerateKeyPairTyped', {
      session: e.s, mechanism: typed(ck.CKM_EC_KEY_PAIR_GEN), ...ecPair([bool(ck.CKA_VERIFY, T)], [bool(ck.CKA_SIGN, T), bool(ck.CKA_SENSITIVE, F), bool(ck.CKA_EXTRACTABLE, F)]),
    })),
    refused: ck.CKR_ATTRIBUTE_VALUE_INVALID,
  },
  {
    name: 'conflicting_attributes_patch / px_UnwrapKeyTyped: unwrapped as an unwrap and encrypt key',
    attach: [['C_UnwrapKey', 'conflicting_attributes_patch']],
    run: async (e) => {
      const w = await generateAes(e, WRAP_ONLY);
      const blob = await wrap(e, w, await generateAes(e, TARGET));
      expect(blob.rv).toBe(ck.CKR_OK);
      return rvOf(await e.c.call('px_UnwrapKeyTyped', {
        session: e.s, mechanism: typed(ck.CKM_AES_KEY_WRAP), unwrappingKey: w, wrappedKey: blob.data, template: aesTemplate({ CKA_UNWRAP: T, CKA_ENCRYPT: T }),
      }));
    },
    refused: ck.CKR_ATTRIBUTE_VALUE_INVALID,
  },

  // conflicting_attributes_patch_on_existing_objects: a key created with conflicting attributes is not used.
  ...(
    [
      ['C_EncryptInit', (e: Env, k: number) => e.c.call('C_EncryptInit', { session: e.s, mechanism: mech(ck.CKM_AES_ECB), key: k })],
      ['C_DecryptInit', (e: Env, k: number) => e.c.call('C_DecryptInit', { session: e.s, mechanism: mech(ck.CKM_AES_ECB), key: k })],
      ['C_SignInit', (e: Env, k: number) => e.c.call('C_SignInit', { session: e.s, mechanism: mech(ck.CKM_AES_CMAC), key: k })],
      ['C_VerifyInit', (e: Env, k: number) => e.c.call('C_VerifyInit', { session: e.s, mechanism: mech(ck.CKM_AES_CMAC), key: k })],
      ['C_EncryptInit', (e: Env, k: number) => e.c.call('px_EncryptInitTyped', { session: e.s, mechanism: typed(ck.CKM_AES_ECB), key: k }), 'px_EncryptInitTyped'],
      ['C_SignInit', (e: Env, k: number) => e.c.call('px_SignInitTyped', { session: e.s, mechanism: typed(ck.CKM_AES_CMAC), key: k }), 'px_SignInitTyped'],
      ['C_DeriveKey', (e: Env, k: number) => e.c.call('px_DeriveKeyTyped', { session: e.s, mechanism: deriveParam, baseKey: k, template: aesTemplate({}, [ulong(ck.CKA_VALUE_LEN, 16)]) })],
      ['C_WrapKey', async (e: Env, k: number) => wrap(e, k, await generateAes(e, TARGET)), 'C_WrapKey (wrapping key)'],
      ['C_WrapKey', async (e: Env, k: number) => wrap(e, await generateAes(e, WRAP_ONLY), k), 'C_WrapKey (wrapped key)'],
      ['C_WrapKey', async (e: Env, k: number) => e.c.call('px_WrapKeyTyped', { session: e.s, mechanism: typed(ck.CKM_AES_KEY_WRAP), wrappingKey: await generateAes(e, WRAP_ONLY), key: k }), 'px_WrapKeyTyped (wrapped key)'],
      ['C_UnwrapKey', async (e: Env, k: number) => {
        const blob = await wrap(e, k, await generateAes(e, TARGET));
        expect(blob.rv).toBe(ck.CKR_OK);
        const other = await e.c.call('C_UnwrapKey', { session: e.s, mechanism: mech(ck.CKM_AES_KEY_WRAP), unwrappingKey: k, wrappedKey: blob.data, template: aesTemplate({}) });
        return other;
      }],
    ] as Array<[string, (e: Env, k: number) => Promise<number | { rv: number }>, string?]>
  ).map(([trigger, call, label]): Case => ({
    name: `conflicting_attributes_patch_on_existing_objects / ${label ?? trigger}: the key holds CKA_WRAP and CKA_DECRYPT`,
    attach: [[trigger, 'conflicting_attributes_patch_on_existing_objects']],
    run: async (e) => rvOf(await call(e, await generateAes(e, CONFLICTING))),
    refused: ck.CKR_OBJECT_HANDLE_INVALID,
  })),
  {
    // SoftHSM2 has no signature with recovery: the call reaches it and it answers CKR_FUNCTION_NOT_SUPPORTED.
    name: 'conflicting_attributes_patch_on_existing_objects / C_SignRecoverInit',
    attach: [['C_SignRecoverInit', 'conflicting_attributes_patch_on_existing_objects']],
    run: async (e) => rvOf(await e.c.call('C_SignRecoverInit', { session: e.s, mechanism: mech(ck.CKM_AES_CMAC), key: await generateAes(e, CONFLICTING) })),
    allowed: ck.CKR_FUNCTION_NOT_SUPPORTED,
    refused: ck.CKR_OBJECT_HANDLE_INVALID,
  },
  {
    name: 'conflicting_attributes_patch_on_existing_objects / C_VerifyRecoverInit',
    attach: [['C_VerifyRecoverInit', 'conflicting_attributes_patch_on_existing_objects']],
    run: async (e) => rvOf(await e.c.call('C_VerifyRecoverInit', { session: e.s, mechanism: mech(ck.CKM_AES_CMAC), key: await generateAes(e, CONFLICTING) })),
    allowed: ck.CKR_FUNCTION_NOT_SUPPORTED,
    refused: ck.CKR_OBJECT_HANDLE_INVALID,
  },
  {
    name: 'conflicting_attributes_patch_on_existing_objects / C_DigestKey: a wrap key that is not sensitive',
    attach: [['C_DigestKey', 'conflicting_attributes_patch_on_existing_objects']],
    run: async (e) => {
      const k = await generateAes(e, { CKA_WRAP: T, CKA_SENSITIVE: F, CKA_EXTRACTABLE: T });
      expect(await e.c.call('C_DigestInit', { session: e.s, mechanism: mech(ck.CKM_SHA256) })).toBe(ck.CKR_OK);
      return rvOf(await e.c.call('C_DigestKey', { session: e.s, key: k }));
    },
    refused: ck.CKR_OBJECT_HANDLE_INVALID,
  },

  // sticky_attributes_patch
  {
    name: 'sticky_attributes_patch / C_SetAttributeValue: CKA_WRAP cleared',
    attach: [['C_SetAttributeValue', 'sticky_attributes_patch']],
    run: async (e) => rvOf(await e.c.call('C_SetAttributeValue', { session: e.s, object: await generateAes(e, WRAP_ONLY), template: [bool(ck.CKA_WRAP, F)] })),
    refused: ck.CKR_ATTRIBUTE_VALUE_INVALID,
  },
  {
    name: 'sticky_attributes_patch / C_SetAttributeValue: CKA_ENCRYPT cleared',
    attach: [['C_SetAttributeValue', 'sticky_attributes_patch']],
    run: async (e) => rvOf(await e.c.call('C_SetAttributeValue', { session: e.s, object: await generateAes(e, TARGET), template: [bool(ck.CKA_ENCRYPT, F)] })),
    refused: ck.CKR_ATTRIBUTE_VALUE_INVALID,
  },
  {
    // SoftHSM2 itself refuses CKA_SENSITIVE TRUE -> FALSE (CKR_ATTRIBUTE_READ_ONLY); the filter answers before it.
    name: 'sticky_attributes_patch / C_SetAttributeValue: CKA_SENSITIVE cleared',
    attach: [['C_SetAttributeValue', 'sticky_attributes_patch']],
    run: async (e) => rvOf(await e.c.call('C_SetAttributeValue', { session: e.s, object: await generateAes(e, TARGET), template: [bool(ck.CKA_SENSITIVE, F)] })),
    allowed: ck.CKR_ATTRIBUTE_READ_ONLY,
    refused: ck.CKR_ATTRIBUTE_VALUE_INVALID,
  },
  {
    // SoftHSM2 itself refuses CKA_EXTRACTABLE FALSE -> TRUE (CKR_ATTRIBUTE_READ_ONLY); the filter answers before it.
    name: 'sticky_attributes_patch / C_SetAttributeValue: CKA_EXTRACTABLE TRUE -> FALSE -> TRUE',
    attach: [['C_SetAttributeValue', 'sticky_attributes_patch']],
    run: async (e) => {
      const k = await generateAes(e, TARGET);
      expect(await e.c.call('C_SetAttributeValue', { session: e.s, object: k, template: [bool(ck.CKA_EXTRACTABLE, F)] })).toBe(ck.CKR_OK);
      return rvOf(await e.c.call('C_SetAttributeValue', { session: e.s, object: k, template: [bool(ck.CKA_EXTRACTABLE, T)] }));
    },
    allowed: ck.CKR_ATTRIBUTE_READ_ONLY,
    refused: ck.CKR_ATTRIBUTE_VALUE_INVALID,
  },
  {
    name: 'sticky_attributes_patch / C_CopyObject: a copy of a wrap key without CKA_WRAP',
    attach: [['C_CopyObject', 'sticky_attributes_patch']],
    run: async (e) => rvOf(await e.c.call('C_CopyObject', { session: e.s, object: await generateAes(e, WRAP_ONLY), template: [bool(ck.CKA_WRAP, F)] })),
    refused: ck.CKR_ATTRIBUTE_VALUE_INVALID,
  },

  // secure_templates_patch
  {
    name: 'secure_templates_patch / C_GenerateKey: a key both for wrapping and encryption',
    attach: [['C_GenerateKey', 'secure_templates_patch']],
    run: async (e) => rvOf(await e.c.call('C_GenerateKey', { session: e.s, mechanism: mech(ck.CKM_AES_KEY_GEN), template: aesTemplate({ CKA_WRAP: T, CKA_ENCRYPT: T, CKA_SENSITIVE: T }, [ulong(ck.CKA_VALUE_LEN, 16)]) })),
    refused: ck.CKR_TEMPLATE_INCONSISTENT,
  },
  {
    name: 'secure_templates_patch / px_GenerateKeyTyped: a key that is not sensitive',
    attach: [['C_GenerateKey', 'secure_templates_patch']],
    run: async (e) => rvOf(await e.c.call('px_GenerateKeyTyped', { session: e.s, mechanism: typed(ck.CKM_AES_KEY_GEN), template: aesTemplate({ CKA_WRAP: T, CKA_ENCRYPT: F, CKA_DECRYPT: F, CKA_SENSITIVE: F }, [ulong(ck.CKA_VALUE_LEN, 16)]) })),
    refused: ck.CKR_TEMPLATE_INCONSISTENT,
  },
  {
    name: 'secure_templates_patch / C_GenerateKeyPair: a private key that is not sensitive',
    attach: [['C_GenerateKeyPair', 'secure_templates_patch']],
    run: async (e) => rvOf(await e.c.call('C_GenerateKeyPair', { session: e.s, mechanism: mech(ck.CKM_EC_KEY_PAIR_GEN), ...ecPair([bool(ck.CKA_VERIFY, T)], [bool(ck.CKA_SIGN, T), bool(ck.CKA_SENSITIVE, F)]) })),
    refused: ck.CKR_TEMPLATE_INCONSISTENT,
  },
  {
    name: 'secure_templates_patch / C_CreateObject: an imported key that decrypts',
    attach: [['C_CreateObject', 'secure_templates_patch']],
    run: async (e) => rvOf(await e.c.call('C_CreateObject', { session: e.s, template: aesTemplate({ CKA_DECRYPT: T, CKA_SENSITIVE: T }, [bytes(ck.CKA_VALUE, KNOWN)]) })),
    refused: ck.CKR_TEMPLATE_INCONSISTENT,
  },
  {
    name: 'secure_templates_patch / C_CopyObject: a copy of a key that decrypts',
    attach: [['C_CopyObject', 'secure_templates_patch']],
    run: async (e) => rvOf(await e.c.call('C_CopyObject', { session: e.s, object: await generateAes(e, { CKA_ENCRYPT: T, CKA_DECRYPT: F, CKA_SENSITIVE: T }), template: [bool(ck.CKA_DECRYPT, T)] })),
    refused: ck.CKR_TEMPLATE_INCONSISTENT,
  },
  {
    name: 'secure_templates_patch / C_UnwrapKey: unwrapped as a decryption key',
    attach: [['C_UnwrapKey', 'secure_templates_patch']],
    run: async (e) => {
      const w = await generateAes(e, WRAP_ONLY);
      const blob = await wrap(e, w, await generateAes(e, TARGET));
      expect(blob.rv).toBe(ck.CKR_OK);
      return rvOf(await e.c.call('C_UnwrapKey', { session: e.s, mechanism: mech(ck.CKM_AES_KEY_WRAP), unwrappingKey: w, wrappedKey: blob.data, template: aesTemplate({ CKA_DECRYPT: T, CKA_SENSITIVE: T }) }));
    },
    refused: ck.CKR_TEMPLATE_INCONSISTENT,
  },
  {
    name: 'secure_templates_patch / px_DeriveKeyTyped: derived as a wrapping key',
    attach: [['C_DeriveKey', 'secure_templates_patch']],
    run: async (e) => rvOf(await e.c.call('px_DeriveKeyTyped', {
      session: e.s, mechanism: deriveParam, baseKey: await generateAes(e, { CKA_DERIVE: T, CKA_SENSITIVE: T }), template: aesTemplate({ CKA_WRAP: T, CKA_SENSITIVE: T }, [ulong(ck.CKA_VALUE_LEN, 16)]),
    })),
    refused: ck.CKR_TEMPLATE_INCONSISTENT,
  },
  {
    name: 'secure_templates_patch / C_SetAttributeValue: CKA_ENCRYPT of a key cleared',
    attach: [['C_SetAttributeValue', 'secure_templates_patch']],
    run: async (e) => rvOf(await e.c.call('C_SetAttributeValue', { session: e.s, object: await generateAes(e, { CKA_ENCRYPT: T, CKA_WRAP: F, CKA_UNWRAP: F, CKA_SENSITIVE: T }), template: [bool(ck.CKA_ENCRYPT, F)] })),
    refused: ck.CKR_ATTRIBUTE_READ_ONLY,
  },

  // c_Login_hook: PIN "1234" passes, any other is answered CKR_PIN_LOCKED before the token sees it.
  {
    name: 'c_Login_hook / C_Login with another PIN than 1234',
    attach: [['C_Login', 'c_Login_hook']],
    run: async (e) => {
      expect(await e.c.call('C_Logout', { session: e.s })).toBe(ck.CKR_OK);
      return rvOf(await e.c.call('C_Login', { session: e.s, userType: ck.CKU_USER, pin: Buffer.from('4321') }));
    },
    allowed: ck.CKR_PIN_INCORRECT,
    refused: ck.CKR_PIN_LOCKED,
  },

  // do_segregate_usage widens the conflicting, sticky and secure-template sets: allowed by the action alone, refused with segregation.
  {
    name: 'do_segregate_usage + conflicting_attributes_patch / C_GenerateKey: a key that encrypts and signs',
    attach: [['C_Initialize', 'do_segregate_usage'], ['C_GenerateKey', 'conflicting_attributes_patch']],
    without: [['C_GenerateKey', 'conflicting_attributes_patch']],
    run: async (e) => rvOf(await e.c.call('C_GenerateKey', { session: e.s, mechanism: mech(ck.CKM_AES_KEY_GEN), template: aesTemplate({ CKA_ENCRYPT: T, CKA_SIGN: T }, [ulong(ck.CKA_VALUE_LEN, 16)]) })),
    refused: ck.CKR_ATTRIBUTE_VALUE_INVALID,
  },
  {
    name: 'do_segregate_usage + sticky_attributes_patch / C_SetAttributeValue: CKA_SIGN cleared',
    attach: [['C_Initialize', 'do_segregate_usage'], ['C_SetAttributeValue', 'sticky_attributes_patch']],
    without: [['C_SetAttributeValue', 'sticky_attributes_patch']],
    run: async (e) => rvOf(await e.c.call('C_SetAttributeValue', { session: e.s, object: await generateAes(e, { CKA_SIGN: T }), template: [bool(ck.CKA_SIGN, F)] })),
    refused: ck.CKR_ATTRIBUTE_VALUE_INVALID,
  },
  {
    name: 'do_segregate_usage + secure_templates_patch / C_GenerateKey: a key that encrypts and signs',
    attach: [['C_Initialize', 'do_segregate_usage'], ['C_GenerateKey', 'secure_templates_patch']],
    without: [['C_GenerateKey', 'secure_templates_patch']],
    run: async (e) => rvOf(await e.c.call('C_GenerateKey', { session: e.s, mechanism: mech(ck.CKM_AES_KEY_GEN), template: aesTemplate({ CKA_ENCRYPT: T, CKA_SIGN: T, CKA_WRAP: F, CKA_UNWRAP: F, CKA_SENSITIVE: T }, [ulong(ck.CKA_VALUE_LEN, 16)]) })),
    refused: ck.CKR_TEMPLATE_INCONSISTENT,
  },
  {
    name: 'do_segregate_usage + conflicting_attributes_patch_on_existing_objects / C_SignInit: the key encrypts and signs',
    attach: [['C_Initialize', 'do_segregate_usage'], ['C_SignInit', 'conflicting_attributes_patch_on_existing_objects']],
    without: [['C_SignInit', 'conflicting_attributes_patch_on_existing_objects']],
    run: async (e) => rvOf(await e.c.call('C_SignInit', { session: e.s, mechanism: mech(ck.CKM_AES_CMAC), key: await generateAes(e, { CKA_ENCRYPT: T, CKA_SIGN: T, CKA_DECRYPT: F, CKA_WRAP: F, CKA_UNWRAP: F, CKA_SENSITIVE: T }) })),
    refused: ck.CKR_OBJECT_HANDLE_INVALID,
  },
];

describe.each(cases)('$name', (k) => {
  test(`goes through without the action (${k.allowed === undefined ? 'CKR_OK' : `SoftHSM2 answers 0x${k.allowed.toString(16)}`})`, async () => {
    const e = await open(k.without ? post(k.without) : '');
    expect(await k.run(e)).toBe(k.allowed ?? ck.CKR_OK);
  });
  test(`is answered 0x${k.refused.toString(16)} with it`, async () => {
    const e = await open(post(k.attach));
    expect(await k.run(e)).toBe(k.refused);
  });
});

// secure_templates_patch lets the templates of its secure set through, and objects that are not keys.
const secureAccepted: Array<[string, string, (e: Env) => Promise<unknown>]> = [
  ['C_GenerateKey', 'a wrap/unwrap key', (e) => generateAes(e, { CKA_WRAP: T, CKA_UNWRAP: T, CKA_ENCRYPT: F, CKA_DECRYPT: F, CKA_SENSITIVE: T })],
  ['C_GenerateKey', 'an encrypt/decrypt key', (e) => generateAes(e, { CKA_ENCRYPT: T, CKA_DECRYPT: T, CKA_WRAP: F, CKA_UNWRAP: F, CKA_SENSITIVE: T })],
  ['C_CreateObject', 'an imported encryption key', (e) => importAes(e, { CKA_ENCRYPT: T, CKA_WRAP: F, CKA_DECRYPT: F, CKA_SENSITIVE: T })],
  ['C_CreateObject', 'a data object', async (e) => {
    const r = await e.c.call('C_CreateObject', { session: e.s, template: [ulong(ck.CKA_CLASS, ck.CKO_DATA), bool(ck.CKA_TOKEN, F), bytes(ck.CKA_LABEL, 'd')] });
    expect(r.rv).toBe(ck.CKR_OK);
  }],
  ['C_CopyObject', 'a copy of a data object', async (e) => {
    const r = await e.c.call('C_CreateObject', { session: e.s, template: [ulong(ck.CKA_CLASS, ck.CKO_DATA), bool(ck.CKA_TOKEN, F)] });
    expect((await e.c.call('C_CopyObject', { session: e.s, object: r.object, template: [bytes(ck.CKA_LABEL, 'copy')] })).rv).toBe(ck.CKR_OK);
  }],
  ['C_SetAttributeValue', 'a new label on a key', async (e) => {
    const k = await generateAes(e, { CKA_ENCRYPT: T, CKA_DECRYPT: T, CKA_WRAP: F, CKA_UNWRAP: F, CKA_SENSITIVE: T });
    expect(await e.c.call('C_SetAttributeValue', { session: e.s, object: k, template: [bytes(ck.CKA_LABEL, 'renamed'), bool(ck.CKA_ENCRYPT, T)] })).toBe(ck.CKR_OK);
  }],
];
test.each(secureAccepted)('secure_templates_patch / %s: %s is accepted', async (trigger, _what, make) => {
  await make(await open(post([[trigger, 'secure_templates_patch']])));
});

// ---- sanitize_creation_templates_patch: what the template leaves out gets Caml Crush's safe value ----

const SECRET_DEFAULTS = {
  CKA_WRAP: F, CKA_UNWRAP: F, CKA_ENCRYPT: F, CKA_DECRYPT: F, CKA_SIGN: F, CKA_VERIFY: F, CKA_SENSITIVE: T, CKA_EXTRACTABLE: F, CKA_DERIVE: F, CKA_PRIVATE: T,
};
const PRIVATE_DEFAULTS = { CKA_UNWRAP: F, CKA_DECRYPT: F, CKA_SIGN: F, CKA_SENSITIVE: T, CKA_EXTRACTABLE: F, CKA_DERIVE: F, CKA_PRIVATE: T };
const PUBLIC_DEFAULTS = { CKA_WRAP: F, CKA_ENCRYPT: F, CKA_VERIFY: F, CKA_DERIVE: F };

const named = (flags: Record<string, boolean>): Record<number, boolean> =>
  Object.fromEntries(Object.entries(flags).map(([k, v]) => [ck[k as keyof typeof ck] as number, v]));

interface SanitizeCase {
  name: string;
  trigger: string;
  /** Creates the object(s) under test; the handles to look at, with the values each must have when sanitized. */
  make(e: Env): Promise<Array<[number, Record<string, boolean>]>>;
}

async function unwrapped(e: Env, template: px_attribute[]): Promise<number> {
  const w = await generateAes(e, WRAP_ONLY);
  const blob = await wrap(e, w, await generateAes(e, TARGET));
  expect(blob.rv).toBe(ck.CKR_OK);
  const r = await e.c.call('C_UnwrapKey', { session: e.s, mechanism: mech(ck.CKM_AES_KEY_WRAP), unwrappingKey: w, wrappedKey: blob.data, template });
  expect(r.rv).toBe(ck.CKR_OK);
  return r.object;
}

const sanitizeCases: SanitizeCase[] = [
  {
    name: 'C_GenerateKey: secret key defaults, the named CKA_ENCRYPT kept',
    trigger: 'C_GenerateKey',
    make: async (e) => [[await generateAes(e, { CKA_ENCRYPT: T }), { ...SECRET_DEFAULTS, CKA_ENCRYPT: T }]],
  },
  {
    name: 'px_GenerateKeyTyped: secret key defaults',
    trigger: 'C_GenerateKey',
    make: async (e) => {
      const r = await e.c.call('px_GenerateKeyTyped', { session: e.s, mechanism: typed(ck.CKM_AES_KEY_GEN), template: aesTemplate({}, [ulong(ck.CKA_VALUE_LEN, 16)]) });
      expect(r.rv).toBe(ck.CKR_OK);
      return [[r.object, SECRET_DEFAULTS]];
    },
  },
  {
    name: 'C_GenerateKeyPair: public and private key defaults',
    trigger: 'C_GenerateKeyPair',
    make: async (e) => {
      const r = await e.c.call('C_GenerateKeyPair', { session: e.s, mechanism: mech(ck.CKM_EC_KEY_PAIR_GEN), ...ecPair([], []) });
      expect(r.rv).toBe(ck.CKR_OK);
      return [[r.publicKey, PUBLIC_DEFAULTS], [r.privateKey, PRIVATE_DEFAULTS]];
    },
  },
  {
    name: 'C_CreateObject: defaults of the template\'s class',
    trigger: 'C_CreateObject',
    make: async (e) => [[await importAes(e, {}), SECRET_DEFAULTS]],
  },
  {
    name: 'C_UnwrapKey: defaults of the template\'s class',
    trigger: 'C_UnwrapKey',
    make: async (e) => [[await unwrapped(e, aesTemplate({})), SECRET_DEFAULTS]],
  },
  {
    name: 'px_DeriveKeyTyped: defaults of the template\'s class',
    trigger: 'C_DeriveKey',
    make: async (e) => {
      const r = await e.c.call('px_DeriveKeyTyped', { session: e.s, mechanism: deriveParam, baseKey: await generateAes(e, { CKA_DERIVE: T }), template: aesTemplate({}, [ulong(ck.CKA_VALUE_LEN, 16)]) });
      expect(r.rv).toBe(ck.CKR_OK);
      return [[r.object, SECRET_DEFAULTS]];
    },
  },
];

describe.each(sanitizeCases)('sanitize_creation_templates_patch / $name', (k) => {
  const values = async (e: Env, objects: Array<[number, Record<string, boolean>]>) =>
    Promise.all(objects.map(async ([h, want]) => ({ got: await boolsOf(e, h, Object.keys(named(want)).map(Number)), want: named(want) })));
  test('without the action the token\'s defaults apply', async () => {
    const e = await open('');
    for (const { got, want } of await values(e, await k.make(e))) expect(got).not.toEqual(want);
  });
  test('with it the template is completed', async () => {
    const e = await open(post([[k.trigger, 'sanitize_creation_templates_patch']]));
    for (const { got, want } of await values(e, await k.make(e))) expect(got).toEqual(want);
  });
});

test('sanitize_creation_templates_patch / C_CopyObject is accepted and a copy keeps the source\'s values', async () => {
  const e = await open(post([['C_CopyObject', 'sanitize_creation_templates_patch']]));
  const k = await generateAes(e, { CKA_ENCRYPT: T, CKA_SENSITIVE: F });
  const r = await e.c.call('C_CopyObject', { session: e.s, object: k, template: [] });
  expect(r.rv).toBe(ck.CKR_OK);
  expect(await boolsOf(e, r.object, [ck.CKA_ENCRYPT, ck.CKA_SENSITIVE])).toEqual({ [ck.CKA_ENCRYPT]: T, [ck.CKA_SENSITIVE]: F });
});

test('sanitize_creation_templates_patch / a data object is created as asked', async () => {
  const e = await open(post([['C_CreateObject', 'sanitize_creation_templates_patch']]));
  const r = await e.c.call('C_CreateObject', { session: e.s, template: [ulong(ck.CKA_CLASS, ck.CKO_DATA), bool(ck.CKA_TOKEN, F), bool(ck.CKA_PRIVATE, F), bytes(ck.CKA_LABEL, 'd')] });
  expect(r.rv).toBe(ck.CKR_OK);
  expect(await boolsOf(e, r.object, [ck.CKA_PRIVATE])).toEqual({ [ck.CKA_PRIVATE]: F });
});

// ---- conflicting_attributes_patch_on_existing_objects on C_FindObjects: conflicting objects are not found ----

test('conflicting_attributes_patch_on_existing_objects / C_FindObjects leaves out conflicting keys', async () => {
  const find = async (e: Env): Promise<number[]> => {
    expect(await e.c.call('C_FindObjectsInit', { session: e.s, template: [bytes(ck.CKA_LABEL, 'found')] })).toBe(ck.CKR_OK);
    const r = await e.c.call('C_FindObjects', { session: e.s, maxObjectCount: 16 });
    expect(r.rv).toBe(ck.CKR_OK);
    expect(await e.c.call('C_FindObjectsFinal', { session: e.s })).toBe(ck.CKR_OK);
    return [...r.objects].sort((a, b) => a - b);
  };
  let e = await open('');
  let bad = await generateAes(e, CONFLICTING, 'found');
  let good = await generateAes(e, TARGET, 'found');
  expect(await find(e)).toEqual([bad, good].sort((a, b) => a - b));
  stack!.finalize();
  e = await open(post([['C_FindObjects', 'conflicting_attributes_patch_on_existing_objects']]));
  bad = await generateAes(e, CONFLICTING, 'found');
  good = await generateAes(e, TARGET, 'found');
  const also = await generateAes(e, WRAP_ONLY, 'found');
  expect(await find(e)).toEqual([good, also].sort((a, b) => a - b));
  expect(bad).not.toBe(good);
});

// ---- sample hooks: accepted, and they change nothing else ----

test('identity and c_Initialize_hook let every call through; c_Login_hook lets PIN 1234 through', async () => {
  const e = await open(post([['C_Initialize', 'c_Initialize_hook'], ['C_Initialize', 'identity'], ['C_CloseSession', 'identity'], ['C_GenerateKey', 'identity'], ['C_Login', 'c_Login_hook']]));
  await generateAes(e, TARGET);
  expect(await e.c.call('C_Logout', { session: e.s })).toBe(ck.CKR_OK);
  expect(await e.c.call('C_Login', { session: e.s, userType: ck.CKU_USER, pin: Buffer.from(USER_PIN) })).toBe(ck.CKR_OK);
  expect(await e.c.call('C_CloseSession', { session: e.s })).toBe(ck.CKR_OK);
});

test('c_Login_hook is refused on a call it cannot read (its arguments are C_Login\'s)', () => {
  const file = path.join(dir, 'misplaced.conf');
  fs.writeFileSync(file, `modules = [("m", "${modulePath}")]\n${post([['C_Logout', 'c_Login_hook']])}\n`);
  expect(() => startInProcess([{ alias: 'm', path: modulePath }], undefined, { filterFile: file })).toThrow(/c_Login_hook.*C_Logout/);
});

// ---- Caml Crush's key extraction attacks, with the patches of its "patchset 1" that are in these files ----

const PATCHSET = post([
  ...['C_CreateObject', 'C_CopyObject', 'C_UnwrapKey', 'C_GenerateKey', 'C_GenerateKeyPair', 'C_DeriveKey', 'C_SetAttributeValue'].map(
    (f): [string, string] => [f, 'conflicting_attributes_patch'],
  ),
  ...['C_EncryptInit', 'C_DecryptInit', 'C_SignInit', 'C_VerifyInit', 'C_DeriveKey', 'C_DigestKey', 'C_WrapKey', 'C_UnwrapKey', 'C_FindObjects'].map(
    (f): [string, string] => [f, 'conflicting_attributes_patch_on_existing_objects'],
  ),
  ['C_CopyObject', 'sticky_attributes_patch'],
  ['C_SetAttributeValue', 'sticky_attributes_patch'],
]);

const SECRET = Buffer.from('f0e1d2c3b4a5968778695a4b3c2d1e0f', 'hex');

/** The target: a sensitive, extractable AES key of value SECRET. */
async function target(e: Env): Promise<number> {
  const r = await e.c.call('C_CreateObject', { session: e.s, template: aesTemplate({ CKA_SENSITIVE: T, CKA_EXTRACTABLE: T }, [bytes(ck.CKA_VALUE, SECRET)]) });
  expect(r.rv).toBe(ck.CKR_OK);
  return r.object;
}

/** RFC 3394 unwrap in software, with a key the attacker knows. */
function unwrapKnown(blob: Buffer): Buffer {
  const d = createDecipheriv('id-aes128-wrap', KNOWN, Buffer.from('a6a6a6a6a6a6a6a6', 'hex'));
  return Buffer.concat([d.update(blob), d.final()]);
}

/** Wraps the target with a key of known value and unwraps the blob in software: the secret, or the CK_RV that stopped it. */
async function extractWith(e: Env, wrappingKey: number): Promise<Buffer | number> {
  const t = await target(e);
  const blob = await wrap(e, wrappingKey, t);
  return blob.rv === ck.CKR_OK ? unwrapKnown(blob.data) : blob.rv;
}

interface Attack {
  name: string;
  /** The secret, or the CK_RV of the call that refused. */
  run(e: Env): Promise<Buffer | number>;
  /** CK_RV with the patches. */
  blocked: number;
}

const attacks: Attack[] = [
  {
    name: 'a known-value key imported with CKA_WRAP wraps the target (it was never sensitive)',
    run: async (e) => extractWith(e, await importAes(e, { CKA_WRAP: T, CKA_SENSITIVE: T })),
    blocked: ck.CKR_OBJECT_HANDLE_INVALID,
  },
  {
    name: 'a known-value key imported without rights gets CKA_WRAP, then wraps the target',
    run: async (e) => {
      const w = await importAes(e, { CKA_WRAP: F, CKA_SENSITIVE: T });
      const rv = await e.c.call('C_SetAttributeValue', { session: e.s, object: w, template: [bool(ck.CKA_WRAP, T)] });
      return rv === ck.CKR_OK ? extractWith(e, w) : rv;
    },
    blocked: ck.CKR_ATTRIBUTE_VALUE_INVALID,
  },
  {
    name: 'a wrap key gets CKA_DECRYPT with CKA_WRAP cleared in the same call',
    run: async (e) => {
      const w = await generateAes(e, WRAP_ONLY);
      const rv = await e.c.call('C_SetAttributeValue', { session: e.s, object: w, template: [bool(ck.CKA_WRAP, F), bool(ck.CKA_DECRYPT, T)] });
      return rv === ck.CKR_OK ? SECRET : rv;
    },
    blocked: ck.CKR_ATTRIBUTE_VALUE_INVALID,
  },
  {
    name: 'a wrap key has CKA_WRAP cleared, then gets CKA_DECRYPT',
    run: async (e) => {
      const w = await generateAes(e, WRAP_ONLY);
      let rv = await e.c.call('C_SetAttributeValue', { session: e.s, object: w, template: [bool(ck.CKA_WRAP, F)] });
      if (rv === ck.CKR_OK) rv = await e.c.call('C_SetAttributeValue', { session: e.s, object: w, template: [bool(ck.CKA_DECRYPT, T)] });
      return rv === ck.CKR_OK ? SECRET : rv;
    },
    blocked: ck.CKR_ATTRIBUTE_VALUE_INVALID,
  },
  {
    name: 'a copy of a wrap key that also decrypts',
    run: async (e) => {
      const r = await e.c.call('C_CopyObject', { session: e.s, object: await generateAes(e, WRAP_ONLY), template: [bool(ck.CKA_DECRYPT, T)] });
      return r.rv === ck.CKR_OK ? SECRET : r.rv;
    },
    blocked: ck.CKR_ATTRIBUTE_VALUE_INVALID,
  },
];

describe.each(attacks)('attack: $name', (k) => {
  test('extracts the secret without the patches', async () => {
    expect(await k.run(await open(''))).toEqual(SECRET);
  });
  test(`is stopped with 0x${k.blocked.toString(16)} by them`, async () => {
    expect(await k.run(await open(PATCHSET))).toBe(k.blocked);
  });
});

// ---- the use-path check answers from the cache without a promise ----

/**
 * In a child process on dist/ (async_hooks counts every promise of the
 * process): C_SignInit + C_Sign with conflicting_attributes_patch_on_existing_objects
 * on C_SignInit, v3 and typed, twice; the promises each call's dispatch makes.
 */
const SIGN_PROBE = `
const FRAMED_REPLY_PREFIX = Number(process.env.PREFIX);
const path = require('path');
const { createHook } = require('async_hooks');
const dist = (f) => require(path.join(process.env.ROOT, 'dist', f));
const rpc = dist('src/generated/pkcs11_rpc.js');
const { ck } = dist('src/pkcs11/constants.js');
const { createPkcs11Stack } = dist('src/server/serve.js');
const settings = { listen: [], modules: [{ alias: 'm', path: process.env.MODULE }], defaultAlias: 'm', trace: false, workers: 0, maxRecordSize: 1 << 20, filterFile: process.env.FILTER };
const stack = createPkcs11Stack(settings, () => undefined, 0);
const d = stack.createDispatcher({ id: 1, transport: 'unix', remote: 'probe' });
const defOf = (name) => rpc.PROCEDURES.find((x) => x.name === name);
const header = (def) => ({ xid: 9, rpcvers: 2, prog: rpc.PKCS11_PROG, vers: rpc.PKCS11_V3, proc: def.proc, credFlavor: 0, cred: Buffer.alloc(0), verfFlavor: 0 });
const decode = (def, o) => rpc.xdrDecode(def.ret, o.frame.subarray(FRAMED_REPLY_PREFIX));
const call = async (name, args) => decode(defOf(name), await d.handleCall(header(defOf(name)), args === undefined ? Buffer.alloc(0) : rpc.xdrEncode(defOf(name).args, args)));
const ul = (t, v) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); return { type: t, value: b, valueLen: 8 }; };
const bool = (t, v) => ({ type: t, value: Buffer.from([v ? 1 : 0]), valueLen: 1 });
(async () => {
  await call('C_SetupArch', { arch: 1 });
  await call('C_LoadModule', { alias: Buffer.from('m') });
  await call('C_Initialize', undefined);
  let slot = -1;
  for (const id of (await call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList) {
    if (((await call('C_GetTokenInfo', { slotID: id })).info.flags & ck.CKF_TOKEN_INITIALIZED) !== 0) slot = id;
  }
  const session = (await call('C_OpenSession', { slotID: slot, flags: ck.CKF_SERIAL_SESSION | ck.CKF_RW_SESSION })).session;
  await call('C_Login', { session, userType: ck.CKU_USER, pin: Buffer.from(process.env.PIN) });
  const pair = await call('C_GenerateKeyPair', {
    session, mechanism: { mechanism: ck.CKM_EC_KEY_PAIR_GEN, parameter: Buffer.alloc(0) },
    publicKeyTemplate: [ul(ck.CKA_CLASS, ck.CKO_PUBLIC_KEY), bool(ck.CKA_TOKEN, false), bool(ck.CKA_VERIFY, true), { type: ck.CKA_EC_PARAMS, value: Buffer.from('06082a8648ce3d030107', 'hex'), valueLen: 10 }],
    privateKeyTemplate: [ul(ck.CKA_CLASS, ck.CKO_PRIVATE_KEY), bool(ck.CKA_TOKEN, false), bool(ck.CKA_SIGN, true), bool(ck.CKA_SENSITIVE, true)],
  });
  const digest = Buffer.alloc(32, 5);
  const inits = [
    ['C_SignInit', { session, mechanism: { mechanism: ck.CKM_ECDSA, parameter: Buffer.alloc(0) }, key: pair.privateKey }],
    ['px_SignInitTyped', { session, mechanism: { mechanism: ck.CKM_ECDSA, param: { tag: 1 } }, key: pair.privateKey }],
  ].map(([n, a]) => [defOf(n), rpc.xdrEncode(defOf(n).args, a)]);
  const sign = [defOf('C_Sign'), rpc.xdrEncode(defOf('C_Sign').args, { session, data: digest })];
  let promises = 0;
  const hook = createHook({ init: (_id, type) => { if (type === 'PROMISE') promises += 1; } });
  const rounds = [];
  for (let round = 0; round < 2; round++) {
    const seen = [];
    for (const [def, a] of inits) {
      for (const [cd, ca] of [[def, a], sign]) {
        promises = 0;
        hook.enable();
        const o = d.handleCall(header(cd), ca);
        hook.disable();
        const r = decode(cd, await o);
        seen.push({ call: cd.name, promises, rv: typeof r === 'number' ? r : r.rv });
      }
    }
    rounds.push(seen);
  }
  await d.close();
  stack.finalize();
  process.stdout.write(JSON.stringify({ rv: pair.rv, rounds }));
})().catch((e) => { process.stderr.write(String(e && e.stack)); process.exit(1); });
`;

test('conflicting_attributes_patch_on_existing_objects on C_SignInit checks the key without a promise, read or cached (v3 and typed)', () => {
  const file = path.join(dir, 'probe.conf');
  fs.writeFileSync(file, `modules = [("m", "${SOFTHSM_MODULE}")]\n${post([['C_SignInit', 'conflicting_attributes_patch_on_existing_objects']])}\n`);
  const out = execFileSync(process.execPath, ['-e', SIGN_PROBE], {
    env: { ...store.env, ROOT: path.resolve(__dirname, '../..'), MODULE: SOFTHSM_MODULE, PIN: USER_PIN, FILTER: file, PREFIX: String(FRAMED_REPLY_PREFIX_SIZE) },
  });
  const r = JSON.parse(out.toString()) as { rv: number; rounds: Array<Array<{ call: string; promises: number; rv: number }>> };
  expect(r.rv).toBe(ck.CKR_OK);
  // Round 1 reads the key from the token (a synchronous module call), round 2 from the cache. C_Sign goes
  // to the backend's pool whatever the policy (its promises are the backend's, not the filter's).
  for (const round of r.rounds) {
    expect(round.map((c) => c.rv)).toEqual([ck.CKR_OK, ck.CKR_OK, ck.CKR_OK, ck.CKR_OK]);
    expect(round.filter((c) => c.call !== 'C_Sign')).toEqual([
      { call: 'C_SignInit', promises: 0, rv: ck.CKR_OK },
      { call: 'px_SignInitTyped', promises: 0, rv: ck.CKR_OK },
    ]);
  }
});

// ---- the same calls through Caml Crush's daemon (Debian's caml-crush-server) and ours, same filter.conf ----

/** Debian's patchset 1 restricted to the actions of these files. */
const COMPAT_RULES = post([
  ...['C_EncryptInit', 'C_DecryptInit', 'C_SignInit', 'C_SignRecoverInit', 'C_VerifyInit', 'C_VerifyRecoverInit', 'C_DeriveKey', 'C_DigestKey', 'C_WrapKey', 'C_UnwrapKey', 'C_FindObjects'].map(
    (f): [string, string] => [f, 'conflicting_attributes_patch_on_existing_objects'],
  ),
  ...['C_CreateObject', 'C_CopyObject', 'C_UnwrapKey', 'C_GenerateKey', 'C_GenerateKeyPair', 'C_DeriveKey', 'C_SetAttributeValue'].map(
    (f): [string, string] => [f, 'conflicting_attributes_patch'],
  ),
  ['C_CopyObject', 'sticky_attributes_patch'],
  ['C_SetAttributeValue', 'sticky_attributes_patch'],
  ...['C_CreateObject', 'C_CopyObject', 'C_GenerateKey', 'C_GenerateKeyPair', 'C_DeriveKey', 'C_UnwrapKey'].map(
    (f): [string, string] => [f, 'sanitize_creation_templates_patch'],
  ),
]);

const CC_CLIENT = '/usr/lib/x86_64-linux-gnu/caml-crush/libp11clientunix.so';

/**
 * Runs in a child process with pkcs11js over Caml Crush's client library
 * (the same client for both daemons); prints step name -> CK_RV (and, for
 * reads, the values); a failure without a CKR_ name is its message.
 */
const COMPAT_DRIVER = `
const pkcs11js = require('pkcs11js');
const p = new pkcs11js.PKCS11();
p.load(process.env.CLIENT);
p.C_Initialize();
const A = pkcs11js;
const out = {};
const rvOf = (e) => { const m = /\\b(CKR_[A-Z0-9_]+)\\b/.exec(String(e && e.message)); return m && typeof A[m[1]] === 'number' ? A[m[1]] : String(e && e.message); };
const step = (name, f) => { try { const r = f(); out[name] = 0; return r; } catch (e) { out[name] = rvOf(e); return null; } };
const slot = p.C_GetSlotList(true).find((s) => (p.C_GetTokenInfo(s).flags & pkcs11js.CKF_TOKEN_INITIALIZED) !== 0);
const s = p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
p.C_Login(s, pkcs11js.CKU_USER, process.env.PIN);
const aes = (flags, extra = []) => [
  { type: A.CKA_CLASS, value: A.CKO_SECRET_KEY }, { type: A.CKA_KEY_TYPE, value: A.CKK_AES }, { type: A.CKA_TOKEN, value: false },
  ...Object.entries(flags).map(([k, v]) => ({ type: A[k], value: v })), ...extra,
];
const gen = (name, flags) => step(name, () => p.C_GenerateKey(s, { mechanism: A.CKM_AES_KEY_GEN }, aes(flags, [{ type: A.CKA_VALUE_LEN, value: 16 }])));
const known = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
const imp = (name, flags) => step(name, () => p.C_CreateObject(s, aes(flags, [{ type: A.CKA_VALUE, value: known }])));
const set = (name, h, flags) => step(name, () => p.C_SetAttributeValue(s, h, Object.entries(flags).map(([k, v]) => ({ type: A[k], value: v }))));
const wrapKey = (name, w, k) => step(name, () => p.C_WrapKey(s, { mechanism: A.CKM_AES_KEY_WRAP }, w, k, Buffer.alloc(64)));

gen('generate WRAP+DECRYPT', { CKA_WRAP: true, CKA_DECRYPT: true });
gen('generate UNWRAP+ENCRYPT', { CKA_UNWRAP: true, CKA_ENCRYPT: true });
const w = gen('generate wrap-only key', { CKA_WRAP: true, CKA_UNWRAP: true, CKA_ENCRYPT: false, CKA_DECRYPT: false, CKA_SENSITIVE: true });
const t = gen('generate target', { CKA_SENSITIVE: true, CKA_EXTRACTABLE: true, CKA_ENCRYPT: true, CKA_DECRYPT: false, CKA_WRAP: false, CKA_UNWRAP: false });
set('set CKA_DECRYPT on the wrap key', w, { CKA_DECRYPT: true });
set('clear CKA_WRAP', w, { CKA_WRAP: false });
set('clear CKA_WRAP, set CKA_DECRYPT', w, { CKA_WRAP: false, CKA_DECRYPT: true });
set('clear CKA_ENCRYPT of the target', t, { CKA_ENCRYPT: false });
set('clear CKA_SENSITIVE', t, { CKA_SENSITIVE: false });
wrapKey('wrap the target with the wrap key', w, t);
step('C_EncryptInit with the target', () => p.C_EncryptInit(s, { mechanism: A.CKM_AES_ECB }, t));
if (out['C_EncryptInit with the target'] === 0) p.C_Encrypt(s, Buffer.alloc(16), Buffer.alloc(16));
const t2 = gen('generate second target', { CKA_SENSITIVE: true, CKA_EXTRACTABLE: true });
set('CKA_EXTRACTABLE TRUE -> FALSE', t2, { CKA_EXTRACTABLE: false });
set('CKA_EXTRACTABLE FALSE -> TRUE', t2, { CKA_EXTRACTABLE: true });
const i = imp('import a known key with CKA_WRAP', { CKA_WRAP: true, CKA_SENSITIVE: true });
wrapKey('wrap the target with the imported key', i, t);
const j = imp('import a known key without rights', { CKA_WRAP: false, CKA_SENSITIVE: true });
set('set CKA_WRAP on the imported key', j, { CKA_WRAP: true });
step('copy the wrap key without CKA_WRAP', () => p.C_CopyObject(s, w, [{ type: A.CKA_WRAP, value: false }]));
step('copy the wrap key with CKA_DECRYPT', () => p.C_CopyObject(s, w, [{ type: A.CKA_DECRYPT, value: true }]));
step('key pair with a private key neither sensitive nor extractable', () => p.C_GenerateKeyPair(s, { mechanism: A.CKM_EC_KEY_PAIR_GEN },
  [{ type: A.CKA_CLASS, value: A.CKO_PUBLIC_KEY }, { type: A.CKA_TOKEN, value: false }, { type: A.CKA_EC_PARAMS, value: Buffer.from('06082a8648ce3d030107', 'hex') }],
  [{ type: A.CKA_CLASS, value: A.CKO_PRIVATE_KEY }, { type: A.CKA_TOKEN, value: false }, { type: A.CKA_SENSITIVE, value: false }, { type: A.CKA_EXTRACTABLE, value: false }]));
gen('generate ENCRYPT+SIGN', { CKA_ENCRYPT: true, CKA_SIGN: true, CKA_WRAP: false, CKA_UNWRAP: false, CKA_DECRYPT: false, CKA_SENSITIVE: true });
const mac = gen('generate a MAC key', { CKA_SIGN: true, CKA_VERIFY: true, CKA_ENCRYPT: false, CKA_DECRYPT: false, CKA_WRAP: false, CKA_UNWRAP: false, CKA_SENSITIVE: true });
step('C_SignInit with the MAC key', () => p.C_SignInit(s, { mechanism: A.CKM_AES_CMAC }, mac));
if (out['C_SignInit with the MAC key'] === 0) p.C_Sign(s, Buffer.alloc(16), Buffer.alloc(16));
set('clear CKA_SIGN', mac, { CKA_SIGN: false });
const plain = gen('generate a key naming no role', {});
const roles = ['CKA_WRAP', 'CKA_UNWRAP', 'CKA_ENCRYPT', 'CKA_DECRYPT', 'CKA_SIGN', 'CKA_VERIFY', 'CKA_SENSITIVE', 'CKA_EXTRACTABLE', 'CKA_DERIVE', 'CKA_PRIVATE'];
out['roles of that key'] = p.C_GetAttributeValue(s, plain, roles.map((r) => ({ type: A[r] }))).map((a, k) => roles[k] + '=' + (a.value[0] ? 'TRUE' : 'FALSE')).join(' ');
p.C_CloseSession(s);
p.C_Finalize();
process.stdout.write(JSON.stringify(out));
`;

function runCompatDriver(socketPath: string, env: NodeJS.ProcessEnv): Record<string, number | string> {
  const out = execFileSync(process.execPath, ['-e', COMPAT_DRIVER], {
    cwd: path.resolve(__dirname, '../..'),
    env: { ...env, CLIENT: CC_CLIENT, PIN: USER_PIN, PKCS11PROXY_SOCKET_PATH: socketPath, PKCS11PROXY_LIBNAME: 'softhsm' },
    timeout: 120_000,
  });
  return JSON.parse(out.toString()) as Record<string, number | string>;
}

/** Debian's Caml Crush daemon on its own store, with `rules`; resolves once its socket exists. */
async function startCamlCrush(rules: string): Promise<{ socketPath: string; env: NodeJS.ProcessEnv; stop(): Promise<void> }> {
  const hsm = createSoftHsm(['caml']);
  const socketPath = path.join(hsm.dir, 'cc.sock');
  fs.mkdirSync(path.join(hsm.dir, 'netplex'));
  fs.writeFileSync(path.join(hsm.dir, 'filter.conf'), `modules = [("softhsm", "${SOFTHSM_MODULE}")]\n${rules}\n`);
  fs.writeFileSync(path.join(hsm.dir, 'pkcs11proxyd.conf'), `netplex {
  controller { max_level = "info"; socket_directory = "${hsm.dir}/netplex"; logging { type = "stderr"; }; };
  service {
    name = "PKCS#11 Filtering Proxy"; conn_limit = 1;
    protocol { name = "rpc_pkcs11"; address { type = "local"; path = "${socketPath}"; }; };
    processor { type = "rpc_pkcs11"; filter_config = "${hsm.dir}/filter.conf"; use_ssl = false; };
    workload_manager { type = "dynamic"; max_jobs_per_thread = 1; min_free_jobs_capacity = 1; max_free_jobs_capacity = 1; max_threads = 10; };
  }
}
`);
  const proc = spawn('/usr/bin/pkcs11proxyd', ['-fg', '-conf', path.join(hsm.dir, 'pkcs11proxyd.conf')], { env: hsm.env, stdio: 'ignore', detached: true });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const deadline = Date.now() + 30_000;
  while (!fs.existsSync(socketPath)) {
    if (Date.now() > deadline || proc.exitCode !== null) throw new Error('Caml Crush did not create its socket');
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    socketPath,
    env: hsm.env,
    async stop() {
      process.kill(-proc.pid!, 'SIGTERM');
      await exited;
      hsm.cleanup();
    },
  };
}

/** Patchset 2 (secure templates) restricted to the actions of these files. */
const COMPAT_RULES_2 = post([
  ...['C_EncryptInit', 'C_DecryptInit', 'C_SignInit', 'C_SignRecoverInit', 'C_VerifyInit', 'C_VerifyRecoverInit', 'C_DeriveKey', 'C_DigestKey', 'C_WrapKey', 'C_UnwrapKey', 'C_FindObjects'].map(
    (f): [string, string] => [f, 'conflicting_attributes_patch_on_existing_objects'],
  ),
  ...['C_SetAttributeValue', 'C_GenerateKey', 'C_GenerateKeyPair', 'C_CreateObject', 'C_CopyObject', 'C_UnwrapKey', 'C_DeriveKey'].map(
    (f): [string, string] => [f, 'secure_templates_patch'],
  ),
  ...['C_CreateObject', 'C_CopyObject', 'C_GenerateKey', 'C_GenerateKeyPair', 'C_DeriveKey', 'C_UnwrapKey'].map(
    (f): [string, string] => [f, 'sanitize_creation_templates_patch'],
  ),
]);
const SEGREGATE = '(C_Initialize, do_segregate_usage), ';

/** The filter_actions_post of Debian's /etc/pkcs11proxyd/filter.conf (its active patchset 1), without `action`. */
function debianWithout(action: string): string {
  // OCaml comments nest: drop them with a depth count (the file has no strings holding "(*").
  const src = fs.readFileSync('/etc/pkcs11proxyd/filter.conf', 'utf8');
  let text = '';
  for (let i = 0, depth = 0; i < src.length; i++) {
    if (src.startsWith('(*', i)) {
      depth++;
      i++;
    } else if (depth > 0 && src.startsWith('*)', i)) {
      depth--;
      i++;
    } else if (depth === 0) {
      text += src[i];
    }
  }
  const pairs = [...text.slice(text.indexOf('filter_actions_post')).matchAll(/\((C_\w+),\s*(\w+)\)/g)].map((m): [string, string] => [m[1], m[2]]);
  return post(pairs.filter(([, a]) => a !== action));
}
const withSegregation = (rules: string): string => rules.replace('[(".*", [', `[(".*", [${SEGREGATE}`);

/** Where the two daemons answer differently on purpose: step -> [Caml Crush, ours]. */
const AES_WRAP_DIFFERS: Record<string, [number, number]> = {
  // Caml Crush cannot wrap with CKM_AES_KEY_WRAP at all (its client answers CKR_ARGUMENTS_BAD); the key itself is allowed by both.
  'wrap the target with the wrap key': [ck.CKR_ARGUMENTS_BAD, ck.CKR_OK],
};
const COPY_DIFFERS: Record<string, [number, number]> = {
  // Caml Crush checks a copy's template alone; ours checks the copy's attributes (the source's with the template applied).
  'copy the wrap key with CKA_DECRYPT': [ck.CKR_OK, ck.CKR_ATTRIBUTE_VALUE_INVALID],
};

const compatConfigs: Array<{ name: string; rules: string; differs: Record<string, [number, number]>; expected: Record<string, number | string> }> = [
  {
    name: 'patchset 1 (conflicting, sticky, sanitize)',
    rules: COMPAT_RULES,
    differs: { ...AES_WRAP_DIFFERS, ...COPY_DIFFERS },
    expected: {
      'generate WRAP+DECRYPT': ck.CKR_ATTRIBUTE_VALUE_INVALID,
      'set CKA_DECRYPT on the wrap key': ck.CKR_ATTRIBUTE_VALUE_INVALID,
      'clear CKA_WRAP, set CKA_DECRYPT': ck.CKR_ATTRIBUTE_VALUE_INVALID,
      'wrap the target with the imported key': ck.CKR_OBJECT_HANDLE_INVALID,
      'set CKA_WRAP on the imported key': ck.CKR_ATTRIBUTE_VALUE_INVALID,
      'generate ENCRYPT+SIGN': ck.CKR_OK,
      'clear CKA_SIGN': ck.CKR_OK,
      'C_SignInit with the MAC key': ck.CKR_OK,
      'roles of that key': 'CKA_WRAP=FALSE CKA_UNWRAP=FALSE CKA_ENCRYPT=FALSE CKA_DECRYPT=FALSE CKA_SIGN=FALSE CKA_VERIFY=FALSE CKA_SENSITIVE=TRUE CKA_EXTRACTABLE=FALSE CKA_DERIVE=FALSE CKA_PRIVATE=TRUE',
    },
  },
  {
    // Debian's filter.conf without wrapping_format_patch (it needs a wrapping_format_key and is tested with it elsewhere).
    name: "Debian's patchset 1 minus wrapping_format_patch",
    rules: debianWithout('wrapping_format_patch'),
    differs: { ...AES_WRAP_DIFFERS, ...COPY_DIFFERS },
    // non_local_objects_patch refuses imported keys with a wrapping role.
    expected: { 'generate WRAP+DECRYPT': ck.CKR_ATTRIBUTE_VALUE_INVALID, 'import a known key with CKA_WRAP': ck.CKR_TEMPLATE_INCONSISTENT, 'C_SignInit with the MAC key': ck.CKR_OK },
  },
  {
    name: 'patchset 1 with do_segregate_usage',
    rules: withSegregation(COMPAT_RULES),
    differs: { ...AES_WRAP_DIFFERS, ...COPY_DIFFERS },
    expected: { 'generate ENCRYPT+SIGN': ck.CKR_ATTRIBUTE_VALUE_INVALID, 'clear CKA_SIGN': ck.CKR_ATTRIBUTE_VALUE_INVALID },
  },
  {
    name: 'patchset 2 (secure templates, sanitize)',
    rules: COMPAT_RULES_2,
    differs: AES_WRAP_DIFFERS,
    expected: { 'generate UNWRAP+ENCRYPT': ck.CKR_TEMPLATE_INCONSISTENT, 'clear CKA_WRAP': ck.CKR_ATTRIBUTE_READ_ONLY, 'copy the wrap key with CKA_DECRYPT': ck.CKR_TEMPLATE_INCONSISTENT },
  },
  {
    name: 'patchset 2 with do_segregate_usage',
    rules: withSegregation(COMPAT_RULES_2),
    differs: AES_WRAP_DIFFERS,
    expected: { 'generate ENCRYPT+SIGN': ck.CKR_TEMPLATE_INCONSISTENT, 'clear CKA_SIGN': ck.CKR_ATTRIBUTE_READ_ONLY },
  },
];

test.each(compatConfigs)("Caml Crush's daemon and ours answer the same calls alike: $name", async ({ rules, differs, expected }) => {
  const cc = await startCamlCrush(rules);
  let theirs: Record<string, number | string>;
  try {
    theirs = runCompatDriver(cc.socketPath, cc.env);
  } finally {
    await cc.stop();
  }
  const d = await startDaemon({ filterExtra: rules });
  let ours: Record<string, number | string>;
  try {
    ours = runCompatDriver(d.socketPath, d.hsm.env);
  } finally {
    await d.stop();
  }
  for (const [step, [camlCrush, us]] of Object.entries(differs)) {
    expect({ step, theirs: theirs[step], ours: ours[step] }).toEqual({ step, theirs: camlCrush, ours: us });
    delete theirs[step];
    delete ours[step];
  }
  expect(ours).toEqual(theirs);
  expect(ours).toMatchObject(Object.fromEntries(Object.entries(expected).filter(([k]) => !(k in differs))));
}, 120_000);
