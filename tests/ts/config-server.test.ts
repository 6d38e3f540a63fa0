import fs from 'fs';
import os from 'os';
import path from 'path';
import {
  ConfigError,
  type ServerConfig,
  loadServerConfig,
  parseServerConfig,
  serverSchema,
} from '../../src/config';

const FIXTURES = path.join(__dirname, 'fixtures', 'config');
const ROOT = path.resolve(__dirname, '..', '..');
const DEBIAN_CONF = '/etc/pkcs11proxyd/pkcs11proxyd.conf';

/** A minimal valid file with `processor`/`protocol` bodies replaceable per case. */
function conf(
  opts: { protocol?: string; processor?: string; service?: string; controller?: string } = {},
): string {
  return [
    'netplex {',
    opts.controller ?? '',
    '  service {',
    '    name = "p";',
    opts.service ?? '',
    '    protocol {',
    '      name = "rpc_pkcs11";',
    opts.protocol ?? '      address { type = "local"; path = "/run/p.sock"; };',
    '    };',
    '    processor {',
    '      type = "rpc_pkcs11";',
    opts.processor ?? '',
    '    };',
    '  };',
    '}',
  ].join('\n');
}
// Line numbers inside conf(): controller=2, service extra=5, protocol body=8, processor extra=12.

interface Case {
  name: string;
  input: string;
  output?: Partial<ServerConfig>;
  error?: RegExp;
  code?: string;
}

const goodCases: Case[] = [
  {
    name: 'minimal: defaults',
    input: conf(),
    output: {
      listen: [{ type: 'local', path: '/run/p.sock' }],
      filterConfig: null,
      useTls: false,
      maxRecordSize: 16 * 1024 * 1024,
      workers: null,
      pidFile: null,
      user: null,
      group: null,
      serviceName: 'p',
      logLevel: null,
    },
  },
  {
    name: 'several addresses and protocols, in order',
    input: conf({
      protocol: [
        '      address { type = "internet"; bind = "127.0.0.1:0"; };',
        '      address { type = "internet"; bind = "[::1]:4444"; };',
        '      address { type = "internet"; bind = "localhost:65535" };',
        '    };',
        '    protocol { name = "second"; address { type = "local"; path = "/run/b.sock" }',
      ].join('\n'),
    }),
    output: {
      listen: [
        { type: 'internet', host: '127.0.0.1', port: 0 },
        { type: 'internet', host: '::1', port: 4444 },
        { type: 'internet', host: 'localhost', port: 65535 },
        { type: 'local', path: '/run/b.sock' },
      ],
    },
  },
  {
    name: 'local_chmod / local_chown apply to the protocol unix sockets',
    input: conf({
      protocol:
        '      local_chmod = "0o660"; local_chown = "daemon:adm";\n      address { type = "local"; path = "/run/p.sock"; };',
    }),
    output: { listen: [{ type: 'local', path: '/run/p.sock', mode: 0o660, owner: 'daemon', group: 'adm' }] },
  },
  {
    name: 'local_chmod as integer',
    input: conf({
      protocol: '      local_chmod = 511;\n      address { type = "local"; path = "/run/p.sock"; };',
    }),
    output: { listen: [{ type: 'local', path: '/run/p.sock', mode: 0o777 }] },
  },
  {
    name: 'relative paths: filter_config and pid_file against the conf dir, socket against socket_directory',
    input: conf({
      controller: '  controller { socket_directory = "/var/lib/p"; };',
      protocol: '      address { type = "local"; path = "s.sock"; };',
      processor: '      filter_config = "filter.conf"; pid_file = "run/p.pid";',
    }),
    output: {
      listen: [{ type: 'local', path: '/var/lib/p/s.sock' }],
      filterConfig: '/etc/x/filter.conf',
      pidFile: '/etc/x/run/p.pid',
    },
  },
  {
    name: 'relative socket path without socket_directory: conf dir',
    input: conf({ protocol: '      address { type = "local"; path = "s.sock"; };' }),
    output: { listen: [{ type: 'local', path: '/etc/x/s.sock' }] },
  },
  {
    name: 'our keys',
    input: conf({ processor: '      max_record_size = 65536; workers = 4; pid_file = "/run/p.pid";' }),
    output: { maxRecordSize: 65536, workers: 4, pidFile: '/run/p.pid' },
  },
  {
    name: 'user, group, log level',
    input: conf({
      service: '    user = "nobody"; group = "nogroup";',
      controller: '  controller { max_level = "warning"; };',
    }),
    output: { user: 'nobody', group: 'nogroup', logLevel: 'warning' },
  },
  {
    name: 'legacy TLS keys',
    input: conf({
      processor:
        '      use_ssl = true; cafile = "ca.crt"; certfile = "/c/s.crt"; certkey = "/c/s.key"; cipher_suite = "A:B"; verify_depth = 2;',
    }),
    output: {
      useTls: true,
      tls: {
        caFile: '/etc/x/ca.crt',
        certFile: '/c/s.crt',
        keyFile: '/c/s.key',
        cipherSuites: ['A', 'B'],
        verifyDepth: 2,
      },
    },
  },
  {
    name: 'tls block wins over legacy keys',
    input: conf({
      processor: [
        '      use_ssl = true; certfile = "/old.crt";',
        '      tls { algorithms = "SECURE256"; peer_auth = "required";',
        '        dh_params { pkcs3_file = "/dh.pem" };',
        '        x509 { key { crt_file = "s.pem"; key_file = "s.key" }; trust { crt_file = "/ca.pem" } } };',
      ].join('\n'),
    }),
    output: {
      useTls: true,
      tls: {
        certFile: '/etc/x/s.pem',
        keyFile: '/etc/x/s.key',
        caFile: '/ca.pem',
        dhParamsFile: '/dh.pem',
        priority: 'SECURE256',
        peerAuth: 'required',
      },
    },
  },
];

