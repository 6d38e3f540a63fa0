/**
 * Key-extraction regression suite (issue 8, item 7). Twelve ways of getting
 * the value of a secret, sensitive, extractable AES key out of a token
 * through the PKCS#11 API, each run twice: with the target made by
 * C_CreateObject (value known to the test) and by C_GenerateKey (value
 * unknown: an extracted value is proved by encrypting a block with the
 * target on the token and with the value in software).
 *
 * Everything is real: the daemon (startDaemon), our C client
 * (client/build/libp11client.so loaded by pkcs11js, in a child process so the
 * library reads its own environment), a fresh SoftHSM2 store per daemon.
 *
 * Two halves, the same scenarios:
 *  - PASS-THROUGH (a filter.conf with only `modules`): every scenario gets the
 *    secret out, except where SoftHSM2 itself refuses a step; that scenario
 *    says so and asserts SoftHSM2's CK_RV.
 *  - filter.conf.example (our secure default, Caml Crush's patchset 1): every
 *    scenario is refused, the trace says by which call and with which CK_RV,
 *    and no value comes out.
 *  - the same file in Debian's Caml Crush daemon, through the same client:
 *    the same refusals, which is where the expected CK_RVs come from. Caml
 *    Crush refuses CKM_AES_KEY_WRAP (CKR_ARGUMENTS_BAD), so there the attacks
 *    wrap with CKM_AES_CBC.
 *
 * Wrapping uses CKM_AES_KEY_WRAP (RFC 3394), the mechanism filter.conf.example
 * keeps usable. "Decrypt the blob with key K" runs RFC 3394's unwrap on the
 * token, one CKM_AES_ECB C_Decrypt per step, which is what a key allowed to
 * decrypt lets an attacker do; "encrypt W under K1" is RFC 3394's wrap made of
 * CKM_AES_ECB C_Encrypt calls. A blob wrapped under a key of known value W is
 * unwrapped in software.
 */
import { spawn } from 'node:child_process';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import * as p from 'pkcs11js';
import { ROOT, startDaemon } from './helpers/daemon';
import { ModuleProcess, OUR_CLIENT } from './helpers/module-process';
import type { Answer } from './helpers/module-process';
import { createSoftHsm, SOFTHSM_MODULE, USER_PIN } from './helpers/softhsm';

type Handle = Buffer;
interface Attr {
  type: number;
  value?: boolean | number | Buffer;
}
type Made = 'C_CreateObject' | 'C_GenerateKey';

const RV_NAMES = new Map<number, string>();
for (const [k, v] of Object.entries(p)) if (k.startsWith('CKR_') && typeof v === 'number' && !RV_NAMES.has(v)) RV_NAMES.set(v, k);
const rvName = (rv: number): string => RV_NAMES.get(rv) ?? `0x${rv.toString(16)}`;

const RW = p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION;
const CAML_CRUSH_DAEMON = '/usr/bin/pkcs11proxyd';
const KEY_WRAP = { mechanism: p.CKM_AES_KEY_WRAP };
/** RFC 3394 default initial value. */
const KW_IV = Buffer.from('a6a6a6a6a6a6a6a6', 'hex');
/** The value of the imported target, and of the attacker's "known" keys. */
const TARGET_VALUE = Buffer.from('7f3e9a0c55d1b2e48c6a0f9d3b21e7c4', 'hex');
const W = Buffer.from('000102030405060708090a0b0c0d0e0f', 'hex');
const USAGES = [p.CKA_ENCRYPT, p.CKA_DECRYPT, p.CKA_WRAP, p.CKA_UNWRAP, p.CKA_SIGN, p.CKA_VERIFY, p.CKA_DERIVE];

/** An AES secret key template (session object) with every usage attribute given: those in `usage` true, the others false. */
function aesKey(usage: number[], extra: Attr[] = []): Attr[] {
  return [
    { type: p.CKA_CLASS, value: p.CKO_SECRET_KEY },
    { type: p.CKA_KEY_TYPE, value: p.CKK_AES },
    { type: p.CKA_TOKEN, value: false },
    ...USAGES.map((type) => ({ type, value: usage.includes(type) })),
    ...extra,
  ];
}
const KEYGEN = { mechanism: p.CKM_AES_KEY_GEN };
const GENERATED = [
  { type: p.CKA_VALUE_LEN, value: 16 },
  { type: p.CKA_SENSITIVE, value: true },
  { type: p.CKA_PRIVATE, value: true },
];
const imported = (value: Buffer): Attr[] => [
  { type: p.CKA_VALUE, value },
  { type: p.CKA_SENSITIVE, value: false },
  { type: p.CKA_EXTRACTABLE, value: true },
];

