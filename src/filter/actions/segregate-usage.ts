import type { ActionDefinition } from '../hooks';

/**
 * Caml Crush `do_segregate_usage` (attached to C_Initialize there): turns on
 * key usage segregation, encryption versus signature, for the conflicting,
 * sticky and secure-template rules of the alias. The policy compiler sees
 * the action in filter.conf and compiles those rules wider
 * (ActionContext.segregateUsage) whatever it is attached to, so the hook
 * itself has nothing to do at run time.
 */
export const doSegregateUsage: ActionDefinition = {
  compile: () => () => undefined,
};
