import { ProxyError } from '../errors';
import { openBackends } from '../bindings/open-backends';
import type { ModuleSpec, UnavailableModule } from '../bindings/open-backends';
import { declarePlainParameterMechanisms } from '../pkcs11/mechanism-shapes';
import type { Pkcs11Calls } from '../generated/pkcs11_rpc';
import { AppRegistry } from './dispatch/connection-state';
import type { ConnectionState } from './dispatch/connection-state';
import { Pkcs11Dispatcher } from './dispatch/dispatcher';
import type { Logger } from './log';
import { RpcServer } from './transport';
import type { ConnectionAdmission, ConnectionInfo } from './transport/types';
import { DEFAULT_APP_LIMITS } from './settings';
import type { DaemonSettings } from './settings';
import { RouterLayer } from './layers/router-layer';
import { buildStack } from './stack';
import { auditEnabled } from './audit';
import { processMetrics } from './metrics/registry';
import { ConfigInvalidError } from '../config/errors';
import type { FilterLayer } from '../filter/filter-layer';
import { passThroughFilter } from '../filter/policy';
import { compileFilterConfig, compileFilterText } from '../filter/rules';
import { parseFilterConfig } from '../config/filter-config';
import type { FilterConfig } from '../config/filter-config';
import { readConfigText } from '../config/read';
import type { CompiledFilter } from '../filter/policy';

/** The PKCS#11 side of a process: its module instances and the layer stack over them. */
export interface Pkcs11Stack {
  /** The layer stack itself, for in-process callers (tests, benchmarks). */
  readonly stack: Pkcs11Calls<ConnectionState>;
  /** A handler for one RPC connection. */
  createDispatcher(info: ConnectionInfo): Pkcs11Dispatcher;
  /** Configured modules that could not be loaded in this process. */
  readonly unavailable: readonly UnavailableModule[];
  /** C_Finalize every module; the stack is unusable afterwards. */
  finalize(): void;
  /**
   * Validates and compiles the filter file again (`text`: its content as the primary read it) and swaps
   * it in at once (each application rebinds at its next call). Throws ConfigError and keeps the old
   * policy when the file is bad. Returns the new generation; null when the daemon runs without a filter file.
   */
  reloadFilter(text?: string): number | null;
}

export type { UnavailableModule } from '../bindings/open-backends';

export class NoModuleError extends ProxyError {
  readonly code = 'NO_MODULE';
}

/**
 * Loads and initializes every configured module once in this process and
 * builds the layer stack. A module that cannot be loaded (library missing,
 * no C_GetFunctionList, C_Initialize failing) does not stop the others, as
 * Caml Crush loads a module only when a client names its alias: its alias
 * stays known and C_LoadModule for it answers CKR_FUNCTION_FAILED (see
 * ConnectionLayer), the default alias included. Worker 0 logs each one once.
 * When no module at all loads there is nothing to serve: NoModuleError.
 */
export function createPkcs11Stack(
  s: DaemonSettings,
  log: Logger,
  workerIndex: number,
  /** The filter.conf text in force, as the primary read it; absent: read s.filterFile here. */
  filterText?: string,
): Pkcs11Stack {
  declarePlainParameterMechanisms(s.plainParameterMechanisms ?? []);
  const limits = s.limits ?? DEFAULT_APP_LIMITS;
  const { backends, unavailable } = openBackends(s.modules, limits, {
    log,
    privilege: s.privilege,
    logLevel: s.logLevel,
    logFormat: s.logFormat,
    workerIndex,
    plainParameterMechanisms: s.plainParameterMechanisms,
  }, s.virtualAliases ?? []);
  // A pool or slot NAT member is reached through it only: loaded directly, its login would not be the pool's (fail closed).
  const reserved = new Set((s.virtualAliases ?? []).flatMap((v) => (v.kind === 'pool' ? v.members.map((m) => m.alias) : v.aliases)));
  if (backends.size === 0) {
    throw new NoModuleError(`no module can be loaded: ${unavailable.map((u) => u.reason).join('; ')}`);
  }
  for (const u of unavailable) {
    const which = u.alias === s.defaultAlias ? 'default module' : 'module';
    // Every worker loads its own modules; one line per module, not one per worker.
    log(workerIndex === 0 ? 'error' : 'debug', `${which} '${u.alias}' (${u.path}) cannot be loaded, C_LoadModule for it answers CKR_FUNCTION_FAILED: ${u.reason}`);
  }
  const apps = new AppRegistry(workerIndex);
  const filter = s.filterFile ? compileFilterText(filterText ?? readConfigText(s.filterFile), s.filterFile) : passThroughFilter(backends.keys());
  let filterLayer: FilterLayer | null = null;
  const stack: Pkcs11Calls<ConnectionState> = buildStack(new RouterLayer(backends, s.defaultAlias), {
    aliases: new Set(backends.keys()),
    unavailableAliases: new Set([...unavailable.map((u) => u.alias), ...reserved]),
    defaultAlias: s.defaultAlias,
    trace: s.trace,
    traceFormat: s.traceFormat,
    log,
    workerIndex,
    apps,
    limits,
    filter,
    onFilterLayer: (l) => {
      filterLayer = l;
    },
    audit: auditEnabled(),
    metrics: processMetrics(),
  });
  return {
    stack,
    unavailable,
    createDispatcher: (info) => new Pkcs11Dispatcher(info, stack, log, apps),
    reloadFilter: (text) => {
      if (!s.filterFile || filterLayer === null) return null;
      const next = compileReload(s, s.filterFile, text ?? readConfigText(s.filterFile));
      filterLayer.reload(next);
      return next.generation;
    },
    finalize: () => {
      for (const b of backends.values()) b.finalize();
    },
  };
}