function softEcb(key: Buffer, block: Buffer): Buffer {
  const c = createCipheriv('aes-128-ecb', key, null).setAutoPadding(false);
  return Buffer.concat([c.update(block), c.final()]);
}
/** RFC 3394 unwrap in software (OpenSSL's id-aes128-wrap); null when the integrity check fails. */
function softUnwrap(kek: Buffer, blob: Buffer): Buffer | null {
  try {
    const d = createDecipheriv('id-aes128-wrap', kek, KW_IV);
    return Buffer.concat([d.update(blob), d.final()]);
  } catch {
    return null;
  }
}
/** A with the 64-bit big-endian step counter t xored in (RFC 3394 2.2.1). */
function xorT(a: Buffer, t: number): Buffer {
  const out = Buffer.from(a);
  out.writeBigUInt64BE(out.readBigUInt64BE() ^ BigInt(t));
  return out;
}

/** What one test works with. */
interface Ctx {
  m: ModuleProcess;
  s: Handle;
  target: Handle;
  made: Made;
  /** The mechanism of every C_WrapKey / C_UnwrapKey of the attacks. */
  wrapMechanism: { mechanism: number; parameter?: Buffer };
}

/** One AES block through the token with `key` (CKM_AES_ECB). */
async function tokenEcb(c: Ctx, key: Handle, op: 'Encrypt' | 'Decrypt', block: Buffer): Promise<Answer<Buffer>> {
  const init = await c.m.call(`C_${op}Init`, c.s, { mechanism: p.CKM_AES_ECB }, key);
  if (init.rv !== 0) return { ok: undefined, rv: init.rv };
  return c.m.call<Buffer>(`C_${op}`, c.s, block, Buffer.alloc(16));
}

/** RFC 3394 wrap of `plain` computed with C_Encrypt (CKM_AES_ECB) under `key`: what an encrypt right gives. */
async function tokenKeyWrap(c: Ctx, key: Handle, plain: Buffer): Promise<Answer<Buffer>> {
  const n = plain.length / 8;
  let a: Buffer = KW_IV;
  const r = [...Array(n).keys()].map((i) => plain.subarray(8 * i, 8 * i + 8));
  for (let j = 0; j < 6; j++) {
    for (let i = 0; i < n; i++) {
      const b = await tokenEcb(c, key, 'Encrypt', Buffer.concat([a, r[i]]));
      if (b.ok === undefined) return b;
      a = xorT(b.ok.subarray(0, 8), n * j + i + 1);
      r[i] = b.ok.subarray(8, 16);
    }
  }
  return { ok: Buffer.concat([a, ...r]), rv: 0 };
}

/** RFC 3394 unwrap of `blob` computed with C_Decrypt (CKM_AES_ECB) under `key`: what a decrypt right gives. */
async function tokenKeyUnwrap(c: Ctx, key: Handle, blob: Buffer): Promise<Answer<Buffer>> {
  const n = blob.length / 8 - 1;
  let a: Buffer = blob.subarray(0, 8);
  const r = [...Array(n).keys()].map((i) => blob.subarray(8 * (i + 1), 8 * (i + 2)));
  for (let j = 5; j >= 0; j--) {
    for (let i = n - 1; i >= 0; i--) {
      const b = await tokenEcb(c, key, 'Decrypt', Buffer.concat([xorT(a, n * j + i + 1), r[i]]));
      if (b.ok === undefined) return b;
      a = b.ok.subarray(0, 8);
      r[i] = b.ok.subarray(8, 16);
    }
  }
  if (!a.equals(KW_IV)) throw new Error('RFC 3394 integrity check failed: the blob was not wrapped under this key');
  return { ok: Buffer.concat(r), rv: 0 };
}

class Refused extends Error {}

/** One run of a scenario: the calls made with their CK_RVs, and every byte string the token answered. */
class Attack {
  readonly trace: string[] = [];
  readonly outputs: Buffer[] = [];
  constructor(readonly c: Ctx) {}

  /** Records one step; a refusal ends the attack, unless `goOn` (the attacker tries the next step anyway). */
  async step<T>(label: string, run: () => Promise<Answer<T>>, goOn = false): Promise<T | undefined> {
    const a = await run();
    this.trace.push(`${label}: ${rvName(a.rv)}`);
    if (a.ok === undefined) {
      if (goOn) return undefined;
      throw new Refused(label);
    }
    collect(a.ok, this.outputs);
    return a.ok;
  }

