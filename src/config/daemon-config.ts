/**
 * The loader the daemon uses: both files parsed, then every key the daemon
 * does not enforce yet refused (not-enforced.ts). The parsers alone accept
 * every key of the schemas; only this loader decides what may run.
 */
import type { ConfigInvalidError } from './errors';
import { type FilterConfig, loadFilterConfig } from './filter-config';
import { compileFilter } from '../filter/policy';
import { NOT_ENFORCED, matchPointers } from './not-enforced';
import { type ServerConfig, loadServerConfig } from './server-config';
import type { Plain, SourceMap } from './syntax';
import { invalidAt } from './validate';
import { resolveTlsServer } from './tls-config';
import type { TlsServerSettings } from '../server/transport/types';

export interface DaemonConfig {
  server: ServerConfig;
  filter: FilterConfig;
  /** processor.use_ssl and its keys, material checked; null: plain TCP. */
  tls: TlsServerSettings | null;
}

/**
 * Throws ConfigInvalidError for the first (in file order) key of `file` that
 * NOT_ENFORCED lists with a value that has an effect.
 */
export function refuseNotEnforced(kind: 'server' | 'filter', file: string, data: Plain, map: SourceMap): void {
  let first: ConfigInvalidError | null = null;
  for (const entry of NOT_ENFORCED) {
    if (entry.file !== kind) continue;
    for (const m of matchPointers(data, entry.pointer)) {
      if (entry.neutral?.(m.value, m.parent)) continue;
      const rule =
        entry.until !== undefined
          ? `not enforced yet (${entry.until})${entry.neutralText !== undefined ? `; allowed until then: ${entry.neutralText}` : ''}`
          : `not supported (${entry.unsupported ?? ''})${entry.neutralText !== undefined ? `; allowed: ${entry.neutralText}` : ''}`;
      const err = invalidAt(file, data, map, m.pointer, rule, 'key');
      if (first === null || err.line < first.line || (err.line === first.line && err.column < first.column)) first = err;
    }
  }
  if (first !== null) throw first;
}

export function checkServerEnforced(sc: ServerConfig): void {
  refuseNotEnforced('server', sc.file, sc.raw as Plain, sc.sourceMap);
}

export function checkFilterEnforced(fc: FilterConfig): void {
  refuseNotEnforced('filter', fc.file, fc.data, fc.sourceMap);
  // Compiling refuses actions not implemented and actions on triggers they have no meaning for.
  compileFilter(fc);
}

/**
 * Loads pkcs11proxyd.conf and the filter.conf it names, refusing keys not
 * enforced yet. A server file without processor.filter_config is refused:
 * it names the modules.
 */
export function loadDaemonConfig(serverFile: string): DaemonConfig {
  const server = loadServerConfig(serverFile);
  checkServerEnforced(server);
  const tls = resolveTlsServer(server);
  if (server.filterConfig === null) {
    throw invalidAt(
      serverFile,
      server.raw as Plain,
      server.sourceMap,
      '/netplex/service/0/processor',
      'required by pkcs11proxyd (it names the modules to serve)',
      'key',
      'netplex.service.processor.filter_config',
    );
  }
  const filter = loadFilterConfig(server.filterConfig);
  checkFilterEnforced(filter);
  return { server, filter, tls };
}
