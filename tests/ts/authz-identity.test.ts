/**
 * Authorisation table at unit level and through the in-process layer stack
 * over SoftHSM2: identity patterns against Unix peers and TLS client
 * certificates (PeerCertificate values, as the TLS server fills them in),
 * identity -> aliases and profile, refusals with their CK_RV and audit
 * event, px_JoinApp across identities, config errors at file:line:col.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseFilterConfig } from '../../src/config/filter-config';
import { parseIdentityPattern, identityMatches } from '../../src/filter/authz-patterns';
import { parseTokenSelector, tokenSelected } from '../../src/filter/authz';
import { setAuditSink } from '../../src/server/audit';
import type { AuditEvent } from '../../src/server/audit';
import type { ConnectionInfo, PeerCertificate } from '../../src/server/transport/types';
import * as p from '../../src/pkcs11/constants';
import { InProcessClient, startInProcess } from './helpers/in-process';
import type { InProcessStack } from './helpers/in-process';
import { createSoftHsm, USER_PIN } from './helpers/softhsm';
import type { SoftHsmStore } from './helpers/softhsm';
import { faultyModule } from './helpers/faulty-module';

const CERT_APP1: PeerCertificate = Object.freeze({
  subject: 'CN=app1,O=Example',
  issuer: 'CN=Test CA,O=Example',
  san: ['DNS:app1.example.com', 'URI:spiffe://example/app1'],
  sha256: 'aa'.repeat(32),
  spkiSha256: 'bb'.repeat(32),
  serial: '01',
  notAfter: '2030-01-01T00:00:00.000Z',
});
const CERT_OTHER: PeerCertificate = Object.freeze({ ...CERT_APP1, subject: 'CN=other,O=Elsewhere', san: ['DNS:other.example.net'], sha256: 'cc'.repeat(32), spkiSha256: 'dd'.repeat(32) });

const tls = (certificate?: PeerCertificate) => ({ kind: 'tls' as const, certificate });
const unix = (uid: number, gid = uid) => ({ kind: 'unix' as const, uid, gid });
const pat = (s: string, groups = new Map()) => parseIdentityPattern(s, { groups });

describe('identity patterns', () => {
  const cases: Array<{ pattern: string; yes: Parameters<typeof identityMatches>[1][]; no: Parameters<typeof identityMatches>[1][] }> = [
    { pattern: 'subject:CN=app1,O=Example', yes: [tls(CERT_APP1)], no: [tls(CERT_OTHER), tls(), unix(0)] },
    { pattern: 'subject:CN=*,O=Example', yes: [tls(CERT_APP1)], no: [tls(CERT_OTHER)] },
    { pattern: 'issuer:CN=Test CA,O=Example', yes: [tls(CERT_APP1), tls(CERT_OTHER)], no: [tls()] },
    { pattern: 'san:DNS:*.example.com', yes: [tls(CERT_APP1)], no: [tls(CERT_OTHER)] },
    { pattern: 'san:URI:spiffe://example/app?', yes: [tls(CERT_APP1)], no: [tls(CERT_OTHER)] },
    { pattern: `sha256:${'AA:'.repeat(31)}AA`, yes: [tls(CERT_APP1)], no: [tls(CERT_OTHER)] },
    { pattern: `spki:${'bb'.repeat(32)}`, yes: [tls(CERT_APP1)], no: [tls(CERT_OTHER), unix(0)] },
    { pattern: 'uid:1001', yes: [unix(1001, 5)], no: [unix(1002, 1001), tls(CERT_APP1)] },
    { pattern: 'gid:5', yes: [unix(1001, 5)], no: [unix(5, 6)] },
    { pattern: 'user:root', yes: [unix(0, 9)], no: [unix(1)] },
    { pattern: 'group:root', yes: [unix(9, 0)], no: [unix(0, 1)] },
    { pattern: 'tls', yes: [tls(), tls(CERT_APP1)], no: [unix(0), { kind: 'tcp' }] },
    { pattern: '*', yes: [tls(), unix(3), { kind: 'unknown' }], no: [] },
  ];
  test.each(cases)('$pattern', ({ pattern, yes, no }) => {
    const p1 = pat(pattern);
    for (const id of yes) expect(identityMatches(p1, id)).toBe(true);
    for (const id of no) expect(identityMatches(p1, id)).toBe(false);
  });

  test('groups: @NAME matches any member, unknown group and bad patterns are errors', () => {
    const groups = new Map([['apps', [pat('uid:7'), pat('subject:CN=app1,O=Example')]]]);
    const g = parseIdentityPattern('@apps', { groups });
    expect(identityMatches(g, unix(7))).toBe(true);
    expect(identityMatches(g, tls(CERT_APP1))).toBe(true);
    expect(identityMatches(g, tls(CERT_OTHER))).toBe(false);
    expect(() => pat('@nope')).toThrow(/unknown identity group 'nope'/);
    expect(() => pat('user:no-such-user-here')).toThrow(/no such user/);
    expect(() => pat('sha256:abc')).toThrow(/64 hex digits/);
    expect(() => pat('san:foo')).toThrow(/san:DNS/);
    expect(() => pat('cn:x')).toThrow(/must be uid:N/);
  });

  test('token selectors: label, serial, RFC 7512 URI (percent-decoded)', () => {
    const tok = { label: 'app 1'.padEnd(32), serial: '0123abcd'.padEnd(16), manufacturer: 'SoftHSM project'.padEnd(32), model: 'SoftHSM v2'.padEnd(16) };
    expect(tokenSelected([parseTokenSelector('label:app 1')], tok)).toBe(true);
    expect(tokenSelected([parseTokenSelector('serial:0123abcd')], tok)).toBe(true);
    expect(tokenSelected([parseTokenSelector('pkcs11:token=app%201;manufacturer=SoftHSM%20project')], tok)).toBe(true);
    expect(tokenSelected([parseTokenSelector('pkcs11:token=app%201;serial=x')], tok)).toBe(false);
    expect(() => parseTokenSelector('pkcs11:object=k')).toThrow(/only token, serial/);
    expect(() => parseTokenSelector('app1')).toThrow(/label:TEXT/);
  });
});

const MODULES = 'modules = [("softhsm", "/x/libsofthsm2.so"); ("other", "/x/other.so")]\n';

describe('filter.conf keys', () => {
  const bad: Array<{ name: string; text: string; error: RegExp }> = [
    { name: 'unknown alias', text: 'authorization = { a = { identities = ["*"] aliases = ["nope"] } }', error: /filter\.conf:2:\d+: .*unknown module alias "nope"/ },
    { name: 'unknown profile', text: 'authorization = { a = { identities = ["*"] aliases = ["softhsm"] profile = nope } }', error: /unknown profile 'nope'/ },
    { name: 'bad identity', text: 'authorization = { a = { identities = ["cn:x"] aliases = ["softhsm"] } }', error: /filter\.conf:2:\d+: .*must be uid:N/ },
    { name: 'empty identities', text: 'authorization = { a = { identities = [] aliases = ["softhsm"] } }', error: /non-empty list of identity patterns/ },
    { name: 'missing aliases', text: 'authorization = { a = { identities = ["*"] } }', error: /aliases/ },
    { name: 'unknown key', text: 'authorization = { a = { identities = ["*"] aliases = ["softhsm"] slots = [] } }', error: /slots/ },
    { name: 'group used before definition', text: 'identity_groups = { b = ["@a"]  a = ["uid:1"] }', error: /unknown identity group 'a'/ },
    { name: 'bad token selector', text: 'authorization = { a = { identities = ["*"] aliases = ["softhsm"] tokens = ["x"] } }', error: /label:TEXT/ },
    { name: 'throttle key', text: 'login_throttle = { base_delay = 5 }', error: /base_delay/ },
    { name: 'profile_map gets the new patterns', text: 'profile_map = [("subject", default)]', error: /subject: needs a value/ },
  ];
  test.each(bad)('refused: $name', ({ text, error }) => {
    expect(() => parseFilterConfig(MODULES + text, '/etc/filter.conf')).toThrow(error);
  });

  test('accepted: groups, entries in file order, "" is the default alias, throttle defaults', () => {
    const cfg = parseFilterConfig(
      `${MODULES}identity_groups = { ops = ["uid:1001", "subject:CN=ops*"]  all = ["@ops", "spki:${'bb'.repeat(32)}"] }
authorization = { first = { identities = ["@all"] aliases = [""] tokens = ["label:a"] }  second = { identities = ["*"] aliases = ["other", "softhsm"] } }
login_throttle = { lockout_failures = 5 }
profile_map = [("san:DNS:app1.example.com", default)]`,
      '/etc/filter.conf',
    );
    expect(cfg.authz!.entries.map((e) => e.name)).toEqual(['first', 'second']);
    expect([...cfg.authz!.entries[0].aliases]).toEqual(['softhsm']);
    expect(cfg.authz!.entries[0].tokens!.map((t) => t.label)).toEqual(['a']);
    expect(cfg.loginThrottle).toEqual({ baseDelayMs: 1000, maxDelayMs: 60000, lockoutFailures: 5, lockoutMs: 900000 });
    expect(identityMatches(cfg.profileMap[0].identity, tls(CERT_APP1))).toBe(true);
    expect(parseFilterConfig(MODULES, 'f').authz).toBeNull();
  });
});

// ---- through the layer stack ----

let hsm: SoftHsmStore;
let hsm2: SoftHsmStore;
let st: InProcessStack;
let events: AuditEvent[];
let nextConn = 1000;
let filterFile: string;

const TABLE = `debug = 1
profiles = { small = { max_random_length = [(".*", 16)] } }
authorization = {
  app1 = { identities = ["subject:CN=app1,O=Example"] aliases = ["softhsm"] profile = small }
  ops = { identities = ["uid:4242"] aliases = ["softhsm", "spare"] }
}`;

beforeAll(() => {
  hsm = createSoftHsm(['a']);
  hsm2 = createSoftHsm(['b']);
  filterFile = path.join(hsm.dir, 'filter.conf');
  // Module files of each store's own (SoftHSM2 reads SOFTHSM2_CONF from the real environment: the wrapper sets it).
  const main = faultyModule(path.join(hsm.dir, 'module'), hsm.conf).path;
  const spare = faultyModule(path.join(hsm2.dir, 'module'), hsm2.conf).path;
  fs.writeFileSync(filterFile, `modules = [("softhsm", "${main}"); ("spare", "${spare}")]\n${TABLE}\n`);
  st = startInProcess([{ alias: 'softhsm', path: main }, { alias: 'spare', path: spare }], undefined, { filterFile });
  setAuditSink((e) => events.push(e));
});
afterAll(() => {
  setAuditSink(null);
  st.finalize();
  hsm.cleanup();
  hsm2.cleanup();
});
beforeEach(() => {
  events = [];
});

function client(peer: ConnectionInfo['peer']): InProcessClient {
  const transport = peer?.transport ?? 'unix';
  return new InProcessClient(st.stack.createDispatcher({ id: nextConn++, transport, remote: 'test', peer }));
}
const tlsPeer = (certificate?: PeerCertificate): ConnectionInfo['peer'] => ({ transport: 'tls', address: '192.0.2.1', port: 4000, certificate });

async function preamble(c: InProcessClient, alias: string): Promise<[number, number]> {
  await c.call('C_SetupArch', { arch: 1 });
  return [await c.call('C_LoadModule', { alias: Buffer.from(alias) }), await c.call('C_Initialize', undefined as never)];
}

/** The first slot with an initialized token (SoftHSM2 also lists its free slot). */
async function tokenSlot(c: InProcessClient): Promise<number> {
  for (const slot of (await c.call('C_GetSlotList', { tokenPresent: 1, count: 8 })).slotList) {
    const t = await c.call('C_GetTokenInfo', { slotID: slot });
    if (t.info.flags & p.ck.CKF_TOKEN_INITIALIZED) return slot;
  }
  throw new Error('no initialized token');
}

