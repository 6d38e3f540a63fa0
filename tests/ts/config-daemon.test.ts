/**
 * The daemon's loader refuses every key it does not enforce yet (fail
 * closed), accepts their neutral values, and every schema key is either
 * honoured or in the refusal table.
 */
import fs from 'fs';
import os from 'os';
import path from 'path';
import type { SchemaObject } from 'ajv';
import {
  ConfigError,
  HONOURED,
  NOT_ENFORCED,
  filterSchema,
  loadDaemonConfig,
  serverSchema,
} from '../../src/config';
import { FILTER_ACTION_NAMES } from '../../src/config/filter-names';
import { ACTIONS } from '../../src/filter/actions';

const MODULE = '/usr/lib/softhsm/libsofthsm2.so';
let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p11pd-dconf-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Writes both files; `service`, `protocol`, `processor`, `controller` are inserted into their blocks. */
function write(o: { filter?: string; service?: string; protocol?: string; processor?: string; controller?: string; wm?: string }): string {
  const filterFile = path.join(dir, 'filter.conf');
  fs.writeFileSync(filterFile, `modules = [("softhsm", "${MODULE}")]\n${o.filter ?? ''}\n`);
  const serverFile = path.join(dir, 'pkcs11proxyd.conf');
  fs.writeFileSync(
    serverFile,
    [
      'netplex {',
      `  controller { max_level = "info"; ${o.controller ?? ''} };`,
      '  service {',
      '    name = "t";',
      `    ${o.service ?? ''}`,
      `    protocol { name = "rpc_pkcs11"; ${o.protocol ?? ''} address { type = "local"; path = "${dir}/s.sock"; }; };`,
      `    processor { type = "rpc_pkcs11"; filter_config = "${filterFile}"; ${o.processor ?? ''} };`,
      `    ${o.wm ?? ''}`,
      '  };',
      '};',
      '',
    ].join('\n'),
  );
  return serverFile;
}

