/**
 * The static filter.conf options of Caml Crush, each shown allowed without
 * its rule and refused (exact CK_RV) with it: in process over a real
 * SoftHSM2 token, and through the daemon with our C client and pkcs11-tool.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { px_attribute, px_mechanism, px_mechanism_typed } from '../../src/generated/pkcs11_rpc';
import { PX_MP_AES_CBC_ENCRYPT_DATA, PX_MP_NONE } from '../../src/generated/pkcs11_rpc_codecs';
import { ck } from '../../src/pkcs11/constants';
import { bool, bytes, mech, P256, query, ulong } from './helpers/attrs';
import { ROOT, startDaemon } from './helpers/daemon';
import { faultyModule } from './helpers/faulty-module';
import { startInProcess } from './helpers/in-process';
import type { InProcessClient } from './helpers/in-process';
import { pkcs11Tool } from './helpers/pkcs11-tool';
import { createSoftHsm, SO_PIN, SOFTHSM_MODULE, USER_PIN } from './helpers/softhsm';

const store = createSoftHsm(['filter']);
afterAll(() => store.cleanup());

const ALIAS = 'm';
/**
 * SoftHSM2 reads SOFTHSM2_CONF from the real environment, which jest's
 * process.env does not reach: each alias loads the pass-through wrapper of
 * helpers/faulty-module.ts (no fault is injected), which hands SoftHSM2 this
 * store's configuration. `mx`, a second copy on the same store, is there for
 * alias patterns.
 */
let first: string;
let second: string;
beforeAll(() => {
  first = faultyModule(path.join(store.dir, 'first'), store.conf).path;
  second = faultyModule(path.join(store.dir, 'second'), store.conf).path;
});

interface Run {
  c: InProcessClient;
  slot: number;
  /** A R/W session (read-only under enforce_ro_sessions), logged in as the user unless `login: false`. */
  s: number;
  logs: string[];
  file: string;
}

let files = 0;
/**
 * One stack with `rules` as the filter.conf body (after `modules`), one
 * application on `alias`. The stack is finalized before the next one loads.
 */
async function run<T>(rules: string, fn: (r: Run) => Promise<T>, o: { login?: boolean; alias?: string; debug?: number } = {}): Promise<T> {
  const file = path.join(store.dir, `filter-${++files}.conf`);
  fs.writeFileSync(file, `modules = [("${ALIAS}", "${first}"), ("mx", "${second}")]\n${rules}\ndebug = ${o.debug ?? 1}\n`);
  const logs: string[] = [];
  const stack = startInProcess(
    [{ alias: ALIAS, path: first }, { alias: 'mx', path: second }],
    undefined,
    { filterFile: file, log: (_level, msg) => logs.push(msg) },
  );
  try {
    const c = await stack.open(o.alias ?? ALIAS);
    const slots = await c.call('C_GetSlotList', { tokenPresent: 1, count: 16 });
    expect(slots.rv).toBe(ck.CKR_OK);
    // The initialized token: SoftHSM2 also shows an empty slot.
    let slot = -1;
    for (const id of slots.slotList) {
      const t = await c.call('C_GetTokenInfo', { slotID: id });
      if (t.rv === ck.CKR_OK && (t.info.flags & ck.CKF_TOKEN_INITIALIZED) !== 0) slot = id;
    }
    expect(slot).not.toBe(-1);
    const os = await c.call('C_OpenSession', { slotID: slot, flags: ck.CKF_SERIAL_SESSION | ck.CKF_RW_SESSION });
    expect(os.rv).toBe(ck.CKR_OK);
    if (o.login !== false) expect(await c.call('C_Login', { session: os.session, userType: ck.CKU_USER, pin: Buffer.from(USER_PIN) })).toBe(ck.CKR_OK);
    const out = await fn({ c, slot, s: os.session, logs, file });
    await c.close();
    return out;
  } finally {
    stack.finalize();
  }
}

const rvOf = (r: number | { rv: number }): number => (typeof r === 'number' ? r : r.rv);
const none = (mechanism: number): px_mechanism_typed => ({ mechanism, param: { tag: PX_MP_NONE } });

/** An AES-128 session key of known value that may do everything, created by C_CreateObject. */
function aesTemplate(label: string | null, extra: px_attribute[] = []): px_attribute[] {
  return [
    ulong(ck.CKA_CLASS, ck.CKO_SECRET_KEY), ulong(ck.CKA_KEY_TYPE, ck.CKK_AES), bool(ck.CKA_TOKEN, false),
    bytes(ck.CKA_VALUE, Buffer.alloc(16, 7)), bool(ck.CKA_ENCRYPT, true), bool(ck.CKA_DECRYPT, true), bool(ck.CKA_SIGN, true),
    bool(ck.CKA_WRAP, true), bool(ck.CKA_UNWRAP, true), bool(ck.CKA_DERIVE, true), bool(ck.CKA_EXTRACTABLE, true),
    bool(ck.CKA_SENSITIVE, false), ...(label === null ? [] : [bytes(ck.CKA_LABEL, label)]), ...extra,
  ];
}
async function createAes(r: Run, label: string | null = 'k', extra: px_attribute[] = []): Promise<number> {
  const o = await r.c.call('C_CreateObject', { session: r.s, template: aesTemplate(label, extra) });
  expect(o.rv).toBe(ck.CKR_OK);
  return o.object;
}
const ecTemplates = (label: string) => ({
  publicKeyTemplate: [bool(ck.CKA_TOKEN, false), bytes(ck.CKA_EC_PARAMS, P256), bool(ck.CKA_VERIFY, true), bytes(ck.CKA_LABEL, label)],
  privateKeyTemplate: [bool(ck.CKA_TOKEN, false), bool(ck.CKA_SIGN, true), bool(ck.CKA_SENSITIVE, true), bytes(ck.CKA_LABEL, label)],
});
const aesGenTemplate = (label: string): px_attribute[] => [ulong(ck.CKA_VALUE_LEN, 16), bool(ck.CKA_TOKEN, false), bytes(ck.CKA_LABEL, label)];

