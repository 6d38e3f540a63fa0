/**
 * JSON Schema of filter.conf after parsing to plain data: the keys Caml
 * Crush's filter reads, with the same value shapes. Lists and tuples are both
 * arrays here; a tuple is an array of exactly two elements.
 *
 * Decision rules (enforced by the filter engine, documented here because the
 * schema is the reference for the file):
 *  - Every rule starts with ALIAS_REGEX, an OCaml Str regexp that Caml Crush
 *    matches by appending `$` and anchoring at the start (see str-regex.ts).
 *    Each ALIAS_REGEX must match at least one alias of `modules`.
 *  - forbidden_mechanisms, forbidden_functions, remove_padding_oracles are
 *    DENY lists: every rule whose ALIAS_REGEX matches the alias adds to the
 *    denied set (logical AND of restrictions).
 *  - allowed_labels, allowed_ids are ALLOW lists: when at least one rule
 *    matches the alias, only objects whose CKA_LABEL (resp. hex CKA_ID) fully
 *    matches one of the patterns of the matching rules are visible; an alias
 *    no rule matches is not filtered.
 *  - enforce_ro_sessions, forbid_admin_operations: the first rule whose
 *    ALIAS_REGEX matches decides; default no.
 *  - filter_actions_pre/post: hooks run in declaration order.
 *
 * pkcs11proxyd extensions (BEYOND_KEYS below; not read by Caml Crush):
 *  - template_rules: per attribute of a creation template, the first rule
 *    whose class, key type and attribute match and whose condition holds
 *    decides (`allow` and `refuse` hold when the template gives that value,
 *    `default` when it gives none, `force` always).
 *  - allowed_mechanisms, allowed_functions, allowed_ec_curves are ALLOW
 *    lists (union of the matching rules; no matching rule: not restricted);
 *    denied_labels, denied_ids, hidden_attributes are DENY lists (add up).
 *  - max_random_length, max_template_attributes, min_rsa_modulus_bits: the
 *    strictest matching rule wins.
 *  - profiles: named policies; each profile is the top-level policy plus its
 *    own rules. A key a profile sets replaces the top-level rules of that key
 *    (template_rules: the profile's rules are tried first; the DENY lists add
 *    up). `shadow = yes` logs what the profile would refuse and refuses
 *    nothing. profile_map maps the client identity to a profile, first
 *    matching entry wins; no match: the top-level policy ("default").
 */
import type { SchemaObject } from 'ajv';
import {
  BOOLEAN_WORDS,
  FILTER_ACTION_NAMES,
  PADDING_OPERATIONS,
  PKCS11_FUNCTION_NAMES,
} from './filter-names';

type S = SchemaObject;

const aliasRegex: S = {
  type: 'string',
  description: 'Module alias pattern (OCaml Str regexp, anchored at the start, `$` appended).',
};
const pair = (second: S, shape: string): S => ({
  type: 'array',
  description: `A pair (ALIAS_REGEX, ${shape}).`,
  items: [aliasRegex, second],
  minItems: 2,
  additionalItems: false,
  ruleText: `must be a pair (ALIAS_REGEX, ${shape})`,
});
const rules = (description: string, second: S, shape: string): S => ({
  type: 'array',
  description: `${description} List of pairs (ALIAS_REGEX, ${shape}).`,
  items: pair(second, shape),
  ruleText: `must be a list of pairs (ALIAS_REGEX, ${shape})`,
});
const listOf = (item: S, description: string, shape: string): S => ({
  type: 'array',
  description,
  items: item,
  ruleText: `must be a list ${shape}`,
});

