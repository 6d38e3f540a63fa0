/**
 * Spec names of PKCS#11 numbers, for logs (`-debug-pkcs11`): CKM_, CKA_,
 * CKR_, CKO_, CKK_, CKC_, CKU_, CKS_ values and CKF_ bit sets. Names come
 * from the generated constants; where a value has several names (2.20
 * aliases) the first in constant order is used. Unknown values print as hex.
 */
import { ck, type CkName } from '../generated/pkcs11-constants';

export type NamePrefix = 'CKA_' | 'CKM_' | 'CKR_' | 'CKO_' | 'CKK_' | 'CKC_' | 'CKU_' | 'CKS_';

const tables = new Map<string, Map<number, string>>();

function hex(v: number): string {
  return v < 0 ? String(v) : `0x${v.toString(16)}`;
}

/** The name of `value` in a family, or its hex form. */
export function nameOf(prefix: NamePrefix, value: number): string {
  let t = tables.get(prefix);
  if (t === undefined) {
    t = new Map();
    for (const [k, v] of Object.entries(ck)) {
      // *_VENDOR_DEFINED is a range start, not a name of that value's meaning.
      if (k.startsWith(prefix) && !k.endsWith('_VENDOR_DEFINED') && !t.has(v)) t.set(v, k);
    }
    tables.set(prefix, t);
  }
  return t.get(value) ?? hex(value);
}

/**
 * CKF_ bits mean different things in different structs (0x1 is
 * CKF_TOKEN_PRESENT in a slot, CKF_RNG in a token, CKF_HW in a mechanism),
 * so each flags field has its family.
 */
export const FLAG_FAMILIES = {
  session: ['CKF_RW_SESSION', 'CKF_SERIAL_SESSION'],
  slot: ['CKF_TOKEN_PRESENT', 'CKF_REMOVABLE_DEVICE', 'CKF_HW_SLOT'],
  token: [
    'CKF_RNG', 'CKF_WRITE_PROTECTED', 'CKF_LOGIN_REQUIRED', 'CKF_USER_PIN_INITIALIZED', 'CKF_RESTORE_KEY_NOT_NEEDED',
    'CKF_CLOCK_ON_TOKEN', 'CKF_PROTECTED_AUTHENTICATION_PATH', 'CKF_DUAL_CRYPTO_OPERATIONS', 'CKF_TOKEN_INITIALIZED',
    'CKF_SECONDARY_AUTHENTICATION', 'CKF_USER_PIN_COUNT_LOW', 'CKF_USER_PIN_FINAL_TRY', 'CKF_USER_PIN_LOCKED',
    'CKF_USER_PIN_TO_BE_CHANGED', 'CKF_SO_PIN_COUNT_LOW', 'CKF_SO_PIN_FINAL_TRY', 'CKF_SO_PIN_LOCKED',
    'CKF_SO_PIN_TO_BE_CHANGED', 'CKF_ERROR_STATE',
  ],
  mechanism: [
    'CKF_HW', 'CKF_ENCRYPT', 'CKF_DECRYPT', 'CKF_DIGEST', 'CKF_SIGN', 'CKF_SIGN_RECOVER', 'CKF_VERIFY',
    'CKF_VERIFY_RECOVER', 'CKF_GENERATE', 'CKF_GENERATE_KEY_PAIR', 'CKF_WRAP', 'CKF_UNWRAP', 'CKF_DERIVE',
    'CKF_EC_F_P', 'CKF_EC_F_2M', 'CKF_EC_ECPARAMETERS', 'CKF_EC_NAMEDCURVE', 'CKF_EC_UNCOMPRESS', 'CKF_EC_COMPRESS',
    'CKF_EXTENSION',
  ],
  initialize: ['CKF_LIBRARY_CANT_CREATE_OS_THREADS', 'CKF_OS_LOCKING_OK'],
  waitForSlotEvent: ['CKF_DONT_BLOCK'],
} as const satisfies Record<string, readonly CkName[]>;

export type FlagFamily = keyof typeof FLAG_FAMILIES;

/** `CKF_A|CKF_B`, unknown bits as one hex term, `0` for none. */
export function flagsOf(family: FlagFamily, value: number): string {
  if (value === 0) return '0';
  const out: string[] = [];
  let rest = value < 0 ? 0 : value;
  for (const name of FLAG_FAMILIES[family]) {
    const bit = ck[name];
    // CK_FLAGS are up to 64 bits; JS bit operators cut to 32, so test with arithmetic.
    if (Math.floor(rest / bit) % 2 === 1) {
      out.push(name);
      rest -= bit;
    }
  }
  if (rest !== 0 || value < 0) out.push(hex(value < 0 ? value : rest));
  return out.join('|');
}