/** All handles of a search, `max` at a time; also returns the size of each answer. */
async function findAll(r: Run, template: px_attribute[], max = 100): Promise<{ objects: number[]; batches: number[] }> {
  expect(await r.c.call('C_FindObjectsInit', { session: r.s, template })).toBe(ck.CKR_OK);
  const objects: number[] = [];
  const batches: number[] = [];
  for (let i = 0; i < 1000; i++) {
    const f = await r.c.call('C_FindObjects', { session: r.s, maxObjectCount: max });
    expect(f.rv).toBe(ck.CKR_OK);
    batches.push(f.count);
    objects.push(...f.objects);
    if (f.count === 0) break;
  }
  expect(await r.c.call('C_FindObjectsFinal', { session: r.s })).toBe(ck.CKR_OK);
  return { objects, batches };
}
async function labelOf(r: Run, object: number): Promise<string> {
  const g = await r.c.call('C_GetAttributeValue', { session: r.s, object, template: [bytes(ck.CKA_LABEL, Buffer.alloc(64))] });
  expect(g.rv).toBe(ck.CKR_OK);
  return g.template[0].value.subarray(0, g.template[0].valueLen).toString('utf8');
}

// ---------------------------------------------------------------- forbidden_mechanisms

/**
 * Every call that takes a mechanism, in its v3 and typed form, each with a
 * mechanism the rule below forbids; returns the CK_RV of each.
 */
async function mechanismCalls(r: Run): Promise<Record<string, number>> {
  const key = await createAes(r);
  const target = await createAes(r, 'target');
  const out: Record<string, number> = {};
  const put = async (name: string, p: Promise<number | { rv: number }>): Promise<void> => {
    out[name] = rvOf(await p);
  };
  const session = r.s;
  await put('C_GetMechanismInfo', r.c.call('C_GetMechanismInfo', { slotID: r.slot, type: ck.CKM_SHA256 }));
  await put('C_DigestInit', r.c.call('C_DigestInit', { session, mechanism: mech(ck.CKM_SHA256) }));
  await r.c.call('C_Digest', { session, data: Buffer.from('x') });
  await put('px_DigestInitTyped', r.c.call('px_DigestInitTyped', { session, mechanism: none(ck.CKM_SHA256) }));
  await r.c.call('C_Digest', { session, data: Buffer.from('x') });
  for (const [v3, typed, m] of [
    ['C_EncryptInit', 'px_EncryptInitTyped', ck.CKM_AES_ECB],
    ['C_DecryptInit', 'px_DecryptInitTyped', ck.CKM_AES_ECB],
    ['C_SignInit', 'px_SignInitTyped', ck.CKM_AES_CMAC],
    ['C_VerifyInit', 'px_VerifyInitTyped', ck.CKM_AES_CMAC],
  ] as const) {
    await put(v3, r.c.call(v3, { session, mechanism: mech(m), key }));
    // Ends the operation when it started: a one-block call (the CK_RV is not what this test checks).
    const finish = v3 === 'C_EncryptInit' ? 'C_Encrypt' : v3 === 'C_DecryptInit' ? 'C_Decrypt' : v3 === 'C_SignInit' ? 'C_Sign' : 'C_Verify';
    const end = () => (finish === 'C_Verify' ? r.c.call('C_Verify', { session, data: Buffer.alloc(16), signature: Buffer.alloc(16) }) : r.c.call(finish, { session, data: Buffer.alloc(16) }));
    if (out[v3] === ck.CKR_OK) await end();
    await put(typed, r.c.call(typed, { session, mechanism: none(m), key }));
    if (out[typed] === ck.CKR_OK) await end();
  }
  await put('C_GenerateKey', r.c.call('C_GenerateKey', { session, mechanism: mech(ck.CKM_AES_KEY_GEN), template: aesGenTemplate('g') }));
  await put('px_GenerateKeyTyped', r.c.call('px_GenerateKeyTyped', { session, mechanism: none(ck.CKM_AES_KEY_GEN), template: aesGenTemplate('g') }));
  await put('C_GenerateKeyPair', r.c.call('C_GenerateKeyPair', { session, mechanism: mech(ck.CKM_EC_KEY_PAIR_GEN), ...ecTemplates('p') }));
  await put('px_GenerateKeyPairTyped', r.c.call('px_GenerateKeyPairTyped', { session, mechanism: none(ck.CKM_EC_KEY_PAIR_GEN), ...ecTemplates('p') }));
  const wrapped = await r.c.call('C_WrapKey', { session, mechanism: mech(ck.CKM_AES_KEY_WRAP), wrappingKey: key, key: target });
  out.C_WrapKey = wrapped.rv;
  await put('px_WrapKeyTyped', r.c.call('px_WrapKeyTyped', { session, mechanism: none(ck.CKM_AES_KEY_WRAP), wrappingKey: key, key: target }));
  const blob = wrapped.rv === ck.CKR_OK ? wrapped.data : Buffer.alloc(24, 1);
  const unwrapTemplate = [ulong(ck.CKA_CLASS, ck.CKO_SECRET_KEY), ulong(ck.CKA_KEY_TYPE, ck.CKK_AES), bool(ck.CKA_TOKEN, false), bytes(ck.CKA_LABEL, 'u')];
  await put('C_UnwrapKey', r.c.call('C_UnwrapKey', { session, mechanism: mech(ck.CKM_AES_KEY_WRAP), unwrappingKey: key, wrappedKey: blob, template: unwrapTemplate }));
  await put('px_UnwrapKeyTyped', r.c.call('px_UnwrapKeyTyped', { session, mechanism: none(ck.CKM_AES_KEY_WRAP), unwrappingKey: key, wrappedKey: blob, template: unwrapTemplate }));
  const deriveTemplate = [ulong(ck.CKA_CLASS, ck.CKO_SECRET_KEY), ulong(ck.CKA_KEY_TYPE, ck.CKK_AES), ulong(ck.CKA_VALUE_LEN, 16), bool(ck.CKA_TOKEN, false), bytes(ck.CKA_LABEL, 'd')];
  const cbcData = { tag: PX_MP_AES_CBC_ENCRYPT_DATA, value: { iv: Buffer.alloc(16, 1), data: Buffer.alloc(16, 2) } } as const;
  await put('px_DeriveKeyTyped', r.c.call('px_DeriveKeyTyped', { session, mechanism: { mechanism: ck.CKM_AES_CBC_ENCRYPT_DATA, param: cbcData }, baseKey: key, template: deriveTemplate }));
  // The v3 form carries the parameter as bytes, which SoftHSM2 cannot take for this mechanism (see mechanisms.test.ts).
  await put('C_DeriveKey', r.c.call('C_DeriveKey', { session, mechanism: mech(ck.CKM_AES_CBC_ENCRYPT_DATA, Buffer.alloc(32)), baseKey: key, template: deriveTemplate }));
  return out;
}