async function randomRv(c: InProcessClient, length: number): Promise<number> {
  const s = await c.call('C_OpenSession', { slotID: await tokenSlot(c), flags: p.ck.CKF_SERIAL_SESSION });
  return (await c.call('C_GenerateRandom', { session: s.session, length })).rv;
}

test('TLS subject: its aliases only, its entry\'s profile', async () => {
  const c = client(tlsPeer(CERT_APP1));
  expect(await preamble(c, 'softhsm')).toEqual([p.CKR_OK, p.CKR_OK]);
  expect(await randomRv(c, 32)).toBe(p.CKR_ARGUMENTS_BAD); // profile small: max_random_length 16
  expect(await randomRv(c, 16)).toBe(p.CKR_OK);
  await c.close();
  const d = client(tlsPeer(CERT_APP1));
  expect(await preamble(d, 'spare')).toEqual([p.ck.CKR_FUNCTION_FAILED, p.ck.CKR_FUNCTION_FAILED]);
  expect(await d.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).toMatchObject({ rv: p.ck.CKR_CRYPTOKI_NOT_INITIALIZED });
  await d.close();
  expect(events.filter((e) => e.event === 'authorization_refused')).toEqual([
    expect.objectContaining({ call: 'C_LoadModule', reason: 'alias_not_allowed', alias: 'spare', entry: 'app1', rv: 'CKR_FUNCTION_FAILED', identity_key: `spki:${'bb'.repeat(32)}` }),
    expect.objectContaining({ call: 'C_Initialize', reason: 'alias_not_allowed', alias: 'spare' }),
  ]);
});

