import fs from 'fs';
import path from 'path';
import * as pkcs11js from 'pkcs11js';
import {
  ConfigError,
  type FilterConfig,
  REDACTED,
  filterSchema,
  formatFilterConfig,
  loadFilterConfig,
  parseFilterConfig,
} from '../../src/config';

const FIXTURES = path.join(__dirname, 'fixtures', 'config');
const ROOT = path.resolve(__dirname, '..', '..');
const DEBIAN_FILTER = '/etc/pkcs11proxyd/filter.conf';
const KEY = '00112233445566778899aabbccddeeff';
const MODULES = 'modules = [("softhsm", "/usr/lib/softhsm/libsofthsm2.so"), ("hsm2", "/opt/hsm2.so")]\n';

/** Patterns compare by source; the compiled RegExp is checked separately. */
function view(cfg: FilterConfig): unknown {
  return JSON.parse(
    JSON.stringify({ ...cfg, file: undefined, raw: undefined, data: undefined, sourceMap: undefined }, (_k, v: unknown) =>
      v instanceof RegExp ? v.source : v,
    ),
  );
}

interface Case {
  name: string;
  input: string;
  output?: Partial<Record<keyof FilterConfig, unknown>>;
  error?: RegExp;
  code?: string;
}

const goodCases: Case[] = [
  {
    name: 'modules only: pass-through defaults',
    input: MODULES,
    output: {
      modules: [
        { alias: 'softhsm', path: '/usr/lib/softhsm/libsofthsm2.so' },
        { alias: 'hsm2', path: '/opt/hsm2.so' },
      ],
      defaultModule: 'softhsm',
      debug: 0,
      logSubchannel: null,
      wrappingFormatKey: null,
      forbiddenMechanisms: [],
      allowedLabels: [],
      allowedIds: [],
      forbiddenFunctions: [],
      enforceRoSessions: [],
      forbidAdminOperations: [],
      removePaddingOracles: [],
      filterActionsPre: [],
      filterActionsPost: [],
    },
  },
  {
    name: 'mechanisms: names, cKM_ spelling, strings, decimal and hex numbers',
    input: `${MODULES}forbidden_mechanisms = [(".*", [CKM_RSA_PKCS, cKM_SHA256, "CKM_AES_CBC_PAD", 0x80000001, 7])]`,
    output: {
      forbiddenMechanisms: [
        {
          alias: { source: '.*' },
          mechanisms: [pkcs11js.CKM_RSA_PKCS, pkcs11js.CKM_SHA256, pkcs11js.CKM_AES_CBC_PAD, 0x80000001, 7],
        },
      ],
    },
  },
  {
    name: 'booleans: yes/no/true/false, bare or quoted',
    input: `${MODULES}enforce_ro_sessions = [("soft.*", yes), ("hsm2", "no")]\nforbid_admin_operations = [(".*", true), ("hsm2", false)]`,
    output: {
      enforceRoSessions: [
        { alias: { source: 'soft.*' }, enforce: true },
        { alias: { source: 'hsm2' }, enforce: false },
      ],
      forbidAdminOperations: [
        { alias: { source: '.*' }, forbid: true },
        { alias: { source: 'hsm2' }, forbid: false },
      ],
    },
  },
  {
    name: 'actions, functions, padding operations',
    input: `${MODULES}forbidden_functions = [("hsm2", [C_Login, C_InitToken])]
remove_padding_oracles = [(".*", [wrap, all])]
filter_actions_pre = [("soft.*", [(C_Login, c_Login_hook)])]`,
    output: {
      forbiddenFunctions: [{ alias: { source: 'hsm2' }, functions: ['C_Login', 'C_InitToken'] }],
      removePaddingOracles: [{ alias: { source: '.*' }, operations: ['wrap', 'all'] }],
      filterActionsPre: [
        { alias: { source: 'soft.*' }, actions: [{ function: 'C_Login', action: 'c_Login_hook' }] },
      ],
    },
  },
  {
    name: 'wrapping key becomes 16 bytes',
    input: `${MODULES}wrapping_format_key = "${KEY.toUpperCase()}"\nfilter_actions_post = [(".*", [(C_WrapKey, wrapping_format_patch)])]`,
    output: { wrappingFormatKey: { type: 'Buffer', data: [...Buffer.from(KEY, 'hex')] } },
  },
  {
    name: 'empty wrapping key means none',
    input: `${MODULES}wrapping_format_key = ""`,
    output: { wrappingFormatKey: null },
  },
  {
    name: 'empty alias and relative module path are kept',
    input: 'modules = [("", "lib/x.so")]\nallowed_labels = [("", ["a"])]',
    output: { modules: [{ alias: '', path: 'lib/x.so' }], defaultModule: '' },
  },
];

