import type { FilterActionName } from '../../config/filter-names';
import type { ActionDefinition } from '../hooks';
import { wrappingFormatPatch } from './wrapping-format';

/**
 * The built-in filter actions by their Caml Crush names. An action missing
 * here is refused at load time ("not enforced yet"): a policy naming it does
 * not start. One file per action (or per patch family) in this folder.
 */
export const ACTIONS: Readonly<Partial<Record<FilterActionName, ActionDefinition>>> = Object.freeze({
  wrapping_format_patch: wrappingFormatPatch,
});
