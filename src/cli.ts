import { ProxyError } from './errors';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, type DaemonConfig, effectiveConfiguration, loadDaemonConfig } from './config';
import type { LogLevel as ConfigLogLevel } from './config';
import { errorMessage } from './pkcs11/errors';
import { probeBackend } from './bindings/open-backends';
import { checkFilterEnforced } from './config/daemon-config';
import { type FilterConfig, loadFilterConfig } from './config/filter-config';
import { invalidAt } from './config/validate';
import { ACTIONS } from './filter/actions';
import { describeFilter } from './filter/describe';
import { type CompiledFilter, compileFilter } from './filter/policy';
import { compileProfiles } from './filter/rules';
import { Daemon } from './server/supervision/daemon';
import { EMBEDDED_SO_PIN, EMBEDDED_TOKEN_LABEL, EMBEDDED_USER_PIN, prepareEmbeddedDefault } from './server/embedded-default';
import type { EmbeddedDefault } from './server/embedded-default';
import { createLogger, envLogFormat, envLogLevel } from './server/log';
import type { LogLevel } from './server/log';
import { installAuditSinks } from './server/audit-sinks';
import type { AuditSinks } from './server/audit-sinks';
import type { DaemonSettings } from './server/settings';
import { audit } from './server/audit';
import { activatedListeners, serviceManager } from './server/supervision/systemd';
import { allowRootFromEnv, checkPrivilegeSettings, PrivilegeError } from './server/supervision/privilege';

/** Exit codes (sysexits.h values where one fits). */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 64;
export const EXIT_CONFIG = 78;

const ROOT = path.resolve(__dirname, '..', '..');
const VERSION: string = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const CAML_CRUSH_CLIENT = '/usr/lib/x86_64-linux-gnu/caml-crush/libp11clientunix.so';
const OUR_CLIENT = path.join(ROOT, 'client', 'build', 'libp11client.so');

const USAGE = `Usage: pkcs11proxyd [options]

Filtering PKCS#11 proxy, wire compatible with Caml Crush.

Options:
  -conf FILE       server configuration (Caml Crush pkcs11proxyd.conf syntax).
                   Without it: embedded default (SoftHSM2 token and socket in ${path.join(ROOT, 'var')}).
  -fg              stay in the foreground (default: detach and write a pid file)
  -pid FILE        pid file when detaching (default: pid_file from the config,
                   or var/pkcs11proxyd.pid)
  -debug-pkcs11    trace every PKCS#11 call with spec names (arguments, CK_RV,
                   duration; PINs, key values and data redacted)
  -debug-pkcs11-json  the same trace as one JSON object per line on stderr
  -workers N       worker processes (default: config 'workers', else one per core; 0 = single process)
  -check-filter FILE  validate a filter.conf, print the policy compiled per alias and
                   which modules cannot be loaded, and exit (0 valid, 78 invalid,
                   1 when no module can be loaded)
  -version         print the version and exit
  -help            print this help and exit

Exit codes: 0 ok, 1 startup or runtime failure, 64 bad command line, 78 invalid configuration.
`;

interface CliOptions {
  fg: boolean;
  conf: string | null;
  pid: string | null;
  trace: boolean;
  traceJson: boolean;
  workers: number | null;
  help: boolean;
  version: boolean;
  checkFilter: string | null;
}

/** netplex (syslog) levels onto the logger's four. */
function logThreshold(l: ConfigLogLevel): LogLevel {
  switch (l) {
    case 'debug':
      return 'debug';
    case 'info':
    case 'notice':
      return 'info';
    case 'warning':
      return 'warn';
    default:
      return 'error';
  }
}

export class UsageError extends ProxyError {
  readonly code = 'USAGE';
}