test('unknown identities are refused: another certificate, TLS without one, an unlisted uid, the default alias without C_LoadModule', async () => {
  for (const peer of [tlsPeer(CERT_OTHER), tlsPeer(), { transport: 'unix' as const, uid: 4243, gid: 0, pid: 1 }]) {
    const c = client(peer);
    expect(await preamble(c, '')).toEqual([p.ck.CKR_FUNCTION_FAILED, p.ck.CKR_FUNCTION_FAILED]);
    await c.close();
  }
  const c = client(tlsPeer(CERT_OTHER));
  await c.call('C_SetupArch', { arch: 1 });
  expect(await c.call('C_Initialize', undefined as never)).toBe(p.ck.CKR_FUNCTION_FAILED);
  await c.close();
  expect(events.filter((e) => e.event !== 'connection_closed').map((e) => [e.event, e.reason, e.call])).toEqual([
    ...Array(3).fill(null).flatMap(() => [['authorization_refused', 'no_entry', 'C_LoadModule'], ['authorization_refused', 'no_entry', 'C_Initialize']]),
    ['authorization_refused', 'no_entry', 'C_Initialize'],
  ]);
});

test('Unix uid entry: both aliases, default profile', async () => {
  const c = client({ transport: 'unix', uid: 4242, gid: 0, pid: 1 });
  expect(await preamble(c, 'spare')).toEqual([p.CKR_OK, p.CKR_OK]);
  expect(await randomRv(c, 32)).toBe(p.CKR_OK);
  await c.close();
  expect(events.filter((e) => e.event === 'authorization_refused')).toEqual([]);
});

