/**
 * The shape of each mechanism's parameter, and the one check every
 * parameter that arrives as raw bytes goes through before it reaches a
 * module.
 *
 * Caml Crush's version 3 procedures carry a mechanism as {mechanism,
 * parameter bytes}: a client copies its C struct, pointers included. A module
 * that is handed such bytes dereferences the client's pointers in the
 * daemon's memory (SIGSEGV at best). So raw bytes reach a module only when
 * the parameter is known to hold none: nothing, plain bytes (an IV, a DH
 * public value), one CK_ULONG, or a flat struct of CK_ULONGs and byte arrays
 * (converted between the client's CK_ULONG layout and the daemon's).
 * Everything else answers CKR_MECHANISM_PARAM_INVALID: structs with pointers
 * travel only in the typed procedures (73..84), and an unknown (vendor)
 * mechanism's bytes pass only when the configuration declares them plain
 * (`plain_parameter_mechanisms`). An empty parameter is passed for every
 * mechanism: it carries no bytes to misread.
 */
import { type ArchLayout, NATIVE_ARCH, readULong, writeULong } from './arch';
import { CKR_MECHANISM_PARAM_INVALID, type CkName, ck } from './constants';
import { Pkcs11Error } from './errors';

/** One member of a flat struct: a CK_ULONG, or a byte array of that many bytes. */
export type FlatField = 'ulong' | number;

export type MechanismShape =
  /** Takes no parameter: only an empty one is accepted. */
  | { readonly kind: 'none' }
  /** Plain bytes; `sizes` lists the accepted lengths (absent: any length). */
  | { readonly kind: 'bytes'; readonly sizes?: readonly number[] }
  /** One CK_ULONG (CK_MAC_GENERAL_PARAMS, CK_EXTRACT_PARAMS). */
  | { readonly kind: 'ulong' }
  /** A struct of CK_ULONGs and byte arrays, no pointers, no padding on the ABIs of arch.ts. */
  | { readonly kind: 'flat'; readonly struct: string; readonly fields: readonly FlatField[] }
  /**
   * Refused as raw bytes: the struct holds pointers, or a handle the daemon
   * would have to translate (`struct` names it in the log).
   */
  | { readonly kind: 'refused'; readonly struct: string };

const NONE: MechanismShape = { kind: 'none' };
const ULONG: MechanismShape = { kind: 'ulong' };
const bytes = (...sizes: number[]): MechanismShape => (sizes.length > 0 ? { kind: 'bytes', sizes } : { kind: 'bytes' });
const flat = (struct: string, ...fields: FlatField[]): MechanismShape => ({ kind: 'flat', struct, fields });
const refused = (struct: string): MechanismShape => ({ kind: 'refused', struct });

