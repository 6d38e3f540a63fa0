import * as p from 'pkcs11js';
import { startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import type { px_attribute } from '../../src/generated/pkcs11_rpc';
import { bool, bytes, mech, ulong } from './helpers/attrs';
import { P11Client } from './helpers/p11-client';
import { USER_PIN } from './helpers/softhsm';

/**
 * `-debug-pkcs11` is read by people and `-debug-pkcs11-json` by programs:
 * here the output is the feature. One scenario through the real daemon
 * (SoftHSM2 token "test"): token info, a read/write session, C_SetPIN to a
 * PIN only this test knows, C_Login with it, a session AES key created with a
 * known CKA_VALUE and label, AES-CBC-PAD encryption of a known plaintext. The
 * trace names what happened by spec names, shows the public strings, and
 * never the PINs, the key value or the plaintext (raw, hex or base64).
 */
const NEW_PIN = 'Pin-7c1e9a44d2';
const KEY_VALUE = Buffer.from('a1b2c3d4e5f60718293a4b5c6d7e8f90', 'hex');
const PLAINTEXT = Buffer.from('plaintext-5b9e0c1d-only-this-test');
const IV = Buffer.alloc(16, 0x42);
const LABEL = 'trace key é';

/** An attribute to read, with a buffer of `len` bytes. */
const out = (type: number, len: number): px_attribute => ({ type, value: Buffer.alloc(len), valueLen: len });

async function scenario(d: RunningDaemon): Promise<void> {
  const c = await P11Client.open({ path: d.socketPath });
  const slot = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList[0];
  expect((await c.call('C_GetTokenInfo', { slotID: slot })).rv).toBe(p.CKR_OK);
  expect((await c.call('C_GetMechanismInfo', { slotID: slot, type: p.CKM_AES_CBC_PAD })).rv).toBe(p.CKR_OK);
  const s = (await c.call('C_OpenSession', { slotID: slot, flags: p.CKF_RW_SESSION | p.CKF_SERIAL_SESSION })).session;
  expect(await c.call('C_Login', { session: s, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) })).toBe(p.CKR_OK);
  expect(await c.call('C_SetPIN', { session: s, oldPin: Buffer.from(USER_PIN), newPin: Buffer.from(NEW_PIN) })).toBe(p.CKR_OK);
  expect(await c.call('C_Logout', { session: s })).toBe(p.CKR_OK);
  expect(await c.call('C_Login', { session: s, userType: p.CKU_USER, pin: Buffer.from(NEW_PIN) })).toBe(p.CKR_OK);
  const key = await c.call('C_CreateObject', {
    session: s,
    template: [
      ulong(p.CKA_CLASS, p.CKO_SECRET_KEY), ulong(p.CKA_KEY_TYPE, p.CKK_AES), bool(p.CKA_TOKEN, false),
      bytes(p.CKA_LABEL, LABEL), bool(p.CKA_ENCRYPT, true), bytes(p.CKA_VALUE, KEY_VALUE),
    ],
  });
  expect(key.rv).toBe(p.CKR_OK);
  expect((await c.call('C_GetAttributeValue', { session: s, object: key.object, template: [out(p.CKA_VALUE_LEN, 8), out(p.CKA_LABEL, 64)] })).rv).toBe(p.CKR_OK);
  expect(await c.call('C_EncryptInit', { session: s, mechanism: mech(p.CKM_AES_CBC_PAD, IV), key: key.object })).toBe(p.CKR_OK);
  expect((await c.call('C_Encrypt', { session: s, data: PLAINTEXT })).rv).toBe(p.CKR_OK);
  await c.close();
}

/** No secret of the scenario in `out`, in any of the forms a careless formatter would print. */
function expectNoSecret(out: string): void {
  // USER_PIN (1234) is too short to look for: timestamps contain it.
  for (const secret of [Buffer.from(NEW_PIN), KEY_VALUE, PLAINTEXT]) {
    expect(out).not.toContain(secret.toString('hex'));
    expect(out).not.toContain(secret.toString('base64'));
    expect(out).not.toContain(secret.toString('latin1'));
  }
}