  call<T>(fn: string, ...args: unknown[]): () => Promise<Answer<T>> {
    return () => this.c.m.call<T>(fn, this.c.s, ...args);
  }
  generate(usage: number[]): () => Promise<Answer<Handle>> {
    return this.call<Handle>('C_GenerateKey', KEYGEN, aesKey(usage, GENERATED));
  }
  import(usage: number[], value: Buffer): () => Promise<Answer<Handle>> {
    return this.call<Handle>('C_CreateObject', aesKey(usage, imported(value)));
  }
  wrap(wrapping: Handle | undefined, key: Handle): () => Promise<Answer<Buffer>> {
    return this.call<Buffer>('C_WrapKey', this.c.wrapMechanism, wrapping, key, Buffer.alloc(1024));
  }
  unwrap(unwrapping: Handle, blob: Buffer, usage: number[]): () => Promise<Answer<Handle>> {
    return this.call<Handle>('C_UnwrapKey', this.c.wrapMechanism, unwrapping, blob, aesKey(usage));
  }
  set(obj: Handle, attrs: Attr[]): () => Promise<Answer<null>> {
    return this.call<null>('C_SetAttributeValue', obj, attrs);
  }
  readValue(obj: Handle): () => Promise<Answer<Attr[]>> {
    return this.call<Attr[]>('C_GetAttributeValue', obj, [{ type: p.CKA_VALUE }]);
  }
}

function collect(v: unknown, out: Buffer[]): void {
  if (Buffer.isBuffer(v)) out.push(v);
  else if (Array.isArray(v)) for (const x of v) collect(x, out);
  else if (v !== null && typeof v === 'object') for (const x of Object.values(v)) collect(x, out);
}

interface Expect {
  /** `label: CKR_...` of every step made, in order. */
  trace: string[];
  /** The value that came out is the target's. */
  exposed: boolean;
}
interface Scenario {
  n: number;
  title: string;
  /** Runs the attack; resolves to the bytes it claims are the target's value (or throws Refused). */
  run(x: Attack): Promise<Buffer | undefined>;
  /** With no filter rule. */
  pass: Expect;
  /** Why SoftHSM2 itself refuses, when it does (the pass-through test says so). */
  softhsm?: string;
  /** With filter.conf.example. */
  example: Expect;
  /** Caml Crush's daemon with filter.conf.example, where it differs from ours. */
  camlCrush?: Expect;
}

const OK = 'CKR_OK';
const T = { value: (b: Attr[] | undefined) => b?.[0].value as Buffer | undefined };

/** Scenario 6's steps: an encrypt+unwrap key makes a wrapping key of known value W, which wraps the target. */
async function knownWrappingKey(x: Attack): Promise<{ k1: Handle; c: Buffer; blob: Buffer }> {
  const k1 = (await x.step('generate K1 (encrypt, unwrap)', x.generate([p.CKA_ENCRYPT, p.CKA_UNWRAP])))!;
  const c = (await x.step('encrypt W under K1 (RFC 3394 by C_Encrypt)', () => tokenKeyWrap(x.c, k1, W)))!;
  const k2 = (await x.step('unwrap it with K1 as K2 = W (wrap)', x.unwrap(k1, c, [p.CKA_WRAP])))!;
  const blob = (await x.step('wrap target with K2', x.wrap(k2, x.c.target)))!;
  return { k1, c, blob };
}

