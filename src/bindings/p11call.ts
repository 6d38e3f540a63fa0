/**
 * The native/p11call addon: single module calls where pkcs11js makes two
 * (see native/p11call/p11call.c). Optional: without the built addon the
 * backend keeps using pkcs11js for these calls.
 */
import fs from 'fs';
import { addonFile } from '../native-addons';

/** A module opened by the addon (the instance pkcs11js loaded). */
export type P11CallModule = { readonly __brand: 'P11CallModule' };

interface P11CallAddon {
  open(path: string): P11CallModule;
  /** [rv, v0, v1...]: a Buffer (value), a number (length for a length-only ask), or -1 (unavailable). */
  getAttributeValue(m: P11CallModule, session: number, object: number, types: number[], caps: number[]): Array<number | Buffer>;
}

let addon: P11CallAddon | null | undefined;

/** The addon, or null when it was not built (or PKCS11PROXYD_NO_P11CALL is set, to compare). */
export function p11call(): P11CallAddon | null {
  if (addon === undefined) {
    const file = addonFile('p11call');
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    addon = !process.env.PKCS11PROXYD_NO_P11CALL && fs.existsSync(file) ? (require(file) as P11CallAddon) : null;
  }
  return addon;
}

/** Attributes one direct call may carry; larger asks use pkcs11js. */
export const P11CALL_MAX_ATTRIBUTES = 256;
/** Bytes of attribute capacity one direct call may offer; larger asks use pkcs11js. */
export const P11CALL_MAX_BYTES = 16 << 20;