const badCases: Case[] = [
  {
    name: 'missing modules',
    input: 'debug = 1',
    error: /^f\.conf:1:1: key 'modules': missing required key$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'empty modules',
    input: 'debug = 0\nmodules = []',
    error: /^f\.conf:2:11: key 'modules': must not be empty$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'modules not a list',
    input: 'modules = "softhsm"',
    error: /^f\.conf:1:11: key 'modules': must be a list$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'module entry not a pair',
    input: 'modules = [("a", "/a.so", "extra")]',
    error: /^f\.conf:1:12: key 'modules\[0\]': must be a pair \(ALIAS, PATH\)$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'empty module path',
    input: 'modules = [("a", "")]',
    error: /^f\.conf:1:18: key 'modules\[0\]\[1\]': must not be empty$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'duplicate alias',
    input: 'modules = [("a", "/a.so"),\n           ("a", "/b.so")]',
    error: /^f\.conf:2:13: key 'modules\[1\]\[0\]': duplicate module alias "a" \(first at 1:13\)$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'unknown key',
    input: `${MODULES}filter_actions = [(".*", [(C_Login, identity)])]`,
    error: /^f\.conf:2:1: key 'filter_actions': unknown key$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'no log_level key (Caml Crush calls it debug)',
    input: `${MODULES}log_level = 1`,
    error: /^f\.conf:2:1: key 'log_level': unknown key$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'debug out of range',
    input: `${MODULES}debug = 4`,
    error: /^f\.conf:2:9: key 'debug': must be <= 3$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'unknown CKM_ identifier',
    input: `${MODULES}forbidden_mechanisms = [("soft.*", [CKM_RSA_PKCS,\n  CKM_NO_SUCH_THING])]`,
    error: /^f\.conf:3:3: key 'forbidden_mechanisms\[0\]\[1\]\[1\]': unknown mechanism 'CKM_NO_SUCH_THING'$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'mechanism that is not a CKM_ name',
    input: `${MODULES}forbidden_mechanisms = [("soft.*", [CKA_LABEL])]`,
    error:
      /^f\.conf:2:37: key 'forbidden_mechanisms\[0\]\[1\]\[0\]': must be a mechanism name \(CKM_\.\.\.\) or number$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'mechanism number out of range',
    input: `${MODULES}forbidden_mechanisms = [("soft.*", [0x100000000])]`,
    error: /^f\.conf:2:37: key 'forbidden_mechanisms\[0\]\[1\]\[0\]': must be a mechanism name/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'unknown function',
    input: `${MODULES}forbidden_functions = [("soft.*", [C_Login, C_Frobnicate])]`,
    error: /^f\.conf:2:45: key 'forbidden_functions\[0\]\[1\]\[1\]': must be a PKCS#11 function name/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'unknown action',
    input: `${MODULES}filter_actions_post = [(".*", [(C_Login, launch_missiles)])]`,
    error:
      /^f\.conf:2:42: key 'filter_actions_post\[0\]\[1\]\[0\]\[1\]': must be one of: c_Initialize_hook, /,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'bad boolean word',
    input: `${MODULES}enforce_ro_sessions = [(".*", maybe)]`,
    error: /^f\.conf:2:31: key 'enforce_ro_sessions\[0\]\[1\]': must be yes, no, true or false$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'boolean given as integer',
    input: `${MODULES}forbid_admin_operations = [(".*", 1)]`,
    error: /^f\.conf:2:35: key 'forbid_admin_operations\[0\]\[1\]': must be yes, no, true or false$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'bad padding operation',
    input: `${MODULES}remove_padding_oracles = [(".*", [wrap, decrypt])]`,
    error:
      /^f\.conf:2:41: key 'remove_padding_oracles\[0\]\[1\]\[1\]': must be one of: wrap, unwrap, encrypt, sign, all$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'rule is not a pair',
    input: `${MODULES}allowed_labels = [("softhsm")]`,
    error:
      /^f\.conf:2:19: key 'allowed_labels\[0\]': must be a pair \(ALIAS_REGEX, \[LABEL_REGEX, \.\.\.\]\)$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'rules given as one bare pair instead of a list of pairs',
    input: `${MODULES}allowed_ids = ("softhsm", ["01"])`,
    error: /^f\.conf:2:16: key 'allowed_ids\[0\]': must be a pair/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'alias pattern matching no module',
    input: `${MODULES}allowed_ids = [("opencryptoki", [".*"])]`,
    error:
      /^f\.conf:2:17: key 'allowed_ids\[0\]\[0\]': pattern matches no module alias \(aliases: "softhsm", "hsm2"\)$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'invalid label regexp',
    input: `${MODULES}allowed_labels = [(".*", ["ok", "\\\\(unclosed"])]`,
    error: /^f\.conf:2:33: key 'allowed_labels\[0\]\[1\]\[1\]': invalid regular expression: unclosed \\\($/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'wrapping key not hex',
    input: `${MODULES}wrapping_format_key = "00112233445566778899aabbccddeeZZ"`,
    error: /^f\.conf:2:23: key 'wrapping_format_key': must be 32 hexadecimal digits$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'wrapping key too short',
    input: `${MODULES}wrapping_format_key = "0011"`,
    error: /^f\.conf:2:23: key 'wrapping_format_key': must be 32 hexadecimal digits$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'wrapping_format_patch without key',
    input: `${MODULES}filter_actions_pre = [(".*", [(C_WrapKey, identity), (C_UnwrapKey, wrapping_format_patch)])]`,
    error:
      /^f\.conf:2:68: key 'wrapping_format_key': required \(32 hex digits\) when wrapping_format_patch is used$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'duplicate key',
    input: `${MODULES}debug = 1\ndebug = 2`,
    error: /^f\.conf:3:1: key 'debug': defined more than once \(first at 2:1\)$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: '__proto__ is just an unknown key',
    input: `${MODULES}__proto__ = 1`,
    error: /^f\.conf:2:1: key '__proto__': unknown key$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'unterminated string',
    input: 'modules = [("a", "/a.so)]',
    error: /^f\.conf:1:18: unterminated string$/,
    code: 'CONFIG_SYNTAX',
  },
  {
    name: 'unterminated comment',
    input: `${MODULES}(* (* *)\ndebug = 1`,
    error: /^f\.conf:2:1: unterminated comment$/,
    code: 'CONFIG_SYNTAX',
  },
  {
    name: 'bad hex',
    input: `${MODULES}forbidden_mechanisms = [(".*", [0xfg])]`,
    error: /^f\.conf:2:33: bad hex integer '0xfg'$/,
    code: 'CONFIG_SYNTAX',
  },
];

/** pkcs11proxyd's keys (not written back by formatFilterConfig, which keeps to Caml Crush's keys). */
const beyondGoodCases: Case[] = [
  {
    name: 'beyond Caml Crush: rules resolved to numbers and native-layout values, positions kept',
    input: `${MODULES}template_rules = [(".*", [(CKO_SECRET_KEY, any, CKA_SENSITIVE, force, TRUE),
  (any, CKK_AES, CKA_VALUE_LEN, default, 32), (CKO_DATA, any, CKA_LABEL, refuse, "hex:6869")])]
allowed_ec_curves = [(".*", [prime256v1, "1.3.132.0.34"])]
max_random_length = [("soft.*", 1024)]
profiles = { ops = { shadow = yes  allowed_functions = [(".*", [C_Initialize])] } }
profile_map = [("uid:1000", ops), ("gid:27", default), ("*", ops)]`,
    output: {
      beyond: {
        shadow: false,
        templateRules: [
          {
            alias: { source: '.*' },
            value: [
              { cls: pkcs11js.CKO_SECRET_KEY, keyType: null, attribute: pkcs11js.CKA_SENSITIVE, op: 'force', value: { type: 'Buffer', data: [1] }, where: 'f.conf:2:27' },
              { cls: null, keyType: pkcs11js.CKK_AES, attribute: pkcs11js.CKA_VALUE_LEN, op: 'default', value: { type: 'Buffer', data: [32, 0, 0, 0, 0, 0, 0, 0] }, where: 'f.conf:3:3' },
              { cls: pkcs11js.CKO_DATA, keyType: null, attribute: pkcs11js.CKA_LABEL, op: 'refuse', value: { type: 'Buffer', data: [0x68, 0x69] }, where: 'f.conf:3:47' },
            ],
          },
        ],
        allowedEcCurves: [{ value: [{ name: 'prime256v1', der: { type: 'Buffer', data: [...Buffer.from('06082a8648ce3d030107', 'hex')] } }, { name: '1.3.132.0.34', der: { type: 'Buffer', data: [...Buffer.from('06052b81040022', 'hex')] } }] }],
        maxRandomLength: [{ alias: { source: 'soft.*' }, value: 1024, where: 'f.conf:5:22' }],
      },
      profiles: [{ name: 'ops', rules: { shadow: true, allowedFunctions: [{ value: ['C_Initialize'] }] } }],
      profileMap: [
        { identity: { kind: 'uid', uid: 1000 }, profile: 'ops', where: 'f.conf:7:16' },
        { identity: { kind: 'gid', gid: 27 }, profile: 'default' },
        { identity: { kind: 'any' }, profile: 'ops' },
      ],
    },
  },
];

describe('filter config: rules beyond Caml Crush accepted', () => {
  it.each(beyondGoodCases)('$name', ({ input, output }) => {
    expect(view(parseFilterConfig(input, 'f.conf'))).toMatchObject(output as object);
  });
});

const beyondBadCases: Case[] = [
  {
    name: 'template rule with an unknown operation',
    input: `${MODULES}template_rules = [(".*", [(any, any, CKA_SENSITIVE, insist, TRUE)])]`,
    error: /^f\.conf:2:53: key 'template_rules\[0\]\[1\]\[0\]\[3\]': must be one of: default, force, refuse, allow$/,
  },
  {
    name: 'template rule with a class that is not a CKO_ name',
    input: `${MODULES}template_rules = [(".*", [(CKK_AES, any, CKA_SENSITIVE, force, TRUE)])]`,
    error: /^f\.conf:2:28: key 'template_rules\[0\]\[1\]\[0\]\[0\]': must be a CKO_\* name, any or a number$/,
  },
  {
    name: 'template rule with an unknown attribute',
    input: `${MODULES}template_rules = [(".*", [(any, any, CKA_NOPE, force, TRUE)])]`,
    error: /^f\.conf:2:38: key 'template_rules\[0\]\[1\]\[0\]\[2\]': unknown constant 'CKA_NOPE'$/,
  },
  {
    name: 'template rule value of the wrong shape for a CK_BBOOL attribute',
    input: `${MODULES}template_rules = [(".*", [(any, any, CKA_SENSITIVE, force, 3)])]`,
    error: /^f\.conf:2:60: key 'template_rules\[0\]\[1\]\[0\]\[4\]': must be TRUE or FALSE \(a CK_BBOOL attribute\)$/,
  },
  {
    name: 'template rule missing its value',
    input: `${MODULES}template_rules = [(".*", [(any, any, CKA_SENSITIVE, force)])]`,
    error: /^f\.conf:2:27: key 'template_rules\[0\]\[1\]\[0\]': must be a rule \(CLASS, KEY_TYPE, ATTRIBUTE, default\|force\|refuse\|allow, VALUE\)$/,
  },
  {
    name: 'hidden attribute that is not a triple',
    input: `${MODULES}hidden_attributes = [(".*", [(CKO_DATA, CKA_VALUE)])]`,
    error: /^f\.conf:2:30: key 'hidden_attributes\[0\]\[1\]\[0\]': must be a triple \(CLASS, KEY_TYPE, ATTRIBUTE\)$/,
  },
  {
    name: 'unknown allowed mechanism',
    input: `${MODULES}allowed_mechanisms = [(".*", [CKM_SHA256, CKM_NOPE])]`,
    error: /^f\.conf:2:43: key 'allowed_mechanisms\[0\]\[1\]\[1\]': unknown mechanism 'CKM_NOPE'$/,
  },
  {
    name: 'negative limit',
    input: `${MODULES}max_random_length = [(".*", -1)]`,
    error: /^f\.conf:2:29: key 'max_random_length\[0\]\[1\]': must be an integer 0\.\.4294967295$/,
  },
  {
    name: 'unknown curve',
    input: `${MODULES}allowed_ec_curves = [(".*", [prime256v1, curve1174])]`,
    error: /^f\.conf:2:42: key 'allowed_ec_curves\[0\]\[1\]\[1\]': unknown curve 'curve1174'/,
  },
  {
    name: 'denied label that is no regexp',
    input: `${MODULES}denied_labels = [(".*", ["\\\\(x"])]`,
    error: /^f\.conf:2:26: key 'denied_labels\[0\]\[1\]\[0\]': invalid regular expression/,
  },
  {
    name: 'profile with a Caml Crush key (profiles take the pkcs11proxyd keys only)',
    input: `${MODULES}profiles = { ops = { forbidden_functions = [(".*", [C_Login])] } }`,
    error: /^f\.conf:2:22: key 'profiles\.ops\.forbidden_functions': unknown key$/,
  },
  {
    name: 'profile named default',
    input: `${MODULES}profiles = { default = { shadow = yes } }`,
    error: /^f\.conf:2:14: key 'profiles\.default': 'default' is the top-level policy: not a profile name$/,
  },
  {
    name: 'profile_map naming an unknown profile',
    input: `${MODULES}profiles = { ops = { shadow = no } }\nprofile_map = [("uid:0", opz)]`,
    error: /^f\.conf:3:26: key 'profile_map\[0\]\[1\]': unknown profile 'opz' \(profiles: default, ops\)$/,
  },
  {
    name: 'profile_map with a bad identity',
    input: `${MODULES}profile_map = [("cn:alice", default)]`,
    error: /^f\.conf:2:17: key 'profile_map\[0\]\[0\]': must be uid:N, gid:N, user:NAME, group:NAME, unix, tcp, tls, subject:DN, .* or \*$/,
  },
  {
    name: 'shadow is a yes/no word',
    input: `${MODULES}shadow = maybe`,
    error: /^f\.conf:2:10: key 'shadow': must be yes, no, true or false$/,
  },
];

describe('filter config: rules beyond Caml Crush refused at file:line:col with the rule broken', () => {
  it.each(beyondBadCases)('$name', ({ input, error }) => {
    let caught: unknown;
    try {
      parseFilterConfig(input, 'f.conf');
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as ConfigError).code).toBe('CONFIG_INVALID');
    expect((caught as Error).message).toMatch(error!);
  });
});