/** The shapes, by mechanism name (PKCS#11 2.40 part 2 / 3.0 "current mechanisms"). */
const SHAPES: ReadonlyArray<readonly [readonly CkName[], MechanismShape]> = [
  [
    [
      'CKM_RSA_PKCS_KEY_PAIR_GEN', 'CKM_RSA_X9_31_KEY_PAIR_GEN', 'CKM_RSA_PKCS', 'CKM_RSA_X_509', 'CKM_RSA_9796',
      'CKM_MD5_RSA_PKCS', 'CKM_SHA1_RSA_PKCS', 'CKM_SHA224_RSA_PKCS', 'CKM_SHA256_RSA_PKCS', 'CKM_SHA384_RSA_PKCS',
      'CKM_SHA512_RSA_PKCS', 'CKM_RSA_X9_31', 'CKM_SHA1_RSA_X9_31',
      'CKM_DSA_KEY_PAIR_GEN', 'CKM_DSA_PARAMETER_GEN', 'CKM_DSA', 'CKM_DSA_SHA1', 'CKM_DSA_SHA224', 'CKM_DSA_SHA256',
      'CKM_DSA_SHA384', 'CKM_DSA_SHA512',
      'CKM_EC_KEY_PAIR_GEN', 'CKM_ECDSA', 'CKM_ECDSA_SHA1', 'CKM_ECDSA_SHA224', 'CKM_ECDSA_SHA256', 'CKM_ECDSA_SHA384',
      'CKM_ECDSA_SHA512', 'CKM_EC_EDWARDS_KEY_PAIR_GEN',
      'CKM_DH_PKCS_KEY_PAIR_GEN', 'CKM_DH_PKCS_PARAMETER_GEN', 'CKM_X9_42_DH_KEY_PAIR_GEN', 'CKM_X9_42_DH_PARAMETER_GEN',
      'CKM_MD5', 'CKM_SHA_1', 'CKM_SHA224', 'CKM_SHA256', 'CKM_SHA384', 'CKM_SHA512', 'CKM_SHA512_224', 'CKM_SHA512_256',
      'CKM_MD5_HMAC', 'CKM_SHA_1_HMAC', 'CKM_SHA224_HMAC', 'CKM_SHA256_HMAC', 'CKM_SHA384_HMAC', 'CKM_SHA512_HMAC',
      'CKM_SHA512_224_HMAC', 'CKM_SHA512_256_HMAC',
      'CKM_MD5_KEY_DERIVATION', 'CKM_SHA1_KEY_DERIVATION', 'CKM_SHA224_KEY_DERIVATION', 'CKM_SHA256_KEY_DERIVATION',
      'CKM_SHA384_KEY_DERIVATION', 'CKM_SHA512_KEY_DERIVATION',
      'CKM_GENERIC_SECRET_KEY_GEN', 'CKM_AES_KEY_GEN', 'CKM_DES_KEY_GEN', 'CKM_DES2_KEY_GEN', 'CKM_DES3_KEY_GEN',
      'CKM_RC4_KEY_GEN', 'CKM_RC4',
      'CKM_AES_ECB', 'CKM_AES_MAC', 'CKM_AES_CMAC', 'CKM_AES_XCBC_MAC', 'CKM_AES_XCBC_MAC_96',
      'CKM_DES_ECB', 'CKM_DES_MAC', 'CKM_DES3_ECB', 'CKM_DES3_MAC', 'CKM_DES3_CMAC',
    ],
    NONE,
  ],
  // An IV of the cipher's block size.
  [['CKM_AES_CBC', 'CKM_AES_CBC_PAD', 'CKM_AES_OFB', 'CKM_AES_CFB128', 'CKM_AES_CFB8', 'CKM_AES_CTS'], bytes(16)],
  [['CKM_DES_CBC', 'CKM_DES_CBC_PAD', 'CKM_DES3_CBC', 'CKM_DES3_CBC_PAD', 'CKM_AES_CFB64'], bytes(8)],
  // RFC 3394 / 5649 key wrap: an optional initial value (absent: the default).
  [['CKM_AES_KEY_WRAP'], bytes(0, 8)],
  [['CKM_AES_KEY_WRAP_PAD'], bytes(0, 4)],
  // The other party's public value.
  [['CKM_DH_PKCS_DERIVE'], bytes()],
  [
    [
      'CKM_MD5_HMAC_GENERAL', 'CKM_SHA_1_HMAC_GENERAL', 'CKM_SHA224_HMAC_GENERAL', 'CKM_SHA256_HMAC_GENERAL',
      'CKM_SHA384_HMAC_GENERAL', 'CKM_SHA512_HMAC_GENERAL', 'CKM_SHA512_224_HMAC_GENERAL', 'CKM_SHA512_256_HMAC_GENERAL',
      'CKM_AES_MAC_GENERAL', 'CKM_AES_CMAC_GENERAL', 'CKM_DES_MAC_GENERAL', 'CKM_DES3_MAC_GENERAL', 'CKM_DES3_CMAC_GENERAL',
      'CKM_EXTRACT_KEY_FROM_KEY',
    ],
    ULONG,
  ],
  [
    [
      'CKM_RSA_PKCS_PSS', 'CKM_SHA1_RSA_PKCS_PSS', 'CKM_SHA224_RSA_PKCS_PSS', 'CKM_SHA256_RSA_PKCS_PSS',
      'CKM_SHA384_RSA_PKCS_PSS', 'CKM_SHA512_RSA_PKCS_PSS',
    ],
    flat('CK_RSA_PKCS_PSS_PARAMS', 'ulong', 'ulong', 'ulong'),
  ],
  [['CKM_AES_CTR'], flat('CK_AES_CTR_PARAMS', 'ulong', 16)],
  [['CKM_RSA_PKCS_OAEP'], refused('CK_RSA_PKCS_OAEP_PARAMS')],
  [['CKM_RSA_AES_KEY_WRAP'], refused('CK_RSA_AES_KEY_WRAP_PARAMS')],
  [['CKM_AES_GCM'], refused('CK_GCM_PARAMS')],
  [['CKM_AES_CCM'], refused('CK_CCM_PARAMS')],
  [['CKM_ECDH1_DERIVE', 'CKM_ECDH1_COFACTOR_DERIVE'], refused('CK_ECDH1_DERIVE_PARAMS')],
  [['CKM_ECMQV_DERIVE'], refused('CK_ECMQV_DERIVE_PARAMS')],
  [['CKM_X9_42_DH_DERIVE'], refused('CK_X9_42_DH1_DERIVE_PARAMS')],
  [['CKM_X9_42_DH_HYBRID_DERIVE', 'CKM_X9_42_MQV_DERIVE'], refused('CK_X9_42_DH2_DERIVE_PARAMS')],
  [['CKM_EDDSA'], refused('CK_EDDSA_PARAMS')],
  [
    [
      'CKM_CONCATENATE_BASE_AND_DATA', 'CKM_CONCATENATE_DATA_AND_BASE', 'CKM_XOR_BASE_AND_DATA',
      'CKM_AES_ECB_ENCRYPT_DATA', 'CKM_DES_ECB_ENCRYPT_DATA', 'CKM_DES3_ECB_ENCRYPT_DATA',
    ],
    refused('CK_KEY_DERIVATION_STRING_DATA'),
  ],
  [['CKM_AES_CBC_ENCRYPT_DATA'], refused('CK_AES_CBC_ENCRYPT_DATA_PARAMS')],
  [['CKM_DES_CBC_ENCRYPT_DATA', 'CKM_DES3_CBC_ENCRYPT_DATA'], refused('CK_DES_CBC_ENCRYPT_DATA_PARAMS')],
  // A CK_OBJECT_HANDLE: the client's handle is virtual, the module's is not.
  [['CKM_CONCATENATE_BASE_AND_KEY'], refused('CK_OBJECT_HANDLE')],
  [['CKM_PKCS5_PBKD2'], refused('CK_PKCS5_PBKD2_PARAMS')],
  [['CKM_KEY_WRAP_SET_OAEP'], refused('CK_KEY_WRAP_SET_OAEP_PARAMS')],
  [['CKM_ECDH_AES_KEY_WRAP'], refused('CK_ECDH_AES_KEY_WRAP_PARAMS')],
  [
    [
      'CKM_SSL3_PRE_MASTER_KEY_GEN', 'CKM_SSL3_MASTER_KEY_DERIVE', 'CKM_SSL3_KEY_AND_MAC_DERIVE',
      'CKM_SSL3_MASTER_KEY_DERIVE_DH', 'CKM_TLS_MASTER_KEY_DERIVE', 'CKM_TLS_KEY_AND_MAC_DERIVE',
      'CKM_TLS_MASTER_KEY_DERIVE_DH', 'CKM_TLS_PRF', 'CKM_WTLS_MASTER_KEY_DERIVE', 'CKM_WTLS_PRF',
    ],
    refused('SSL/TLS parameters'),
  ],
];

