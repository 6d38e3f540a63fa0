/**
 * Parsec response status codes (parsec-interface requests::ResponseStatus)
 * and the one table that maps each to the CK_RV the backend answers.
 */
import { ck } from '../../pkcs11/constants';

interface StatusEntry {
  readonly name: string;
  readonly rv: number;
}

/**
 * Service-side faults (a protocol or configuration mismatch, the key store)
 * are CKR_DEVICE_ERROR: the backend is unusable as configured, the signal a
 * pool fails over on. PSA errors map to their PKCS#11 meaning.
 */
const TABLE: ReadonlyMap<number, StatusEntry> = new Map<number, StatusEntry>([
  [0, { name: 'Success', rv: ck.CKR_OK }],
  [1, { name: 'WrongProviderId', rv: ck.CKR_SLOT_ID_INVALID }],
  [2, { name: 'ContentTypeNotSupported', rv: ck.CKR_DEVICE_ERROR }],
  [3, { name: 'AcceptTypeNotSupported', rv: ck.CKR_DEVICE_ERROR }],
  [4, { name: 'WireProtocolVersionNotSupported', rv: ck.CKR_DEVICE_ERROR }],
  [5, { name: 'ProviderNotRegistered', rv: ck.CKR_SLOT_ID_INVALID }],
  [6, { name: 'ProviderDoesNotExist', rv: ck.CKR_SLOT_ID_INVALID }],
  [7, { name: 'DeserializingBodyFailed', rv: ck.CKR_DEVICE_ERROR }],
  [8, { name: 'SerializingBodyFailed', rv: ck.CKR_DEVICE_ERROR }],
  [9, { name: 'OpcodeDoesNotExist', rv: ck.CKR_FUNCTION_NOT_SUPPORTED }],
  [10, { name: 'ResponseTooLarge', rv: ck.CKR_DEVICE_MEMORY }],
  [11, { name: 'AuthenticationError', rv: ck.CKR_DEVICE_ERROR }],
  [12, { name: 'AuthenticatorDoesNotExist', rv: ck.CKR_DEVICE_ERROR }],
  [13, { name: 'AuthenticatorNotRegistered', rv: ck.CKR_DEVICE_ERROR }],
  [14, { name: 'KeyInfoManagerError', rv: ck.CKR_DEVICE_ERROR }],
  [15, { name: 'ConnectionError', rv: ck.CKR_DEVICE_ERROR }],
  [16, { name: 'InvalidEncoding', rv: ck.CKR_DEVICE_ERROR }],
  [17, { name: 'InvalidHeader', rv: ck.CKR_DEVICE_ERROR }],
  [18, { name: 'WrongProviderUuid', rv: ck.CKR_SLOT_ID_INVALID }],
  [19, { name: 'NotAuthenticated', rv: ck.CKR_DEVICE_ERROR }],
  [20, { name: 'BodySizeExceedsLimit', rv: ck.CKR_DATA_LEN_RANGE }],
  [21, { name: 'AdminOperation', rv: ck.CKR_FUNCTION_NOT_SUPPORTED }],
  [22, { name: 'DeprecatedPrimitive', rv: ck.CKR_MECHANISM_INVALID }],
  [1132, { name: 'PsaErrorGenericError', rv: ck.CKR_FUNCTION_FAILED }],
  [1133, { name: 'PsaErrorNotPermitted', rv: ck.CKR_KEY_FUNCTION_NOT_PERMITTED }],
  [1134, { name: 'PsaErrorNotSupported', rv: ck.CKR_MECHANISM_INVALID }],
  [1135, { name: 'PsaErrorInvalidArgument', rv: ck.CKR_ARGUMENTS_BAD }],
  [1136, { name: 'PsaErrorInvalidHandle', rv: ck.CKR_OBJECT_HANDLE_INVALID }],
  [1137, { name: 'PsaErrorBadState', rv: ck.CKR_FUNCTION_FAILED }],
  [1138, { name: 'PsaErrorBufferTooSmall', rv: ck.CKR_BUFFER_TOO_SMALL }],
  [1139, { name: 'PsaErrorAlreadyExists', rv: ck.CKR_ATTRIBUTE_VALUE_INVALID }],
  [1140, { name: 'PsaErrorDoesNotExist', rv: ck.CKR_OBJECT_HANDLE_INVALID }],
  [1141, { name: 'PsaErrorInsufficientMemory', rv: ck.CKR_HOST_MEMORY }],
  [1142, { name: 'PsaErrorInsufficientStorage', rv: ck.CKR_DEVICE_MEMORY }],
  [1143, { name: 'PsaErrorInsufficientData', rv: ck.CKR_FUNCTION_FAILED }],
  [1145, { name: 'PsaErrorCommunicationFailure', rv: ck.CKR_DEVICE_ERROR }],
  [1146, { name: 'PsaErrorStorageFailure', rv: ck.CKR_DEVICE_ERROR }],
  [1147, { name: 'PsaErrorHardwareFailure', rv: ck.CKR_DEVICE_ERROR }],
  [1148, { name: 'PsaErrorInsufficientEntropy', rv: ck.CKR_RANDOM_NO_RNG }],
  [1149, { name: 'PsaErrorInvalidSignature', rv: ck.CKR_SIGNATURE_INVALID }],
  [1150, { name: 'PsaErrorInvalidPadding', rv: ck.CKR_ENCRYPTED_DATA_INVALID }],
  [1151, { name: 'PsaErrorCorruptionDetected', rv: ck.CKR_DEVICE_ERROR }],
  [1152, { name: 'PsaErrorDataCorrupt', rv: ck.CKR_DEVICE_ERROR }],
  [1153, { name: 'PsaErrorDataInvalid', rv: ck.CKR_DEVICE_ERROR }],
]);

export const PARSEC_SUCCESS = 0;
export const PARSEC_PSA_DOES_NOT_EXIST = 1140;
export const PARSEC_PSA_ALREADY_EXISTS = 1139;

/** Name of a status code, `status N` for one the table lacks. */
export function statusName(status: number): string {
  return TABLE.get(status)?.name ?? `status ${status}`;
}

/** CK_RV of a status code; one the table lacks is CKR_DEVICE_ERROR (fail closed). */
export function statusRv(status: number): number {
  return TABLE.get(status)?.rv ?? ck.CKR_DEVICE_ERROR;
}

/** Every status code of the table, for tests and docs. */
export function statusTable(): ReadonlyArray<readonly [number, string, number]> {
  return [...TABLE].map(([s, e]) => [s, e.name, e.rv] as const);
}