const badCases: Case[] = [
  {
    name: 'unknown key at depth',
    input: conf({ processor: '      bogus = 1;' }),
    error: /^x\.conf:12:7: key 'netplex\.service\[0\]\.processor\.bogus': unknown key$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'netplex as a value',
    input: 'netplex = 1',
    error: /^x\.conf:1:11: key 'netplex': must be a block \{ \.\.\. \}$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'misspelt netplex: the unknown key is reported before the missing one',
    input: 'netplex2 { };',
    error: /^x\.conf:1:1: key 'netplex2': unknown key$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'wrong type: conn_limit string',
    input: conf({ service: '    conn_limit = "1";' }),
    error: /^x\.conf:5:18: key 'netplex\.service\[0\]\.conn_limit': must be an integer$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'wrong type: use_ssl string',
    input: conf({ processor: '      use_ssl = "false";' }),
    error:
      /^x\.conf:12:17: key 'netplex\.service\[0\]\.processor\.use_ssl': must be a boolean \(true or false\)$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'wrong type: value where a block belongs',
    input: conf({ service: '    workload_manager = 1;' }),
    error: /^x\.conf:5:24: key 'netplex\.service\[0\]\.workload_manager': must be a block \{ \.\.\. \}$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'bad address type',
    input: conf({ protocol: '      address { type = "unix"; path = "/x"; };' }),
    error:
      /^x\.conf:8:24: key 'netplex\.service\[0\]\.protocol\[0\]\.address\[0\]\.type': must be one of: "local", "internet"$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'local address without path',
    input: conf({ protocol: '      address { type = "local"; };' }),
    error:
      /^x\.conf:8:7: key 'netplex\.service\[0\]\.protocol\[0\]\.address\[0\]\.path': missing required key$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'bind on a local address',
    input: conf({ protocol: '      address { type = "local"; path = "/x"; bind = "1.2.3.4:5"; };' }),
    error:
      /^x\.conf:8:53: key 'netplex\.service\[0\]\.protocol\[0\]\.address\[0\]\.bind': only allowed when type is "internet"$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'bind without port',
    input: conf({ protocol: '      address { type = "internet"; bind = "localhost"; };' }),
    error:
      /^x\.conf:8:43: key 'netplex\.service\[0\]\.protocol\[0\]\.address\[0\]\.bind': must be "HOST:PORT" or "\[IPV6\]:PORT"$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'port out of range',
    input: conf({ protocol: '      address { type = "internet"; bind = "0.0.0.0:70000"; };' }),
    error:
      /^x\.conf:8:43: key 'netplex\.service\[0\]\.protocol\[0\]\.address\[0\]\.bind': port must be 0\.\.65535$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'protocol without address',
    input: conf({ protocol: '' }),
    error: /^x\.conf:6:5: key 'netplex\.service\[0\]\.protocol\[0\]\.address': missing required key$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'two processor blocks',
    input: conf({ processor: '    }; processor { type = "rpc_pkcs11";' }),
    error: /^x\.conf:10:15: key 'netplex\.service\[0\]\.processor': block must appear at most once$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'two services',
    input: conf().replace(
      /\n}$/,
      '\n  service { name = "q"; protocol { name = "r"; address { type = "local"; path = "/q" } }; processor { type = "rpc_pkcs11" } }\n}',
    ),
    error: /^x\.conf:3:11: key 'netplex\.service': must have at most 1 items$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'processor type not rpc_pkcs11',
    input: conf().replace('type = "rpc_pkcs11"', 'type = "rpc_other"'),
    error: /^x\.conf:11:14: key 'netplex\.service\[0\]\.processor\.type': must be one of: "rpc_pkcs11"$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'ambiguous octal mode string',
    input: conf({ protocol: '      local_chmod = "0777";\n      address { type = "local"; path = "/x"; };' }),
    error:
      /^x\.conf:8:21: key 'netplex\.service\[0\]\.protocol\[0\]\.local_chmod': ambiguous mode "0777": write "0o777"$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'local_chown without group',
    input: conf({ protocol: '      local_chown = "root";\n      address { type = "local"; path = "/x"; };' }),
    error: /^x\.conf:8:21: key 'netplex\.service\[0\]\.protocol\[0\]\.local_chown': must be "USER:GROUP"$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'group without user',
    input: conf({ service: '    group = "adm";' }),
    error: /^x\.conf:3:3: key 'netplex\.service\[0\]\.user': missing required key \(needed by 'group'\)$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'max_record_size too small',
    input: conf({ processor: '      max_record_size = 10;' }),
    error: /^x\.conf:12:25: key 'netplex\.service\[0\]\.processor\.max_record_size': must be >= 4096$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'workers zero',
    input: conf({ processor: '      workers = 0;' }),
    error: /^x\.conf:12:17: key 'netplex\.service\[0\]\.processor\.workers': must be >= 1$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'empty filter_config',
    input: conf({ processor: '      filter_config = "";' }),
    error: /^x\.conf:12:23: key 'netplex\.service\[0\]\.processor\.filter_config': must not be empty$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'bad log level',
    input: conf({ controller: '  controller { max_level = "loud"; };' }),
    error: /^x\.conf:2:28: key 'netplex\.controller\.max_level': must be one of: "emerg", .*"debug"$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'first error in file order is reported',
    input: conf({ controller: '  controller { bogus = 1; };', processor: '      workers = "x";' }),
    error: /^x\.conf:2:16: key 'netplex\.controller\.bogus': unknown key$/,
    code: 'CONFIG_INVALID',
  },
  {
    name: 'syntax error: missing ;',
    input: conf({ processor: '      workers = 4\n      pid_file = "/p";' }),
    error: /^x\.conf:13:7: expected ';' or '}' after 'workers' but found identifier 'pid_file'$/,
    code: 'CONFIG_SYNTAX',
  },
];

