import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT, startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { startParsec } from './helpers/parsec';
import type { ParsecService } from './helpers/parsec';

/**
 * Parsec's Direct authenticator: each client's identity (its uid, from
 * SO_PEERCRED) is its Parsec application name, so tenants of one daemon see
 * only their own keys; an alias with app=NAME is that one application.
 */
const CLIENT = path.join(ROOT, 'client', 'build', 'libp11client.so');
const ROOT_UID = 0;
const NOBODY = 65534;

let svc: ParsecService;
let d: RunningDaemon;

beforeAll(async () => {
  svc = await startParsec('Direct');
  d = await startDaemon({
    modules: [
      { alias: 'parsec', path: `parsec:${svc.socket}?auth=direct` },
      { alias: 'tool', path: `parsec:${svc.socket}?auth=direct&app=parsec-tool` },
    ],
    protocolExtra: 'local_chmod = "0o777";',
  });
  // Other uids reach the daemon's socket (the store dir is 0700).
  fs.chmodSync(d.hsm.dir, 0o711);
}, 60_000);
afterAll(async () => {
  await d?.stop();
  await svc?.cleanup();
}, 60_000);

/** pkcs11-tool on the PKCS #11 provider's slot as a real process of `uid`, logged in. */
function toolAs(uid: number, args: string[], alias = 'parsec'): string {
  const r = spawnSync('pkcs11-tool', ['--module', CLIENT, '--slot', '2', '--login', ...args], {
    uid,
    gid: uid,
    env: { PATH: process.env.PATH, PKCS11PROXY_SOCKET_PATH: d.socketPath, PKCS11PROXY_LIBNAME: alias },
    encoding: 'utf8',
    timeout: 60_000,
  });
  if (r.status !== 0) throw new Error(`pkcs11-tool ${args.join(' ')} as ${uid} -> ${r.status}\n${r.stdout}${r.stderr}`);
  return r.stdout;
}
const labels = (out: string): string[] => [...out.matchAll(/^\s+label:\s+(\S+)$/gm)].map((m) => m[1]).sort();

test('two tenants (uid 0, uid 65534) each see only the keys they made; parsec-tool sees neither', () => {
  toolAs(ROOT_UID, ['--keypairgen', '--key-type', 'EC:prime256v1', '--label', 'alpha', '--usage-sign']);
  toolAs(NOBODY, ['--keypairgen', '--key-type', 'EC:prime256v1', '--label', 'beta', '--usage-sign']);
  // The same name in both namespaces is two keys.
  toolAs(NOBODY, ['--keypairgen', '--key-type', 'EC:prime256v1', '--label', 'alpha', '--usage-sign']);
  expect(labels(toolAs(ROOT_UID, ['-O']))).toEqual(['alpha', 'alpha']);
  expect(labels(toolAs(NOBODY, ['-O']))).toEqual(['alpha', 'alpha', 'beta', 'beta']);
  const r = svc.tool(['list-keys']);
  expect(r.out).not.toMatch(/\* (alpha|beta) /);
});

test('app=NAME: every client of the alias is that application (here parsec-tool\'s own)', () => {
  expect(svc.tool(['-p', '2', 'create-ecc-key', '-k', 'tools-key']).status).toBe(0);
  expect(labels(toolAs(ROOT_UID, ['-O'], 'tool'))).toEqual(['tools-key', 'tools-key']);
  expect(labels(toolAs(NOBODY, ['-O'], 'tool'))).toEqual(['tools-key', 'tools-key']);
  expect(labels(toolAs(ROOT_UID, ['-O']))).not.toContain('tools-key');
});
