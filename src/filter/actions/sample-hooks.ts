/**
 * The sample hooks of Caml Crush's filter_actions.ml, with the same effect on
 * calls. Caml Crush prints a line for each at debug level 1 (c_Login_hook
 * prints the PIN); these print nothing: a refusal is logged by the filter
 * layer with the action's position, and a PIN is never logged.
 */
import type { C_Login_args, CallName } from '../../generated/pkcs11_rpc';
import { ck } from '../../pkcs11/constants';
import type { ActionDefinition } from '../hooks';
import { refusal } from './attributes';

/** Hooks any call and lets it go on. */
export const identity: ActionDefinition = {
  compile: () => () => undefined,
};

/** Meant for C_Initialize; lets the call go on. */
export const cInitializeHook: ActionDefinition = {
  compile: () => () => undefined,
};

/** The only PIN c_Login_hook lets through. */
const SAMPLE_PIN = Buffer.from('1234');

/** C_Login goes on with PIN "1234"; any other PIN is answered CKR_PIN_LOCKED without reaching the token. */
export const cLoginHook: ActionDefinition = {
  triggers: new Set<CallName>(['C_Login']),
  compile: () => (call) => ((call.args as C_Login_args).pin.equals(SAMPLE_PIN) ? undefined : refusal(call, ck.CKR_PIN_LOCKED)),
};