function refusal(serverFile: string): ConfigError {
  try {
    loadDaemonConfig(serverFile);
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error('loaded');
}

interface Refused {
  name: string;
  files: Parameters<typeof write>[0];
  /** 'filter' or 'server': which file the error names. */
  file: 'filter' | 'server';
  line: number;
  column: number;
  key: string;
  rule: RegExp;
}

/** An action that src/filter/actions/index.ts does not register. */
const NO_ACTION = /^action '[a-z_A-Z0-9]+' is not enforced yet$/;
const refused: Refused[] = [
  { name: 'use_ssl without a certificate', files: { processor: 'use_ssl = true;' }, file: 'server', line: 7, column: 0, key: 'netplex.service[0].processor.use_ssl', rule: /^TLS needs a server certificate and key/ },
  { name: 'libnames', files: { processor: 'libnames = "softhsm:/x.so;";' }, file: 'server', line: 7, column: 0, key: 'netplex.service[0].processor.libnames', rule: /^not supported \(modules come from filter_config/ },
  { name: 'conn_limit other than 1', files: { service: 'conn_limit = 5;' }, file: 'server', line: 5, column: 5, key: 'netplex.service[0].conn_limit', rule: /^not supported .*allowed: 1$/ },
  { name: 'startup_timeout', files: { service: 'startup_timeout = 10.0;' }, file: 'server', line: 5, column: 5, key: 'netplex.service[0].startup_timeout', rule: /^not enforced yet/ },
  { name: 'gc_when_idle true', files: { service: 'gc_when_idle = true;' }, file: 'server', line: 5, column: 5, key: 'netplex.service[0].gc_when_idle', rule: /^not supported/ },
  { name: 'max_jobs_per_thread > 1', files: { wm: 'workload_manager { type = "dynamic"; max_jobs_per_thread = 4; };' }, file: 'server', line: 8, column: 0, key: 'netplex.service[0].workload_manager.max_jobs_per_thread', rule: /^not supported/ },
  { name: 'inactivity_timeout', files: { wm: 'workload_manager { type = "dynamic"; inactivity_timeout = 15; };' }, file: 'server', line: 8, column: 0, key: 'netplex.service[0].workload_manager.inactivity_timeout', rule: /^not supported/ },
  { name: 'greedy_accepts', files: { wm: 'workload_manager { type = "dynamic"; greedy_accepts = true; };' }, file: 'server', line: 8, column: 0, key: 'netplex.service[0].workload_manager.greedy_accepts', rule: /^not supported/ },
  { name: 'lstn_reuseaddr false', files: { protocol: 'lstn_reuseaddr = false;' }, file: 'server', line: 6, column: 0, key: 'netplex.service[0].protocol[0].lstn_reuseaddr', rule: /^not supported/ },
  { name: 'logging to syslog', files: { controller: 'logging { type = "syslog"; };' }, file: 'server', line: 2, column: 0, key: 'netplex.controller.logging[0].type', rule: /^not supported .*allowed: "stderr"$/ },
  { name: 'logging format', files: { controller: 'logging { type = "stderr"; format = "$m"; };' }, file: 'server', line: 2, column: 0, key: 'netplex.controller.logging[0].format', rule: /^not supported/ },
  { name: 'server refusals come before the filter file is read', files: { service: 'startup_timeout = 10.0;', filter: 'wrapping_format_key = "00112233445566778899aabbccddeeff"' }, file: 'server', line: 5, column: 5, key: 'netplex.service[0].startup_timeout', rule: /^not enforced/ },
];

describe('daemon config: keys not enforced yet are refused (exit 78 in the CLI)', () => {
  it.each(refused)('$name', ({ files, file, line, column, key, rule }) => {
    const serverFile = write(files);
    const e = refusal(serverFile);
    expect(e.code).toBe('CONFIG_INVALID');
    expect(e.file).toBe(file === 'filter' ? path.join(dir, 'filter.conf') : serverFile);
    expect(e.line).toBe(line);
    // column 0: anywhere on the line (the key's column depends on the text before it)
    if (column !== 0) expect(e.column).toBe(column);
    expect(e.key).toBe(key);
    expect(e.rule).toMatch(rule);
    expect(e.message).toBe(`${e.file}:${e.line}:${e.column}: key '${key}': ${e.rule}`);
    // The position is the key's own: the text there starts with its name.
    const text = fs.readFileSync(e.file, 'utf8').split('\n')[e.line - 1];
    expect(text.slice(e.column - 1)).toMatch(new RegExp(`^${key.replace(/.*[.\]]/, '').replace(/\[.*/, '')}\\b`));
  });
});

test('filter_actions_* naming an action the registry lacks is refused at the action name; registered ones load', () => {
  // The set shrinks as actions land in src/filter/actions/index.ts; each name is checked either way.
  for (const action of FILTER_ACTION_NAMES) {
    for (const key of ['filter_actions_pre', 'filter_actions_post'] as const) {
      // C_Initialize: the trigger with the fewest constraints (hooks that need another trigger are refused with another rule).
      const line = `${key} = [("soft.*", []), (".*", [(C_Login, ${action}), (C_Initialize, ${action})])]`;
      const serverFile = write({ filter: line });
      if (action === 'wrapping_format_patch') {
        // Needs wrapping_format_key, which the parser requires before the registry is asked (Debian test below).
        expect(refusal(serverFile).rule).toMatch(/^required .* when wrapping_format_patch is used$/);
      } else if (ACTIONS[action] === undefined) {
        const e = refusal(serverFile);
        expect({ action, key, rule: e.rule, line: e.line, column: e.column }).toEqual({ action, key, rule: `action '${action}' is not enforced yet`, line: 2, column: line.indexOf(action) + 1 });
        expect(e.rule).toMatch(NO_ACTION);
        expect(e.message).toBe(`${e.file}:2:${e.column}: key '${key}[1][1][0][1]': ${e.rule}`);
      } else {
        let err: unknown = null;
        try {
          loadDaemonConfig(serverFile);
        } catch (x) {
          err = x;
        }
        // A registered action loads, or is refused for its trigger, never as "not enforced yet".
        if (err !== null) expect(String((err as Error).message)).not.toMatch(/not enforced yet/);
      }
    }
  }
});

test('every static filter option loads and compiles (they are enforced by src/filter/filter-layer.ts)', () => {
  const dc = loadDaemonConfig(
    write({
      filter: [
        'debug = 3',
        'log_subchannel = filter',
        'forbidden_mechanisms = [("soft.*", [CKM_RSA_X_509])]',
        'forbidden_functions = [("soft.*", [C_Login])]',
        'remove_padding_oracles = [(".*", [wrap, all])]',
        'allowed_labels = [(".*", [])]',
        'allowed_ids = [(".*", ["01.*"])]',
        'enforce_ro_sessions = [(".*", no), ("soft.*", yes)]',
        'forbid_admin_operations = [(".*", true)]',
      ].join('\n'),
    }),
  );
  expect(dc.filter.modules).toEqual([{ alias: 'softhsm', path: MODULE }]);
  expect(dc.filter.debug).toBe(3);
});

describe('daemon config: neutral values load', () => {
  const neutral: Array<[string, Parameters<typeof write>[0]]> = [
    ['empty policy lists', { filter: 'forbidden_mechanisms = []\nallowed_labels = []\nallowed_ids = []\nforbidden_functions = []\nremove_padding_oracles = []\nfilter_actions_pre = []\nfilter_actions_post = []' }],
    ['DENY rules with empty lists', { filter: 'forbidden_mechanisms = [("soft.*", [])]\nforbidden_functions = [(".*", [])]\nfilter_actions_post = [(".*", [])]' }],
    ['boolean rules that all say no', { filter: 'enforce_ro_sessions = [(".*", no)]\nforbid_admin_operations = [(".*", false)]' }],
    ['empty wrapping key, debug and log_subchannel', { filter: 'wrapping_format_key = ""\ndebug = 3\nlog_subchannel = filter' }],
    [
      'the netplex values Caml Crush requires',
      {
        service: 'conn_limit = 1; gc_when_idle = false;',
        controller: 'logging { type = "stderr"; };',
        protocol: 'lstn_reuseaddr = true; lstn_backlog = 50; so_keepalive = true; tcp_nodelay = true;',
        processor: 'use_ssl = false; libnames = ""; cafile = "/ca.pem"; verify_depth = 3;',
        wm: 'workload_manager { type = "dynamic"; max_jobs_per_thread = 1; min_free_jobs_capacity = 1; max_free_jobs_capacity = 1; max_threads = 100; };',
      },
    ],
  ];
  it.each(neutral)('%s', (_name, files) => {
    const dc = loadDaemonConfig(write(files));
    expect(dc.filter.modules).toEqual([{ alias: 'softhsm', path: MODULE }]);
  });

  it('workload_manager sizes the pool: constant threads, dynamic max_threads', () => {
    expect(loadDaemonConfig(write({ wm: 'workload_manager { type = "constant"; threads = 3; };' })).server).toMatchObject({ workloadThreads: 3, maxThreads: null });
    expect(loadDaemonConfig(write({ wm: 'workload_manager { type = "dynamic"; max_threads = 2; };' })).server).toMatchObject({ workloadThreads: null, maxThreads: 2 });
  });
});

describe('daemon config: plain_parameter_mechanisms', () => {
  it('reads numbers and names of unknown mechanisms', () => {
    const dc = loadDaemonConfig(write({ processor: 'plain_parameter_mechanisms = "0x80000001, 2147483650 0x8000ABCD";' }));
    expect(dc.server.plainParameterMechanisms).toEqual([0x80000001, 0x80000002, 0x8000abcd]);
  });
  it.each([
    ['CKM_AES_GCM', /'CKM_AES_GCM' has a known parameter shape/],
    ['0x1087', /'0x1087' has a known parameter shape/],
    ['CKM_NOPE', /'CKM_NOPE' is not a mechanism/],
    ['banana', /'banana' is not a mechanism/],
    ['0x100000000', /is not a mechanism/],
  ])('refuses %s', (word, rule) => {
    const e = refusal(write({ processor: `plain_parameter_mechanisms = "${word}";` }));
    expect(e.key).toBe('netplex.service[0].processor.plain_parameter_mechanisms');
    expect(e.line).toBe(7);
    expect(e.rule).toMatch(rule);
  });
});

/** Dotted key paths of a schema (list items and blocks folded: `a.b.c`). */
function schemaKeys(s: SchemaObject, prefix: string, out: string[]): string[] {
  const props = (s.properties ?? (s.type === 'array' && !Array.isArray(s.items) ? (s.items as SchemaObject)?.properties : undefined) ?? {}) as Record<string, SchemaObject>;
  for (const [k, sub] of Object.entries(props)) {
    const p = prefix ? `${prefix}.${k}` : k;
    const child = sub.type === 'array' && !Array.isArray(sub.items) && (sub.items as SchemaObject)?.type === 'object' ? (sub.items as SchemaObject) : sub;
    if (child.type === 'object') schemaKeys(child, p, out);
    else out.push(p);
  }
  return out;
}

test('every schema key is honoured (HONOURED says where) or refused until enforced (NOT_ENFORCED)', () => {
  const refusedKeys = (file: 'server' | 'filter') =>
    new Set(NOT_ENFORCED.filter((e) => e.file === file).map((e) => e.pointer.slice(1).split('/').filter((s) => s !== '*').join('.')));
  for (const [file, schema] of [['server', serverSchema], ['filter', filterSchema]] as const) {
    const r = refusedKeys(file);
    const h = HONOURED[file];
    const keys = schemaKeys(schema, '', []);
    expect(keys.length).toBeGreaterThan(5);
    const blocksAsKeys = new Set(['netplex.service.processor.tls', 'netplex.service.protocol.address']);
    const unclassified = keys.filter((k) => !r.has(k) && h[k] === undefined && ![...blocksAsKeys].some((b) => k.startsWith(`${b}.`)));
    expect({ file, unclassified }).toEqual({ file, unclassified: [] });
    for (const k of Object.keys(h)) expect({ file, k, known: keys.includes(k) || blocksAsKeys.has(k) }).toEqual({ file, k, known: true });
  }
});

test("Debian's shipped files: refused without wrapping_format_key, load with one", () => {
  // Debian's filter.conf uses wrapping_format_patch without a key: refused by the parser, as Caml Crush refuses it.
  const debianServer = refusal('/etc/pkcs11proxyd/pkcs11proxyd.conf');
  expect(debianServer).toMatchObject({ file: '/etc/pkcs11proxyd/pkcs11proxyd.conf', key: 'netplex.controller.logging[0].type' });
  const conf = fs.readFileSync('/etc/pkcs11proxyd/pkcs11proxyd.conf', 'utf8').replace(/logging \{[^}]*\};/, '').replace(/^\s*(user|group) = .*$/gm, '').replace('/etc/pkcs11proxyd/filter.conf', path.join(dir, 'f.conf')).replace('/var/lib/pkcs11proxyd/.netplex', dir);
  fs.writeFileSync(path.join(dir, 'f.conf'), fs.readFileSync('/etc/pkcs11proxyd/filter.conf', 'utf8'));
  fs.writeFileSync(path.join(dir, 's.conf'), conf);
  expect(refusal(path.join(dir, 's.conf'))).toMatchObject({ key: 'wrapping_format_key', file: path.join(dir, 'f.conf') });
  fs.appendFileSync(path.join(dir, 'f.conf'), '\nwrapping_format_key = "00112233445566778899aabbccddeeff"\n');
  // With the key, every action Debian's file names is registered: the files load.
  expect(() => loadDaemonConfig(path.join(dir, 's.conf'))).not.toThrow();
});