describe('filter config: accepted inputs', () => {
  it.each(goodCases)('$name', ({ input, output }) => {
    expect(view(parseFilterConfig(input, 'f.conf'))).toMatchObject(output as object);
  });
});

describe('filter config: rejected inputs', () => {
  it.each(badCases)('$name', ({ input, error, code }) => {
    let caught: unknown;
    try {
      parseFilterConfig(input, 'f.conf');
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as ConfigError).code).toBe(code);
    expect((caught as ConfigError).message).toMatch(error as RegExp);
  });
});

describe('filter config: patterns follow Caml Crush matching', () => {
  const cfg = parseFilterConfig(
    `modules = [("softhsm", "/a.so"), ("opencryptoki", "/b.so"), ("soft", "/c.so")]
forbidden_mechanisms = [("sof.*", []), ("\\\\(softhsm\\\\|opencryptoki\\\\)", []), ("soft\\\\|open", [])]`,
    'f.conf',
  );
  const [sofStar, group, alt] = cfg.forbiddenMechanisms.map((r) => r.alias.regex);
  it.each([
    [sofStar, 'softhsm', true],
    [sofStar, 'xsoft', false],
    [group, 'softhsm', true],
    [group, 'opencryptoki', true],
    [group, 'softhsm2', false],
    // `$` is appended to the text, so it binds to the last alternative only.
    [alt, 'softanything', true],
    [alt, 'open', true],
    [alt, 'openx', false],
  ] as Array<[RegExp, string, boolean]>)('%s on %s -> %s', (re, alias, expected) => {
    expect(re.test(alias)).toBe(expected);
  });
});

