import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import * as p from 'pkcs11js';
import { bool, bytes, ecKeyPairTemplates, mech, ulong } from './helpers/attrs';
import { startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { P11Client } from './helpers/p11-client';
import { USER_PIN } from './helpers/softhsm';
import { constantName } from '../../src/pkcs11/constants';
import { jsonLines, readJsonLines } from './helpers/json-lines';

const RW = p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION;
/** A PIN and a key value no log line could contain by chance. */
const PIN = `Zq8-${randomBytes(6).toString('hex')}`;
const VALUE = randomBytes(32);

interface AuditLine {
  time: string;
  event: string;
  pid: number;
  worker: number | null;
  [k: string]: unknown;
}

/** Polls the audit file until `pred` holds (deadline 10 s). */
async function waitFor(file: string, pred: (l: AuditLine[]) => boolean): Promise<AuditLine[]> {
  const end = Date.now() + 10_000;
  for (;;) {
    const l = readJsonLines<AuditLine>(file);
    if (pred(l)) return l;
    if (Date.now() > end) throw new Error(`audit file never matched; it has:\n${l.map((x) => JSON.stringify(x)).join('\n')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Every spelling of `secret` a log line could carry. */
function spellings(secret: Buffer): string[] {
  return [secret.toString('hex'), secret.toString('hex').toUpperCase(), secret.toString('base64'), secret.toString('base64url'), secret.toString('latin1')];
}

describe('audit trail through the real daemon (1 worker, -debug-pkcs11)', () => {
  let d: RunningDaemon;
  let auditFile: string;
  let filterFile: string;
  let c: P11Client;
  let session: number;
  const created: Record<string, number> = {};

  beforeAll(async () => {
    d = await startDaemon({
      workers: 1,
      trace: true,
      filterExtra: 'forbidden_mechanisms = [(".*", [CKM_RSA_X_509])]',
      processorExtra: 'audit_file = "audit.log"; audit_stderr = true;',
    });
    auditFile = path.join(d.hsm.dir, 'audit.log');
    filterFile = path.join(d.hsm.dir, 'filter.conf');
    c = await P11Client.open({ path: d.socketPath });
    const slot = (await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).slotList[0];
    session = (await c.call('C_OpenSession', { slotID: slot, flags: RW })).session;
    expect(await c.call('C_SetPIN', { session, oldPin: Buffer.from(USER_PIN), newPin: Buffer.from(PIN) })).toBe(p.CKR_OK);
    expect(await c.call('C_Login', { session, userType: p.CKU_USER, pin: Buffer.from(PIN) })).toBe(p.CKR_OK);

    const imported = await c.call('C_CreateObject', {
      session,
      template: [
        ulong(p.CKA_CLASS, p.CKO_SECRET_KEY),
        ulong(p.CKA_KEY_TYPE, p.CKK_AES),
        bool(p.CKA_TOKEN, false),
        bool(p.CKA_EXTRACTABLE, true),
        bool(p.CKA_ENCRYPT, true),
        bytes(p.CKA_LABEL, 'audit-imported'),
        bytes(p.CKA_ID, Buffer.from([0xa1, 0xb2])),
        bytes(p.CKA_VALUE, VALUE),
      ],
    });
    expect(imported.rv).toBe(p.CKR_OK);
    created.imported = imported.object;
    const wrap = await c.call('C_GenerateKey', {
      session,
      mechanism: mech(p.CKM_AES_KEY_GEN),
      template: [ulong(p.CKA_VALUE_LEN, 32), bool(p.CKA_TOKEN, false), bool(p.CKA_WRAP, true), bool(p.CKA_UNWRAP, true), bytes(p.CKA_LABEL, 'audit-wrap')],
    });
    expect(wrap.rv).toBe(p.CKR_OK);
    created.wrap = wrap.object;
    const blob = await c.call('C_WrapKey', { session, mechanism: mech(p.CKM_AES_KEY_WRAP), wrappingKey: wrap.object, key: imported.object });
    expect(blob.rv).toBe(p.CKR_OK);
    const unwrapped = await c.call('C_UnwrapKey', {
      session,
      mechanism: mech(p.CKM_AES_KEY_WRAP),
      unwrappingKey: wrap.object,
      wrappedKey: blob.data,
      template: [ulong(p.CKA_CLASS, p.CKO_SECRET_KEY), ulong(p.CKA_KEY_TYPE, p.CKK_AES), bool(p.CKA_TOKEN, false), bool(p.CKA_EXTRACTABLE, true), bytes(p.CKA_LABEL, 'audit-unwrapped')],
    });
    expect(unwrapped.rv).toBe(p.CKR_OK);
    created.unwrapped = unwrapped.object;
    // The unwrapped key holds VALUE: reading it back proves the secret went through this daemon.
    const back = await c.call('C_GetAttributeValue', { session, object: unwrapped.object, template: [{ type: p.CKA_VALUE, value: Buffer.alloc(32), valueLen: 32 }] });
    expect(back.template[0].value.equals(VALUE)).toBe(true);
    const pair = await c.call('C_GenerateKeyPair', { session, mechanism: mech(p.CKM_EC_KEY_PAIR_GEN), ...ecKeyPairTemplates('audit-ec') });
    expect(pair.rv).toBe(p.CKR_OK);
    created.publicKey = pair.publicKey;
    created.privateKey = pair.privateKey;
    const copy = await c.call('C_CopyObject', { session, object: imported.object, template: [bytes(p.CKA_LABEL, 'audit-copy')] });
    expect(copy.rv).toBe(p.CKR_OK);
    created.copy = copy.object;
    // RFC 2409 Oakley group 2 (1024-bit MODP), generator 2: the DH derive parameter is the peer's public value (no pointers).
    const prime = Buffer.from(
      'FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF',
      'hex',
    );
    const dh = await c.call('C_GenerateKeyPair', {
      session,
      mechanism: mech(p.CKM_DH_PKCS_KEY_PAIR_GEN),
      publicKeyTemplate: [bytes(p.CKA_PRIME, prime), bytes(p.CKA_BASE, Buffer.from([2])), bool(p.CKA_TOKEN, false)],
      privateKeyTemplate: [bool(p.CKA_DERIVE, true), bool(p.CKA_TOKEN, false)],
    });
    expect(dh.rv).toBe(p.CKR_OK);
    created.dhPrivate = dh.privateKey;
    const pv = await c.call('C_GetAttributeValue', { session, object: dh.publicKey, template: [{ type: p.CKA_VALUE, value: Buffer.alloc(256), valueLen: 256 }] });
    const derived = await c.call('C_DeriveKey', {
      session,
      mechanism: mech(p.CKM_DH_PKCS_DERIVE, pv.template[0].value),
      baseKey: dh.privateKey,
      template: [ulong(p.CKA_CLASS, p.CKO_SECRET_KEY), ulong(p.CKA_KEY_TYPE, p.CKK_GENERIC_SECRET), ulong(p.CKA_VALUE_LEN, 32), bool(p.CKA_TOKEN, false), bytes(p.CKA_LABEL, 'audit-derived')],
    });
    created.deriveRv = derived.rv;
    created.derived = derived.object;
    expect(await c.call('C_DestroyObject', { session, object: copy.object })).toBe(p.CKR_OK);
    expect(await c.call('C_SignInit', { session, mechanism: mech(p.CKM_RSA_X_509), key: pair.privateKey })).toBe(p.CKR_MECHANISM_INVALID);
    await c.close();
  });

  afterAll(async () => {
    await d?.stop();
  });

  test('object_created for C_CreateObject, C_GenerateKey, C_UnwrapKey, C_GenerateKeyPair, C_CopyObject, C_DeriveKey: handle, class, key type, label, id; never a value', async () => {
    const all = await waitFor(auditFile, (l) => l.some((x) => x.event === 'connection_closed'));
    const made = all.filter((x) => x.event === 'object_created');
    const pick = (call: string, label: string) => made.find((x) => x.call === call && x.label === label);
    expect(pick('C_CreateObject', 'audit-imported')).toMatchObject({ object: created.imported, class: 'CKO_SECRET_KEY', key_type: 'CKK_AES', id: 'a1b2', session });
    expect(pick('C_GenerateKey', 'audit-wrap')).toMatchObject({ object: created.wrap, class: 'CKO_SECRET_KEY', key_type: 'CKK_AES', mechanism: 'CKM_AES_KEY_GEN' });
    expect(pick('C_UnwrapKey', 'audit-unwrapped')).toMatchObject({ object: created.unwrapped, unwrapping_key: created.wrap, class: 'CKO_SECRET_KEY', key_type: 'CKK_AES', mechanism: 'CKM_AES_KEY_WRAP' });
    expect(pick('C_GenerateKeyPair', 'audit-ec')).toBeDefined();
    expect(made.filter((x) => x.call === 'C_GenerateKeyPair').map((x) => [x.pair, x.object, x.class, x.key_type])).toEqual(
      expect.arrayContaining([
        ['public', created.publicKey, 'CKO_PUBLIC_KEY', constantName('CKK_', p.CKK_EC)],
        ['private', created.privateKey, 'CKO_PRIVATE_KEY', constantName('CKK_', p.CKK_EC)],
      ]),
    );
    expect(pick('C_CopyObject', 'audit-copy')).toMatchObject({ object: created.copy, source: created.imported, class: 'CKO_SECRET_KEY' });
    expect(created.deriveRv).toBe(p.CKR_OK);
    expect(pick('C_DeriveKey', 'audit-derived')).toMatchObject({ object: created.derived, base_key: created.dhPrivate, mechanism: 'CKM_DH_PKCS_DERIVE', class: 'CKO_SECRET_KEY', key_type: 'CKK_GENERIC_SECRET' });
    for (const x of made) expect(Object.keys(x)).not.toContain('value');
  });

  test('object_destroyed, call_refused with the rule, connection_closed; each line has time, event, pid, worker, conn, identity', async () => {
    const all = await waitFor(auditFile, (l) => l.some((x) => x.event === 'connection_closed'));
    expect(all.find((x) => x.event === 'object_destroyed')).toMatchObject({ call: 'C_DestroyObject', object: created.copy, label: 'audit-copy', class: 'CKO_SECRET_KEY' });
    const refused = all.find((x) => x.event === 'call_refused');
    expect(refused).toMatchObject({ call: 'C_SignInit', rv: 'CKR_MECHANISM_INVALID', enforced: true });
    expect(refused!.rule).toMatch(new RegExp(`^forbidden_mechanisms \\(${filterFile.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:\\d+:\\d+\\)$`));
    const closed = all.find((x) => x.event === 'connection_closed')!;
    expect(closed).toMatchObject({ alias: 'softhsm', last_of_app: true });
    // Process-wide events (primary and worker start, privilege drop) name no connection.
    const PROCESS_EVENTS = new Set(['startup', 'shutdown', 'privilege_drop', 'config_reload']);
    for (const x of all.filter((e) => !PROCESS_EVENTS.has(e.event as string))) {
      expect(Number.isNaN(Date.parse(x.time))).toBe(false);
      expect(typeof x.pid).toBe('number');
      expect(x.worker).toBe(0);
      expect([x.event, x.conn]).toEqual([x.event, closed.conn]);
      expect(x.identity).toMatch(new RegExp(`^uid ${process.getuid!()} gid \\d+ pid \\d+$`));
    }
    // audit_stderr: the same lines on stderr, as JSON (written asynchronously: wait for the last one).
    const stderrLines = (): AuditLine[] =>
      jsonLines<AuditLine>(d.output(), (l) => l.startsWith('{"time"'));
    const end = Date.now() + 10_000;
    while (!stderrLines().some((x) => x.event === 'connection_closed') && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    const onStderr = stderrLines();
    expect(onStderr.map((x) => x.event).sort()).toEqual(all.map((x) => x.event).sort());
  });

  test('config_reload on SIGHUP: ok with a good file, error with a bad one (old policy kept)', async () => {
    const before = readJsonLines<AuditLine>(auditFile).length;
    d.proc.kill('SIGHUP');
    const ok = await waitFor(auditFile, (l) => l.slice(before).some((x) => x.event === 'config_reload'));
    expect(ok.slice(before).find((x) => x.event === 'config_reload')).toMatchObject({ outcome: 'ok', file: filterFile, worker: null });
    const good = fs.readFileSync(filterFile, 'utf8');
    fs.writeFileSync(filterFile, `${good}\nforbidden_mechanisms = [(".*", [CKM_NO_SUCH_THING])]\n`);
    const mark = readJsonLines<AuditLine>(auditFile).length;
    d.proc.kill('SIGHUP');
    const bad = await waitFor(auditFile, (l) => l.slice(mark).some((x) => x.event === 'config_reload'));
    const ev = bad.slice(mark).find((x) => x.event === 'config_reload')!;
    expect(ev).toMatchObject({ outcome: 'error', file: filterFile });
    expect(String(ev.error)).toContain(filterFile);
    fs.writeFileSync(filterFile, good);
  });

  test('SIGHUP reopens the audit file: after logrotate moves it, new events go to a new file of mode 0600', async () => {
    const rotated = `${auditFile}.1`;
    fs.renameSync(auditFile, rotated);
    d.proc.kill('SIGHUP');
    // The primary writes config_reload to the file it reopened.
    await waitFor(auditFile, (l) => l.some((x) => x.event === 'config_reload'));
    expect(fs.statSync(auditFile).mode & 0o777).toBe(0o600);
    // The worker reopened too: a new connection's close lands in the new file.
    const c2 = await P11Client.open({ path: d.socketPath });
    await c2.close();
    await waitFor(auditFile, (l) => l.some((x) => x.event === 'connection_closed' && x.worker === 0));
    expect(readJsonLines<AuditLine>(rotated).some((x) => x.event === 'object_created')).toBe(true);
  });

  test('no secret anywhere: the PIN and the key value appear in no log, trace or audit line (hex, base64, raw)', () => {
    const text = [d.output(), fs.readFileSync(auditFile, 'latin1'), fs.existsSync(`${auditFile}.1`) ? fs.readFileSync(`${auditFile}.1`, 'latin1') : ''].join('\n');
    // The trace ran: the calls that carried the secrets are in it.
    expect(text).toMatch(/C_Login/);
    expect(text).toMatch(/C_CreateObject/);
    expect(text).toMatch(/C_UnwrapKey/);
    for (const s of [...spellings(Buffer.from(PIN)), PIN]) expect(text).not.toContain(s);
    for (const s of spellings(VALUE)) expect(text).not.toContain(s);
  });
});
