/**
 * The native/p11call addon: single module calls where pkcs11js makes two
 * (see native/p11call/p11call.c). Optional: without the built addon the
 * backend keeps using pkcs11js for these calls.
 */
import fs from 'fs';
import { addonFile } from '../native-addons';

/** A module opened by the addon (the instance pkcs11js loaded). */
export type P11CallModule = { readonly __brand: 'P11CallModule' };

/** `which` of P11CallAddon.init (native/p11call/p11call.c INIT_*). */
export const P11CALL_INIT = { C_SignInit: 0, C_VerifyInit: 1, C_EncryptInit: 2, C_DecryptInit: 3, C_DigestInit: 4 } as const;
/** `which` of P11CallAddon.data (DATA_*). */
export const P11CALL_DATA = { C_Sign: 0, C_Encrypt: 1, C_Decrypt: 2, C_Digest: 3 } as const;

/**
 * Each call is one synchronous module call and answers its CK_RV; results go
 * into the caller's Float64Array (CK_ULONGs that are not safe integers as -1).
 */
export interface P11CallAddon {
  open(path: string): P11CallModule;
  /**
   * spec[2i], spec[2i+1]: attribute i's type and capacity (-1: length only), for i < n. The values go
   * into `out` one after another (each at the sum of the capacities before it; out zeroed over them
   * first); spec[2i+1] comes back as the ulValueLen, -1 for unavailable or above the capacity.
   */
  getAttributeValueInto(m: P11CallModule, session: number, object: number, spec: Float64Array, n: number, out: Buffer): number;
  /** out[0..3]: slotID, state, flags, ulDeviceError. */
  getSessionInfo(m: P11CallModule, session: number, out: Float64Array): number;
  /** values[i]: attribute i's value in module layout; at most P11CALL_MAX_FIND_ATTRIBUTES. */
  findObjectsInit(m: P11CallModule, session: number, types: number[], values: Buffer[]): number;
  /** out[0]: count, out[1..count]: handles; max < out.length. */
  findObjects(m: P11CallModule, session: number, max: number, out: Float64Array): number;
  findObjectsFinal(m: P11CallModule, session: number): number;
  init(m: P11CallModule, which: number, session: number, mechanism: number, parameter: Buffer | null, key: number): number;
  /** out[0]: bytes written to `output`, or needed on CKR_BUFFER_TOO_SMALL. */
  data(m: P11CallModule, which: number, session: number, input: Buffer, output: Buffer, out: Float64Array): number;
  verify(m: P11CallModule, session: number, data: Buffer, signature: Buffer): number;
  /** out[0]: the calling thread's CPU time (µs), out[1]: its voluntary context switches; -1 if unknown. */
  threadUsage(out: Float64Array): void;
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
/** Attributes of a C_FindObjectsInit template the direct call carries; larger ones use pkcs11js. */
export const P11CALL_MAX_FIND_ATTRIBUTES = 64;
/** Handles one direct C_FindObjects returns at most; larger asks use pkcs11js. */
export const P11CALL_MAX_FIND_OBJECTS = 4096;
/** Bytes of attribute capacity one direct call may offer; larger asks use pkcs11js. */
export const P11CALL_MAX_BYTES = 16 << 20;

/** The addon's thread clock for the call cost model, or null without the addon (or with one built before it). */
export function threadClock(): ((out: Float64Array) => void) | null {
  const a = p11call();
  return a !== null && typeof a.threadUsage === 'function' ? (out) => a.threadUsage(out) : null;
}