const FORBIDDEN_MECHANISMS = 'forbidden_mechanisms = [("m", [CKM_SHA256, CKM_AES_ECB]), ("[lm]", [CKM_AES_CMAC, CKM_AES_KEY_GEN, CKM_EC_KEY_PAIR_GEN]), (".*", [CKM_AES_KEY_WRAP, CKM_AES_CBC_ENCRYPT_DATA])]';

describe('forbidden_mechanisms', () => {
  test('every call with a mechanism, v3 and typed: allowed without the rule, CKR_MECHANISM_INVALID with it', async () => {
    const allowed = await run('', mechanismCalls);
    const refused = await run(FORBIDDEN_MECHANISMS, mechanismCalls);
    const names = Object.keys(allowed);
    expect(names).toHaveLength(21);
    // Without the rule every call reaches the token (C_DeriveKey: the module's own answer to a v3 parameter).
    for (const n of names) if (n !== 'C_DeriveKey') expect({ n, rv: allowed[n] }).toEqual({ n, rv: ck.CKR_OK });
    expect(allowed.C_DeriveKey).not.toBe(ck.CKR_MECHANISM_INVALID);
    expect(refused).toEqual(Object.fromEntries(names.map((n) => [n, ck.CKR_MECHANISM_INVALID])));
  });

  test('C_GetMechanismList hides them; the count and CKR_BUFFER_TOO_SMALL are those of the filtered list', async () => {
    const list = (r: Run) => r.c.call('C_GetMechanismList', { slotID: r.slot, count: 1000 });
    const full = await run('', list);
    expect(full.rv).toBe(ck.CKR_OK);
    const hidden = [ck.CKM_SHA256, ck.CKM_AES_ECB, ck.CKM_AES_CMAC, ck.CKM_AES_KEY_GEN, ck.CKM_EC_KEY_PAIR_GEN, ck.CKM_AES_KEY_WRAP, ck.CKM_AES_CBC_ENCRYPT_DATA];
    for (const m of hidden) expect(full.mechanismList).toContain(m);
    const expected = full.mechanismList.filter((m) => !hidden.includes(m));
    await run(FORBIDDEN_MECHANISMS, async (r) => {
      const sized = await r.c.call('C_GetMechanismList', { slotID: r.slot, count: 0 });
      expect([sized.rv, sized.count, sized.mechanismList]).toEqual([ck.CKR_OK, expected.length, []]);
      // One short of the filtered count (but more than the module's would need to be short): too small.
      const short = await r.c.call('C_GetMechanismList', { slotID: r.slot, count: expected.length - 1 });
      expect([short.rv, short.count]).toEqual([ck.CKR_BUFFER_TOO_SMALL, expected.length]);
      // Exactly the filtered count is enough, though the module has more.
      const exact = await r.c.call('C_GetMechanismList', { slotID: r.slot, count: expected.length });
      expect([exact.rv, exact.count]).toEqual([ck.CKR_OK, expected.length]);
      expect(new Set(exact.mechanismList)).toEqual(new Set(expected));
    });
  });

  test('alias patterns are Caml Crush regexps: full match, and `\\|` binds $ to its last branch only', async () => {
    const digest = (r: Run) => r.c.call('C_DigestInit', { session: r.s, mechanism: mech(ck.CKM_SHA256) });
    // "m" is "m$" from offset 0: alias mx is not matched.
    expect(await run('forbidden_mechanisms = [("m", [CKM_SHA256])]', digest, { alias: 'mx' })).toBe(ck.CKR_OK);
    expect(await run('forbidden_mechanisms = [("m", [CKM_SHA256])]', digest, { alias: 'm' })).toBe(ck.CKR_MECHANISM_INVALID);
    // "m\|q" is "m" or "q$": every alias starting with m matches.
    expect(await run('forbidden_mechanisms = [("m\\\\|q", [CKM_SHA256])]', digest, { alias: 'mx' })).toBe(ck.CKR_MECHANISM_INVALID);
  });
});

// ---------------------------------------------------------------- forbidden_functions

