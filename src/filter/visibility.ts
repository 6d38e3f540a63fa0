/**
 * allowed_labels / allowed_ids matching of one object's values, shared by
 * the filter layer (handles, templates, C_FindObjects) and the actions that
 * answer a call themselves before the layer's own check.
 */
import type { AliasPolicy } from './policy';

/**
 * allowed_labels: true when the policy has no label list or the label's
 * bytes (one per character, latin1, as Caml Crush's Str sees them) match one
 * pattern. An object without a label is hidden by a label list.
 */
export function labelAllowed(policy: AliasPolicy, label: Buffer | null | undefined): boolean {
  if (policy.allowedLabels === null) return true;
  if (label === null || label === undefined) return false;
  const s = label.toString('latin1');
  return policy.allowedLabels.some((p) => p.regex.test(s));
}

/** allowed_ids: as labelAllowed, matched against the lowercase hex of the id. */
export function idAllowed(policy: AliasPolicy, id: Buffer | null | undefined): boolean {
  if (policy.allowedIds === null) return true;
  if (id === null || id === undefined) return false;
  const s = id.toString('hex');
  return policy.allowedIds.some((p) => p.regex.test(s));
}