const functionName: S = {
  type: 'string',
  description: 'PKCS#11 function name.',
  enum: PKCS11_FUNCTION_NAMES,
  ruleText: 'must be a PKCS#11 function name (C_Initialize ... C_CancelFunction)',
};
const mechanism: S = {
  type: ['string', 'integer'],
  description:
    'Mechanism: a CKM_* name (also cKM_*, as Caml Crush accepts), or, as a pkcs11proxyd extension, its number (decimal or 0x hex) for vendor mechanisms.',
  pattern: '^[cC]KM_[A-Za-z0-9_]+$',
  minimum: 0,
  maximum: 0xffffffff,
  ruleText: 'must be a mechanism name (CKM_...) or number',
};
const boolWord: S = {
  type: 'string',
  description: 'Boolean: yes, no, true or false.',
  enum: BOOLEAN_WORDS,
  ruleText: 'must be yes, no, true or false',
};
const regexList = (what: string): S =>
  listOf(
    { type: 'string', description: `${what} pattern (OCaml Str regexp, full match).` },
    `${what} patterns.`,
    'of regexp strings',
  );

const ckName = (prefix: string, what: string, any: boolean): S => ({
  type: ['string', 'integer'],
  description: `${what}: a ${prefix}* name${any ? ', `any`' : ''} or a number (vendor values).`,
  pattern: any ? `^(any|${prefix}[A-Za-z0-9_]+)$` : `^${prefix}[A-Za-z0-9_]+$`,
  minimum: 0,
  maximum: 0xffffffff,
  ruleText: `must be a ${prefix}* name${any ? ', any' : ''} or a number`,
});
const attrValue: S = {
  type: ['string', 'integer'],
  description:
    'Value in the attribute\'s own shape: TRUE/FALSE (yes/no, true/false) for CK_BBOOL attributes; a number or a CKO_/CKK_/CKC_/CKM_... name for CK_ULONG ones; a string for byte arrays (UTF-8, or `hex:` then hex digits).',
  ruleText: 'must be a boolean word, a number, a constant name or a string',
};
const nonNegative = (description: string): S => ({
  type: 'integer',
  description,
  minimum: 0,
  maximum: 0xffffffff,
  ruleText: 'must be an integer 0..4294967295',
});
const ecCurve: S = {
  type: 'string',
  description:
    'Curve: prime256v1 (secp256r1, P-256), secp384r1 (P-384), secp521r1 (P-521), secp256k1, brainpoolP256r1, brainpoolP384r1, brainpoolP512r1, ed25519, ed448, x25519, x448, or a dotted OID ("1.2.840.10045.3.1.7"). Compared with the DER of CKA_EC_PARAMS.',
  pattern: '^([A-Za-z][A-Za-z0-9-]*|[0-2](\\.[0-9]+)+)$',
  ruleText: 'must be a curve name or a dotted OID',
};

/**
 * The pkcs11proxyd keys beyond Caml Crush, allowed at the top level and in a profile.
 * Every rule is (ALIAS_REGEX, ...) like Caml Crush's.
 */