const SCENARIOS: Scenario[] = [
  {
    n: 1,
    title: "read the target's CKA_VALUE",
    run: async (x) => T.value(await x.step('read target CKA_VALUE', x.readValue(x.c.target))),
    softhsm: 'it never returns the value of a sensitive key',
    pass: { trace: ['read target CKA_VALUE: CKR_ATTRIBUTE_SENSITIVE'], exposed: false },
    example: { trace: ['read target CKA_VALUE: CKR_ATTRIBUTE_SENSITIVE'], exposed: false },
  },
  {
    n: 2,
    title: 'a key allowed to wrap and decrypt wraps the target, then decrypts the blob',
    run: async (x) => {
      const k = (await x.step('generate K (wrap, decrypt)', x.generate([p.CKA_WRAP, p.CKA_DECRYPT])))!;
      const blob = (await x.step('wrap target with K', x.wrap(k, x.c.target)))!;
      return x.step('decrypt blob with K', () => tokenKeyUnwrap(x.c, k, blob));
    },
    pass: { trace: [`generate K (wrap, decrypt): ${OK}`, `wrap target with K: ${OK}`, `decrypt blob with K: ${OK}`], exposed: true },
    // conflicting_attributes_patch: CKA_WRAP and CKA_DECRYPT together.
    example: { trace: ['generate K (wrap, decrypt): CKR_ATTRIBUTE_VALUE_INVALID'], exposed: false },
  },
  {
    n: 3,
    title: 'a wrap-only key wraps the target, then gets CKA_DECRYPT and decrypts the blob',
    run: async (x) => {
      const k = (await x.step('generate K (wrap)', x.generate([p.CKA_WRAP])))!;
      const blob = (await x.step('wrap target with K', x.wrap(k, x.c.target)))!;
      await x.step('set K decrypt', x.set(k, [{ type: p.CKA_DECRYPT, value: true }]));
      return x.step('decrypt blob with K', () => tokenKeyUnwrap(x.c, k, blob));
    },
    pass: { trace: [`generate K (wrap): ${OK}`, `wrap target with K: ${OK}`, `set K decrypt: ${OK}`, `decrypt blob with K: ${OK}`], exposed: true },
    // conflicting_attributes_patch on C_SetAttributeValue: the key's CKA_WRAP with the new CKA_DECRYPT.
    example: { trace: [`generate K (wrap): ${OK}`, `wrap target with K: ${OK}`, 'set K decrypt: CKR_ATTRIBUTE_VALUE_INVALID'], exposed: false },
  },
  {
    n: 4,
    title: 'as 3, with CKA_WRAP cleared and CKA_DECRYPT set in one C_SetAttributeValue',
    run: async (x) => {
      const k = (await x.step('generate K (wrap)', x.generate([p.CKA_WRAP])))!;
      const blob = (await x.step('wrap target with K', x.wrap(k, x.c.target)))!;
      await x.step(
        'set K wrap=false decrypt=true',
        x.set(k, [
          { type: p.CKA_WRAP, value: false },
          { type: p.CKA_DECRYPT, value: true },
        ]),
      );
      return x.step('decrypt blob with K', () => tokenKeyUnwrap(x.c, k, blob));
    },
    pass: {
      trace: [`generate K (wrap): ${OK}`, `wrap target with K: ${OK}`, `set K wrap=false decrypt=true: ${OK}`, `decrypt blob with K: ${OK}`],
      exposed: true,
    },
    // sticky_attributes_patch: CKA_WRAP stays TRUE (the merged template has no conflict left).
    example: { trace: [`generate K (wrap): ${OK}`, `wrap target with K: ${OK}`, 'set K wrap=false decrypt=true: CKR_ATTRIBUTE_VALUE_INVALID'], exposed: false },
  },
  {
    n: 5,
    title: 'as 4, in two calls',
    run: async (x) => {
      const k = (await x.step('generate K (wrap)', x.generate([p.CKA_WRAP])))!;
      const blob = (await x.step('wrap target with K', x.wrap(k, x.c.target)))!;
      await x.step('set K wrap=false', x.set(k, [{ type: p.CKA_WRAP, value: false }]), true);
      await x.step('set K decrypt', x.set(k, [{ type: p.CKA_DECRYPT, value: true }]));
      return x.step('decrypt blob with K', () => tokenKeyUnwrap(x.c, k, blob));
    },
    pass: {
      trace: [`generate K (wrap): ${OK}`, `wrap target with K: ${OK}`, `set K wrap=false: ${OK}`, `set K decrypt: ${OK}`, `decrypt blob with K: ${OK}`],
      exposed: true,
    },
    // sticky_attributes_patch refuses the first call, conflicting_attributes_patch the second (CKA_WRAP is still TRUE).
    example: {
      trace: [`generate K (wrap): ${OK}`, `wrap target with K: ${OK}`, 'set K wrap=false: CKR_ATTRIBUTE_VALUE_INVALID', 'set K decrypt: CKR_ATTRIBUTE_VALUE_INVALID'],
      exposed: false,
    },
  },
  {
    n: 6,
    title: 'an encrypt+unwrap key encrypts known bytes, unwraps them as a wrapping key of known value, which wraps the target',
    run: async (x) => {
      const { blob } = await knownWrappingKey(x);
      return softUnwrap(W, blob) ?? undefined;
    },
    pass: {
      trace: [`generate K1 (encrypt, unwrap): ${OK}`, `encrypt W under K1 (RFC 3394 by C_Encrypt): ${OK}`, `unwrap it with K1 as K2 = W (wrap): ${OK}`, `wrap target with K2: ${OK}`],
      exposed: true,
    },
    // conflicting_attributes_patch: CKA_UNWRAP and CKA_ENCRYPT together.
    example: { trace: ['generate K1 (encrypt, unwrap): CKR_ATTRIBUTE_VALUE_INVALID'], exposed: false },
  },
  {
    n: 7,
    title: 'clear CKA_SENSITIVE on the target, then read it',
    run: async (x) => {
      await x.step('set target sensitive=false', x.set(x.c.target, [{ type: p.CKA_SENSITIVE, value: false }]), true);
      return T.value(await x.step('read target CKA_VALUE', x.readValue(x.c.target)));
    },
    softhsm: 'CKA_SENSITIVE cannot be cleared once set',
    pass: { trace: ['set target sensitive=false: CKR_ATTRIBUTE_READ_ONLY', 'read target CKA_VALUE: CKR_ATTRIBUTE_SENSITIVE'], exposed: false },
    // sticky_attributes_patch (and, for a generated target, conflicting_attributes_patch: CKA_ALWAYS_SENSITIVE is TRUE).
    example: { trace: ['set target sensitive=false: CKR_ATTRIBUTE_VALUE_INVALID', 'read target CKA_VALUE: CKR_ATTRIBUTE_SENSITIVE'], exposed: false },
  },
  {
    n: 8,
    title: 'set CKA_EXTRACTABLE TRUE -> FALSE -> TRUE, then read or wrap the target',
    run: async (x) => {
      const k = (await x.step('generate K (wrap)', x.generate([p.CKA_WRAP])))!;
      await x.step('set target extractable=false', x.set(x.c.target, [{ type: p.CKA_EXTRACTABLE, value: false }]));
      await x.step('set target extractable=true', x.set(x.c.target, [{ type: p.CKA_EXTRACTABLE, value: true }]), true);
      const v = T.value(await x.step('read target CKA_VALUE', x.readValue(x.c.target), true));
      // A blob, were it made, would go the way of scenarios 3 to 5.
      await x.step('wrap target with K', x.wrap(k, x.c.target));
      return v;
    },
    softhsm: 'CKA_EXTRACTABLE cannot go back to TRUE, and it wraps no unextractable key',
    pass: {
      trace: [
        `generate K (wrap): ${OK}`,
        `set target extractable=false: ${OK}`,
        'set target extractable=true: CKR_ATTRIBUTE_READ_ONLY',
        'read target CKA_VALUE: CKR_ATTRIBUTE_SENSITIVE',
        'wrap target with K: CKR_KEY_UNEXTRACTABLE',
      ],
      exposed: false,
    },
    // sticky_attributes_patch: CKA_EXTRACTABLE stays FALSE; SoftHSM2 then refuses the wrap itself.
    example: {
      trace: [
        `generate K (wrap): ${OK}`,
        `set target extractable=false: ${OK}`,
        'set target extractable=true: CKR_ATTRIBUTE_VALUE_INVALID',
        'read target CKA_VALUE: CKR_ATTRIBUTE_SENSITIVE',
        'wrap target with K: CKR_KEY_UNEXTRACTABLE',
      ],
      exposed: false,
    },
  },
  {
    n: 9,
    title: 'import a known-value key with wrap rights by C_CreateObject, wrap the target with it',
    run: async (x) => {
      const ki = (await x.step('import KI = W (wrap)', x.import([p.CKA_WRAP], W)))!;
      const blob = (await x.step('wrap target with KI', x.wrap(ki, x.c.target)))!;
      return softUnwrap(W, blob) ?? undefined;
    },
    pass: { trace: [`import KI = W (wrap): ${OK}`, `wrap target with KI: ${OK}`], exposed: true },
    // non_local_objects_patch: an imported key never gets CKA_WRAP.
    example: { trace: ['import KI = W (wrap): CKR_TEMPLATE_INCONSISTENT'], exposed: false },
  },
  {
    n: 10,
    title: 'import a known-value key without rights, add CKA_WRAP later, wrap the target',
    run: async (x) => {
      const ki = (await x.step('import KI = W', x.import([], W)))!;
      await x.step('set KI wrap', x.set(ki, [{ type: p.CKA_WRAP, value: true }]));
      const blob = (await x.step('wrap target with KI', x.wrap(ki, x.c.target)))!;
      return softUnwrap(W, blob) ?? undefined;
    },
    pass: { trace: [`import KI = W: ${OK}`, `set KI wrap: ${OK}`, `wrap target with KI: ${OK}`], exposed: true },
    // non_local_objects_patch on C_SetAttributeValue.
    example: { trace: [`import KI = W: ${OK}`, 'set KI wrap: CKR_TEMPLATE_INCONSISTENT'], exposed: false },
  },
  {
    n: 11,
    title: 'wrap the target, unwrap the blob twice (one copy wraps, one decrypts), then scenario 2 with the copies',
    run: async (x) => {
      const k = (await x.step('generate K (wrap, unwrap)', x.generate([p.CKA_WRAP, p.CKA_UNWRAP])))!;
      const blob = (await x.step('wrap target with K', x.wrap(k, x.c.target)))!;
      const ka = (await x.step('unwrap blob as Ka (wrap)', x.unwrap(k, blob, [p.CKA_WRAP])))!;
      const kb = (await x.step('unwrap blob as Kb (decrypt)', x.unwrap(k, blob, [p.CKA_DECRYPT])))!;
      const blob2 = (await x.step('wrap target with Ka', x.wrap(ka, x.c.target)))!;
      return x.step('decrypt blob with Kb', () => tokenKeyUnwrap(x.c, kb, blob2));
    },
    pass: {
      trace: [
        `generate K (wrap, unwrap): ${OK}`,
        `wrap target with K: ${OK}`,
        `unwrap blob as Ka (wrap): ${OK}`,
        `unwrap blob as Kb (decrypt): ${OK}`,
        `wrap target with Ka: ${OK}`,
        `decrypt blob with Kb: ${OK}`,
      ],
      exposed: true,
    },
    // wrapping_format_patch: the blob says the target has CKA_WRAP=FALSE (and CKA_ENCRYPT=TRUE); Ka's template contradicts it.
    example: { trace: [`generate K (wrap, unwrap): ${OK}`, `wrap target with K: ${OK}`, 'unwrap blob as Ka (wrap): CKR_TEMPLATE_INCONSISTENT'], exposed: false },
    // Caml Crush wraps with CKM_AES_CBC here, which SoftHSM2 does not offer for unwrapping: refused before any action runs.
    camlCrush: { trace: [`generate K (wrap, unwrap): ${OK}`, `wrap target with K: ${OK}`, 'unwrap blob as Ka (wrap): CKR_MECHANISM_INVALID'], exposed: false },
  },
  {
    n: 12,
    title: 'scenario 6, then the token decrypts the blob with a second key of the known value',
    run: async (x) => {
      const { k1, c, blob } = await knownWrappingKey(x);
      const k3 = (await x.step('unwrap it with K1 as K3 = W (decrypt)', x.unwrap(k1, c, [p.CKA_DECRYPT])))!;
      return x.step('decrypt blob with K3', () => tokenKeyUnwrap(x.c, k3, blob));
    },
    pass: {
      trace: [
        `generate K1 (encrypt, unwrap): ${OK}`,
        `encrypt W under K1 (RFC 3394 by C_Encrypt): ${OK}`,
        `unwrap it with K1 as K2 = W (wrap): ${OK}`,
        `wrap target with K2: ${OK}`,
        `unwrap it with K1 as K3 = W (decrypt): ${OK}`,
        `decrypt blob with K3: ${OK}`,
      ],
      exposed: true,
    },
    example: { trace: ['generate K1 (encrypt, unwrap): CKR_ATTRIBUTE_VALUE_INVALID'], exposed: false },
  },
];

