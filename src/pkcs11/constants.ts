import { ck, type CkName } from '../generated/pkcs11-constants';

/**
 * PKCS#11 numbers, generated from the installed OASIS-derived header (see
 * tools/constgen). `ck` is typed: a misspelt name does not compile, and
 * nothing here loads the pkcs11js native addon.
 */
export { ck, type CkName };

export const CKR_OK = ck.CKR_OK;
export const CKR_ARGUMENTS_BAD = ck.CKR_ARGUMENTS_BAD;
export const CKR_GENERAL_ERROR = ck.CKR_GENERAL_ERROR;
export const CKR_DEVICE_ERROR = ck.CKR_DEVICE_ERROR;
export const CKR_HOST_MEMORY = ck.CKR_HOST_MEMORY;
export const CKR_BUFFER_TOO_SMALL = ck.CKR_BUFFER_TOO_SMALL;
export const CKR_SESSION_HANDLE_INVALID = ck.CKR_SESSION_HANDLE_INVALID;
export const CKR_OBJECT_HANDLE_INVALID = ck.CKR_OBJECT_HANDLE_INVALID;
export const CKR_KEY_HANDLE_INVALID = ck.CKR_KEY_HANDLE_INVALID;
export const CKR_SLOT_ID_INVALID = ck.CKR_SLOT_ID_INVALID;
export const CKR_FUNCTION_NOT_SUPPORTED = ck.CKR_FUNCTION_NOT_SUPPORTED;
export const CKR_FUNCTION_NOT_PARALLEL = ck.CKR_FUNCTION_NOT_PARALLEL;
export const CKR_CRYPTOKI_NOT_INITIALIZED = ck.CKR_CRYPTOKI_NOT_INITIALIZED;
export const CKR_CRYPTOKI_ALREADY_INITIALIZED = ck.CKR_CRYPTOKI_ALREADY_INITIALIZED;
export const CKR_USER_ALREADY_LOGGED_IN = ck.CKR_USER_ALREADY_LOGGED_IN;
export const CKR_USER_NOT_LOGGED_IN = ck.CKR_USER_NOT_LOGGED_IN;
export const CKR_USER_ANOTHER_ALREADY_LOGGED_IN = ck.CKR_USER_ANOTHER_ALREADY_LOGGED_IN;
export const CKR_PIN_INCORRECT = ck.CKR_PIN_INCORRECT;
export const CKR_ATTRIBUTE_SENSITIVE = ck.CKR_ATTRIBUTE_SENSITIVE;
export const CKR_ATTRIBUTE_TYPE_INVALID = ck.CKR_ATTRIBUTE_TYPE_INVALID;
export const CKR_MECHANISM_PARAM_INVALID = ck.CKR_MECHANISM_PARAM_INVALID;
export const CKR_OPERATION_NOT_INITIALIZED = ck.CKR_OPERATION_NOT_INITIALIZED;
export const CKR_TEMPLATE_INCONSISTENT = ck.CKR_TEMPLATE_INCONSISTENT;

export const CKU_SO = ck.CKU_SO;
export const CKU_USER = ck.CKU_USER;
export const CKU_CONTEXT_SPECIFIC = ck.CKU_CONTEXT_SPECIFIC;

export const CKF_RW_SESSION = ck.CKF_RW_SESSION;
export const CKF_SERIAL_SESSION = ck.CKF_SERIAL_SESSION;

/** Session states (PKCS#11 2.40 section 5.5: CK_STATE). */
export const CKS_RO_PUBLIC_SESSION = ck.CKS_RO_PUBLIC_SESSION;
export const CKS_RO_USER_FUNCTIONS = ck.CKS_RO_USER_FUNCTIONS;
export const CKS_RW_PUBLIC_SESSION = ck.CKS_RW_PUBLIC_SESSION;
export const CKS_RW_USER_FUNCTIONS = ck.CKS_RW_USER_FUNCTIONS;
export const CKS_RW_SO_FUNCTIONS = ck.CKS_RW_SO_FUNCTIONS;

export const CKA_CLASS = ck.CKA_CLASS;
export const CKA_PRIVATE = ck.CKA_PRIVATE;
export const CKA_VALUE = ck.CKA_VALUE;

/** CK_UNAVAILABLE_INFORMATION (~0UL) as it travels in an XDR hyper. */
export const CK_UNAVAILABLE_INFORMATION_WIRE = -1;

const rvNames = new Map<number, string>();
for (const [k, v] of Object.entries(ck)) {
  if (k.startsWith('CKR_') && !rvNames.has(v)) rvNames.set(v, k);
}

/** `CKR_*` name of a return value, or its hex form for vendor codes. */
export function rvName(rv: number): string {
  return rvNames.get(rv) ?? `0x${(rv >>> 0).toString(16).padStart(8, '0')}`;
}

const nameTables = new Map<string, Map<number, string>>();

/** The number of a CK* name, or undefined; for names read at run time (configuration files). */
export function constantByName(name: string): number | undefined {
  return Object.prototype.hasOwnProperty.call(ck, name) ? ck[name as CkName] : undefined;
}

/** Name of a constant in a family (`CKA_`, `CKM_`, ...), or its hex form. */
export function constantName(prefix: 'CKA_' | 'CKM_' | 'CKO_' | 'CKK_', value: number): string {
  let table = nameTables.get(prefix);
  if (!table) {
    table = new Map();
    for (const [k, v] of Object.entries(ck)) {
      if (k.startsWith(prefix) && !table.has(v)) table.set(v, k);
    }
    nameTables.set(prefix, table);
  }
  return table.get(value) ?? `0x${value.toString(16)}`;
}