describe('filter config: real files', () => {
  it("Debian's shipped filter.conf: parses, and fails only for the missing wrapping key, as Caml Crush does", () => {
    const text = fs.readFileSync(DEBIAN_FILTER, 'utf8');
    expect(() => loadFilterConfig(DEBIAN_FILTER)).toThrow(
      expect.objectContaining({ code: 'CONFIG_INVALID', key: 'wrapping_format_key', file: DEBIAN_FILTER }),
    );
    const cfg = parseFilterConfig(`${text}\nwrapping_format_key = "${KEY}"\n`, DEBIAN_FILTER);
    expect(view(cfg)).toMatchObject({
      modules: [
        { alias: 'softhsm', path: '/usr/lib/softhsm/libsofthsm.so' },
        { alias: 'opencryptoki', path: '/usr/local/lib/opencryptoki/libopencryptoki.so' },
      ],
      debug: 0,
      logSubchannel: 'filter',
      forbiddenMechanisms: [
        { alias: { source: 'sof.*' }, mechanisms: [pkcs11js.CKM_RSA_X_509] },
        { alias: { source: 'opencrypto.*' }, mechanisms: [] },
      ],
    });
    expect(cfg.filterActionsPost).toHaveLength(1);
    expect(cfg.filterActionsPost[0].actions).toHaveLength(44);
    expect(cfg.filterActionsPost[0].actions[0]).toEqual({
      function: 'C_CreateObject',
      action: 'non_local_objects_patch',
    });
  });

  it('loads the Caml Crush integration filter.conf equivalent', () => {
    const cfg = loadFilterConfig(path.join(FIXTURES, 'filter-integration.conf'));
    expect(cfg.wrappingFormatKey?.toString('hex')).toBe(KEY);
    expect(cfg.defaultModule).toBe('softhsm');
    expect(cfg.filterActionsPost[0].actions).toHaveLength(44);
    expect(cfg.filterActionsPost[0].actions.filter((a) => a.action === 'wrapping_format_patch')).toEqual([
      { function: 'C_WrapKey', action: 'wrapping_format_patch' },
      { function: 'C_UnwrapKey', action: 'wrapping_format_patch' },
    ]);
  });

  it('loads a file using every key and value form', () => {
    const cfg = loadFilterConfig(path.join(FIXTURES, 'filter-all-keys.conf'));
    expect(view(cfg)).toMatchObject({
      debug: 3,
      logSubchannel: 'filter',
      modules: [
        { alias: 'softhsm', path: '/usr/lib/softhsm/libsofthsm2.so' },
        { alias: '', path: 'relative/module.so' },
        { alias: 'hsm2', path: '/opt/hsm2.so' },
      ],
      forbiddenMechanisms: [
        {
          alias: { source: 'soft.*' },
          mechanisms: [
            pkcs11js.CKM_RSA_PKCS,
            pkcs11js.CKM_MD5_RSA_PKCS,
            pkcs11js.CKM_SHA256,
            pkcs11js.CKM_DES_ECB,
          ],
        },
        { alias: { source: '\\(softhsm\\|hsm2\\)' }, mechanisms: [0x80000001, 0xffffffff, 0] },
      ],
      enforceRoSessions: [
        { alias: { source: 'soft.*' }, enforce: false },
        { alias: { source: 'hsm2' }, enforce: true },
        { alias: { source: '' }, enforce: true },
        { alias: { source: '.*' }, enforce: false },
      ],
      removePaddingOracles: [
        { alias: { source: '.*' }, operations: ['wrap', 'unwrap', 'encrypt'] },
        { alias: { source: 'hsm2' }, operations: ['sign', 'all'] },
      ],
    });
  });

  it("filter.conf.example: Debian's patchset 1 in the same order, raw RSA forbidden, padding oracles for wrap/unwrap, no SO login; refused without a wrapping key", () => {
    const file = path.join(ROOT, 'filter.conf.example');
    const text = fs.readFileSync(file, 'utf8');
    // The example ships no key (one published key would let anyone forge blobs): the action's line is named.
    expect(() => loadFilterConfig(file)).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID', key: 'wrapping_format_key', file }));
    const cfg = parseFilterConfig(`${text}\nwrapping_format_key = "${KEY}"\n`, file);
    const debian = parseFilterConfig(`${fs.readFileSync(DEBIAN_FILTER, 'utf8')}\nwrapping_format_key = "${KEY}"\n`, DEBIAN_FILTER);
    expect(cfg.modules).toEqual([{ alias: 'softhsm', path: '/usr/lib/softhsm/libsofthsm2.so' }]);
    expect(view(cfg)).toMatchObject({
      debug: 1,
      forbiddenMechanisms: [{ alias: { source: '.*' }, mechanisms: [pkcs11js.CKM_RSA_X_509] }],
      forbidAdminOperations: [{ alias: { source: '.*' }, forbid: true }],
      removePaddingOracles: [{ alias: { source: '.*' }, operations: ['wrap', 'unwrap'] }],
      allowedLabels: [],
      allowedIds: [],
      forbiddenFunctions: [],
      enforceRoSessions: [],
      filterActionsPre: [],
    });
    expect(cfg.filterActionsPost.map((r) => [r.alias.source, r.actions])).toEqual([['.*', debian.filterActionsPost[0].actions]]);
  });

  it('redacts the wrapping key in raw', () => {
    const cfg = loadFilterConfig(path.join(FIXTURES, 'filter-integration.conf'));
    expect((cfg.raw as Record<string, unknown>).wrapping_format_key).toBe(REDACTED);
    expect(JSON.stringify(cfg.raw)).not.toContain(KEY);
  });
});