/** The target: a secret, sensitive, extractable AES-128 data key. */
function targetTemplate(made: Made): Attr[] {
  const extra: Attr[] = [
    { type: p.CKA_SENSITIVE, value: true },
    { type: p.CKA_EXTRACTABLE, value: true },
    { type: p.CKA_PRIVATE, value: true },
  ];
  return aesKey([p.CKA_ENCRYPT, p.CKA_DECRYPT], [...extra, made === 'C_CreateObject' ? { type: p.CKA_VALUE, value: TARGET_VALUE } : { type: p.CKA_VALUE_LEN, value: 16 }]);
}

/** True when `x` is the target's value: equal to the imported value, or encrypting a block as the target does on the token. */
async function isTargetValue(c: Ctx, x: Buffer | undefined): Promise<boolean> {
  if (x === undefined || x.length !== 16) return false;
  if (c.made === 'C_CreateObject') return x.equals(TARGET_VALUE);
  const probe = Buffer.alloc(16, 0x5a);
  const onToken = await tokenEcb(c, c.target, 'Encrypt', probe);
  if (onToken.ok === undefined) throw new Error(`encrypting with the target: ${rvName(onToken.rv)}`);
  return onToken.ok.equals(softEcb(x, probe));
}

/** A proxy daemon on a fresh SoftHSM2 store. */
interface Server {
  socketPath: string;
  stop(): Promise<unknown>;
}

