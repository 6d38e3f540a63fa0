import type { Pkcs11Calls } from '../generated/pkcs11_rpc';
import { FilterLayer } from '../filter/filter-layer';
import type { CompiledFilter } from '../filter/policy';
import type { AppRegistry, ConnectionState } from './dispatch/connection-state';
import { ArchLayer } from './layers/arch-layer';
import { AuditLayer } from './layers/audit-layer';
import { AuthzLayer } from './layers/authz-layer';
import { ConnectionLayer } from './layers/connection-layer';
import { HandleLayer } from './layers/handle-layer';
import { LoginLayer } from './layers/login-layer';
import { LoginThrottleLayer } from './layers/login-throttle-layer';
import type { RouterLayer } from './layers/router-layer';
import { SlotViewLayer } from './layers/slot-view-layer';
import { TraceLayer } from './layers/trace-layer';
import type { TraceFormat } from './layers/trace-layer';
import type { Logger } from './log';
import { MetricsLayer } from './metrics/metrics-layer';
import type { ProcessMetrics } from './metrics/registry';
import type { AppLimits } from './settings';

export interface StackOptions {
  aliases: ReadonlySet<string>;
  /** Configured aliases whose module could not be loaded: C_LoadModule answers CKR_FUNCTION_FAILED. */
  unavailableAliases?: ReadonlySet<string>;
  defaultAlias: string;
  /** -debug-pkcs11 */
  trace: boolean;
  /** -debug-pkcs11-json: one JSON object per line; default text. */
  traceFormat?: TraceFormat;
  log: Logger;
  workerIndex: number;
  apps: AppRegistry;
  limits: AppLimits;
  /** The compiled filter.conf (passThroughFilter when there is none). */
  filter: CompiledFilter;
  /** Receives the filter layer, for reloads (SIGHUP). */
  onFilterLayer?: (layer: FilterLayer) => void;
  /** An audit sink is installed: the audit layer (object events) goes under the filter. */
  audit?: boolean;
  /** Metrics are on: the metrics layer goes on top. */
  metrics?: ProcessMetrics | null;
}

/**
 * The one place the layers are assembled, top (client side) to bottom
 * (module side):
 *   [metrics] → trace → authorisation → connection life cycle → CK_ULONG
 *   layout → filter → [audit] → slot view → virtual handles → login throttle
 *   → shared login → router → backend (one per module alias). Bracketed
 *   layers are there only when configured (no cost otherwise): metrics on top
 *   sees every call and its CK_RV as the client gets it; audit under the
 *   filter sees only calls the policy let through, with the client's virtual
 *   handles.
 * Each layer sees what the layer above produced: the filter sees native
 * layout and client handles; the login layer sees module handles; the
 * backends see a BackendContext, not the connection state.
 */
export function buildStack(router: RouterLayer, o: StackOptions): Pkcs11Calls<ConnectionState> {
  // The authz, slot view and login throttle layers read the filter.conf in force (its tables reload with it).
  let filterLayer: FilterLayer | null = null;
  const current = (): CompiledFilter => filterLayer?.compiled ?? o.filter;
  let s: Pkcs11Calls<ConnectionState> = new LoginLayer(router.asCalls(), o.defaultAlias);
  s = new LoginThrottleLayer(s, current, o.defaultAlias, o.log);
  s = new HandleLayer(s, { workerIndex: o.workerIndex, log: o.log, limits: o.limits, defaultAlias: o.defaultAlias });
  s = new SlotViewLayer(s, current);
  if (o.audit) s = new AuditLayer(s);
  filterLayer = new FilterLayer(s, o.filter, o.log);
  o.onFilterLayer?.(filterLayer);
  s = filterLayer;
  s = new ArchLayer(s);
  s = new ConnectionLayer(s, o.aliases, o.defaultAlias, o.apps, o.unavailableAliases);
  s = new AuthzLayer(s, current, o.defaultAlias, o.apps, o.log);
  if (o.trace) s = new TraceLayer(s, o.log, { format: o.traceFormat ?? 'text', worker: o.workerIndex });
  if (o.metrics) s = new MetricsLayer(s, o.metrics).asCalls();
  return s;
}