test('px_JoinApp: only a connection of the same identity joins', async () => {
  const owner = client(tlsPeer(CERT_APP1));
  expect(await preamble(owner, 'softhsm')).toEqual([p.CKR_OK, p.CKR_OK]);
  const { token } = await owner.call('px_GetAppToken', undefined as never);
  const stranger = client({ transport: 'unix', uid: 4242, gid: 0, pid: 1 });
  expect(await stranger.call('px_JoinApp', { token })).toBe(p.ck.CKR_FUNCTION_FAILED);
  expect(await stranger.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).toMatchObject({ rv: p.ck.CKR_CRYPTOKI_NOT_INITIALIZED });
  const same = client({ ...tlsPeer(CERT_APP1)!, port: 4001 } as ConnectionInfo['peer']);
  expect(await same.call('px_JoinApp', { token })).toBe(p.CKR_OK);
  expect((await same.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).rv).toBe(p.CKR_OK);
  for (const c of [stranger, same, owner]) await c.close();
  expect(events.filter((e) => e.event === 'authorization_refused')).toEqual([expect.objectContaining({ call: 'px_JoinApp', reason: 'join_identity_mismatch' })]);
});

test('reload: a table that drops the identity refuses its next call; a file without a table allows everyone', async () => {
  const c = client({ transport: 'unix', uid: 4242, gid: 0, pid: 1 });
  expect(await preamble(c, 'softhsm')).toEqual([p.CKR_OK, p.CKR_OK]);
  const mods = fs.readFileSync(filterFile, 'utf8').split('\n')[0];
  try {
    st.stack.reloadFilter(`${mods}\nauthorization = { app1 = { identities = ["subject:CN=app1,O=Example"] aliases = ["softhsm"] } }\n`);
    expect((await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).rv).toBe(p.ck.CKR_FUNCTION_FAILED);
    expect(events).toEqual([expect.objectContaining({ event: 'authorization_refused', call: 'C_GetSlotList', reason: 'no_entry' })]);
    st.stack.reloadFilter(`${mods}\n`);
    expect((await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 })).rv).toBe(p.CKR_OK);
    const d = client(tlsPeer(CERT_OTHER));
    expect(await preamble(d, 'spare')).toEqual([p.CKR_OK, p.CKR_OK]);
    await d.close();
  } finally {
    st.stack.reloadFilter(fs.readFileSync(filterFile, 'utf8'));
    await c.close();
  }
});

test('login audit: success and failure with the CK_RV, never the PIN', async () => {
  const c = client(tlsPeer(CERT_APP1));
  await preamble(c, 'softhsm');
  const s = await c.call('C_OpenSession', { slotID: await tokenSlot(c), flags: p.ck.CKF_SERIAL_SESSION });
  expect(await c.call('C_Login', { session: s.session, userType: p.ck.CKU_USER, pin: Buffer.from('99999') })).toBe(p.ck.CKR_PIN_INCORRECT);
  expect(await c.call('C_Login', { session: s.session, userType: p.ck.CKU_USER, pin: Buffer.from(USER_PIN) })).toBe(p.CKR_OK);
  await c.close();
  const logins = events.filter((e) => e.event === 'login');
  expect(logins).toEqual([
    expect.objectContaining({ outcome: 'failure', rv: 'CKR_PIN_INCORRECT', alias: 'softhsm', identity_key: `spki:${'bb'.repeat(32)}` }),
    expect.objectContaining({ outcome: 'success', rv: 'CKR_OK' }),
  ]);
  const text = JSON.stringify(events);
  expect(text).not.toContain('99999');
  expect(text).not.toContain(`"${USER_PIN}"`);
});