/** A daemon, our client in front of it, logged in. */
interface Bench {
  d: Server;
  m: ModuleProcess;
  slot: number;
  wrapMechanism: Ctx['wrapMechanism'];
}

function useBench(start: () => Promise<Server>, wrapMechanism: Ctx['wrapMechanism'] = KEY_WRAP): () => Bench {
  let b: Bench | undefined;
  let d: Server | undefined;
  let m: ModuleProcess | undefined;
  beforeAll(async () => {
    d = await start();
    m = await ModuleProcess.start(OUR_CLIENT, { ...process.env, PKCS11PROXY_SOCKET_PATH: d.socketPath, PKCS11PROXY_LIBNAME: 'softhsm' });
    await m.must('C_Initialize');
    const slot = (await m.must<number[]>('C_GetSlotList', true))[0];
    const s = await m.must<Handle>('C_OpenSession', slot, RW);
    await m.must('C_Login', s, p.CKU_USER, USER_PIN);
    b = { d, m, slot, wrapMechanism };
  }, 120_000);
  afterAll(async () => {
    // Whatever part of the set-up ran is taken down, so no daemon outlives a failed start.
    await m?.call('C_Finalize');
    await m?.stop();
    await d?.stop();
  }, 120_000);
  return () => {
    if (!b) throw new Error('set-up failed (see beforeAll)');
    return b;
  };
}

