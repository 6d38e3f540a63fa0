/**
 * filter.conf loader: config-file syntax -> schema check -> FilterConfig with
 * identifiers resolved to numbers and patterns compiled. See filter-schema.ts
 * for the keys and the decision rules they feed.
 */
import { ATTR_SHAPE, attributeShape } from '../generated/attribute-shapes';
import { NATIVE_ARCH, writeULong } from '../pkcs11/arch';
import { constantByName } from '../pkcs11/constants';
import { BEYOND_KEY_NAMES, filterSchema } from './filter-schema';
import { type FilterActionName, type PaddingOperation, type Pkcs11FunctionName, mechanismByName } from './filter-names';

export { mechanismByName };
import { readConfigText } from './read';
import { IdentityPatternError, parseIdentityPattern } from '../filter/authz-patterns';
import type { IdentityPattern } from '../filter/authz-patterns';
import { DEFAULT_LOGIN_THROTTLE, TokenSelectorError, parseTokenSelector } from '../filter/authz';
import type { AuthzTable, LoginThrottle } from '../filter/authz';
import { type StrPattern, compileStrPattern } from './str-regex';
import { type Plain, type SourceMap, parseConfigText, toPlain } from './syntax';
import { ParsecConfigError, isParsecPath, parseParsecPath } from '../bindings/parsec/uri';
import { compileSchema, invalidAt, validatePlain } from './validate';
import { DEFAULT_CALL_TIMEOUT_MS } from '../bindings/helper/isolation';
import type { ModuleIsolation } from '../bindings/helper/isolation';
import { Pkcs11UriError, parseTokenUri } from '../bindings/pool/pkcs11-uri';
import { POOL_DEFAULTS } from '../bindings/pool/pool-spec';
import type { PoolSpec, PoolStrategyName, SlotNatSpec } from '../bindings/pool/pool-spec';

export interface ModuleAlias {
  alias: string;
  path: string;
  /** `module_isolation` of the alias; absent: in the worker. */
  isolation?: ModuleIsolation;
}

export interface FilterAction {
  function: Pkcs11FunctionName;
  action: FilterActionName;
}

/** A pkcs11proxyd rule: (ALIAS_REGEX, value), with its `file:line:col` for refusal logs. */
export interface AliasRule<T> {
  alias: StrPattern;
  value: T;
  where: string;
}

export type TemplateOp = 'default' | 'force' | 'refuse' | 'allow';

/** One template_rules entry; `cls` / `keyType` null mean `any`. `value` is in native layout (CK_ULONG: 8 bytes LE). */
export interface TemplateRule {
  cls: number | null;
  keyType: number | null;
  attribute: number;
  op: TemplateOp;
  value: Buffer;
  where: string;
}

/** One hidden_attributes entry. */
export interface AttributeSelector {
  cls: number | null;
  keyType: number | null;
  attribute: number;
  where: string;
}

export interface EcCurve {
  name: string;
  /** DER of the curve's OBJECT IDENTIFIER, as CKA_EC_PARAMS carries a named curve. */
  der: Buffer;
}

/** The keys beyond Caml Crush (filter-schema.ts BEYOND_KEYS) of the top level or of one profile. */
export interface BeyondRules {
  shadow: boolean;
  /** The keys written in this block: a profile's key replaces the top-level one. */
  keys: ReadonlySet<string>;
  templateRules: Array<AliasRule<TemplateRule[]>>;
  hiddenAttributes: Array<AliasRule<AttributeSelector[]>>;
  allowedMechanisms: Array<AliasRule<number[]>>;
  allowedFunctions: Array<AliasRule<Pkcs11FunctionName[]>>;
  deniedLabels: Array<AliasRule<StrPattern[]>>;
  deniedIds: Array<AliasRule<StrPattern[]>>;
  maxRandomLength: Array<AliasRule<number>>;
  maxTemplateAttributes: Array<AliasRule<number>>;
  minRsaModulusBits: Array<AliasRule<number>>;
  allowedEcCurves: Array<AliasRule<EcCurve[]>>;
}

/** Identity patterns of profile_map, identity_groups and authorization (src/filter/authz-patterns.ts). */
export type { IdentityPattern };

export interface ProfileMapEntry {
  identity: IdentityPattern;
  /** A key of `profiles`, or 'default' (the top-level policy). */
  profile: string;
  where: string;
}

