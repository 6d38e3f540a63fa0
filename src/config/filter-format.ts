/**
 * FilterConfig -> filter.conf text that parseFilterConfig reads back to the
 * same value. Keys at their defaults are left out.
 */
import { constantName } from '../pkcs11/constants';
import type { FilterConfig } from './filter-config';
import type { StrPattern } from './str-regex';

/** A config-file string literal. Control characters use `\ddd` (decimal), as Genlex reads them. */
export function quoteConfigString(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.charCodeAt(0);
    if (ch === '"' || ch === '\\') out += `\\${ch}`;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\t') out += '\\t';
    else if (ch === '\r') out += '\\r';
    else if (c < 0x20 || c === 0x7f) out += `\\${String(c).padStart(3, '0')}`;
    else out += ch;
  }
  return `${out}"`;
}

/** The mechanism's CKM_ name (the header's first for its number), or 0x hex for vendor numbers. */
function mechanismText(m: number): string {
  return constantName('CKM_', m);
}

const list = (items: string[]): string => `[${items.join(', ')}]`;
const pair = (a: string, b: string): string => `(${a}, ${b})`;
const pat = (p: StrPattern): string => quoteConfigString(p.source);

export function formatFilterConfig(cfg: FilterConfig): string {
  const lines: string[] = [];
  const put = (key: string, value: string): void => {
    lines.push(`${key} = ${value}`);
  };
  const rules = <R extends { alias: StrPattern }>(key: string, rs: R[], second: (r: R) => string): void => {
    if (rs.length > 0) put(key, list(rs.map((r) => pair(pat(r.alias), second(r)))));
  };

  put('modules', list(cfg.modules.map((m) => pair(quoteConfigString(m.alias), quoteConfigString(m.path)))));
  if (cfg.debug !== 0) put('debug', String(cfg.debug));
  if (cfg.logSubchannel !== null) put('log_subchannel', quoteConfigString(cfg.logSubchannel));
  if (cfg.wrappingFormatKey !== null)
    put('wrapping_format_key', quoteConfigString(cfg.wrappingFormatKey.toString('hex')));
  rules('forbidden_mechanisms', cfg.forbiddenMechanisms, (r) => list(r.mechanisms.map(mechanismText)));
  rules('allowed_labels', cfg.allowedLabels, (r) => list(r.labels.map(pat)));
  rules('allowed_ids', cfg.allowedIds, (r) => list(r.ids.map(pat)));
  rules('forbidden_functions', cfg.forbiddenFunctions, (r) => list(r.functions));
  rules('enforce_ro_sessions', cfg.enforceRoSessions, (r) => (r.enforce ? 'yes' : 'no'));
  rules('forbid_admin_operations', cfg.forbidAdminOperations, (r) => (r.forbid ? 'yes' : 'no'));
  rules('remove_padding_oracles', cfg.removePaddingOracles, (r) => list(r.operations));
  const actions = (r: FilterConfig['filterActionsPre'][number]): string =>
    list(r.actions.map((a) => pair(a.function, a.action)));
  rules('filter_actions_pre', cfg.filterActionsPre, actions);
  rules('filter_actions_post', cfg.filterActionsPost, actions);
  return `${lines.join('\n')}\n`;
}
