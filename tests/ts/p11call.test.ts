import path from 'node:path';
import * as p from 'pkcs11js';
import { bool, bytes, query, ulong } from './helpers/attrs';
import { faultyModule } from './helpers/faulty-module';
import type { startInProcess as StartInProcess } from './helpers/in-process';
import { createSoftHsm, USER_PIN } from './helpers/softhsm';
import type { SoftHsmStore } from './helpers/softhsm';
import type { px_attribute } from '../../src/generated/pkcs11_rpc';
import { p11call } from '../../src/bindings/p11call';

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

async function answers(disable: boolean, dir: string): Promise<Answers> {
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
    await c.close();
    return out;
  } finally {
    stack.finalize();
  }
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