/** Mechanisms of PKCS#11 3.0 the 2.40 header lacks, by number (their parameters hold pointers). */
const REFUSED_3_0: ReadonlyArray<readonly [number, string]> = [
  [0x4021, 'CK_SALSA20_CHACHA20_POLY1305_PARAMS'], // CKM_CHACHA20_POLY1305
  [0x4006, 'CK_SALSA20_CHACHA20_POLY1305_PARAMS'], // CKM_SALSA20_POLY1305
  [0x402a, 'CK_HKDF_PARAMS'], // CKM_HKDF_DERIVE
  [0x402b, 'CK_HKDF_PARAMS'], // CKM_HKDF_DATA
];

export const MECHANISM_SHAPES: ReadonlyMap<number, MechanismShape> = (() => {
  const m = new Map<number, MechanismShape>();
  for (const [names, shape] of SHAPES) {
    for (const n of names) {
      if (m.has(ck[n])) throw new Error(`mechanism-shapes: ${n} listed twice`);
      m.set(ck[n], shape);
    }
  }
  for (const [v, struct] of REFUSED_3_0) m.set(v, refused(struct));
  return m;
})();

const PLAIN: MechanismShape = bytes();

/** Mechanisms the configuration declares plain bytes (`plain_parameter_mechanisms`); one set per process. */
let declaredPlain: ReadonlySet<number> = new Set();