/** Runs one scenario on a fresh session with a fresh target. */
async function attack(b: Bench, made: Made, sc: Scenario): Promise<{ trace: string[]; exposed: boolean; outputs: Buffer[] }> {
  const s = await b.m.must<Handle>('C_OpenSession', b.slot, RW);
  try {
    const target =
      made === 'C_CreateObject'
        ? await b.m.must<Handle>('C_CreateObject', s, targetTemplate(made))
        : await b.m.must<Handle>('C_GenerateKey', s, KEYGEN, targetTemplate(made));
    const c: Ctx = { m: b.m, s, target, made, wrapMechanism: b.wrapMechanism };
    const x = new Attack(c);
    let out: Buffer | undefined;
    try {
      out = await sc.run(x);
    } catch (e) {
      if (!(e instanceof Refused)) throw e;
    }
    return { trace: x.trace, exposed: await isTargetValue(c, out), outputs: x.outputs };
  } finally {
    await b.m.call('C_CloseSession', s);
  }
}

const TARGETS: Made[] = ['C_CreateObject', 'C_GenerateKey'];

describe('PASS-THROUGH (no filter rules): every scenario gets the secret out, or SoftHSM2 itself refuses', () => {
  const bench = useBench(() => startDaemon({ workers: 1 }));
  describe.each(TARGETS)('target made by %s', (made) => {
    test.each(SCENARIOS.map((sc) => [`${sc.n}. ${sc.title}${sc.softhsm ? ` (SoftHSM2 itself refuses: ${sc.softhsm})` : ''}`, sc] as const))(
      '%s',
      async (_name, sc) => {
        const r = await attack(bench(), made, sc);
        expect({ trace: r.trace, exposed: r.exposed }).toEqual(sc.pass);
      },
    );
  });
});

/** filter.conf.example as the daemon's filter: its own `modules` line gives way to the test store's, and a wrapping format key is added. */
function exampleFilter(): string {
  const text = fs.readFileSync(path.join(ROOT, 'filter.conf.example'), 'utf8');
  const modules = /^modules = .*$/m;
  if (!modules.test(text)) throw new Error('filter.conf.example: no one-line `modules = ...` entry');
  return `${text.replace(modules, '')}\nwrapping_format_key = "${randomBytes(16).toString('hex')}"\n`;
}

