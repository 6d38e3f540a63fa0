import { execFileSync } from 'node:child_process';
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