describe('forbidden_functions', () => {
  const calls = async (r: Run) => ({
    C_FindObjectsInit: await (async () => {
      const rv = await r.c.call('C_FindObjectsInit', { session: r.s, template: [] });
      if (rv === ck.CKR_OK) await r.c.call('C_FindObjectsFinal', { session: r.s });
      return rv;
    })(),
    C_GenerateRandom: (await r.c.call('C_GenerateRandom', { session: r.s, length: 8 })).rv,
    C_DigestInit: await r.c.call('C_DigestInit', { session: r.s, mechanism: mech(ck.CKM_SHA_1) }),
    // A typed procedure is refused under the name of the call it mirrors.
    px_DigestInitTyped: await r.c.call('px_DigestInitTyped', { session: r.s, mechanism: none(ck.CKM_SHA_1) }),
    C_GetSessionInfo: (await r.c.call('C_GetSessionInfo', { session: r.s })).rv,
  });
  test('allowed without the rule, CKR_FUNCTION_NOT_SUPPORTED with it; other functions still work', async () => {
    const allowed = await run('', calls);
    // px_DigestInitTyped after C_DigestInit: an operation is active.
    expect(allowed).toEqual({ C_GenerateRandom: 0, C_DigestInit: 0, px_DigestInitTyped: ck.CKR_OPERATION_ACTIVE, C_GetSessionInfo: 0, C_FindObjectsInit: 0 });
    const refused = await run('forbidden_functions = [("m", [C_GenerateRandom, C_DigestInit]), (".*", [C_FindObjectsInit])]', calls);
    const NS = ck.CKR_FUNCTION_NOT_SUPPORTED;
    expect(refused).toEqual({ C_GenerateRandom: NS, C_DigestInit: NS, px_DigestInitTyped: NS, C_GetSessionInfo: 0, C_FindObjectsInit: NS });
  });
});

// ---------------------------------------------------------------- allowed_labels / allowed_ids

/** Token objects made once without a filter: labels and ids the rules below sort. */
const DATA_LABELS = ['pub-1', 'pub-2', 'shared', 'sharedX', 'secret', 'xpub-1'];
const KEY_IDS = ['0102', 'ab', 'abcd', '', 'ff01'];
const VISIBLE_LABELS = ['pub-1', 'pub-2', 'shared'];
const VISIBLE_IDS = ['0102', 'ab'];
const LABELS_RULE = 'allowed_labels = [("m", ["pub-.*"]), ("[m]", ["shared", "id-.*"])]';
const IDS_RULE = 'allowed_ids = [("m", ["01.*", "ab"])]';
const dataTemplate = [ulong(ck.CKA_CLASS, ck.CKO_DATA), bool(ck.CKA_TOKEN, true)];
const keyTemplate = [ulong(ck.CKA_CLASS, ck.CKO_SECRET_KEY), bool(ck.CKA_TOKEN, true)];