function parse(input: string): ServerConfig {
  return parseServerConfig(input, '/etc/x/x.conf');
}

describe('server config: accepted inputs', () => {
  it.each(goodCases)('$name', ({ input, output }) => {
    expect(parse(input)).toMatchObject(output as object);
  });
});

describe('server config: rejected inputs', () => {
  it.each(badCases)('$name', ({ input, error, code }) => {
    let caught: unknown;
    try {
      parseServerConfig(input, 'x.conf');
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as ConfigError).code).toBe(code);
    expect((caught as ConfigError).message).toMatch(error as RegExp);
  });
});

describe('server config: real files', () => {
  it("loads Debian's shipped pkcs11proxyd.conf", () => {
    const cfg = loadServerConfig(DEBIAN_CONF);
    expect(cfg).toMatchObject({
      file: DEBIAN_CONF,
      listen: [{ type: 'internet', host: '127.0.0.1', port: 4444 }],
      filterConfig: '/etc/pkcs11proxyd/filter.conf',
      useTls: false,
      user: 'Debian-pkcs11proxyd',
      group: 'Debian-pkcs11proxyd',
      serviceName: 'PKCS#11 Filtering Proxy',
      logLevel: 'debug',
    });
    expect(cfg.tls).toBeUndefined();
  });

  const integration: Array<[string, Partial<ServerConfig>]> = [
    [
      'server-unix.conf',
      {
        listen: [{ type: 'local', path: '/var/run/pkcs11proxyd.socket' }],
        useTls: false,
        tls: {
          caFile: '/usr/local/etc/tests/certs/ca.crt',
          certFile: '/usr/local/etc/tests/certs/server.crt',
          keyFile: '/usr/local/etc/tests/certs/server.key',
          dhParamsFile: '/usr/local/etc/tests/certs/dhparams.pem',
          cipherSuites: ['DHE-RSA-AES128-SHA'],
          verifyDepth: 4,
        },
      },
    ],
    ['server-tcp.conf', { listen: [{ type: 'internet', host: '0.0.0.0', port: 4444 }], useTls: false }],
    [
      'server-unix-tls.conf',
      {
        listen: [{ type: 'local', path: '/var/run/pkcs11proxyd.socket' }],
        useTls: true,
        tls: {
          certFile: path.join(FIXTURES, 'server.pem'),
          keyFile: path.join(FIXTURES, 'server-key.pem'),
          caFile: path.join(FIXTURES, 'ca.pem'),
          priority:
            'SECURE256:+SECURE128:-VERS-TLS-ALL:+VERS-TLS1.2:-RSA:-DHE-DSS:-CAMELLIA-128-CBC:-CAMELLIA-256-CBC',
          peerAuth: 'required',
        },
      },
    ],
    ['server-tcp-tls.conf', { listen: [{ type: 'internet', host: '0.0.0.0', port: 4444 }], useTls: true }],
  ];
  it.each(integration)('loads the Caml Crush integration equivalent %s', (name, expected) => {
    const cfg = loadServerConfig(path.join(FIXTURES, name));
    expect(cfg).toMatchObject({ ...expected, filterConfig: '/build/src/tests/integration/filter.conf' });
  });

  it('loads pkcs11proxyd.conf.example', () => {
    const file = path.join(ROOT, 'pkcs11proxyd.conf.example');
    expect(loadServerConfig(file)).toMatchObject({
      listen: [{ type: 'local', path: '/run/pkcs11proxyd/pkcs11proxyd.socket' }],
      filterConfig: path.join(ROOT, 'filter.conf'),
      useTls: false,
    });
  });

  it('keeps the parsed tree in raw', () => {
    const raw = parse(conf({ processor: '      workers = 2;' })).raw as {
      netplex: { service: Array<{ processor: unknown }> };
    };
    expect(raw.netplex.service[0].processor).toEqual({ type: 'rpc_pkcs11', workers: 2 });
  });
});