export function parseArgs(argv: string[]): CliOptions {
  const o: CliOptions = { fg: false, conf: null, pid: null, trace: false, traceJson: false, workers: null, help: false, version: false, checkFilter: null };
  for (let i = 0; i < argv.length; i++) {
    // Both -opt and --opt, as netplex daemons accept.
    const a = argv[i].replace(/^--/, '-');
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`option ${a} needs a value`);
      return v;
    };
    switch (a) {
      case '-fg':
        o.fg = true;
        break;
      case '-conf':
        o.conf = value();
        break;
      case '-pid':
        o.pid = value();
        break;
      case '-debug-pkcs11':
        o.trace = true;
        break;
      case '-debug-pkcs11-json':
        o.trace = true;
        o.traceJson = true;
        break;
      case '-workers': {
        const v = value();
        if (!/^[0-9]+$/.test(v) || Number(v) > 64) throw new UsageError(`-workers takes a number from 0 to 64, not '${v}'`);
        o.workers = Number(v);
        break;
      }
      case '-help':
      case '-h':
        o.help = true;
        break;
      case '-version':
        o.version = true;
        break;
      case '-check-filter':
        o.checkFilter = value();
        break;
      default:
        throw new UsageError(`unknown option '${argv[i]}'`);
    }
  }
  return o;
}

function clientHint(e: EmbeddedDefault): string {
  const lines = [
    `Embedded default: SoftHSM2 token '${EMBEDDED_TOKEN_LABEL}' (user PIN ${EMBEDDED_USER_PIN}, SO PIN ${EMBEDDED_SO_PIN})${e.createdToken ? ', created now' : ''}.`,
    `State in ${e.stateDir}; edit ${e.serverConf} and ${e.filterConf} to change it.`,
    `Filter: ${e.filterConf} (from filter.conf.example: Caml Crush patchset 1).`,
    'Point pkcs11-tool at it:',
  ];
  if (fs.existsSync(OUR_CLIENT)) {
    lines.push(`  PKCS11PROXY_SOCKET_PATH=${e.socketPath} pkcs11-tool --module ${OUR_CLIENT} -L`);
  }
  lines.push(`  PKCS11PROXY_SOCKET_PATH=${e.socketPath} PKCS11PROXY_LIBNAME=softhsm pkcs11-tool --module ${CAML_CRUSH_CLIENT} -L`);
  return lines.join('\n');
}

/** Starts a detached copy of this command with -fg and waits until it serves or fails. */
function detach(argv: string[], pidFile: string): Promise<number> {
  const logFile = pidFile.replace(/\.pid$/, '') + '.log';
  const out = fs.openSync(logFile, 'a');
  const child = spawn(process.execPath, [process.argv[1], ...argv, '-fg'], {
    detached: true,
    stdio: ['ignore', out, out, 'ipc'],
    env: { ...process.env, PKCS11PROXYD_DETACHED: '1' },
  });
  return new Promise((resolve) => {
    child.once('message', () => {
      fs.writeFileSync(pidFile, `${child.pid}\n`);
      process.stdout.write(`pkcs11proxyd running as pid ${child.pid} (pid file ${pidFile}, log ${logFile})\n`);
      child.disconnect();
      child.unref();
      resolve(EXIT_OK);
    });
    child.once('exit', (code) => {
      process.stderr.write(`pkcs11proxyd failed to start (exit ${code}); see ${logFile}\n`);
      resolve(code && code !== 0 ? code : EXIT_FAILURE);
    });
  });
}

/**
 * -check-filter FILE: the checks the daemon makes at start-up (syntax,
 * schema, keys not enforced yet, actions compiled), then the effective
 * policy on stdout. Errors go to stderr as `file:line:col: ...`; every
 * action not implemented is listed, not only the first.
 */
export function checkFilter(file: string): number {
  let fc: FilterConfig;
  try {
    fc = loadFilterConfig(file);
  } catch (e) {
    process.stderr.write(`${errorMessage(e)}\n`);
    return e instanceof ConfigError ? EXIT_CONFIG : EXIT_FAILURE;
  }
  let compiled: CompiledFilter;
  try {
    checkFilterEnforced(fc);
    compiled = compileProfiles(fc, compileFilter(fc));
  } catch (e) {
    const lines = [errorMessage(e)];
    for (const line of unimplementedActions(fc)) if (!lines.includes(line)) lines.push(line);
    process.stderr.write(lines.map((l) => `${l}\n`).join(''));
    return e instanceof ConfigError ? EXIT_CONFIG : EXIT_FAILURE;
  }
  const modules = fc.modules.map((m) => ({ alias: m.alias, path: m.path, error: probeBackend(m.path), helper: m.isolation?.mode === 'helper' }));
  process.stdout.write(describeFilter(compiled, modules).map((l) => `${l}\n`).join(''));
  if (modules.every((m) => m.error !== null)) {
    process.stderr.write(`${file}: no module can be loaded; the daemon would not start\n`);
    return EXIT_FAILURE;
  }
  return EXIT_OK;
}