describe('allowed_labels and allowed_ids', () => {
  beforeAll(async () => {
    await run('', async (r) => {
      for (const label of DATA_LABELS) {
        const o = await r.c.call('C_CreateObject', { session: r.s, template: [...dataTemplate, bytes(ck.CKA_LABEL, label), bytes(ck.CKA_VALUE, 'v')] });
        expect(o.rv).toBe(ck.CKR_OK);
      }
      // A data object without a label: its CKA_LABEL is empty, which no pattern above matches.
      expect((await r.c.call('C_CreateObject', { session: r.s, template: dataTemplate })).rv).toBe(ck.CKR_OK);
      for (const id of KEY_IDS) {
        const t = aesTemplate(`id-${id}`, [bytes(ck.CKA_ID, Buffer.from(id, 'hex'))]).map((a) => (a.type === ck.CKA_TOKEN ? bool(ck.CKA_TOKEN, true) : a));
        expect((await r.c.call('C_CreateObject', { session: r.s, template: t })).rv).toBe(ck.CKR_OK);
      }
    });
  });

  test('C_FindObjects skips objects whose label matches no pattern (OR within and across the rules)', async () => {
    const labels = async (r: Run) => Promise.all((await findAll(r, dataTemplate)).objects.map((o) => labelOf(r, o)));
    expect(new Set(await run('', labels))).toEqual(new Set([...DATA_LABELS, '']));
    expect(new Set(await run(LABELS_RULE, labels))).toEqual(new Set(VISIBLE_LABELS));
  });

  test('C_FindObjects skips objects whose hex CKA_ID matches no pattern', async () => {
    const ids = async (r: Run) =>
      Promise.all(
        (await findAll(r, keyTemplate)).objects.map(async (o) => {
          const g = await r.c.call('C_GetAttributeValue', { session: r.s, object: o, template: [bytes(ck.CKA_ID, Buffer.alloc(16))] });
          return g.template[0].value.subarray(0, g.template[0].valueLen).toString('hex');
        }),
      );
    expect(new Set(await run('', ids))).toEqual(new Set(KEY_IDS));
    expect(new Set(await run(IDS_RULE, ids))).toEqual(new Set(VISIBLE_IDS));
    // Both lists: an object must pass both.
    const both = await run(`${IDS_RULE}\nallowed_labels = [("m", ["id-01.*"])]`, ids);
    expect(both).toEqual(['0102']);
  });

  test('C_FindObjects fills maxObjectCount from later module answers when hidden objects come first, then answers 0', async () => {
    // 13 matching objects of which 3 are visible: asked 3 at a time, the filter must ask the module again
    // whenever it returned hidden ones (SoftHSM2's order is that of memory addresses).
    const t: px_attribute[] = [bool(ck.CKA_TOKEN, true)];
    const allowed = await run('', (r) => findAll(r, t, 3));
    expect(allowed.objects).toHaveLength(DATA_LABELS.length + 1 + KEY_IDS.length);
    const refused = await run('allowed_labels = [("m", ["pub-.*", "id-ab"])]', async (r) => {
      const got = await findAll(r, t, 2);
      return { ...got, labels: await Promise.all(got.objects.map((o) => labelOf(r, o))) };
    });
    expect(new Set(refused.labels)).toEqual(new Set(['pub-1', 'pub-2', 'id-ab']));
    expect(refused.batches).toEqual([2, 1, 0]);
  });

  test('a hidden object\'s handle is invalid in every call, with the CK_RV of a handle that does not exist', async () => {
    const uses = async (r: Run, rule: boolean) => {
      // Created without CKA_LABEL: allowed (Caml Crush checks only labels given), then invisible.
      const hidden = await createAes(r, null);
      const seen = await createAes(r, 'pub-k');
      const s = r.s;
      return {
        C_GetAttributeValue: (await r.c.call('C_GetAttributeValue', { session: s, object: hidden, template: [query(ck.CKA_CLASS)] })).rv,
        C_GetObjectSize: (await r.c.call('C_GetObjectSize', { session: s, object: hidden })).rv,
        C_SetAttributeValue: await r.c.call('C_SetAttributeValue', { session: s, object: hidden, template: [bytes(ck.CKA_LABEL, 'pub-z')] }),
        C_CopyObject: (await r.c.call('C_CopyObject', { session: s, object: hidden, template: [] })).rv,
        C_EncryptInit: await (async () => {
          const rv = await r.c.call('C_EncryptInit', { session: s, mechanism: mech(ck.CKM_AES_CBC, Buffer.alloc(16)), key: hidden });
          if (rv === ck.CKR_OK) await r.c.call('C_Encrypt', { session: s, data: Buffer.alloc(16) });
          return rv;
        })(),
        px_SignInitTyped: await (async () => {
          const rv = await r.c.call('px_SignInitTyped', { session: s, mechanism: none(ck.CKM_AES_CMAC), key: hidden });
          if (rv === ck.CKR_OK) await r.c.call('C_Sign', { session: s, data: Buffer.alloc(16) });
          return rv;
        })(),
        C_DigestKey: await (async () => {
          await r.c.call('C_DigestInit', { session: s, mechanism: mech(ck.CKM_SHA256) });
          const rv = await r.c.call('C_DigestKey', { session: s, key: hidden });
          await r.c.call('C_DigestFinal', { session: s });
          return rv;
        })(),
        C_WrapKey_wrapping: (await r.c.call('C_WrapKey', { session: s, mechanism: mech(ck.CKM_AES_KEY_WRAP), wrappingKey: hidden, key: seen })).rv,
        C_WrapKey_key: (await r.c.call('C_WrapKey', { session: s, mechanism: mech(ck.CKM_AES_KEY_WRAP), wrappingKey: seen, key: hidden })).rv,
        C_UnwrapKey: (await r.c.call('C_UnwrapKey', { session: s, mechanism: mech(ck.CKM_AES_KEY_WRAP), unwrappingKey: hidden, wrappedKey: Buffer.alloc(24), template: aesTemplate('pub-u').slice(0, 3) })).rv,
        px_DeriveKeyTyped: (await r.c.call('px_DeriveKeyTyped', {
          session: s,
          mechanism: { mechanism: ck.CKM_AES_CBC_ENCRYPT_DATA, param: { tag: PX_MP_AES_CBC_ENCRYPT_DATA, value: { iv: Buffer.alloc(16), data: Buffer.alloc(16) } } },
          baseKey: hidden,
          template: [ulong(ck.CKA_CLASS, ck.CKO_SECRET_KEY), ulong(ck.CKA_KEY_TYPE, ck.CKK_AES), ulong(ck.CKA_VALUE_LEN, 16), bool(ck.CKA_TOKEN, false), bytes(ck.CKA_LABEL, 'pub-d')],
        })).rv,
        C_DestroyObject: await r.c.call('C_DestroyObject', { session: s, object: hidden }),
        // The visible key still works, and no virtual handle near it names a hidden object.
        visible: await r.c.call('C_EncryptInit', { session: s, mechanism: mech(ck.CKM_AES_ECB), key: seen }),
        guessed: rule ? await guessHandles(r, seen) : [],
      };
    };
    const allowed = await run('', (r) => uses(r, false));
    for (const [k, rv] of Object.entries(allowed)) {
      if (k !== 'guessed' && k !== 'C_UnwrapKey') expect({ k, rv }).toEqual({ k, rv: ck.CKR_OK });
    }
    // Without the rule the unwrapping key is used: SoftHSM2 rejects the zero blob itself.
    expect(allowed.C_UnwrapKey).not.toBe(ck.CKR_UNWRAPPING_KEY_HANDLE_INVALID);
    const refused = await run(LABELS_RULE, (r) => uses(r, true));
    expect(refused).toEqual({
      C_GetAttributeValue: ck.CKR_OBJECT_HANDLE_INVALID,
      C_GetObjectSize: ck.CKR_OBJECT_HANDLE_INVALID,
      C_SetAttributeValue: ck.CKR_OBJECT_HANDLE_INVALID,
      C_CopyObject: ck.CKR_OBJECT_HANDLE_INVALID,
      C_EncryptInit: ck.CKR_KEY_HANDLE_INVALID,
      px_SignInitTyped: ck.CKR_KEY_HANDLE_INVALID,
      C_DigestKey: ck.CKR_KEY_HANDLE_INVALID,
      C_WrapKey_wrapping: ck.CKR_WRAPPING_KEY_HANDLE_INVALID,
      C_WrapKey_key: ck.CKR_KEY_HANDLE_INVALID,
      C_UnwrapKey: ck.CKR_UNWRAPPING_KEY_HANDLE_INVALID,
      px_DeriveKeyTyped: ck.CKR_KEY_HANDLE_INVALID,
      C_DestroyObject: ck.CKR_OBJECT_HANDLE_INVALID,
      visible: ck.CKR_OK,
      guessed: [],
    });
  });

  test('creation and modification with a label or id outside the patterns: CKR_ATTRIBUTE_VALUE_INVALID; without one: allowed', async () => {
    const creations = async (r: Run) => {
      const s = r.s;
      const seen = await createAes(r, 'pub-src', [bytes(ck.CKA_ID, Buffer.from('0177', 'hex'))]);
      const ecBad = ecTemplates('pub-ec');
      ecBad.privateKeyTemplate = [...ecBad.privateKeyTemplate.filter((a) => a.type !== ck.CKA_LABEL), bytes(ck.CKA_LABEL, 'secret')];
      return {
        C_CreateObject: (await r.c.call('C_CreateObject', { session: s, template: aesTemplate('secret') })).rv,
        C_CreateObject_id: (await r.c.call('C_CreateObject', { session: s, template: aesTemplate('pub-i', [bytes(ck.CKA_ID, Buffer.from([0xff]))]) })).rv,
        C_CreateObject_ok: (await r.c.call('C_CreateObject', { session: s, template: aesTemplate('pub-ok', [bytes(ck.CKA_ID, Buffer.from([1]))]) })).rv,
        C_CreateObject_no_label: (await r.c.call('C_CreateObject', { session: s, template: aesTemplate(null) })).rv,
        C_GenerateKey: (await r.c.call('C_GenerateKey', { session: s, mechanism: mech(ck.CKM_AES_KEY_GEN), template: aesGenTemplate('secret') })).rv,
        px_GenerateKeyTyped: (await r.c.call('px_GenerateKeyTyped', { session: s, mechanism: none(ck.CKM_AES_KEY_GEN), template: aesGenTemplate('secret') })).rv,
        C_GenerateKeyPair: (await r.c.call('C_GenerateKeyPair', { session: s, mechanism: mech(ck.CKM_EC_KEY_PAIR_GEN), ...ecBad })).rv,
        C_CopyObject: (await r.c.call('C_CopyObject', { session: s, object: seen, template: [bytes(ck.CKA_LABEL, 'secret')] })).rv,
        C_SetAttributeValue: await r.c.call('C_SetAttributeValue', { session: s, object: seen, template: [bytes(ck.CKA_LABEL, 'secret')] }),
        C_SetAttributeValue_id: await r.c.call('C_SetAttributeValue', { session: s, object: seen, template: [bytes(ck.CKA_ID, Buffer.from([0xee]))] }),
        C_SetAttributeValue_ok: await r.c.call('C_SetAttributeValue', { session: s, object: seen, template: [bytes(ck.CKA_LABEL, 'pub-renamed')] }),
      };
    };
    const allowed = await run('', creations);
    expect(Object.values(allowed).every((rv) => rv === ck.CKR_OK)).toBe(true);
    const refused = await run(`${LABELS_RULE}\n${IDS_RULE}`, creations);
    const AV = ck.CKR_ATTRIBUTE_VALUE_INVALID;
    expect(refused).toEqual({
      C_CreateObject: AV, C_CreateObject_id: AV, C_CreateObject_ok: 0, C_CreateObject_no_label: 0, C_GenerateKey: AV, px_GenerateKeyTyped: AV,
      C_GenerateKeyPair: AV, C_CopyObject: AV, C_SetAttributeValue: AV, C_SetAttributeValue_id: AV, C_SetAttributeValue_ok: 0,
    });
  });

  test('labels match bytewise as Caml Crush\'s Str: `.` is one byte of UTF-8; the end of the pattern is the end of the label', async () => {
    const create = (label: string) => async (r: Run) => (await r.c.call('C_CreateObject', { session: r.s, template: aesTemplate(label) })).rv;
    const AV = ck.CKR_ATTRIBUTE_VALUE_INVALID;
    // "é" is two bytes: "caf." misses it, "caf.." and the literal pattern take it.
    expect(await run('', create('café'))).toBe(ck.CKR_OK);
    expect(await run('allowed_labels = [("m", ["caf."])]', create('café'))).toBe(AV);
    expect(await run('allowed_labels = [("m", ["caf.."])]', create('café'))).toBe(ck.CKR_OK);
    expect(await run('allowed_labels = [("m", ["café"])]', create('café'))).toBe(ck.CKR_OK);
    // Str's `$` also matches before a newline, so Caml Crush would take "pub-1\nx" for "pub-1"; we do not.
    expect(await run('allowed_labels = [("m", ["pub-1"])]', create('pub-1\nx'))).toBe(AV);
  });

  test('C_FindObjects with maxObjectCount 0 answers as without the filter, with or without a search active', async () => {
    const zero = async (r: Run) => {
      const idle = await r.c.call('C_FindObjects', { session: r.s, maxObjectCount: 0 });
      await r.c.call('C_FindObjectsInit', { session: r.s, template: dataTemplate });
      const active = await r.c.call('C_FindObjects', { session: r.s, maxObjectCount: 0 });
      return { idle: [idle.rv, idle.count], active: [active.rv, active.count] };
    };
    expect(await run(LABELS_RULE, zero)).toEqual(await run('', zero));
  });
});

