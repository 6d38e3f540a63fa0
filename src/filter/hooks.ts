import type { CallName, MaybePromise, Pkcs11Calls } from '../generated/pkcs11_rpc';
import type { ConnectionState } from '../server/dispatch/connection-state';
import type { FilterActionName } from '../config/filter-names';
import type { ObjectAttributes } from './object-attributes';
import type { AliasPolicy } from './policy';

/**
 * What a filter hook (a Caml Crush filter action) sees of one call. `name` is
 * the version 3 call name: a typed-mechanism procedure (px_SignInitTyped...)
 * runs the hooks of the call it mirrors (C_SignInit), so every rule covers
 * both encodings. `args` is the call's argument object as the filter layer
 * received it: native CK_ULONG layout, the client's virtual handles. Hooks
 * never modify it; one that changes the arguments passes new ones with
 * `{ args }`.
 */
export interface HookCall {
  readonly name: CallName;
  /** The procedure actually called (differs from `name` for typed procedures). */
  readonly procedure: CallName;
  readonly conn: ConnectionState;
  readonly args: unknown;
  /** The layer below the filter: virtual handles, ownership and login rules apply to the hook's own calls too. */
  readonly next: Pkcs11Calls<ConnectionState>;
  /** Cached attribute reads of objects (see object-attributes.ts for what may be cached). */
  readonly objects: ObjectAttributes;
  readonly policy: AliasPolicy;
}

/**
 * A hook's answer:
 *  - `undefined`: no opinion, the next hook (then the call) runs;
 *  - `{ ret }`: the call's result, returned to the client without calling the
 *    module (Caml Crush's "take_ret = true"; the first hook that answers
 *    wins). A refusal is `{ ret: <the call's errorRet(rv)> }` or a thrown
 *    Pkcs11Error; the layer turns a thrown one into the call's error result;
 *  - `{ args }`: continue with these arguments instead (template rewriting);
 *    later hooks and the call see the new ones.
 */
export type HookAnswer = undefined | { readonly ret: unknown } | { readonly args: unknown };

export type Hook = (call: HookCall) => MaybePromise<HookAnswer>;

/**
 * An action attached to C_FindObjects filters the handles the module found
 * (Caml Crush's FindObjects hooks edit the list of found objects): it gets
 * the handles of one C_FindObjects answer, after the label/id filter, and
 * returns those the client may see. `call.args` is the C_FindObjects_args.
 */
export type FoundFilter = (call: HookCall, found: readonly number[]) => MaybePromise<readonly number[]>;

/** What an action is compiled with: once per alias policy, at load time. */
export interface ActionContext {
  readonly action: FilterActionName;
  /** The call it is attached to in filter.conf (version 3 name). */
  readonly trigger: CallName;
  /** filter.conf `wrapping_format_key`, 16 bytes, or null. Secret: never log it. */
  readonly wrappingFormatKey: Buffer | null;
  /** True when `do_segregate_usage` is attached for this alias (sticky and conflicting rules widen). */
  readonly segregateUsage: boolean;
  /** `file:line:col` of the action in filter.conf, for refusal logs. */
  readonly where: string;
}

/**
 * One built-in action: compiled once into a hook for one trigger. `compile`
 * throws a ConfigError (with the action's position) when the action cannot
 * work with this trigger or configuration: the daemon then refuses to start.
 */
export interface ActionDefinition {
  /** Triggers the action has a meaning for; attaching it elsewhere is a configuration error. Absent: any. */
  readonly triggers?: ReadonlySet<CallName>;
  compile(ctx: ActionContext): Hook;
  /** For the C_FindObjects trigger: the handle filter; an action without one has no meaning there. */
  compileFoundFilter?(ctx: ActionContext): FoundFilter;
}
