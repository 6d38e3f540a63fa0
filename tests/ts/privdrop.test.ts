/**
 * Privilege drop (issue 9 item 5): started as root, the primary and every
 * worker run as service.user/group with the user's supplementary groups and
 * NoNewPrivs after binding and loading the modules, and still serve a
 * SoftHSM2 store owned by that user; root without `user` is refused unless
 * allow_root is set.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLI, ROOT, startDaemon } from './helpers/daemon';
import type { RunningDaemon } from './helpers/daemon';
import { pkcs11Tool } from './helpers/pkcs11-tool';
import { chownTree, childPids, ensureServiceUser, procStatus } from './helpers/service-user';
import type { ServiceUser } from './helpers/service-user';
import { SOFTHSM_MODULE, USER_PIN } from './helpers/softhsm';

const CLIENT = path.join(ROOT, 'client', 'build', 'libp11client.so');
const EXIT_CONFIG = 78;

let user: ServiceUser;
beforeAll(() => {
  expect(process.getuid!()).toBe(0);
  user = ensureServiceUser();
});

function expectDropped(pid: number): void {
  const st = procStatus(pid);
  expect({ uid: st.uid, gid: st.gid, root: st.groups.includes(0), extra: st.groups.includes(user.extraGid), nnp: st.noNewPrivs }).toEqual({
    uid: [user.uid, user.uid, user.uid, user.uid],
    gid: [user.gid, user.gid, user.gid, user.gid],
    root: false,
    extra: true,
    nnp: 1,
  });
}

/** Key pair generation then a signature through our C client: session, login, token writes, sign. */
function serveSign(d: RunningDaemon, id: string): void {
  const env = { ...process.env, PKCS11PROXY_SOCKET_PATH: d.socketPath };
  const gen = pkcs11Tool(CLIENT, ['--login', '--pin', USER_PIN, '--keypairgen', '--key-type', 'EC:prime256v1', '--id', id, '--label', `k${id}`], env);
  expect(gen).toMatchObject({ status: 0 });
  const input = path.join(d.hsm.dir, `in${id}`);
  const sig = path.join(d.hsm.dir, `sig${id}`);
  fs.writeFileSync(input, Buffer.alloc(32, 7)); // a SHA-256 sized digest
  const s = pkcs11Tool(CLIENT, ['--login', '--pin', USER_PIN, '--sign', '--mechanism', 'ECDSA', '--id', id, '-i', input, '-o', sig], env);
  expect(s).toMatchObject({ status: 0 });
  expect(fs.statSync(sig).size).toBe(64);
}

describe.each([0, 2])('service.user with %i workers', (workers) => {
  let d: RunningDaemon;
  beforeAll(async () => {
    d = await startDaemon({
      workers,
      serviceExtra: `user = "${'p11pd-test'}"; group = "${'p11pd-test'}";`,
      processorExtra: 'umask = "0027";',
      prepare: (hsm) => chownTree(hsm.dir, user.uid, user.gid),
    });
  });
  afterAll(async () => {
    expect(await d.stop()).toBe(0);
  });

  it('runs the primary and every worker as the user, its groups and NoNewPrivs', () => {
    expectDropped(d.proc.pid!);
    const kids = childPids(d.proc.pid!);
    expect(kids.length).toBe(workers);
    for (const k of kids) expectDropped(k);
  });

  it('still serves: open session, login, key generation on the token, sign', () => {
    serveSign(d, workers === 0 ? '01' : '02');
    // Token objects were written by the user, under the umask.
    const written = fs.readdirSync(path.join(d.hsm.dir, 'tokens'), { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
    const mine = written.filter((e) => fs.statSync(path.join(e.parentPath, e.name)).uid === user.uid);
    expect(mine.length).toBe(written.length);
  });

  if (workers > 0) it('a worker respawned after the drop runs as the user too', async () => {
    const [first] = childPids(d.proc.pid!);
    process.kill(first, 'SIGKILL');
    const deadline = Date.now() + 20_000;
    let kids: number[] = [];
    while (Date.now() < deadline) {
      kids = childPids(d.proc.pid!);
      if (kids.length === workers && !kids.includes(first) && /worker \d ready again/.test(d.output())) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(kids.length).toBe(workers);
    for (const k of kids) expectDropped(k);
    serveSign(d, '03');
  });
});

describe('root without service.user', () => {
  let tmp: string;
  beforeEach(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'p11pd-root-'));
  });
  afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

  function conf(processorExtra: string): string {
    const filter = path.join(tmp, 'filter.conf');
    fs.writeFileSync(filter, `modules = [("softhsm", "${SOFTHSM_MODULE}")]\n`);
    const file = path.join(tmp, 'p.conf');
    fs.writeFileSync(
      file,
      `netplex { service { name = "x"; protocol { name = "rpc_pkcs11"; address { type = "local"; path = "${tmp}/s"; }; }; processor { type = "rpc_pkcs11"; filter_config = "${filter}"; ${processorExtra} }; }; };`,
    );
    return file;
  }

  it('is refused before anything is bound (exit 78)', () => {
    const env = { ...process.env };
    delete env.PKCS11PROXYD_ALLOW_ROOT;
    const r = spawnSync(process.execPath, [CLI, '-fg', '-workers', '0', '-conf', conf('')], { env, encoding: 'utf8', timeout: 30_000 });
    expect(r.status).toBe(EXIT_CONFIG);
    expect(r.stderr).toContain('allow_root');
    expect(fs.existsSync(`${tmp}/s`)).toBe(false);
  });

  it('an unknown service.user is refused (exit 78)', () => {
    const file = conf('');
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace('name = "x";', 'name = "x"; user = "p11pd-no-such-user";'));
    const r = spawnSync(process.execPath, [CLI, '-fg', '-workers', '0', '-conf', file], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status).toBe(EXIT_CONFIG);
    expect(fs.existsSync(`${tmp}/s`)).toBe(false);
  });

  it('allow_root = true keeps root, with NoNewPrivs', async () => {
    const env = { ...process.env };
    delete env.PKCS11PROXYD_ALLOW_ROOT;
    const d = await startDaemon({ processorExtra: 'allow_root = true;', env });
    try {
      const st = procStatus(d.proc.pid!);
      expect({ uid: st.uid[1], nnp: st.noNewPrivs }).toEqual({ uid: 0, nnp: 1 });
    } finally {
      expect(await d.stop()).toBe(0);
    }
  });
});