/** `file:line:col: ...` of every hook naming an action the registry does not have, as compileFilter words it. */
function unimplementedActions(fc: FilterConfig): string[] {
  const out: string[] = [];
  for (const [key, rules] of [['filter_actions_pre', fc.filterActionsPre], ['filter_actions_post', fc.filterActionsPost]] as const) {
    rules.forEach((rule, i) =>
      rule.actions.forEach((a, j) => {
        if (ACTIONS[a.action] !== undefined) return;
        out.push(invalidAt(fc.file, fc.data, fc.sourceMap, `/${key}/${i}/1/${j}/1`, `action '${a.action}' is not enforced yet`).message);
      }),
    );
  }
  return out;
}

export async function main(argv: string[]): Promise<number> {
  let o: CliOptions;
  try {
    o = parseArgs(argv);
  } catch (e) {
    process.stderr.write(`pkcs11proxyd: ${errorMessage(e)}\n${USAGE}`);
    return EXIT_USAGE;
  }
  if (o.help) {
    process.stdout.write(USAGE);
    return EXIT_OK;
  }
  if (o.version) {
    process.stdout.write(`pkcs11proxyd ${VERSION}\n`);
    return EXIT_OK;
  }
  if (o.checkFilter !== null) return checkFilter(o.checkFilter);
  let log = createLogger();
  let loaded: DaemonConfig;
  let embedded: EmbeddedDefault | null = null;
  let settings: DaemonSettings;
  let pidFile: string;
  try {
    let confFile = o.conf;
    if (confFile === null) {
      embedded = prepareEmbeddedDefault(process.env.PKCS11PROXYD_STATE_DIR ?? path.join(ROOT, 'var'), path.join(ROOT, 'filter.conf.example'));
      confFile = embedded.serverConf;
      // stdout: without -fg this is the command the user ran; the detached daemon finds the file made.
      if (embedded.createdWrappingKey) process.stdout.write(`embedded default: generated a wrapping_format_key into ${embedded.filterConf} (mode 0600)\n`);
      if (embedded.filterConfExposed !== null) {
        log('warn', `embedded default: ${embedded.filterConf} holds the wrapping format key but has mode 0${embedded.filterConfExposed.toString(8)}; chmod 600 it`);
      }
    }
    const { server: sc, filter: fc, tls } = loadDaemonConfig(confFile);
    const defaultWorkers = Math.min(sc.workloadThreads ?? os.availableParallelism(), sc.maxThreads ?? Infinity);
    settings = {
      listen: sc.listen,
      modules: fc.modules,
      virtualAliases: [...fc.pools, ...fc.slotNat],
      defaultAlias: fc.defaultModule,
      trace: o.trace,
      traceFormat: o.traceJson ? 'json' : 'text',
      workers: o.workers ?? sc.workers ?? defaultWorkers,
      maxRecordSize: sc.maxRecordSize,
      plainParameterMechanisms: sc.plainParameterMechanisms,
      connectionLimits: sc.connectionLimits,
      limits: sc.limits,
      admission: sc.admission,
      filterFile: fc.file,
      logFormat: envLogFormat(sc.logFormat ?? 'text'),
      logLevel: envLogLevel(sc.logLevel !== null ? logThreshold(sc.logLevel) : 'info'),
      privilege: {
        user: sc.user,
        group: sc.group,
        // The embedded default is a demo run from a checkout (`make run` as root): it keeps root and says so.
        allowRoot: sc.allowRoot || embedded !== null || allowRootFromEnv(),
        umask: sc.umask,
      },
      shutdownTimeoutMs: sc.shutdownTimeoutMs,
    };
    checkPrivilegeSettings(settings.privilege!);
    if (sc.auditFile !== null || sc.auditStderr || sc.auditSyslog !== null)
      settings.audit = { file: sc.auditFile, stderr: sc.auditStderr, syslog: sc.auditSyslog };
    if (sc.metricsListen !== null) settings.metrics = { listen: sc.metricsListen };
    if (tls !== null) settings.tls = tls;
    loaded = { server: sc, filter: fc, tls };
    pidFile = o.pid ?? sc.pidFile ?? path.join(ROOT, 'var', 'pkcs11proxyd.pid');
    log = createLogger(settings.logLevel, '', settings.logFormat);
  } catch (e) {
    process.stderr.write(`pkcs11proxyd: ${errorMessage(e)}\n`);
    return e instanceof ConfigError || e instanceof PrivilegeError ? EXIT_CONFIG : EXIT_FAILURE;
  }

  if (!o.fg) {
    fs.mkdirSync(path.dirname(pidFile), { recursive: true });
    return detach(argv, pidFile);
  }

  let daemon: Daemon;
  let auditSinks: AuditSinks | null;
  try {
    // Before the workers start (they open their own) and before the in-process stack is built.
    auditSinks = installAuditSinks(settings.audit, null, log);
  } catch (e) {
    log('error', `cannot start: audit trail: ${errorMessage(e)}`);
    return EXIT_FAILURE;
  }
  const manager = serviceManager(log);
  try {
    const activated = activatedListeners(settings.listen);
    if (activated !== null) {
      log('info', `socket activation: ${activated.length} inherited listener(s) replace the configured addresses`);
      settings.listen = activated;
    }
    daemon = await Daemon.start(settings, log);
  } catch (e) {
    log('error', `cannot start: ${errorMessage(e)}`);
    auditSinks?.close();
    return EXIT_FAILURE;
  }
  if (daemon.metricsEndpoint !== null) {
    const a = daemon.metricsEndpoint.address;
    log('info', `metrics: GET /metrics on ${a.path ?? `${a.host}:${a.port}`}`);
  }
  const endpoints = daemon.endpoints.map((e) => e.path ?? `tcp ${e.addr.type === 'internet' ? e.addr.host : ''}:${e.port}`);
  for (const line of effectiveConfiguration(loaded, settings, endpoints, VERSION)) log('info', line);
  if (embedded) process.stdout.write(clientHint(embedded) + '\n');
  return new Promise((resolve) => {
    let stopping = false;
    const stop = (sig: string) => {
      // A second signal during shutdown must not fall through to the default action.
      if (stopping) return;
      stopping = true;
      log('info', `${sig}: shutting down (calls in flight get ${settings.shutdownTimeoutMs ?? 0} ms)`);
      manager.stopping();
      const started = Date.now();
      void daemon.stop().then(() => {
        // After the privilege drop the pid file's directory may not be ours: a file left behind is only stale.
        if (process.env.PKCS11PROXYD_DETACHED && fs.existsSync(pidFile)) {
          try {
            fs.unlinkSync(pidFile);
          } catch (e) {
            log('warn', `cannot remove the pid file ${pidFile}: ${errorMessage(e)}`);
          }
        }
        audit({ event: 'shutdown', signal: sig, pid: process.pid, duration_ms: Date.now() - started });
        auditSinks?.close();
        resolve(EXIT_OK);
      });
    };
    // SIGHUP reloads the filter in every worker; a bad file keeps the old policy (daemon.ts reload()).
    process.on('SIGHUP', () => {
      if (stopping) return;
      auditSinks?.reopen();
      daemon.reopenAuditFiles();
      daemon.reload();
    });
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    // After the handlers: a SIGTERM sent as soon as READY is read must find them (the default action kills).
    // Machine-readable readiness line for scripts and tests.
    if (daemon.metricsEndpoint) process.stdout.write(`METRICS ${JSON.stringify(daemon.metricsEndpoint.address)}\n`);
    process.stdout.write(`READY ${JSON.stringify(daemon.endpoints)}\n`);
    process.send?.({ t: 'ready' });
    manager.ready(`serving on ${endpoints.join(', ')}`);
    audit({ event: 'startup', version: VERSION, pid: process.pid, uid: process.getuid!(), workers: settings.workers, listen: endpoints });
  });
}

export function run(): void {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`pkcs11proxyd: ${errorMessage(e)}\n`);
      process.exit(EXIT_FAILURE);
    },
  );
}

if (require.main === module) run();