/** Each rule applies to the module aliases its `alias` pattern matches. */
export interface FilterConfig {
  file: string;
  /** Never empty; aliases unique; paths as written. */
  modules: ModuleAlias[];
  /** Alias of the first module. */
  defaultModule: string;
  /** `pools` (issue 10), in file order; members checked (aliases of `modules`, URIs parsed). */
  pools: PoolSpec[];
  /** `slot_nat`, in file order. */
  slotNat: SlotNatSpec[];
  /** Every alias a client may name: `modules`, then `pools`, then `slot_nat`. Policies are compiled per alias. */
  aliases: string[];
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
  /** pkcs11proxyd's keys beyond Caml Crush at the top level: the `default` profile, inherited by every profile. */
  beyond: BeyondRules;
  /** `profiles`, in file order. */
  profiles: Array<{ name: string; where: string; rules: BeyondRules }>;
  profileMap: ProfileMapEntry[];
  /** `authorization` (with identity_groups resolved); null when absent: everyone may load every alias. */
  authz: AuthzTable | null;
  /** `login_throttle`; null when absent: C_Login is not throttled. */
  loginThrottle: LoginThrottle | null;
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
  profiles?: Record<string, BeyondFile>;
  profile_map?: Array<[string, string]>;
  identity_groups?: Record<string, string[]>;
  authorization?: Record<string, { identities: string[]; aliases: string[]; profile?: string; tokens?: string[] }>;
  login_throttle?: { base_delay_ms?: number; max_delay_ms?: number; lockout_failures?: number; lockout_seconds?: number };
  module_isolation?: Record<string, { mode: 'in-worker' | 'helper'; processes?: number; call_timeout_ms?: number }>;
  pools?: Record<string, PoolFile>;
  slot_nat?: Record<string, string[]>;
}

interface PoolFile {
  members: Array<[string, string]>;
  strategy?: PoolStrategyName;
  weights?: number[];
  match_attributes?: Array<string | number>;
  probe_interval_ms?: number;
  call_timeout_ms?: number;
  retry_base_ms?: number;
  retry_max_ms?: number;
  slot_id?: number;
  label?: string;
}

type CkWord = string | number;
interface BeyondFile {
  shadow?: string;
  template_rules?: Array<Pair<Array<[CkWord, CkWord, CkWord, TemplateOp, string | number]>>>;
  hidden_attributes?: Array<Pair<Array<[CkWord, CkWord, CkWord]>>>;
  allowed_mechanisms?: Array<Pair<Array<string | number>>>;
  allowed_functions?: Array<Pair<Pkcs11FunctionName[]>>;
  denied_labels?: Array<Pair<string[]>>;
  denied_ids?: Array<Pair<string[]>>;
  max_random_length?: Array<Pair<number>>;
  max_template_attributes?: Array<Pair<number>>;
  min_rsa_modulus_bits?: Array<Pair<number>>;
  allowed_ec_curves?: Array<Pair<string[]>>;
}

/** Named curves of allowed_ec_curves and their OIDs. */
const EC_CURVE_OIDS: Readonly<Record<string, string>> = {
  prime256v1: '1.2.840.10045.3.1.7',
  secp256r1: '1.2.840.10045.3.1.7',
  'P-256': '1.2.840.10045.3.1.7',
  secp384r1: '1.3.132.0.34',
  'P-384': '1.3.132.0.34',
  secp521r1: '1.3.132.0.35',
  'P-521': '1.3.132.0.35',
  secp256k1: '1.3.132.0.10',
  brainpoolP256r1: '1.3.36.3.3.2.8.1.1.7',
  brainpoolP384r1: '1.3.36.3.3.2.8.1.1.11',
  brainpoolP512r1: '1.3.36.3.3.2.8.1.1.13',
  x25519: '1.3.101.110',
  x448: '1.3.101.111',
  ed25519: '1.3.101.112',
  ed448: '1.3.101.113',
};

