/**
 * filter.conf loader: config-file syntax -> schema check -> FilterConfig with
 * identifiers resolved to numbers and patterns compiled. See filter-schema.ts
 * for the keys and the decision rules they feed.
 */
import { filterSchema } from './filter-schema';
import { type FilterActionName, type PaddingOperation, type Pkcs11FunctionName, mechanismByName } from './filter-names';

export { mechanismByName };
import { readConfigText } from './read';
import { type StrPattern, compileStrPattern } from './str-regex';
import { type Plain, type SourceMap, parseConfigText, toPlain } from './syntax';
import { compileSchema, invalidAt, validatePlain } from './validate';

export interface ModuleAlias {
  alias: string;
  path: string;
}

export interface FilterAction {
  function: Pkcs11FunctionName;
  action: FilterActionName;
}

/** Each rule applies to the module aliases its `alias` pattern matches. */
export interface FilterConfig {
  file: string;
  /** Never empty; aliases unique; paths as written. */
  modules: ModuleAlias[];
  /** Alias of the first module. */
  defaultModule: string;
  /** `debug`, 0..3 (default 0). Caml Crush has no other log-level key. */
  debug: number;
  /** `log_subchannel`, null when absent or empty. */
  logSubchannel: string | null;
  /** `wrapping_format_key` as 16 bytes, null when absent or "". Secret: never log it. */
  wrappingFormatKey: Buffer | null;
  forbiddenMechanisms: Array<{ alias: StrPattern; mechanisms: number[] }>;
  allowedLabels: Array<{ alias: StrPattern; labels: StrPattern[] }>;
  allowedIds: Array<{ alias: StrPattern; ids: StrPattern[] }>;
  forbiddenFunctions: Array<{ alias: StrPattern; functions: Pkcs11FunctionName[] }>;
  enforceRoSessions: Array<{ alias: StrPattern; enforce: boolean }>;
  forbidAdminOperations: Array<{ alias: StrPattern; forbid: boolean }>;
  /** Operations as written; `all` is not expanded. */
  removePaddingOracles: Array<{ alias: StrPattern; operations: PaddingOperation[] }>;
  filterActionsPre: Array<{ alias: StrPattern; actions: FilterAction[] }>;
  filterActionsPost: Array<{ alias: StrPattern; actions: FilterAction[] }>;
  /** The validated tree with wrapping_format_key redacted, for logging the effective config. */
  raw: unknown;
  /** Positions of the entries, for errors found after parsing (not-enforced keys). */
  sourceMap: SourceMap;
  /** The validated tree, unredacted: for the not-enforced check only, never logged. */
  data: Plain;
}

type Pair<B> = [string, B];
interface FilterFile {
  modules: Array<Pair<string>>;
  debug?: number;
  log_subchannel?: string;
  wrapping_format_key?: string;
  forbidden_mechanisms?: Array<Pair<Array<string | number>>>;
  allowed_labels?: Array<Pair<string[]>>;
  allowed_ids?: Array<Pair<string[]>>;
  forbidden_functions?: Array<Pair<Pkcs11FunctionName[]>>;
  enforce_ro_sessions?: Array<Pair<string>>;
  forbid_admin_operations?: Array<Pair<string>>;
  remove_padding_oracles?: Array<Pair<PaddingOperation[]>>;
  filter_actions_pre?: Array<Pair<Array<[Pkcs11FunctionName, FilterActionName]>>>;
  filter_actions_post?: Array<Pair<Array<[Pkcs11FunctionName, FilterActionName]>>>;
}

export const REDACTED = '<redacted>';


let validator: ReturnType<typeof compileSchema> | undefined;

export function parseFilterConfig(text: string, file: string): FilterConfig {
  validator ??= compileSchema(filterSchema);
  const tree = parseConfigText(text, file, 'filter');
  const { data, map } = toPlain(tree, file, { repeatBlocks: false });
  validatePlain(validator, data, map, file);
  return build(data as unknown as FilterFile, data, map, file);
}

export function loadFilterConfig(file: string): FilterConfig {
  return parseFilterConfig(readConfigText(file), file);
}

