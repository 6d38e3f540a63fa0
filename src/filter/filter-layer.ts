import { Pkcs11Passthrough } from '../generated/pkcs11_rpc';
import type { Pkcs11Calls } from '../generated/pkcs11_rpc';
import type { ConnectionState } from '../server/dispatch/connection-state';

/**
 * Policy enforcement point of the stack. The filter issue compiles
 * filter.conf into immutable matchers and overrides the calls it restricts;
 * until then every call passes unchanged (the configuration is still fully
 * parsed and validated at startup, so an invalid policy refuses to start).
 */
export class FilterLayer extends Pkcs11Passthrough<ConnectionState> {
  constructor(next: Pkcs11Calls<ConnectionState>) {
    super(next);
  }
}