describe('filter config: round trip through formatFilterConfig', () => {
  const sources: Array<[string, () => string]> = [
    ...goodCases.map((c): [string, () => string] => [c.name, () => c.input]),
    ['filter-all-keys.conf', () => fs.readFileSync(path.join(FIXTURES, 'filter-all-keys.conf'), 'utf8')],
    [
      'filter-integration.conf',
      () => fs.readFileSync(path.join(FIXTURES, 'filter-integration.conf'), 'utf8'),
    ],
    [
      'strings needing escapes',
      () => 'modules = [("we\\"ird\\\\al\\009ias", "/p/with \\"quotes\\".so")]\nlog_subchannel = "a\\nb"',
    ],
  ];
  it.each(sources)('%s', (_name, text) => {
    const first = parseFilterConfig(text(), 'a.conf');
    const out = formatFilterConfig(first);
    const second = parseFilterConfig(out, 'a.conf');
    expect(view(second)).toEqual(view(first));
    expect(formatFilterConfig(second)).toBe(out);
  });
});

describe('filter schema', () => {
  it('documents every key and rejects unknown ones', () => {
    expect(filterSchema.additionalProperties).toBe(false);
    for (const [k, sub] of Object.entries(
      filterSchema.properties as Record<string, { description?: unknown }>,
    )) {
      expect({ k, d: typeof sub.description }).toEqual({ k, d: 'string' });
    }
  });
});