/**
 * Declares mechanisms (vendor ones, typically) whose parameter is plain bytes.
 * A mechanism the table knows keeps its shape: the declaration is for the
 * unknown only (the configuration loader refuses known ones).
 */
export function declarePlainParameterMechanisms(mechs: Iterable<number>): void {
  declaredPlain = new Set(mechs);
}

/** The shape of `mech`'s parameter, or undefined when neither the table nor the configuration knows it. */
export function mechanismShape(mech: number): MechanismShape | undefined {
  return MECHANISM_SHAPES.get(mech) ?? (declaredPlain.has(mech) ? PLAIN : undefined);
}

function flatSize(fields: readonly FlatField[], a: ArchLayout): number {
  let n = 0;
  for (const f of fields) n += f === 'ulong' ? a.ulongSize : f;
  return n;
}

function sameLayout(a: ArchLayout, b: ArchLayout): boolean {
  return a.ulongSize === b.ulongSize && a.littleEndian === b.littleEndian;
}

function reencode(fields: readonly FlatField[], param: Buffer, from: ArchLayout, to: ArchLayout): Buffer {
  const out = Buffer.alloc(flatSize(fields, to));
  let i = 0;
  let o = 0;
  for (const f of fields) {
    if (f === 'ulong') {
      writeULong(out, o, readULong(param, i, from), to);
      i += from.ulongSize;
      o += to.ulongSize;
    } else {
      param.copy(out, o, i, i + f);
      i += f;
      o += f;
    }
  }
  return out;
}

const invalid = (): never => {
  throw new Pkcs11Error(CKR_MECHANISM_PARAM_INVALID);
};

/**
 * The bytes to hand the module for a raw parameter of `mech` that arrived in
 * layout `from`: checked against the shape and re-encoded in the daemon's
 * layout. Throws Pkcs11Error(CKR_MECHANISM_PARAM_INVALID) for a parameter
 * that holds pointers, has the wrong length, or belongs to an unknown
 * mechanism not declared plain.
 */
export function checkRawParameter(mech: number, param: Buffer, from: ArchLayout = NATIVE_ARCH): Buffer {
  if (param.length === 0) return param;
  const shape = mechanismShape(mech);
  if (shape === undefined) return invalid();
  switch (shape.kind) {
    case 'none':
    case 'refused':
      return invalid();
    case 'bytes':
      if (shape.sizes !== undefined && !shape.sizes.includes(param.length)) return invalid();
      return param;
    case 'ulong':
      if (param.length !== from.ulongSize) return invalid();
      return sameLayout(from, NATIVE_ARCH) ? param : reencode(['ulong'], param, from, NATIVE_ARCH);
    case 'flat':
      if (param.length !== flatSize(shape.fields, from)) return invalid();
      return sameLayout(from, NATIVE_ARCH) ? param : reencode(shape.fields, param, from, NATIVE_ARCH);
  }
}

/**
 * Converts a raw parameter between layouts when its shape is a CK_ULONG or a
 * flat struct of the expected size in `from`; anything else is returned
 * unchanged, for checkRawParameter to judge in the daemon's layout.
 */
export function convertMechanismParameter(mech: number, param: Buffer, from: ArchLayout, to: ArchLayout): Buffer {
  if (sameLayout(from, to)) return param;
  const shape = MECHANISM_SHAPES.get(mech);
  if (shape === undefined || (shape.kind !== 'ulong' && shape.kind !== 'flat')) return param;
  const fields = shape.kind === 'ulong' ? (['ulong'] as const) : shape.fields;
  if (param.length !== flatSize(fields, from)) return invalid();
  return reencode(fields, param, from, to);
}