describe('filter.conf.example: every scenario is refused and no secret comes out', () => {
  const bench = useBench(() => startDaemon({ workers: 1, filterExtra: exampleFilter() }));
  describe.each(TARGETS)('target made by %s', (made) => {
    test.each(SCENARIOS.map((sc) => [`${sc.n}. ${sc.title}`, sc] as const))('%s', async (_name, sc) => {
      const r = await attack(bench(), made, sc);
      expect({ trace: r.trace, exposed: r.exposed }).toEqual(sc.example);
      if (made === 'C_CreateObject') expect(r.outputs.filter((o) => o.includes(TARGET_VALUE))).toEqual([]);
    });
  });

  test.each([
    ['CKM_AES_KEY_WRAP', p.CKM_AES_KEY_WRAP],
    ['CKM_AES_KEY_WRAP_PAD', p.CKM_AES_KEY_WRAP_PAD],
  ])('%s stays usable: a wrap/unwrap key wraps an extractable data key and unwraps a working copy', async (_name, mechanism) => {
    const { m, slot } = bench();
    const s = await m.must<Handle>('C_OpenSession', slot, RW);
    try {
      const kw = await m.must<Handle>('C_GenerateKey', s, KEYGEN, aesKey([p.CKA_WRAP, p.CKA_UNWRAP], [...GENERATED, { type: p.CKA_EXTRACTABLE, value: false }]));
      const dataKey = aesKey([p.CKA_ENCRYPT, p.CKA_DECRYPT], [{ type: p.CKA_SENSITIVE, value: true }, { type: p.CKA_EXTRACTABLE, value: true }]);
      const key = await m.must<Handle>('C_GenerateKey', s, KEYGEN, [...dataKey, { type: p.CKA_VALUE_LEN, value: 16 }]);
      const blob = await m.must<Buffer>('C_WrapKey', s, { mechanism }, kw, key, Buffer.alloc(1024));
      const copy = await m.must<Handle>('C_UnwrapKey', s, { mechanism }, kw, blob, dataKey);
      const c: Ctx = { m, s, target: key, made: 'C_GenerateKey', wrapMechanism: { mechanism } };
      const probe = Buffer.alloc(16, 0x33);
      const [a, b] = [await tokenEcb(c, key, 'Encrypt', probe), await tokenEcb(c, copy, 'Encrypt', probe)];
      expect([rvName(a.rv), rvName(b.rv)]).toEqual([OK, OK]);
      expect(b.ok).toEqual(a.ok);
    } finally {
      await m.call('C_CloseSession', s);
    }
  });
});

/**
 * Debian's Caml Crush daemon on a fresh SoftHSM2 store, with `modules` and
 * `filterExtra` as its filter.conf. Ready when its socket exists (it prints
 * no readiness line); it runs in its own process group with its
 * per-connection processes, which stop() ends.
 */
async function startCamlCrush(filterExtra: string): Promise<Server> {
  const hsm = createSoftHsm(['test']);
  const socketPath = path.join(hsm.dir, 'cc.sock');
  const filterConf = path.join(hsm.dir, 'filter.conf');
  fs.writeFileSync(filterConf, `modules = [("softhsm", "${SOFTHSM_MODULE}")]\n${filterExtra}`);
  const serverConf = path.join(hsm.dir, 'pkcs11proxyd.conf');
  fs.writeFileSync(
    serverConf,
    `netplex {
  controller { max_level = "info"; socket_directory = "${hsm.dir}/netplex"; logging { type = "stderr"; }; };
  service {
    name = "PKCS#11 Filtering Proxy";
    conn_limit = 1;
    protocol { name = "rpc_pkcs11"; address { type = "local"; path = "${socketPath}"; }; };
    processor { type = "rpc_pkcs11"; filter_config = "${filterConf}"; use_ssl = false; };
    workload_manager { type = "dynamic"; max_jobs_per_thread = 1; min_free_jobs_capacity = 1; max_free_jobs_capacity = 1; max_threads = 100; };
  }
}
`,
  );
  const proc = spawn(CAML_CRUSH_DAEMON, ['-fg', '-conf', serverConf], { env: hsm.env, detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  const deadline = Date.now() + 30_000;
  while (!fs.existsSync(socketPath)) {
    if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`Caml Crush did not create ${socketPath}: ${err}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    socketPath,
    stop: async () => {
      if (proc.exitCode === null) process.kill(-proc.pid!, 'SIGTERM');
      await exited;
      hsm.cleanup();
    },
  };
}

describe("Caml Crush's daemon with filter.conf.example: the same refusals (it refuses CKM_AES_KEY_WRAP itself, so its attacks wrap with CKM_AES_CBC)", () => {
  const bench = useBench(() => startCamlCrush(exampleFilter()), { mechanism: p.CKM_AES_CBC, parameter: Buffer.alloc(16) });
  describe.each(TARGETS)('target made by %s', (made) => {
    test.each(SCENARIOS.map((sc) => [`${sc.n}. ${sc.title}`, sc] as const))('%s', async (_name, sc) => {
      const r = await attack(bench(), made, sc);
      expect({ trace: r.trace, exposed: r.exposed }).toEqual(sc.camlCrush ?? sc.example);
    });
  });
});