/** Object handles 1..seen+64 other than `seen` that answer a label read: a client guessing handles. */
async function guessHandles(r: Run, seen: number): Promise<string[]> {
  const out: string[] = [];
  for (let h = 1; h <= seen + 64; h++) {
    if (h === seen) continue;
    const g = await r.c.call('C_GetAttributeValue', { session: r.s, object: h, template: [bytes(ck.CKA_LABEL, Buffer.alloc(64))] });
    if (g.rv === ck.CKR_OK) {
      const label = g.template[0].value.subarray(0, g.template[0].valueLen).toString('utf8');
      if (!/^(pub-.*|shared|id-.*)$/.test(label)) out.push(label);
    }
  }
  return out;
}

// ---------------------------------------------------------------- enforce_ro_sessions

describe('enforce_ro_sessions', () => {
  const write = async (r: Run) => ({
    flags: (await r.c.call('C_GetSessionInfo', { session: r.s })).info.flags & ck.CKF_RW_SESSION,
    create: (await r.c.call('C_CreateObject', { session: r.s, template: [...dataTemplate, bytes(ck.CKA_LABEL, 'ro-test')] })).rv,
  });
  test('C_OpenSession with CKF_RW_SESSION opens a read-only session (the flag is cleared, not refused)', async () => {
    expect(await run('', write)).toEqual({ flags: ck.CKF_RW_SESSION, create: ck.CKR_OK });
    expect(await run('enforce_ro_sessions = [("m", yes)]', write)).toEqual({ flags: 0, create: ck.CKR_SESSION_READ_ONLY });
    // The first rule whose alias pattern matches decides.
    expect(await run('enforce_ro_sessions = [("m", no), (".*", yes)]', write)).toEqual({ flags: ck.CKF_RW_SESSION, create: ck.CKR_OK });
  });
});

