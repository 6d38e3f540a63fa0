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
