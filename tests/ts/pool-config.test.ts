import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { ConfigError, parseFilterConfig } from '../../src/config';
import { parseTokenUri, uriMatches } from '../../src/bindings/pool/pkcs11-uri';
import type { TokenDescription } from '../../src/bindings/pool/pkcs11-uri';
import { CLI } from './helpers/daemon';
import { ck } from '../../src/pkcs11/constants';

const MODULES = 'modules = [("a", "/usr/lib/a.so"), ("b", "/usr/lib/b.so")]\n';

describe('pools and slot_nat in filter.conf', () => {
  test('a pool with every key; defaults; slot NAT listing a module and the pool; both are aliases policies apply to', () => {
    const cfg = parseFilterConfig(
      `${MODULES}pools = {
  p1 = { members = [("a", "pkcs11:token=x"), ("b", "pkcs11:token=x;serial=42")] strategy = "primary-standby" weights = [3, 1]
         match_attributes = [CKA_ID] probe_interval_ms = 100 call_timeout_ms = 200 retry_base_ms = 10 retry_max_ms = 50 slot_id = 9 label = "L" }
  p2 = { members = [("a", "pkcs11:token=y")] }
}
slot_nat = { n = ["b", "p1"] }
forbidden_mechanisms = [("p1", [CKM_RSA_X_509])]
`,
      'f.conf',
    );
    expect(cfg.pools).toEqual([
      {
        kind: 'pool', name: 'p1', strategy: 'primary-standby', matchAttributes: [ck.CKA_ID], probeIntervalMs: 100, callTimeoutMs: 200, retryBaseMs: 10, retryMaxMs: 50, slotId: 9, label: 'L',
        members: [{ alias: 'a', uri: 'pkcs11:token=x', weight: 3 }, { alias: 'b', uri: 'pkcs11:token=x;serial=42', weight: 1 }],
      },
      {
        kind: 'pool', name: 'p2', strategy: 'round-robin', matchAttributes: [ck.CKA_CLASS, ck.CKA_ID, ck.CKA_LABEL], probeIntervalMs: 5000, callTimeoutMs: 10000, retryBaseMs: 100, retryMaxMs: 30000, slotId: 0, label: 'p2',
        members: [{ alias: 'a', uri: 'pkcs11:token=y', weight: 1 }],
      },
    ]);
    expect(cfg.slotNat).toEqual([{ kind: 'nat', name: 'n', aliases: ['b', 'p1'] }]);
    expect(cfg.aliases).toEqual(['a', 'b', 'p1', 'p2', 'n']);
    expect(cfg.forbiddenMechanisms).toHaveLength(1);
  });

  const bad: Array<[string, string, RegExp]> = [
    ['unknown key in a pool', 'pools = { p = { members = [("a", "pkcs11:token=x")] stratgy = "round-robin" } }', /^f\.conf:2:\d+: key 'pools\.p\.stratgy': unknown key/],
    ['member naming an unknown module alias', 'pools = { p = { members = [("a", "pkcs11:token=x"), ("c", "pkcs11:token=x")] } }', /^f\.conf:2:54: .*unknown module alias "c" \(aliases: "a", "b"\)/],
    ['member URI with an unknown attribute', 'pools = { p = { members = [("a", "pkcs11:token=x;colour=red")] } }', /^f\.conf:2:34: .*PKCS#11 URI: unknown attribute 'colour'/],
    ['member URI naming an object', 'pools = { p = { members = [("a", "pkcs11:token=x;object=k")] } }', /PKCS#11 URI: attribute 'object' names an object, not a token/],
    ['no members', 'pools = { p = { members = [] } }', /^f\.conf:2:\d+: key 'pools\.p\.members': must be a non-empty list/],
    ['unknown strategy', 'pools = { p = { members = [("a", "pkcs11:token=x")] strategy = "random" } }', /must be one of: round-robin, least-outstanding, primary-standby/],
    ['weights not one per member', 'pools = { p = { members = [("a", "pkcs11:token=x")] weights = [1, 2] } }', /must have one weight per member \(1\)/],
    ['unknown match attribute', 'pools = { p = { members = [("a", "pkcs11:token=x")] match_attributes = [CKA_NOPE] } }', /unknown attribute 'CKA_NOPE'/],
    ['pool named like a module', 'pools = { a = { members = [("b", "pkcs11:token=x")] } }', /is already a module alias/],
    ['slot NAT of an unknown alias', 'slot_nat = { n = ["a", "zz"] }', /^f\.conf:2:\d+: .*unknown alias "zz"/],
    ['slot NAT listing an alias twice', 'slot_nat = { n = ["a", "a"] }', /alias "a" listed twice/],
  ];
  test.each(bad)('refused at file:line:column: %s', (_name, text, error) => {
    let caught: unknown;
    try {
      parseFilterConfig(`${MODULES}${text}\n`, 'f.conf');
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as Error).message).toMatch(error);
  });

  test("filter.conf.example's pool and slot NAT examples parse", () => {
    const text = fs.readFileSync(path.join(__dirname, '..', '..', 'filter.conf.example'), 'utf8');
    const pools = /^\s+(pools = \{[\s\S]*?\n\s+\})\n/m.exec(text)![1];
    const nat = /^\s+(slot_nat = \{[^}]*\})/m.exec(text)![1];
    const cfg = parseFilterConfig(`modules = [("softhsm", "/x.so"), ("hsm-a", "/a.so"), ("hsm-b", "/b.so")]\n${pools}\n${nat}\n`, 'f.conf');
    expect(cfg.pools.map((p) => [p.name, p.members.map((m) => m.weight)])).toEqual([['hsm_pool', [2, 1]]]);
    expect(cfg.slotNat.map((n) => n.aliases)).toEqual([['softhsm', 'hsm_pool']]);
  });

  test('the daemon refuses to start (exit 78) on a member naming an unknown alias', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p11pd-poolconf-'));
    try {
      const filter = path.join(dir, 'filter.conf');
      fs.writeFileSync(filter, `modules = [("a", "/usr/lib/softhsm/libsofthsm2.so")]\npools = { p = { members = [("nope", "pkcs11:token=x")] } }\n`);
      const conf = path.join(dir, 'p.conf');
      fs.writeFileSync(conf, `netplex { service { name = "t"; protocol { name = "rpc_pkcs11"; address { type = "local"; path = "${dir}/s"; }; }; processor { type = "rpc_pkcs11"; filter_config = "${filter}"; }; }; };\n`);
      const r = spawnSync(process.execPath, [CLI, '-fg', '-conf', conf], { encoding: 'utf8', timeout: 30_000 });
      expect(r.status).toBe(78);
      expect(r.stderr).toMatch(/filter\.conf:2:29: .*unknown module alias "nope"/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('RFC 7512 token URIs', () => {
  const pad = (s: string, n: number) => Buffer.concat([Buffer.from(s), Buffer.alloc(n - Buffer.byteLength(s), 0x20)]);
  const token: TokenDescription = {
    slotId: 3,
    token: { label: pad('my token', 32), manufacturerID: pad('SoftHSM project', 32), serialNumber: pad('0a1b', 16), model: pad('SoftHSM v2', 16) },
    slot: { slotDescription: pad('SoftHSM slot ID 0x3', 64), manufacturerID: pad('SoftHSM project', 32) },
    library: { manufacturerID: pad('SoftHSM', 32), libraryDescription: pad('Implementation of PKCS11', 32), libraryVersion: { major: Buffer.from([2]), minor: Buffer.from([6]) } },
  };
  test.each([
    ['pkcs11:token=my%20token', true],
    ['pkcs11:token=my%20token;serial=0a1b;model=SoftHSM%20v2;manufacturer=SoftHSM%20project', true],
    ['pkcs11:slot-id=3;slot-manufacturer=SoftHSM%20project;slot-description=SoftHSM%20slot%20ID%200x3', true],
    ['pkcs11:library-manufacturer=SoftHSM;library-description=Implementation%20of%20PKCS11;library-version=2.6', true],
    ['pkcs11:library-version=2', true],
    ['pkcs11:', true],
    ['pkcs11:token=my%20toke', false],
    ['pkcs11:slot-id=4', false],
    ['pkcs11:library-version=2.5', false],
    ['PKCS11:TOKEN=my%20token', true],
  ])('%s matches: %s', (uri, want) => {
    expect(uriMatches(parseTokenUri(uri), token)).toBe(want);
  });
  test.each([
    ['token=x', /must start with 'pkcs11:'/],
    ['pkcs11:token=x?pin-value=1234', /query attributes/],
    ['pkcs11:token=a;token=b', /'token' given twice/],
    ['pkcs11:token=%zz', /must be percent-encoded|not UTF-8/],
    ['pkcs11:token=%ff', /not UTF-8/],
    ['pkcs11:token=a b', /must be percent-encoded/],
    ['pkcs11:slot-id=0x3', /not a decimal number/],
    ['pkcs11:library-version=two', /not M or M\.m/],
    ['pkcs11:id=%01', /names an object/],
    ['pkcs11:vendor=x', /unknown attribute 'vendor'/],
    ['pkcs11:token', /is not attr=value/],
  ])('%s is refused', (uri, error) => {
    expect(() => parseTokenUri(uri)).toThrow(error);
  });
});
