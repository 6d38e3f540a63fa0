import fs from 'node:fs';
import path from 'node:path';
import { ROOT, startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { startParsec } from './helpers/parsec';
import type { ParsecService } from './helpers/parsec';
import { pkcs11Tool } from './helpers/pkcs11-tool';
import { readJsonLines } from './helpers/json-lines';

/** The daemon's filter and audit trail apply to a Parsec alias as to any module (2 workers: each opens its own backend). */
const CLIENT = path.join(ROOT, 'client', 'build', 'libp11client.so');

let svc: ParsecService;
let d: RunningDaemon;
let env: NodeJS.ProcessEnv;
let auditFile: string;

beforeAll(async () => {
  svc = await startParsec('UnixPeerCredentials');
  d = await startDaemon({
    workers: 2,
    modules: [{ alias: 'parsec', path: `parsec:${svc.socket}` }],
    filterExtra: 'forbidden_mechanisms = [("parsec", [CKM_ECDSA_SHA384])]',
    processorExtra: 'audit_file = "audit.log";',
  });
  env = { ...process.env, PKCS11PROXY_SOCKET_PATH: d.socketPath, PKCS11PROXY_LIBNAME: 'parsec' };
  auditFile = path.join(d.hsm.dir, 'audit.log');
  fs.writeFileSync(path.join(d.hsm.dir, 'msg'), 'filtered\n');
}, 60_000);
afterAll(async () => {
  await d?.stop();
  await svc?.cleanup();
}, 60_000);

type Line = Record<string, unknown>;
/** Polls the audit file until `pred` holds (deadline 10 s). */
async function audit(pred: (l: Line[]) => boolean): Promise<Line[]> {
  const end = Date.now() + 10_000;
  for (;;) {
    const l = readJsonLines<Line>(auditFile);
    if (pred(l)) return l;
    if (Date.now() > end) throw new Error(`audit file never matched:\n${l.map((x) => JSON.stringify(x)).join('\n')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('a forbidden mechanism is refused on a Parsec slot and absent from its list; the key pair is audited', async () => {
  const gen = pkcs11Tool(CLIENT, ['--slot', '2', '--login', '--keypairgen', '--key-type', 'EC:secp384r1', '--label', 'audited', '--usage-sign'], env);
  expect(gen.status).toBe(0);
  const mechs = pkcs11Tool(CLIENT, ['--slot', '2', '-M'], env).out;
  expect(mechs).toContain('ECDSA-SHA256');
  expect(mechs).not.toContain('ECDSA-SHA384');
  const id = Buffer.from('audited').toString('hex');
  const r = pkcs11Tool(CLIENT, ['--slot', '2', '--login', '--sign', '-m', 'ECDSA-SHA384', '--id', id, '-i', path.join(d.hsm.dir, 'msg'), '-o', path.join(d.hsm.dir, 'sig')], env);
  expect(r.out).toContain('CKR_MECHANISM_INVALID');
  const lines = await audit((l) => l.some((x) => x.event === 'call_refused') && l.filter((x) => x.event === 'object_created').length >= 2);
  const made = lines.filter((x) => x.event === 'object_created' && x.label === 'audited');
  expect(made.map((x) => [x.pair, x.class, x.key_type, x.id, x.alias])).toEqual(
    expect.arrayContaining([
      ['public', 'CKO_PUBLIC_KEY', 'CKK_ECDSA', id, 'parsec'],
      ['private', 'CKO_PRIVATE_KEY', 'CKK_ECDSA', id, 'parsec'],
    ]),
  );
  expect(lines.find((x) => x.event === 'call_refused')).toMatchObject({ rv: 'CKR_MECHANISM_INVALID', alias: 'parsec' });
});