const BEYOND_KEYS: Record<string, S> = {
  shadow: {
    ...boolWord,
    description:
      'Shadow mode of this policy (top level: the default profile): what it would refuse is logged (debug >= 1) and let through; template values it would set are not set. Default no.',
  },
  template_rules: rules(
    'Creation templates (C_CreateObject, C_GenerateKey, C_GenerateKeyPair, C_UnwrapKey, C_DeriveKey, C_CopyObject): ' +
      'per attribute, the first rule whose CLASS, KEY_TYPE and ATTRIBUTE match the new object and whose OP holds decides: ' +
      '`default` sets VALUE when the template has no such attribute; `force` sets VALUE whatever the template says; ' +
      '`refuse` answers CKR_ATTRIBUTE_VALUE_INVALID when the template gives VALUE; `allow` accepts VALUE when the template gives it ' +
      '(later rules for that attribute are skipped). Class and key type come from the template, else from the call ' +
      '(C_GenerateKey: CKO_SECRET_KEY; C_GenerateKeyPair: CKO_PUBLIC_KEY / CKO_PRIVATE_KEY; key type from the mechanism), ' +
      'C_CopyObject: from the source object. Example: secret and private keys always sensitive and never extractable.',
    listOf(
      {
        type: 'array',
        description: 'A rule (CLASS, KEY_TYPE, ATTRIBUTE, OP, VALUE).',
        items: [
          ckName('CKO_', 'Object class', true),
          ckName('CKK_', 'Key type', true),
          ckName('CKA_', 'Attribute', false),
          { type: 'string', enum: ['default', 'force', 'refuse', 'allow'], description: 'What the rule does.', ruleText: 'must be one of: default, force, refuse, allow' },
          attrValue,
        ],
        minItems: 5,
        additionalItems: false,
        ruleText: 'must be a rule (CLASS, KEY_TYPE, ATTRIBUTE, default|force|refuse|allow, VALUE)',
      },
      'Template rules.',
      'of (CLASS, KEY_TYPE, ATTRIBUTE, OP, VALUE) rules',
    ),
    '[(CLASS, KEY_TYPE, ATTRIBUTE, OP, VALUE), ...]',
  ),
  hidden_attributes: rules(
    'DENY: attributes never revealed: C_GetAttributeValue answers them unavailable (CK_UNAVAILABLE_INFORMATION, CKR_ATTRIBUTE_SENSITIVE) for objects of that class and key type.',
    listOf(
      {
        type: 'array',
        description: 'A triple (CLASS, KEY_TYPE, ATTRIBUTE).',
        items: [ckName('CKO_', 'Object class', true), ckName('CKK_', 'Key type', true), ckName('CKA_', 'Attribute', false)],
        minItems: 3,
        additionalItems: false,
        ruleText: 'must be a triple (CLASS, KEY_TYPE, ATTRIBUTE)',
      },
      'Hidden attributes.',
      'of (CLASS, KEY_TYPE, ATTRIBUTE) triples',
    ),
    '[(CLASS, KEY_TYPE, ATTRIBUTE), ...]',
  ),
  allowed_mechanisms: rules(
    'ALLOW: only these mechanisms are usable (others refused with CKR_MECHANISM_INVALID wherever a mechanism is given, and at C_GetMechanismInfo; hidden from C_GetMechanismList).',
    listOf(mechanism, 'Mechanisms.', 'of mechanisms'),
    '[MECHANISM, ...]',
  ),
  allowed_functions: rules(
    'ALLOW: only these functions are answered; others get CKR_FUNCTION_NOT_SUPPORTED (C_LoadModule is always allowed).',
    listOf(functionName, 'Functions.', 'of PKCS#11 function names'),
    '[C_FUNCTION, ...]',
  ),
  denied_labels: rules(
    'DENY: objects whose CKA_LABEL fully matches a pattern are invisible (skipped by C_FindObjects, their handles invalid); templates may not give such a label.',
    regexList('Label'),
    '[LABEL_REGEX, ...]',
  ),
  denied_ids: rules('DENY: as denied_labels, over the lowercase hex of CKA_ID.', regexList('ID'), '[ID_REGEX, ...]'),
  max_random_length: rules('Largest C_GenerateRandom length; larger: CKR_ARGUMENTS_BAD.', nonNegative('Bytes.'), 'BYTES'),
  max_template_attributes: rules(
    'Largest number of attributes in any one template of a call; more: CKR_ARGUMENTS_BAD.',
    nonNegative('Attributes.'),
    'COUNT',
  ),
  min_rsa_modulus_bits: rules(
    'Smallest CKA_MODULUS_BITS of an RSA key pair generated (C_GenerateKeyPair); smaller or absent: CKR_ATTRIBUTE_VALUE_INVALID.',
    nonNegative('Bits.'),
    'BITS',
  ),
  allowed_ec_curves: rules(
    'ALLOW: curves (CKA_EC_PARAMS) of EC and Edwards/Montgomery key pairs generated (C_GenerateKeyPair); others and absent ones: CKR_ATTRIBUTE_VALUE_INVALID.',
    listOf(ecCurve, 'Curves.', 'of curve names'),
    '[CURVE, ...]',
  ),
};

export const BEYOND_KEY_NAMES: readonly string[] = Object.keys(BEYOND_KEYS);

const profileName: S = {
  type: 'string',
  description: 'Profile name (a key of `profiles`, or `default`: the top-level policy).',
  pattern: '^[A-Za-z_][A-Za-z0-9_-]*$',
  ruleText: 'must be a profile name',
};