/** DER of an OBJECT IDENTIFIER (tag 06), from its dotted form. */
export function oidDer(dotted: string): Buffer {
  const arcs = dotted.split('.').map((a) => BigInt(a));
  const body: number[] = [];
  const base128 = (v: bigint): void => {
    const out = [Number(v & 0x7fn)];
    for (v >>= 7n; v > 0n; v >>= 7n) out.unshift(Number(v & 0x7fn) | 0x80);
    body.push(...out);
  };
  base128(arcs[0] * 40n + arcs[1]);
  for (const a of arcs.slice(2)) base128(a);
  if (body.length > 127) throw new Error('OID too long');
  return Buffer.from([0x06, body.length, ...body]);
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
  const modules = doc.modules.map(([alias, p], i): ModuleAlias => {
    const first = seen.get(alias);
    if (first !== undefined) {
      const pos = map.get(`/modules/${first}/0`)?.value;
      fail(
        `/modules/${i}/0`,
        `duplicate module alias ${JSON.stringify(alias)} (first at ${pos?.line}:${pos?.column})`,
      );
    }
    seen.set(alias, i);
    if (isParsecPath(p)) {
      try {
        parseParsecPath(p);
      } catch (err) {
        fail(`/modules/${i}/1`, err instanceof ParsecConfigError ? err.message : String(err));
      }
    }
    return { alias, path: p };
  });

  for (const [alias, iso] of Object.entries(doc.module_isolation ?? {})) {
    const ptr = `/module_isolation/${alias.replace(/~/g, '~0').replace(/\//g, '~1')}`;
    const m = modules.find((x) => x.alias === alias);
    if (m === undefined) {
      throw invalidAt(file, data, map, ptr, `unknown module alias ${JSON.stringify(alias)} (aliases: ${modules.map((x) => JSON.stringify(x.alias)).join(', ')})`, 'key');
    }
    // PKCS#11 login state is per process: sessions of one application spread over several helpers would
    // each need their own C_Login. Refused rather than served with a login state that differs by session.
    if ((iso.processes ?? 1) !== 1) fail(`${ptr}/processes`, 'only 1 helper process per module is supported (login state is per process)');
    // A Parsec alias runs no module code in the daemon: nothing to isolate; refused rather than ignored.
    if (iso.mode === 'helper' && isParsecPath(m.path)) fail(`${ptr}/mode`, 'a parsec: alias runs no module in the daemon: only "in-worker" applies');
    if (iso.mode === 'helper') {
      m.isolation = Object.freeze({ mode: 'helper', processes: 1, callTimeoutMs: iso.call_timeout_ms ?? DEFAULT_CALL_TIMEOUT_MS });
    }
  }
  const jsonKey = (k: string): string => k.replace(/~/g, '~0').replace(/\//g, '~1');
  const moduleAliases = new Set(modules.map((m) => m.alias));
  const aliasList = (set: Iterable<string>): string => [...set].map((a) => JSON.stringify(a)).join(', ');
  const pools: PoolSpec[] = Object.entries(doc.pools ?? {}).map(([name, p]) => {
    const ptr = `/pools/${jsonKey(name)}`;
    if (name === '' || moduleAliases.has(name)) throw invalidAt(file, data, map, ptr, name === '' ? 'a pool needs a name' : `pool name ${JSON.stringify(name)} is already a module alias`, 'key');
    const members = p.members.map(([alias, uri], i) => {
      if (!moduleAliases.has(alias)) fail(`${ptr}/members/${i}/0`, `unknown module alias ${JSON.stringify(alias)} (aliases: ${aliasList(moduleAliases)})`);
      try {
        parseTokenUri(uri);
      } catch (err) {
        if (err instanceof Pkcs11UriError) fail(`${ptr}/members/${i}/1`, `PKCS#11 URI: ${err.message}`);
        throw err;
      }
      return { alias, uri, weight: p.weights?.[i] ?? 1 };
    });
    const seenMember = new Set<string>();
    members.forEach((m, i) => {
      const k = `${m.alias}\0${m.uri}`;
      if (seenMember.has(k)) fail(`${ptr}/members/${i}`, 'member listed twice');
      seenMember.add(k);
    });
    if (p.weights !== undefined && p.weights.length !== members.length) fail(`${ptr}/weights`, `must have one weight per member (${members.length})`);
    const matchAttributes = (p.match_attributes ?? [...POOL_DEFAULTS.matchAttributes]).map((a, i) => {
      if (typeof a === 'number') return a;
      const v = constantByName(a);
      return v !== undefined && a.startsWith('CKA_') ? v : fail(`${ptr}/match_attributes/${i}`, `unknown attribute '${a}'`);
    });
    const retryBaseMs = p.retry_base_ms ?? POOL_DEFAULTS.retryBaseMs;
    const retryMaxMs = p.retry_max_ms ?? Math.max(POOL_DEFAULTS.retryMaxMs, retryBaseMs);
    if (retryMaxMs < retryBaseMs) fail(`${ptr}/retry_max_ms`, `must be >= retry_base_ms (${retryBaseMs})`);
    return Object.freeze({
      kind: 'pool' as const,
      name,
      members: Object.freeze(members),
      strategy: p.strategy ?? POOL_DEFAULTS.strategy,
      matchAttributes: Object.freeze(matchAttributes),
      probeIntervalMs: p.probe_interval_ms ?? POOL_DEFAULTS.probeIntervalMs,
      callTimeoutMs: p.call_timeout_ms ?? POOL_DEFAULTS.callTimeoutMs,
      retryBaseMs,
      retryMaxMs,
      slotId: p.slot_id ?? POOL_DEFAULTS.slotId,
      label: p.label ?? name,
    });
  });
  const poolNames = new Set(pools.map((p) => p.name));
  const slotNat: SlotNatSpec[] = Object.entries(doc.slot_nat ?? {}).map(([name, list]) => {
    const ptr = `/slot_nat/${jsonKey(name)}`;
    if (name === '' || moduleAliases.has(name) || poolNames.has(name)) throw invalidAt(file, data, map, ptr, name === '' ? 'a slot NAT needs a name' : `slot NAT name ${JSON.stringify(name)} is already an alias`, 'key');
    const seenAlias = new Set<string>();
    list.forEach((a, i) => {
      if (!moduleAliases.has(a) && !poolNames.has(a)) fail(`${ptr}/${i}`, `unknown alias ${JSON.stringify(a)} (aliases: ${aliasList([...moduleAliases, ...poolNames])})`);
      if (seenAlias.has(a)) fail(`${ptr}/${i}`, `alias ${JSON.stringify(a)} listed twice`);
      seenAlias.add(a);
    });
    return Object.freeze({ kind: 'nat' as const, name, aliases: Object.freeze([...list]) });
  });
  const aliases = [...modules.map((m) => m.alias), ...pools.map((p) => p.name), ...slotNat.map((n) => n.name)];

  const pattern = (pointer: string, source: string): StrPattern => {
    try {
      return compileStrPattern(source);
    } catch (err) {
      return fail(pointer, `invalid regular expression: ${err instanceof Error ? err.message : String(err)}`);
    }
  };
  const aliasPattern = (pointer: string, source: string): StrPattern => {
    const p = pattern(pointer, source);
    if (!aliases.some((a) => p.regex.test(a))) {
      fail(
        pointer,
        `pattern matches no module alias (aliases: ${aliasList(aliases)})`,
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

  const where = (pointer: string): string => {
    const p = map.get(pointer)?.value;
    return p ? `${file}:${p.line}:${p.column}` : file;
  };
  const beyondRules = (block: BeyondFile, base: string): BeyondRules => {
    const aliasRules = <B, R>(key: keyof BeyondFile, f: (b: B, ptr: string) => R): Array<AliasRule<R>> =>
      ((block[key] ?? []) as Array<Pair<B>>).map(([a, b], i) => ({
        alias: aliasPattern(`${base}/${key}/${i}/0`, a),
        value: f(b, `${base}/${key}/${i}/1`),
        where: where(`${base}/${key}/${i}`),
      }));
    const constant = (w: CkWord, ptr: string, prefix: string): number | null => {
      if (typeof w === 'number') return w;
      if (w === 'any') return null;
      const v = constantByName(w);
      return v !== undefined && w.startsWith(prefix) ? v : fail(ptr, `unknown constant '${w}'`);
    };
    const attribute = (w: CkWord, ptr: string): number => constant(w, ptr, 'CKA_') ?? fail(ptr, 'must be a CKA_* name or a number');
    const value = (attr: number, v: string | number, ptr: string): Buffer => {
      const shape = attributeShape(attr);
      if (shape === ATTR_SHAPE.BOOL) {
        const w = typeof v === 'string' ? v.toLowerCase() : '';
        if (w === 'true' || w === 'yes') return Buffer.from([1]);
        if (w === 'false' || w === 'no') return Buffer.from([0]);
        return fail(ptr, 'must be TRUE or FALSE (a CK_BBOOL attribute)');
      }
      if (shape === ATTR_SHAPE.ULONG) {
        const n = typeof v === 'number' ? v : /^CK[A-Z]_/.test(v) ? constantByName(v) : undefined;
        if (n === undefined || n < 0 || n > 0xffffffff) return fail(ptr, 'must be a number or a constant name (a CK_ULONG attribute)');
        const b = Buffer.alloc(NATIVE_ARCH.ulongSize);
        writeULong(b, 0, n, NATIVE_ARCH);
        return b;
      }
      if (shape === ATTR_SHAPE.BYTES || shape === ATTR_SHAPE.DATE) {
        if (typeof v !== 'string') return fail(ptr, 'must be a string (a byte-array attribute)');
        if (!v.startsWith('hex:')) return Buffer.from(v, 'utf8');
        const hex = v.slice(4);
        return /^([0-9A-Fa-f]{2})*$/.test(hex) ? Buffer.from(hex, 'hex') : fail(ptr, 'must be hex: then an even number of hex digits');
      }
      return fail(ptr, 'attributes holding lists or templates cannot be set by template_rules');
    };
    const bool = (w: string | undefined): boolean => w === 'yes' || w === 'true';
    const patternsOf = (list: string[], ptr: string): StrPattern[] => list.map((p, k) => pattern(`${ptr}/${k}`, p));
    return {
      shadow: bool(block.shadow),
      keys: new Set(Object.keys(block)),
      templateRules: aliasRules('template_rules', (list: Array<[CkWord, CkWord, CkWord, TemplateOp, string | number]>, ptr) =>
        list.map(([c, k, a, op, v], j) => {
          const attr = attribute(a, `${ptr}/${j}/2`);
          return {
            cls: constant(c, `${ptr}/${j}/0`, 'CKO_'),
            keyType: constant(k, `${ptr}/${j}/1`, 'CKK_'),
            attribute: attr,
            op,
            value: value(attr, v, `${ptr}/${j}/4`),
            where: where(`${ptr}/${j}`),
          };
        }),
      ),
      hiddenAttributes: aliasRules('hidden_attributes', (list: Array<[CkWord, CkWord, CkWord]>, ptr) =>
        list.map(([c, k, a], j) => ({
          cls: constant(c, `${ptr}/${j}/0`, 'CKO_'),
          keyType: constant(k, `${ptr}/${j}/1`, 'CKK_'),
          attribute: attribute(a, `${ptr}/${j}/2`),
          where: where(`${ptr}/${j}`),
        })),
      ),
      allowedMechanisms: aliasRules('allowed_mechanisms', (list: Array<string | number>, ptr) =>
        list.map((m, k) => {
          if (typeof m === 'number') return m;
          const v = mechanismByName(m);
          return v !== undefined ? v : fail(`${ptr}/${k}`, `unknown mechanism '${m}'`);
        }),
      ),
      allowedFunctions: aliasRules('allowed_functions', (list: Pkcs11FunctionName[]) => [...list]),
      deniedLabels: aliasRules('denied_labels', patternsOf),
      deniedIds: aliasRules('denied_ids', patternsOf),
      maxRandomLength: aliasRules('max_random_length', (n: number) => n),
      maxTemplateAttributes: aliasRules('max_template_attributes', (n: number) => n),
      minRsaModulusBits: aliasRules('min_rsa_modulus_bits', (n: number) => n),
      allowedEcCurves: aliasRules('allowed_ec_curves', (list: string[], ptr) =>
        list.map((name, k) => {
          const dotted = /^[0-2](\.[0-9]+)+$/.test(name) ? name : EC_CURVE_OIDS[name];
          if (dotted === undefined) return fail(`${ptr}/${k}`, `unknown curve '${name}' (known: ${Object.keys(EC_CURVE_OIDS).join(', ')})`);
          return { name, der: oidDer(dotted) };
        }),
      ),
    };
  };
  const fileBeyond: BeyondFile = {};
  for (const k of BEYOND_KEY_NAMES) {
    const v = (doc as unknown as Record<string, unknown>)[k];
    if (v !== undefined) (fileBeyond as Record<string, unknown>)[k] = v;
  }
  const beyond = beyondRules(fileBeyond, '');
  const profiles = Object.entries(doc.profiles ?? {}).map(([name, block]) => {
    const ptr = `/profiles/${name.replace(/~/g, '~0').replace(/\//g, '~1')}`;
    if (!/^[A-Za-z_][A-Za-z0-9_-]*$/.test(name) || name === 'default') {
      throw invalidAt(file, data, map, ptr, name === 'default' ? "'default' is the top-level policy: not a profile name" : 'must be a profile name ([A-Za-z_][A-Za-z0-9_-]*)', 'key');
    }
    return { name, where: where(ptr), rules: beyondRules(block, ptr) };
  });
  const jsonPointerKey = (k: string): string => k.replace(/~/g, '~0').replace(/\//g, '~1');
  const groups = new Map<string, readonly IdentityPattern[]>();
  const identityAt = (pointer: string, text: string): IdentityPattern => {
    try {
      return parseIdentityPattern(text, { groups });
    } catch (err) {
      if (err instanceof IdentityPatternError) return fail(pointer, err.message);
      throw err;
    }
  };
  for (const [name, list] of Object.entries(doc.identity_groups ?? {})) {
    const ptr = `/identity_groups/${jsonPointerKey(name)}`;
    if (!/^[A-Za-z_][A-Za-z0-9_-]*$/.test(name)) throw invalidAt(file, data, map, ptr, 'must be a group name ([A-Za-z_][A-Za-z0-9_-]*)', 'key');
    groups.set(name, Object.freeze(list.map((p, k) => identityAt(`${ptr}/${k}`, p))));
  }
  const profileMap = (doc.profile_map ?? []).map(([id, profile], i): ProfileMapEntry => {
    if (profile !== 'default' && !profiles.some((p) => p.name === profile)) {
      fail(`/profile_map/${i}/1`, `unknown profile '${profile}' (profiles: ${['default', ...profiles.map((p) => p.name)].join(', ')})`);
    }
    return { identity: identityAt(`/profile_map/${i}/0`, id), profile, where: where(`/profile_map/${i}`) };
  });

  const authz = doc.authorization === undefined ? null : {
    entries: Object.entries(doc.authorization).map(([name, e]) => {
      const ptr = `/authorization/${jsonPointerKey(name)}`;
      if (!/^[A-Za-z_][A-Za-z0-9_-]*$/.test(name)) throw invalidAt(file, data, map, ptr, 'must be an entry name ([A-Za-z_][A-Za-z0-9_-]*)', 'key');
      e.aliases.forEach((a, k) => {
        if (a !== '' && !aliases.includes(a)) fail(`${ptr}/aliases/${k}`, `unknown module alias ${JSON.stringify(a)} (aliases: ${aliasList(aliases)})`);
      });
      if (e.profile !== undefined && e.profile !== 'default' && !profiles.some((p) => p.name === e.profile)) {
        fail(`${ptr}/profile`, `unknown profile '${e.profile}' (profiles: ${['default', ...profiles.map((p) => p.name)].join(', ')})`);
      }
      return Object.freeze({
        name,
        identities: Object.freeze(e.identities.map((id, k) => identityAt(`${ptr}/identities/${k}`, id))),
        // "" is the default module: the set holds real aliases only.
        aliases: new Set(e.aliases.map((a) => (a === '' ? modules[0].alias : a))),
        ...(e.profile !== undefined ? { profile: e.profile } : {}),
        ...(e.tokens !== undefined
          ? {
            tokens: Object.freeze(e.tokens.map((t, k) => {
              try {
                return parseTokenSelector(t);
              } catch (err) {
                if (err instanceof TokenSelectorError) return fail(`${ptr}/tokens/${k}`, err.message);
                throw err;
              }
            })),
          }
          : {}),
        where: where(ptr),
      });
    }),
  };
  const t = doc.login_throttle;
  const loginThrottle: LoginThrottle | null = t === undefined ? null : Object.freeze({
    baseDelayMs: t.base_delay_ms ?? DEFAULT_LOGIN_THROTTLE.baseDelayMs,
    maxDelayMs: t.max_delay_ms ?? DEFAULT_LOGIN_THROTTLE.maxDelayMs,
    lockoutFailures: t.lockout_failures ?? DEFAULT_LOGIN_THROTTLE.lockoutFailures,
    lockoutMs: t.lockout_seconds !== undefined ? t.lockout_seconds * 1000 : DEFAULT_LOGIN_THROTTLE.lockoutMs,
  });

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
    pools,
    slotNat,
    aliases,
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
    beyond,
    profiles,
    profileMap,
    authz,
    loginThrottle,
    raw,
    sourceMap: map,
    data,
  };
}
