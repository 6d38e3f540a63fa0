import type { FilterActionName } from '../../config/filter-names';
import type { ActionDefinition } from '../hooks';
import { conflictingAttributesPatch, conflictingAttributesPatchOnExistingObjects } from './conflicting-attributes';
import { cInitializeHook, cLoginHook, identity } from './sample-hooks';
import { sanitizeCreationTemplatesPatch } from './sanitize-templates';
import { secureTemplatesPatch } from './secure-templates';
import { doSegregateUsage } from './segregate-usage';
import { stickyAttributesPatch } from './sticky-attributes';
import { dangerousSensitiveKeysEscrowAll, dangerousSensitiveKeysEscrowEncrypt, dangerousSensitiveKeysParanoid } from './dangerous-sensitive-keys';
import { nonLocalObjectsPatch } from './non-local-objects';
import { preventSensitiveLeakPatch } from './sensitive-leak';
import { wrappingFormatPatch } from './wrapping-format';

/**
 * The built-in filter actions by their Caml Crush names. An action missing
 * here is refused at load time ("not enforced yet"): a policy naming it does
 * not start. One file per action (or per patch family) in this folder.
 */
export const ACTIONS: Readonly<Partial<Record<FilterActionName, ActionDefinition>>> = Object.freeze({
  conflicting_attributes_patch: conflictingAttributesPatch,
  conflicting_attributes_patch_on_existing_objects: conflictingAttributesPatchOnExistingObjects,
  sticky_attributes_patch: stickyAttributesPatch,
  secure_templates_patch: secureTemplatesPatch,
  sanitize_creation_templates_patch: sanitizeCreationTemplatesPatch,
  do_segregate_usage: doSegregateUsage,
  identity,
  c_Initialize_hook: cInitializeHook,
  c_Login_hook: cLoginHook,
  non_local_objects_patch: nonLocalObjectsPatch,
  prevent_sensitive_leak_patch: preventSensitiveLeakPatch,
  dangerous_sensitive_keys_paranoid: dangerousSensitiveKeysParanoid,
  dangerous_sensitive_keys_escrow_encrypt: dangerousSensitiveKeysEscrowEncrypt,
  dangerous_sensitive_keys_escrow_all: dangerousSensitiveKeysEscrowAll,
  wrapping_format_patch: wrappingFormatPatch,
});