// ---------------------------------------------------------------- forbid_admin_operations

describe('forbid_admin_operations', () => {
  const admin = async (r: Run) => {
    const so = await r.c.call('C_Login', { session: r.s, userType: ck.CKU_SO, pin: Buffer.from(SO_PIN) });
    if (so === ck.CKR_OK) expect(await r.c.call('C_Logout', { session: r.s })).toBe(ck.CKR_OK);
    return {
      so,
      contextSpecific: await r.c.call('C_Login', { session: r.s, userType: ck.CKU_CONTEXT_SPECIFIC, pin: Buffer.from(USER_PIN) }),
      // A wrong SO PIN with a session open: SoftHSM2 never reaches the reinitialisation.
      initToken: await r.c.call('C_InitToken', { slotID: r.slot, pin: Buffer.from('000000'), label: Buffer.from('x'.padEnd(32)) }),
      user: await r.c.call('C_Login', { session: r.s, userType: ck.CKU_USER, pin: Buffer.from(USER_PIN) }),
    };
  };
  test('SO and context-specific C_Login: CKR_USER_TYPE_INVALID; C_InitToken: CKR_FUNCTION_NOT_SUPPORTED; the user logs in', async () => {
    const allowed = await run('', admin, { login: false });
    expect(allowed.so).toBe(ck.CKR_OK);
    expect([allowed.contextSpecific, allowed.initToken]).not.toContain(ck.CKR_USER_TYPE_INVALID);
    expect(allowed.initToken).not.toBe(ck.CKR_FUNCTION_NOT_SUPPORTED);
    expect(allowed.user).toBe(ck.CKR_OK);
    expect(await run('forbid_admin_operations = [("m", true)]', admin, { login: false })).toEqual({
      so: ck.CKR_USER_TYPE_INVALID,
      contextSpecific: ck.CKR_USER_TYPE_INVALID,
      initToken: ck.CKR_FUNCTION_NOT_SUPPORTED,
      user: ck.CKR_OK,
    });
  });
});

// ---------------------------------------------------------------- remove_padding_oracles

describe('remove_padding_oracles', () => {
  const padded = async (r: Run) => {
    const key = await createAes(r);
    const target = await createAes(r, 'target');
    const s = r.s;
    const rsa = await r.c.call('C_GenerateKeyPair', {
      session: s,
      mechanism: mech(ck.CKM_RSA_PKCS_KEY_PAIR_GEN),
      publicKeyTemplate: [bool(ck.CKA_TOKEN, false), ulong(ck.CKA_MODULUS_BITS, 1024), bytes(ck.CKA_PUBLIC_EXPONENT, Buffer.from([1, 0, 1])), bool(ck.CKA_WRAP, true)],
      privateKeyTemplate: [bool(ck.CKA_TOKEN, false), bool(ck.CKA_UNWRAP, true), bool(ck.CKA_SIGN, true), bool(ck.CKA_SENSITIVE, true)],
    });
    expect(rsa.rv).toBe(ck.CKR_OK);
    const iv = Buffer.alloc(16);
    const init = async (name: 'C_EncryptInit' | 'C_DecryptInit' | 'C_SignInit', m: px_mechanism, k = key): Promise<number> => {
      const rv = await r.c.call(name, { session: s, mechanism: m, key: k });
      if (rv === ck.CKR_OK) await r.c.call(name === 'C_EncryptInit' ? 'C_Encrypt' : name === 'C_DecryptInit' ? 'C_Decrypt' : 'C_Sign', { session: s, data: Buffer.alloc(16) });
      return rv;
    };
    // SoftHSM2 wraps with PKCS#1 v1.5 (not with AES-CBC-PAD).
    const wrapped = await r.c.call('C_WrapKey', { session: s, mechanism: mech(ck.CKM_RSA_PKCS), wrappingKey: rsa.publicKey, key: target });
    const typed = await r.c.call('px_EncryptInitTyped', { session: s, mechanism: { mechanism: ck.CKM_AES_CBC_PAD, param: { tag: 0, value: iv } }, key });
    if (typed === ck.CKR_OK) await r.c.call('C_Encrypt', { session: s, data: Buffer.alloc(16) });
    const blob = wrapped.rv === ck.CKR_OK ? wrapped.data : Buffer.alloc(128, 1);
    const unwrapTemplate = [ulong(ck.CKA_CLASS, ck.CKO_SECRET_KEY), ulong(ck.CKA_KEY_TYPE, ck.CKK_AES), bool(ck.CKA_TOKEN, false)];
    return {
      encryptPad: await init('C_EncryptInit', mech(ck.CKM_AES_CBC_PAD, iv)),
      encryptTyped: typed,
      encryptPlain: await init('C_EncryptInit', mech(ck.CKM_AES_CBC, iv)),
      // Caml Crush does not look at C_DecryptInit.
      decryptPad: await init('C_DecryptInit', mech(ck.CKM_AES_CBC_PAD, iv)),
      wrapPad: wrapped.rv,
      unwrapPad: (await r.c.call('C_UnwrapKey', { session: s, mechanism: mech(ck.CKM_RSA_PKCS), unwrappingKey: rsa.privateKey, wrappedKey: blob, template: unwrapTemplate })).rv,
      signPad: await init('C_SignInit', mech(ck.CKM_SHA256_RSA_PKCS), rsa.privateKey),
      // Not a padding-oracle mechanism: allowed under `all` too.
      signCmac: await init('C_SignInit', mech(ck.CKM_AES_CMAC)),
    };
  };
  test('encrypt and wrap: the padded mechanisms refused with CKR_MECHANISM_INVALID, unwrap, sign and decrypt allowed; all adds unwrap and sign', async () => {
    const ok = { encryptPad: 0, encryptTyped: 0, encryptPlain: 0, decryptPad: 0, wrapPad: 0, unwrapPad: 0, signPad: 0, signCmac: 0 };
    expect(await run('', padded)).toEqual(ok);
    const MI = ck.CKR_MECHANISM_INVALID;
    // With the wrap refused there is no real blob: the module itself refuses the stand-in, the filter does not.
    const some = await run('remove_padding_oracles = [("m", [encrypt]), (".*", [wrap])]', padded);
    expect(some.unwrapPad).not.toBe(MI);
    expect(some).toEqual({ ...ok, encryptPad: MI, encryptTyped: MI, wrapPad: MI, unwrapPad: some.unwrapPad });
    expect(await run('remove_padding_oracles = [("m", [all])]', padded)).toEqual({ ...ok, encryptPad: MI, encryptTyped: MI, wrapPad: MI, unwrapPad: MI, signPad: MI });
  });
});

