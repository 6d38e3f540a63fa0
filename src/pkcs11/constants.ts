import * as pkcs11js from 'pkcs11js';

/**
 * PKCS#11 numbers come from pkcs11js (which mirrors the OASIS headers); the few
 * it lacks are defined here with their spec values.
 */
export const ck = pkcs11js as unknown as Record<string, number>;

export const CKR_OK = pkcs11js.CKR_OK;
export const CKR_ARGUMENTS_BAD = pkcs11js.CKR_ARGUMENTS_BAD;
export const CKR_GENERAL_ERROR = pkcs11js.CKR_GENERAL_ERROR;
export const CKR_DEVICE_ERROR = pkcs11js.CKR_DEVICE_ERROR;
export const CKR_HOST_MEMORY = pkcs11js.CKR_HOST_MEMORY;
export const CKR_BUFFER_TOO_SMALL = pkcs11js.CKR_BUFFER_TOO_SMALL;
export const CKR_SESSION_HANDLE_INVALID = pkcs11js.CKR_SESSION_HANDLE_INVALID;
export const CKR_OBJECT_HANDLE_INVALID = pkcs11js.CKR_OBJECT_HANDLE_INVALID;
export const CKR_KEY_HANDLE_INVALID = pkcs11js.CKR_KEY_HANDLE_INVALID;
export const CKR_SLOT_ID_INVALID = pkcs11js.CKR_SLOT_ID_INVALID;
export const CKR_FUNCTION_NOT_SUPPORTED = pkcs11js.CKR_FUNCTION_NOT_SUPPORTED;
export const CKR_FUNCTION_NOT_PARALLEL = pkcs11js.CKR_FUNCTION_NOT_PARALLEL;
export const CKR_CRYPTOKI_NOT_INITIALIZED = pkcs11js.CKR_CRYPTOKI_NOT_INITIALIZED;
export const CKR_CRYPTOKI_ALREADY_INITIALIZED = pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED;
export const CKR_USER_ALREADY_LOGGED_IN = pkcs11js.CKR_USER_ALREADY_LOGGED_IN;
export const CKR_USER_NOT_LOGGED_IN = pkcs11js.CKR_USER_NOT_LOGGED_IN;
export const CKR_USER_ANOTHER_ALREADY_LOGGED_IN = pkcs11js.CKR_USER_ANOTHER_ALREADY_LOGGED_IN;
export const CKR_PIN_INCORRECT = pkcs11js.CKR_PIN_INCORRECT;
export const CKR_ATTRIBUTE_SENSITIVE = pkcs11js.CKR_ATTRIBUTE_SENSITIVE;
export const CKR_ATTRIBUTE_TYPE_INVALID = pkcs11js.CKR_ATTRIBUTE_TYPE_INVALID;
export const CKR_MECHANISM_PARAM_INVALID = pkcs11js.CKR_MECHANISM_PARAM_INVALID;
export const CKR_OPERATION_NOT_INITIALIZED = pkcs11js.CKR_OPERATION_NOT_INITIALIZED;
export const CKR_TEMPLATE_INCONSISTENT = pkcs11js.CKR_TEMPLATE_INCONSISTENT;

export const CKU_SO = pkcs11js.CKU_SO;
export const CKU_USER = pkcs11js.CKU_USER;
export const CKU_CONTEXT_SPECIFIC = pkcs11js.CKU_CONTEXT_SPECIFIC;

export const CKF_RW_SESSION = pkcs11js.CKF_RW_SESSION;
export const CKF_SERIAL_SESSION = pkcs11js.CKF_SERIAL_SESSION;

/** Session states (PKCS#11 2.40 section 5.5: CK_STATE). pkcs11js does not export them. */
export const CKS_RO_PUBLIC_SESSION = 0;
export const CKS_RO_USER_FUNCTIONS = 1;
export const CKS_RW_PUBLIC_SESSION = 2;
export const CKS_RW_USER_FUNCTIONS = 3;
export const CKS_RW_SO_FUNCTIONS = 4;

export const CKA_CLASS = pkcs11js.CKA_CLASS;
export const CKA_PRIVATE = pkcs11js.CKA_PRIVATE;
export const CKA_VALUE = pkcs11js.CKA_VALUE;

/** CK_UNAVAILABLE_INFORMATION (~0UL) as it travels in an XDR hyper. */
export const CK_UNAVAILABLE_INFORMATION_WIRE = -1;

const rvNames = new Map<number, string>();
for (const [k, v] of Object.entries(pkcs11js)) {
  if (k.startsWith('CKR_') && typeof v === 'number' && !rvNames.has(v)) rvNames.set(v, k);
}

/** `CKR_*` name of a return value, or its hex form for vendor codes. */
export function rvName(rv: number): string {
  return rvNames.get(rv) ?? `0x${(rv >>> 0).toString(16).padStart(8, '0')}`;
}

const nameTables = new Map<string, Map<number, string>>();

/** Name of a constant in a family (`CKA_`, `CKM_`, ...), or its hex form. */
export function constantName(prefix: 'CKA_' | 'CKM_' | 'CKO_' | 'CKK_', value: number): string {
  let table = nameTables.get(prefix);
  if (!table) {
    table = new Map();
    for (const [k, v] of Object.entries(pkcs11js)) {
      if (k.startsWith(prefix) && typeof v === 'number' && !table.has(v)) table.set(v, k);
    }
    nameTables.set(prefix, table);
  }
  return table.get(value) ?? `0x${value.toString(16)}`;
}