describe('server config: I/O', () => {
  it('reports a missing file as CONFIG_IO', () => {
    const file = path.join(os.tmpdir(), `pkcs11proxyd-missing-${process.pid}.conf`);
    expect(() => loadServerConfig(file)).toThrow(expect.objectContaining({ code: 'CONFIG_IO', file }));
  });

  it('refuses a directory', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pkcs11proxyd-cfg-'));
    try {
      expect(() => loadServerConfig(dir)).toThrow(expect.objectContaining({ code: 'CONFIG_IO' }));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('server schema', () => {
  it('documents every property and closes every block', () => {
    const walk = (s: Record<string, unknown>, where: string): void => {
      if (s.type === 'object') expect({ where, ap: s.additionalProperties }).toEqual({ where, ap: false });
      for (const [k, sub] of Object.entries(
        (s.properties ?? {}) as Record<string, Record<string, unknown>>,
      )) {
        if (where.endsWith('/then') || where.includes('/if')) continue;
        expect({ where: `${where}.${k}`, d: typeof sub.description }).toEqual({
          where: `${where}.${k}`,
          d: 'string',
        });
        walk(sub, `${where}.${k}`);
      }
      if (s.items && !Array.isArray(s.items)) walk(s.items as Record<string, unknown>, `${where}[]`);
    };
    walk(serverSchema as Record<string, unknown>, '');
  });

  it('documents our added keys as pkcs11proxyd extensions', () => {
    const text = JSON.stringify(serverSchema);
    for (const key of ['max_record_size', 'workers', 'pid_file']) {
      expect(text).toMatch(new RegExp(`"${key}":\\{"type":"[a-z]+","description":"pkcs11proxyd extension`));
    }
  });
});