/** An identity pattern (src/filter/authz-patterns.ts); its value is checked when the file is built. */
const identityPattern: S = {
  type: 'string',
  description: 'uid:N, gid:N, user:NAME, group:NAME, unix, tcp, tls, subject:DN, issuer:DN, san:TYPE:VALUE, sha256:HEX, spki:HEX, @GROUP or *.',
  minLength: 1,
  ruleText: 'must be an identity pattern',
};

export const filterSchema: SchemaObject = {
  type: 'object',
  description: 'filter.conf: `key = value` entries, no separators.',
  additionalProperties: false,
  required: ['modules'],
  properties: {
    modules: {
      type: 'array',
      description:
        'Module aliases: [(ALIAS, PATH), ...]. A client names an alias; the first one is the default. Must not be empty; aliases are unique; PATH is used as written.',
      minItems: 1,
      items: {
        type: 'array',
        description: 'A pair (ALIAS, PATH).',
        items: [
          { type: 'string', description: 'Alias sent by clients (may be "").' },
          { type: 'string', description: 'PKCS#11 module path.', minLength: 1 },
        ],
        minItems: 2,
        additionalItems: false,
        ruleText: 'must be a pair (ALIAS, PATH)',
      },
    },
    debug: {
      type: 'integer',
      description: 'Filter verbosity 0..3 (0: errors only, 3: also dump the configuration).',
      minimum: 0,
      maximum: 3,
    },
    log_subchannel: { type: 'string', description: 'netplex log subchannel for filter messages.' },
    wrapping_format_key: {
      type: 'string',
      description:
        'AES-128 key for wrapping_format_patch: 32 hex digits. Required when that action is used. Secret: never logged.',
      pattern: '^([0-9A-Fa-f]{32})?$',
      ruleText: 'must be 32 hexadecimal digits',
    },
    forbidden_mechanisms: rules(
      'DENY: mechanisms hidden from C_GetMechanismList and refused with CKR_MECHANISM_INVALID.',
      listOf(mechanism, 'Mechanisms.', 'of mechanisms'),
      '[MECHANISM, ...]',
    ),
    allowed_labels: rules('ALLOW: visible objects by CKA_LABEL.', regexList('Label'), '[LABEL_REGEX, ...]'),
    allowed_ids: rules('ALLOW: visible objects by hex-encoded CKA_ID.', regexList('ID'), '[ID_REGEX, ...]'),
    forbidden_functions: rules(
      'DENY: functions answered with CKR_FUNCTION_NOT_SUPPORTED.',
      listOf(functionName, 'Functions.', 'of PKCS#11 function names'),
      '[C_FUNCTION, ...]',
    ),
    enforce_ro_sessions: rules('Force read-only sessions.', boolWord, 'yes|no'),
    forbid_admin_operations: rules('Refuse C_Login as CKU_SO.', boolWord, 'yes|no'),
    remove_padding_oracles: rules(
      'DENY: operations refused for padding-oracle-prone mechanisms (PKCS#1 v1.5, CBC_PAD, X.509 raw).',
      listOf(
        {
          type: 'string',
          description: 'Operation kind.',
          enum: PADDING_OPERATIONS,
          ruleText: 'must be one of: wrap, unwrap, encrypt, sign, all',
        },
        'Operations.',
        'of operations',
      ),
      '[wrap|unwrap|encrypt|sign|all, ...]',
    ),
    filter_actions_pre: rules('Hooks run before the call.', actionList(), '[(C_FUNCTION, ACTION), ...]'),
    filter_actions_post: rules('Hooks run after the call.', actionList(), '[(C_FUNCTION, ACTION), ...]'),
    ...BEYOND_KEYS,
    profiles: {
      type: 'object',
      description:
        'Named policy profiles: `profiles = { NAME = { KEY = VALUE ... } ... }` with the keys of template_rules ... allowed_ec_curves and shadow. ' +
        'A profile is the top-level policy plus its own rules (a key it sets replaces the top-level one, DENY lists add up, its template_rules are tried first).',
      additionalProperties: {
        type: 'object',
        description: 'One profile.',
        additionalProperties: false,
        properties: BEYOND_KEYS,
        ruleText: 'must be a block { KEY = VALUE ... }',
      },
      ruleText: 'must be a block { NAME = { ... } ... }',
    },
    // ---- issue 9 part C (authz): client identity, authorisation table, slot view, login throttling ----
    identity_groups: {
      type: 'object',
      description:
        'Named sets of identity patterns: `identity_groups = { NAME = [PATTERN, ...] ... }`; `@NAME` in a pattern list matches any of them. ' +
        'A group may name groups defined before it.',
      additionalProperties: { type: 'array', description: 'Patterns.', minItems: 1, items: identityPattern, ruleText: 'must be a non-empty list of identity patterns' },
      ruleText: 'must be a block { NAME = [PATTERN, ...] ... }',
    },
    authorization: {
      type: 'object',
      description:
        'Authorisation table: `authorization = { NAME = { identities = [PATTERN, ...] aliases = [ALIAS, ...] profile = PROFILE tokens = [TOKEN, ...] } ... }`. ' +
        'When present, the first entry (file order) with a matching identity decides: the client may load only `aliases` (others and unknown identities: ' +
        'CKR_FUNCTION_FAILED at C_LoadModule, audit event authorization_refused), its filter profile is `profile` (absent: profile_map), and with `tokens` it sees ' +
        'only those tokens (slots renumbered, others CKR_SLOT_ID_INVALID). TOKEN: `label:TEXT`, `serial:TEXT` or `pkcs11:token=...;serial=...` (RFC 7512). Absent: everyone may load every alias.',
      minProperties: 1,
      additionalProperties: {
        type: 'object',
        description: 'One entry.',
        additionalProperties: false,
        required: ['identities', 'aliases'],
        properties: {
          identities: { type: 'array', description: 'Who this entry is for.', minItems: 1, items: identityPattern, ruleText: 'must be a non-empty list of identity patterns' },
          aliases: {
            type: 'array',
            description: 'Module aliases (of `modules`) this identity may load; `""` is the default module.',
            minItems: 1,
            items: { type: 'string', description: 'A module alias.' },
            ruleText: 'must be a non-empty list of module aliases',
          },
          profile: profileName,
          tokens: { type: 'array', description: 'Tokens visible (slot view).', minItems: 1, items: { type: 'string', description: 'label:TEXT, serial:TEXT or pkcs11:token=...;serial=...' }, ruleText: 'must be a non-empty list of token selectors' },
        },
        ruleText: 'must be a block { identities = [...] aliases = [...] ... }',
      },
      ruleText: 'must be a block { NAME = { ... } ... }',
    },
    login_throttle: {
      type: 'object',
      description:
        'Failed C_Login (CKR_PIN_INCORRECT) per client identity and token: the next C_Login waits until base_delay_ms * 2^(failures-1) (at most max_delay_ms) ' +
        'after the last failure before it reaches the module; after lockout_failures consecutive failures (0: never) C_Login answers CKR_PIN_LOCKED for lockout_seconds ' +
        'without reaching the module. A success resets the count. State is per worker process.',
      additionalProperties: false,
      properties: {
        base_delay_ms: { type: 'integer', description: 'Delay after the first failure, ms (default 1000; 0: no delay).', minimum: 0, maximum: 3_600_000 },
        max_delay_ms: { type: 'integer', description: 'Largest delay, ms (default 60000).', minimum: 0, maximum: 3_600_000 },
        lockout_failures: { type: 'integer', description: 'Consecutive failures that lock out (default 0: never).', minimum: 0, maximum: 1_000_000 },
        lockout_seconds: { type: 'integer', description: 'Lock-out time, s (default 900).', minimum: 1, maximum: 31_536_000 },
      },
      ruleText: 'must be a block { base_delay_ms = N max_delay_ms = N lockout_failures = N lockout_seconds = N }',
    },
    // ---- end of part C ----
    // ---- issue 10: module helper processes (src/bindings/helper) ----
    module_isolation: {
      type: 'object',
      description:
        'Where each module runs: `module_isolation = { ALIAS = { mode = "helper"; processes = 1; call_timeout_ms = 30000 } ... }`. ' +
        '"in-worker" (default): loaded by the worker itself. "helper": in a helper process of each worker, so a crash, abort or hang of the module ' +
        'costs only its helper (calls in flight answer CKR_DEVICE_ERROR, its sessions CKR_SESSION_HANDLE_INVALID afterwards; restarted with backoff). ' +
        'A call not answered within call_timeout_ms kills the helper (CKR_DEVICE_ERROR). Only processes = 1 is supported.',
      additionalProperties: {
        type: 'object',
        description: 'Isolation of one module alias.',
        additionalProperties: false,
        required: ['mode'],
        properties: {
          mode: { type: 'string', description: 'in-worker or helper.', enum: ['in-worker', 'helper'], ruleText: 'must be "in-worker" or "helper"' },
          processes: { type: 'integer', description: 'Helper processes per worker (default 1; only 1 is supported).', minimum: 1, maximum: 64 },
          call_timeout_ms: { type: 'integer', description: 'Longest call before the helper is taken as hung and killed, ms (default 30000).', minimum: 1, maximum: 3_600_000 },
        },
        ruleText: 'must be a block { mode = "in-worker"|"helper" processes = N call_timeout_ms = N }',
      },
      ruleText: 'must be a block { ALIAS = { mode = ... } ... }',
    },
    // ---- issue 10 (pool): pools of tokens holding the same keys, slot NAT ----
    pools: {
      type: 'object',
      description:
        'Pools: `pools = { NAME = { members = [(ALIAS, URI), ...] strategy = S weights = [N, ...] match_attributes = [CKA_..., ...] probe_interval_ms = N call_timeout_ms = N retry_base_ms = N retry_max_ms = N slot_id = N label = TEXT } ... }`. ' +
        'NAME is a new alias clients load; it shows one slot (slot_id, default 0) whose token is any member: a `modules` ALIAS plus an RFC 7512 URI naming one of its tokens ' +
        '(path attributes token, manufacturer, serial, model, slot-id, slot-description, slot-manufacturer, library-manufacturer, library-description, library-version). ' +
        'The members must hold the same keys: an object is matched across members by match_attributes (default CKA_CLASS, CKA_ID, CKA_LABEL). ' +
        'strategy: round-robin (default; weighted), least-outstanding (fewest calls in flight per weight), primary-standby (first member up, in list order). ' +
        'A member answering CKR_DEVICE_ERROR, CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT, CKR_SESSION_CLOSED or CKR_SESSION_HANDLE_INVALID, or not answering within call_timeout_ms, is marked down and probed again ' +
        '(retry_base_ms doubling up to retry_max_ms, with jitter); single-part work moves to another member (src/bindings/pool/pool-backend.ts). ' +
        'A module alias used by a pool or a slot NAT is reserved: clients cannot load it directly (CKR_FUNCTION_FAILED).',
      additionalProperties: {
        type: 'object',
        description: 'One pool.',
        additionalProperties: false,
        required: ['members'],
        properties: {
          members: {
            type: 'array',
            description: 'Members: [(ALIAS, URI), ...], ALIAS a `modules` alias, URI an RFC 7512 PKCS#11 URI naming one of its tokens.',
            minItems: 1,
            items: {
              type: 'array',
              description: 'A pair (ALIAS, URI).',
              items: [
                { type: 'string', description: 'A `modules` alias.' },
                { type: 'string', description: 'pkcs11:token=...;serial=...', minLength: 7 },
              ],
              minItems: 2,
              additionalItems: false,
              ruleText: 'must be a pair (ALIAS, "pkcs11:...")',
            },
            ruleText: 'must be a non-empty list of pairs (ALIAS, "pkcs11:...")',
          },
          strategy: { type: 'string', description: 'round-robin, least-outstanding or primary-standby.', enum: ['round-robin', 'least-outstanding', 'primary-standby'], ruleText: 'must be one of: round-robin, least-outstanding, primary-standby' },
          weights: {
            type: 'array',
            description: 'One positive integer per member (default all 1): its share of new work.',
            items: { type: 'integer', minimum: 1, maximum: 1000, description: 'Weight.' },
            ruleText: 'must be a list of integers 1..1000, one per member',
          },
          match_attributes: {
            type: 'array',
            description: 'Attributes identifying an object across members (default [CKA_CLASS, CKA_ID, CKA_LABEL]).',
            minItems: 1,
            items: { type: ['string', 'integer'], pattern: '^CKA_[A-Za-z0-9_]+$', minimum: 0, maximum: 0xffffffff, description: 'A CKA_* name or number.' },
            ruleText: 'must be a non-empty list of CKA_* names',
          },
          probe_interval_ms: { type: 'integer', description: 'Health probe period of a member that is up, ms (default 5000).', minimum: 10, maximum: 3_600_000 },
          call_timeout_ms: { type: 'integer', description: 'A member call taking longer marks the member down, ms (default 10000).', minimum: 10, maximum: 3_600_000 },
          retry_base_ms: { type: 'integer', description: 'First probe delay after a member went down, ms (default 100).', minimum: 1, maximum: 3_600_000 },
          retry_max_ms: { type: 'integer', description: 'Largest probe delay of a member that stays down, ms (default 30000).', minimum: 1, maximum: 3_600_000 },
          slot_id: { type: 'integer', description: 'CK_SLOT_ID of the pool slot (default 0).', minimum: 0, maximum: 0xffffffff },
          label: { type: 'string', description: 'CK_TOKEN_INFO.label of the pool token (default the pool name; at most 32 bytes).', maxLength: 32 },
        },
        ruleText: 'must be a block { members = [...] ... }',
      },
      ruleText: 'must be a block { NAME = { members = [...] ... } ... }',
    },
    slot_nat: {
      type: 'object',
      description:
        'Slot NAT: `slot_nat = { NAME = [ALIAS, ...] ... }`. NAME is a new alias clients load; it lists the slots of the ALIASes (of `modules` or `pools`) side by side, ' +
        'renumbered 0..n-1 in this order, for clients that can load only one module. The aliases listed are reserved (not loadable directly).',
      additionalProperties: {
        type: 'array',
        description: 'Aliases.',
        minItems: 1,
        items: { type: 'string', description: 'A `modules` or `pools` alias.' },
        ruleText: 'must be a non-empty list of aliases',
      },
      ruleText: 'must be a block { NAME = [ALIAS, ...] ... }',
    },
    // ---- end of issue 10 (pool) ----
    profile_map: {
      type: 'array',
      description:
        'Client identity -> profile: [(IDENTITY, PROFILE), ...], first match wins, no match: `default` (the top-level policy). ' +
        'IDENTITY: an identity pattern (see `authorization`): `uid:N` or `gid:N` (the Unix peer of a local socket, SO_PEERCRED: real uid and primary gid of the connecting process), `user:NAME`, `group:NAME`, `unix` (any local peer), `tcp` (any TCP peer), `tls`, `subject:DN`, `issuer:DN`, `san:TYPE:VALUE`, `sha256:HEX`, `spki:HEX`, `@GROUP`, `*` (anyone).',
      items: {
        type: 'array',
        description: 'A pair (IDENTITY, PROFILE).',
        items: [
          identityPattern,
          profileName,
        ],
        minItems: 2,
        additionalItems: false,
        ruleText: 'must be a pair (IDENTITY, PROFILE)',
      },
      ruleText: 'must be a list of pairs (IDENTITY, PROFILE)',
    },
  },
};

function actionList(): S {
  return listOf(
    {
      type: 'array',
      description: 'A pair (C_FUNCTION, ACTION).',
      items: [
        functionName,
        {
          type: 'string',
          description: 'Action name.',
          enum: FILTER_ACTION_NAMES,
          ruleText: `must be one of: ${FILTER_ACTION_NAMES.join(', ')}`,
        },
      ],
      minItems: 2,
      additionalItems: false,
      ruleText: 'must be a pair (C_FUNCTION, ACTION)',
    },
    'Actions.',
    'of (C_FUNCTION, ACTION) pairs',
  );
}