function build(doc: FilterFile, data: Plain, map: SourceMap, file: string): FilterConfig {
  const fail = (pointer: string, rule: string, key?: string): never => {
    throw invalidAt(file, data, map, pointer, rule, 'value', key);
  };

  const seen = new Map<string, number>();
  const modules = doc.modules.map(([alias, p], i) => {
    const first = seen.get(alias);
    if (first !== undefined) {
      const pos = map.get(`/modules/${first}/0`)?.value;
      fail(
        `/modules/${i}/0`,
        `duplicate module alias ${JSON.stringify(alias)} (first at ${pos?.line}:${pos?.column})`,
      );
    }
    seen.set(alias, i);
    return { alias, path: p };
  });

  const pattern = (pointer: string, source: string): StrPattern => {
    try {
      return compileStrPattern(source);
    } catch (err) {
      return fail(pointer, `invalid regular expression: ${err instanceof Error ? err.message : String(err)}`);
    }
  };
  const aliasPattern = (pointer: string, source: string): StrPattern => {
    const p = pattern(pointer, source);
    if (!modules.some((m) => p.regex.test(m.alias))) {
      fail(
        pointer,
        `pattern matches no module alias (aliases: ${modules.map((m) => JSON.stringify(m.alias)).join(', ')})`,
      );
    }
    return p;
  };
  const rules = <B, R>(
    key: keyof FilterFile,
    list: Array<Pair<B>> | undefined,
    f: (b: B, ptr: string) => R,
  ) =>
    (list ?? []).map(([a, b], i) => ({
      alias: aliasPattern(`/${key}/${i}/0`, a),
      value: f(b, `/${key}/${i}/1`),
    }));
  const bool = (w: string): boolean => w === 'yes' || w === 'true';

  const forbiddenMechanisms = rules('forbidden_mechanisms', doc.forbidden_mechanisms, (list, ptr) =>
    list.map((m, k) => {
      if (typeof m === 'number') return m;
      const v = mechanismByName(m);
      return v !== undefined ? v : fail(`${ptr}/${k}`, `unknown mechanism '${m}'`);
    }),
  ).map((r) => ({ alias: r.alias, mechanisms: r.value }));
  const patterns = (list: string[], ptr: string): StrPattern[] =>
    list.map((s, k) => pattern(`${ptr}/${k}`, s));
  const allowedLabels = rules('allowed_labels', doc.allowed_labels, patterns).map((r) => ({
    alias: r.alias,
    labels: r.value,
  }));
  const allowedIds = rules('allowed_ids', doc.allowed_ids, patterns).map((r) => ({
    alias: r.alias,
    ids: r.value,
  }));
  const forbiddenFunctions = rules('forbidden_functions', doc.forbidden_functions, (list) => [...list]).map(
    (r) => ({
      alias: r.alias,
      functions: r.value,
    }),
  );
  const enforceRoSessions = rules('enforce_ro_sessions', doc.enforce_ro_sessions, bool).map((r) => ({
    alias: r.alias,
    enforce: r.value,
  }));
  const forbidAdminOperations = rules('forbid_admin_operations', doc.forbid_admin_operations, bool).map(
    (r) => ({
      alias: r.alias,
      forbid: r.value,
    }),
  );
  const removePaddingOracles = rules('remove_padding_oracles', doc.remove_padding_oracles, (list) => [
    ...list,
  ]).map((r) => ({ alias: r.alias, operations: r.value }));
  const actions = (key: 'filter_actions_pre' | 'filter_actions_post'): FilterConfig['filterActionsPre'] =>
    rules(key, doc[key], (list) => list.map(([fn, action]) => ({ function: fn, action }))).map((r) => ({
      alias: r.alias,
      actions: r.value,
    }));
  const filterActionsPre = actions('filter_actions_pre');
  const filterActionsPost = actions('filter_actions_post');

  let wrappingFormatKey: Buffer | null = null;
  if (doc.wrapping_format_key) wrappingFormatKey = Buffer.from(doc.wrapping_format_key, 'hex');
  if (!wrappingFormatKey) {
    for (const key of ['filter_actions_pre', 'filter_actions_post'] as const) {
      (doc[key] ?? []).forEach(([, list], i) => {
        const j = list.findIndex(([, action]) => action === 'wrapping_format_patch');
        if (j >= 0) {
          fail(
            `/${key}/${i}/1/${j}/1`,
            'required (32 hex digits) when wrapping_format_patch is used',
            'wrapping_format_key',
          );
        }
      });
    }
  }

  const raw = Object.assign(Object.create(null) as Record<string, Plain>, data);
  if (raw.wrapping_format_key !== undefined) raw.wrapping_format_key = REDACTED;

  return {
    file,
    modules,
    defaultModule: modules[0].alias,
    debug: doc.debug ?? 0,
    logSubchannel: doc.log_subchannel ? doc.log_subchannel : null,
    wrappingFormatKey,
    forbiddenMechanisms,
    allowedLabels,
    allowedIds,
    forbiddenFunctions,
    enforceRoSessions,
    forbidAdminOperations,
    removePaddingOracles,
    filterActionsPre,
    filterActionsPost,
    raw,
    sourceMap: map,
    data,
  };
}