describe('-debug-pkcs11 (text)', () => {
  let d: RunningDaemon;
  let out: string;
  beforeAll(async () => {
    d = await startDaemon({ trace: true });
    await scenario(d);
    await d.stop();
    out = d.output();
  });

  test('reads like the spec: names, flags, public strings', () => {
    const ms = String.raw`\(\d+\.\d{3} ms\)`;
    const lines = [
      String.raw`\[conn 1\] C_OpenSession\(slotID=\d+, flags=CKF_RW_SESSION\|CKF_SERIAL_SESSION\) -> CKR_OK \{session=\d+\} ${ms}`,
      String.raw`\[conn 1\] C_Login\(session=\d+, userType=CKU_USER, pin=<redacted>\) -> CKR_OK ${ms}`,
      String.raw`\[conn 1\] C_SetPIN\(session=\d+, oldPin=<redacted>, newPin=<redacted>\) -> CKR_OK ${ms}`,
      String.raw`\[conn 1\] C_GetMechanismInfo\(slotID=\d+, type=CKM_AES_CBC_PAD\) -> CKR_OK \{info=\{minKeySize=16, maxKeySize=32, flags=CKF_ENCRYPT\|CKF_DECRYPT\}\} ${ms}`,
      String.raw`\[conn 1\] C_CreateObject\(session=\d+, template=\[CKA_CLASS=CKO_SECRET_KEY, CKA_KEY_TYPE=CKK_AES, CKA_TOKEN=false, CKA_LABEL="trace key é", CKA_ENCRYPT=true, CKA_VALUE=<16 bytes>\]\) -> CKR_OK \{object=\d+\} ${ms}`,
      String.raw`\[conn 1\] C_GetAttributeValue\(session=\d+, object=\d+, template=\[CKA_VALUE_LEN\(len=8\), CKA_LABEL\(len=64\)\]\) -> CKR_OK \{template=\[CKA_VALUE_LEN=16, CKA_LABEL="trace key é"\]\} ${ms}`,
      String.raw`\[conn 1\] C_EncryptInit\(session=\d+, mechanism=CKM_AES_CBC_PAD\(<16 bytes>\), key=\d+\) -> CKR_OK ${ms}`,
      String.raw`\[conn 1\] C_Encrypt\(session=\d+, data=<33 bytes>\) -> CKR_OK \{data=<48 bytes>\} ${ms}`,
    ];
    for (const l of lines) expect(out).toMatch(new RegExp(`^.*${l}$`, 'm'));
    // Token info: label, manufacturer and model as text, token flags by name.
    expect(out).toMatch(/C_GetTokenInfo\(slotID=\d+\) -> CKR_OK \{info=\{label="test", manufacturerID="SoftHSM project", model="SoftHSM v2", serialNumber="[0-9a-f]+", flags=CKF_RNG\|CKF_LOGIN_REQUIRED\|CKF_USER_PIN_INITIALIZED\|CKF_RESTORE_KEY_NOT_NEEDED\|CKF_TOKEN_INITIALIZED,.* hardwareVersion=\d+\.\d+, firmwareVersion=\d+\.\d+, utcTime="\d*"\}\}/);
    expect(out).toMatch(/C_LoadModule\(alias="softhsm"\) -> CKR_OK/);
  });

  test('no PIN, key value or plaintext', () => {
    expectNoSecret(out);
  });
});

describe('-debug-pkcs11-json', () => {
  let d: RunningDaemon;
  let out: string;
  let records: Array<Record<string, unknown>>;
  beforeAll(async () => {
    d = await startDaemon({ trace: 'json', workers: 2 });
    await scenario(d);
    await d.stop();
    out = d.output();
    records = out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  });

  test('one JSON object per call, with names', () => {
    const calls = records.map((r) => r.call);
    expect(calls).toEqual([
      'C_SetupArch', 'C_LoadModule', 'C_Initialize', 'C_GetSlotList', 'C_GetTokenInfo', 'C_GetMechanismInfo', 'C_OpenSession',
      'C_Login', 'C_SetPIN', 'C_Logout', 'C_Login', 'C_CreateObject', 'C_GetAttributeValue', 'C_EncryptInit', 'C_Encrypt', 'C_Finalize',
    ]);
    for (const r of records) {
      expect(r).toMatchObject({ conn: 1, rv: 'CKR_OK' });
      expect(typeof r.ms).toBe('number');
      expect(typeof r.worker).toBe('number');
      expect(Number.isNaN(Date.parse(r.time as string))).toBe(false);
    }
    const by = (call: string) => records.find((r) => r.call === call)!;
    expect(by('C_OpenSession').args).toEqual({ slotID: expect.any(Number), flags: 'CKF_RW_SESSION|CKF_SERIAL_SESSION' });
    expect(by('C_Login').args).toEqual({ session: expect.any(Number), userType: 'CKU_USER', pin: '<redacted>' });
    expect(by('C_CreateObject').args).toEqual({
      session: expect.any(Number),
      template: [
        { type: 'CKA_CLASS', value: 'CKO_SECRET_KEY' },
        { type: 'CKA_KEY_TYPE', value: 'CKK_AES' },
        { type: 'CKA_TOKEN', value: false },
        { type: 'CKA_LABEL', value: LABEL },
        { type: 'CKA_ENCRYPT', value: true },
        { type: 'CKA_VALUE', value: '<16 bytes>' },
      ],
    });
    expect(by('C_EncryptInit').args).toEqual({ session: expect.any(Number), mechanism: { mechanism: 'CKM_AES_CBC_PAD', parameter: '<16 bytes>' }, key: expect.any(Number) });
    expect(by('C_Encrypt')).toMatchObject({ args: { data: '<33 bytes>' }, result: { data: '<48 bytes>' } });
    expect(by('C_GetAttributeValue').result).toEqual({
      template: [{ type: 'CKA_VALUE_LEN', value: 16 }, { type: 'CKA_LABEL', value: LABEL }],
    });
    expect(by('C_GetTokenInfo').result).toMatchObject({ info: { label: 'test', manufacturerID: 'SoftHSM project', model: 'SoftHSM v2' } });
    expect((by('C_GetTokenInfo').result as { info: { flags: string } }).info.flags.split('|')).toContain('CKF_TOKEN_INITIALIZED');
  });

  test('no PIN, key value or plaintext', () => {
    expectNoSecret(out);
  });
});