// ---------------------------------------------------------------- debug, log_subchannel

describe('debug and log_subchannel', () => {
  const rules = 'log_subchannel = pfilter\nforbidden_functions = [("m", [C_GenerateRandom])]\nallowed_labels = [("m", ["pub-.*"])]';
  const calls = async (r: Run) => {
    expect((await r.c.call('C_GenerateRandom', { session: r.s, length: 4 })).rv).toBe(ck.CKR_FUNCTION_NOT_SUPPORTED);
    expect((await r.c.call('C_CreateObject', { session: r.s, template: aesTemplate('secret-label-value') })).rv).toBe(ck.CKR_ATTRIBUTE_VALUE_INVALID);
    expect((await r.c.call('C_CreateObject', { session: r.s, template: aesTemplate('pub-x') })).rv).toBe(ck.CKR_OK);
    return { logs: r.logs.filter((l) => l.startsWith('pfilter:')), file: r.file };
  };
  test('0: nothing; 1: each refusal with its rule (file:line:col) and client; 2: also checks passed; 3: also the policy at start', async () => {
    expect((await run(rules, calls, { debug: 0 })).logs).toEqual([]);
    const one = await run(rules, calls, { debug: 1 });
    const refusals = one.logs.filter((l) => / refused /.test(l));
    // Positions: the forbidden function's own entry; the allowed_labels rule.
    const lines = rules.split('\n');
    const fcol = lines[1].indexOf('C_GenerateRandom') + 1;
    const lcol = lines[2].indexOf('(') + 1;
    expect(refusals).toEqual([
      `pfilter: C_GenerateRandom refused with CKR_FUNCTION_NOT_SUPPORTED by forbidden_functions (${one.file}:3:${fcol}) for alias 'm', connection ${idOf(refusals[0])} (in-process)`,
      `pfilter: C_CreateObject refused with CKR_ATTRIBUTE_VALUE_INVALID by allowed_labels (${one.file}:4:${lcol}) for alias 'm', connection ${idOf(refusals[0])} (in-process)`,
    ]);
    expect(one.logs.filter((l) => / passed /.test(l))).toEqual([]);
    const two = await run(rules, calls, { debug: 2 });
    expect(two.logs.filter((l) => / passed /.test(l)).length).toBeGreaterThan(0);
    expect(two.logs.some((l) => l.includes('dump') || l.includes('forbidden_functions: C_GenerateRandom'))).toBe(false);
    const three = await run(rules, calls, { debug: 3 });
    expect(three.logs).toContain("pfilter: alias 'm': forbidden_functions: C_GenerateRandom");
    expect(three.logs).toContain(`pfilter: alias 'm': allowed_labels: "pub-.*"`);
    expect(three.logs).toContain("pfilter: alias 'mx': allowed_labels: not filtered");
    // Values never reach the log: not the PIN, not the refused label.
    for (const l of three.logs) expect(l).not.toMatch(/secret-label-value|1234\b/);
  });
});
const idOf = (line: string | undefined): string => /connection (\d+)/.exec(line ?? '')?.[1] ?? '?';

// ---------------------------------------------------------------- through the daemon and our C client

describe('through the daemon, with pkcs11-tool over libp11client.so', () => {
  const OUR_CLIENT = path.join(ROOT, 'client', 'build', 'libp11client.so');
  test('-M hides a forbidden mechanism, -O hides objects whose label matches no pattern', async () => {
    const d = await startDaemon({ workers: 1, filterExtra: 'forbidden_mechanisms = [("softhsm", [CKM_SHA256])]\nallowed_labels = [("soft.*", ["vis-.*"])]' });
    try {
      // Objects made on the token directly, without the proxy.
      for (const label of ['vis-1', 'hid-1']) {
        const g = pkcs11Tool(SOFTHSM_MODULE, ['--login', '--pin', USER_PIN, '--keygen', '--key-type', 'AES:16', '--label', label], d.hsm.env);
        expect(g.status).toBe(0);
      }
      const env = { ...d.hsm.env, PKCS11PROXY_SOCKET_PATH: d.socketPath, PKCS11PROXY_LIBNAME: 'softhsm' };
      const direct = pkcs11Tool(SOFTHSM_MODULE, ['-M'], d.hsm.env);
      const proxied = pkcs11Tool(OUR_CLIENT, ['-M'], env);
      expect([direct.status, proxied.status]).toEqual([0, 0]);
      expect(direct.out).toMatch(/^\s*SHA256, digest/m);
      expect(proxied.out).not.toMatch(/^\s*SHA256,/m);
      expect(proxied.out).toMatch(/^\s*SHA384, digest/m);
      const objects = (module: string, e: NodeJS.ProcessEnv) => {
        const r = pkcs11Tool(module, ['--login', '--pin', USER_PIN, '-O'], e);
        expect(r.status).toBe(0);
        return [...r.out.matchAll(/label:\s+(\S+)/g)].map((m) => m[1]).sort();
      };
      expect(objects(SOFTHSM_MODULE, d.hsm.env)).toEqual(['hid-1', 'vis-1']);
      expect(objects(OUR_CLIENT, env)).toEqual(['vis-1']);
    } finally {
      await d.stop();
    }
  }, 60_000);
});