/**
 * A reloaded filter.conf's policy, or ConfigError: the file is bad, or it
 * would change the backends this process opened at start (backendChange).
 * The primary checks it before sending it to workers; each worker again.
 */
export function compileReload(s: DaemonSettings, file: string, text: string): CompiledFilter {
  const cfg = parseFilterConfig(text, file);
  const next = compileFilterConfig(cfg);
  const change = backendChange(s, cfg);
  if (change !== null) throw new ConfigInvalidError(file, 0, 0, change.key, change.rule);
  return next;
}

/**
 * What a reloaded filter.conf would change in the process's backends, which
 * are opened once per process (modules loaded, helpers spawned, pools
 * probing): the key and the rule broken, or null when only the policy changes.
 * A reload that changes them is refused as a whole, never half applied.
 * `modules` is compared in order: its first alias is the default module.
 */
function backendChange(s: Pick<DaemonSettings, 'modules' | 'virtualAliases'>, next: FilterConfig): { key: string; rule: string } | null {
  const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);
  const loaded = s.virtualAliases ?? [];
  const byName = <T extends { name: string }>(l: readonly T[]): T[] => [...l].sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
  const changed = (key: string, now: string): { key: string; rule: string } => ({ key, rule: `a reload cannot change \`${key}\` (loaded: ${now}); restart the daemon to apply it` });
  const list = (l: readonly string[]): string => (l.length === 0 ? 'none' : l.join(', '));
  if (!same(s.modules.map((m) => [m.alias, m.path]), next.modules.map((m) => [m.alias, m.path]))) {
    return changed('modules', list(s.modules.map((m) => `${m.alias}=${m.path}`)));
  }
  const isolation = (l: readonly ModuleSpec[]): unknown => l.map((m) => m.isolation ?? null);
  if (!same(isolation(s.modules), isolation(next.modules))) {
    return changed('module_isolation', list(s.modules.filter((m) => m.isolation !== undefined).map((m) => `${m.alias} in a helper process`)));
  }
  const pools = loaded.filter((v) => v.kind === 'pool');
  if (!same(byName(pools), byName(next.pools))) return changed('pools', list(pools.map((p) => p.name)));
  const nat = loaded.filter((v) => v.kind === 'nat');
  if (!same(byName(nat), byName(next.slotNat))) return changed('slot_nat', list(nat.map((n) => n.name)));
  return null;
}

/** An RPC server whose connections run through this process's layer stack. */
export function createPkcs11Server(
  s: DaemonSettings,
  log: Logger,
  workerIndex: number,
  opts: {
    /** Set where this server accepts connections itself (-workers 0); workers are admitted by the primary. */
    admission?: ConnectionAdmission;
    /** The filter.conf text in force (createPkcs11Stack). */
    filterText?: string;
  } = {},
): { server: RpcServer; shutdown(): Promise<void>; reloadFilter(text?: string): number | null } {
  const pkcs11 = createPkcs11Stack(s, log, workerIndex, opts.filterText);
  const server = new RpcServer({
    maxRecordSize: s.maxRecordSize,
    ...s.connectionLimits,
    admission: opts.admission,
    createHandler: (info) => pkcs11.createDispatcher(info),
    ...(s.tls ? { tls: s.tls } : {}),
    log: (level, msg) => log(level, msg),
  });
  return {
    server,
    reloadFilter: (text) => pkcs11.reloadFilter(text),
    async shutdown() {
      // Calls in flight finish (within shutdown_timeout_ms), then C_Finalize closes every module session.
      await server.close(s.shutdownTimeoutMs ?? 0);
      pkcs11.finalize();
    },
  };
}
