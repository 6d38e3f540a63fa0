/**
 * PKCS#11 mechanisms <-> PSA algorithms (docs/parsec.md has the table).
 * A PSA key carries one permitted algorithm (its policy), possibly with a
 * wildcard hash; every mechanism is checked against it before a request is
 * sent, so a mechanism the key cannot serve answers a precise CK_RV.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import type {
  Algorithm,
  AlgorithmSchema,
  Algorithm_AsymmetricEncryptionSchema,
  Algorithm_AsymmetricSignatureSchema,
} from '../../generated/parsec/psa_algorithm_pb';
import { ck } from '../../pkcs11/constants';
import { Pkcs11Error } from '../../pkcs11/errors';
import { DIGEST_INFO_PREFIX } from './der';

export type AlgorithmInit = MessageInitShape<typeof AlgorithmSchema>;
export type SignatureInit = MessageInitShape<typeof Algorithm_AsymmetricSignatureSchema>;
export type EncryptionInit = MessageInitShape<typeof Algorithm_AsymmetricEncryptionSchema>;

export interface HashInfo {
  /** node:crypto name */
  readonly name: string;
  /** CKM_SHA* digest mechanism */
  readonly ckm: number;
  /** psa_algorithm.Algorithm.Hash */
  readonly psa: number;
  /** CKG_MGF1_* */
  readonly mgf: number;
  readonly length: number;
}

export const HASHES: readonly HashInfo[] = [
  { name: 'sha1', ckm: ck.CKM_SHA_1, psa: 5, mgf: ck.CKG_MGF1_SHA1, length: 20 },
  { name: 'sha224', ckm: ck.CKM_SHA224, psa: 6, mgf: ck.CKG_MGF1_SHA224, length: 28 },
  { name: 'sha256', ckm: ck.CKM_SHA256, psa: 7, mgf: ck.CKG_MGF1_SHA256, length: 32 },
  { name: 'sha384', ckm: ck.CKM_SHA384, psa: 8, mgf: ck.CKG_MGF1_SHA384, length: 48 },
  { name: 'sha512', ckm: ck.CKM_SHA512, psa: 9, mgf: ck.CKG_MGF1_SHA512, length: 64 },
];
export const hashByCkm = (m: number): HashInfo | undefined => HASHES.find((h) => h.ckm === m);
export const hashByPsa = (p: number): HashInfo | undefined => HASHES.find((h) => h.psa === p);
export const hashByName = (n: string): HashInfo => HASHES.find((h) => h.name === n) as HashInfo;
/** The SHA-2/SHA-1 hash of a digest length: what a raw CKM_ECDSA input is taken to be under a wildcard policy. */
export const hashByLength = (n: number): HashInfo | undefined => HASHES.find((h) => h.length === n);

/** Digest mechanisms the backend offers (through PsaHashCompute or in the daemon). */
export const DIGEST_MECHANISMS: readonly number[] = [ck.CKM_SHA256, ck.CKM_SHA384, ck.CKM_SHA512];

export type SignFamily = 'ecdsa' | 'pkcs1' | 'pss';

/** A signature mechanism: its PSA family, the key type, and the hash the daemon computes first (null: the input is the hash). */
export interface SignMechanism {
  readonly family: SignFamily;
  readonly keyType: number;
  readonly prehash: HashInfo | null;
}

const H = hashByName;
export const SIGN_MECHANISMS: ReadonlyMap<number, SignMechanism> = new Map<number, SignMechanism>([
  [ck.CKM_ECDSA, { family: 'ecdsa', keyType: ck.CKK_EC, prehash: null }],
  [ck.CKM_ECDSA_SHA256, { family: 'ecdsa', keyType: ck.CKK_EC, prehash: H('sha256') }],
  [ck.CKM_ECDSA_SHA384, { family: 'ecdsa', keyType: ck.CKK_EC, prehash: H('sha384') }],
  [ck.CKM_ECDSA_SHA512, { family: 'ecdsa', keyType: ck.CKK_EC, prehash: H('sha512') }],
  [ck.CKM_RSA_PKCS, { family: 'pkcs1', keyType: ck.CKK_RSA, prehash: null }],
  [ck.CKM_SHA256_RSA_PKCS, { family: 'pkcs1', keyType: ck.CKK_RSA, prehash: H('sha256') }],
  [ck.CKM_SHA384_RSA_PKCS, { family: 'pkcs1', keyType: ck.CKK_RSA, prehash: H('sha384') }],
  [ck.CKM_SHA512_RSA_PKCS, { family: 'pkcs1', keyType: ck.CKK_RSA, prehash: H('sha512') }],
  [ck.CKM_RSA_PKCS_PSS, { family: 'pss', keyType: ck.CKK_RSA, prehash: null }],
  [ck.CKM_SHA256_RSA_PKCS_PSS, { family: 'pss', keyType: ck.CKK_RSA, prehash: H('sha256') }],
  [ck.CKM_SHA384_RSA_PKCS_PSS, { family: 'pss', keyType: ck.CKK_RSA, prehash: H('sha384') }],
  [ck.CKM_SHA512_RSA_PKCS_PSS, { family: 'pss', keyType: ck.CKK_RSA, prehash: H('sha512') }],
]);

export const ENCRYPT_MECHANISMS: readonly number[] = [ck.CKM_RSA_PKCS, ck.CKM_RSA_PKCS_OAEP];

/** CK_RSA_PKCS_PSS_PARAMS / CK_RSA_PKCS_OAEP_PARAMS as decoded from the call. */
export interface PssParams {
  readonly hashAlg: number;
  readonly mgf: number;
  readonly sLen: number;
}
export interface OaepParams {
  readonly hashAlg: number;
  readonly mgf: number;
  readonly source: number;
  readonly sourceData: Buffer;
}

/**
 * PSA's RSA-PSS (PSA_ALG_RSA_PSS) uses MGF1 with the message hash and a salt
 * as long as the hash. Anything else cannot be expressed:
 * CKR_MECHANISM_PARAM_INVALID. A hashing mechanism's parameter must name its
 * own hash.
 */
export function pssHash(m: SignMechanism, p: PssParams | null): HashInfo {
  if (p === null) throw new Pkcs11Error(ck.CKR_MECHANISM_PARAM_INVALID);
  const h = hashByCkm(p.hashAlg);
  if (h === undefined || (m.prehash !== null && m.prehash !== h) || p.mgf !== h.mgf || p.sLen !== h.length) {
    throw new Pkcs11Error(ck.CKR_MECHANISM_PARAM_INVALID);
  }
  return h;
}

/** PSA's RSA-OAEP uses MGF1 with the label hash; a label is carried as the request's salt. */
export function oaepHash(p: OaepParams | null): HashInfo {
  if (p === null) throw new Pkcs11Error(ck.CKR_MECHANISM_PARAM_INVALID);
  const h = hashByCkm(p.hashAlg);
  // CKZ_DATA_SPECIFIED is the only source of 2.40; an empty label is the default.
  if (h === undefined || p.mgf !== h.mgf || (p.source !== ck.CKZ_DATA_SPECIFIED && p.source !== 0)) {
    throw new Pkcs11Error(ck.CKR_MECHANISM_PARAM_INVALID);
  }
  return h;
}

type SigVariant = NonNullable<Extract<Algorithm['variant'], { case: 'asymmetricSignature' }>['value']['variant']>;

function signature(v: SigVariant['case'], hash: HashInfo | null): SignatureInit {
  if (v === 'ecdsaAny' || v === 'rsaPkcs1v15SignRaw') return { variant: { case: v, value: {} } };
  const hashAlg = hash === null ? { variant: { case: 'any' as const, value: {} } } : { variant: { case: 'specific' as const, value: hash.psa } };
  return { variant: { case: v as 'ecdsa', value: { hashAlg } } };
}

/** The hash a signature policy names: a HashInfo, 'any' (wildcard), null (no hash: raw forms), undefined (unknown to us). */
function policyHash(v: SigVariant): HashInfo | 'any' | null | undefined {
  if (v === undefined || v.case === undefined) return undefined;
  if (v.case === 'ecdsaAny' || v.case === 'rsaPkcs1v15SignRaw') return null;
  const h = v.value.hashAlg?.variant;
  if (h?.case === 'any') return 'any';
  if (h?.case === 'specific') return hashByPsa(h.value);
  return undefined;
}

/** What one signature operation sends: the algorithm and the hash value to sign or verify. */
export interface SignPlan {
  readonly alg: SignatureInit;
  readonly hash: Buffer;
}

/**
 * The PSA signature algorithm for mechanism `m` on a key whose policy is
 * `policy`, and the bytes to send. `input` is the hash (or DigestInfo, for
 * CKM_RSA_PKCS) the caller passed, or the daemon's hash of the data for a
 * hashing mechanism (`prehashed`).
 */
export function signPlan(m: SignMechanism, policy: Algorithm | undefined, pss: HashInfo | null, input: Buffer): SignPlan {
  const sig = policy?.variant.case === 'asymmetricSignature' ? policy.variant.value.variant : undefined;
  if (sig === undefined || sig.case === undefined) throw new Pkcs11Error(ck.CKR_KEY_FUNCTION_NOT_PERMITTED);
  const ph = policyHash(sig);
  const permits = (h: HashInfo): boolean => ph === 'any' || ph === h;
  switch (m.family) {
    case 'ecdsa': {
      if (sig.case !== 'ecdsa' && sig.case !== 'deterministicEcdsa' && sig.case !== 'ecdsaAny') {
        throw new Pkcs11Error(ck.CKR_KEY_FUNCTION_NOT_PERMITTED);
      }
      if (sig.case === 'ecdsaAny') {
        if (m.prehash !== null) throw new Pkcs11Error(ck.CKR_KEY_FUNCTION_NOT_PERMITTED);
        return { alg: signature('ecdsaAny', null), hash: input };
      }
      let h: HashInfo | undefined;
      if (m.prehash !== null) h = m.prehash;
      else if (ph !== 'any' && ph != null) h = ph;
      else h = hashByLength(input.length);
      if (h === undefined || input.length !== h.length) throw new Pkcs11Error(ck.CKR_DATA_LEN_RANGE);
      if (!permits(h)) throw new Pkcs11Error(ck.CKR_KEY_FUNCTION_NOT_PERMITTED);
      return { alg: signature(sig.case, h), hash: input };
    }
    case 'pkcs1': {
      if (sig.case === 'rsaPkcs1v15SignRaw') {
        // PSA_ALG_RSA_PKCS1V15_SIGN_RAW signs the bytes as given: CKM_RSA_PKCS exactly.
        if (m.prehash !== null) throw new Pkcs11Error(ck.CKR_KEY_FUNCTION_NOT_PERMITTED);
        return { alg: signature('rsaPkcs1v15SignRaw', null), hash: input };
      }
      if (sig.case !== 'rsaPkcs1v15Sign') throw new Pkcs11Error(ck.CKR_KEY_FUNCTION_NOT_PERMITTED);
      let h: HashInfo | undefined = m.prehash ?? undefined;
      let hash = input;
      if (h === undefined) {
        // CKM_RSA_PKCS input is a DigestInfo: PSA takes the hash and builds it again.
        const d = splitDigestInfo(input);
        if (d === undefined) throw new Pkcs11Error(ck.CKR_DATA_INVALID);
        h = d.hash;
        hash = d.digest;
      }
      if (!permits(h)) throw new Pkcs11Error(ck.CKR_KEY_FUNCTION_NOT_PERMITTED);
      return { alg: signature('rsaPkcs1v15Sign', h), hash };
    }
    case 'pss': {
      if (sig.case !== 'rsaPss') throw new Pkcs11Error(ck.CKR_KEY_FUNCTION_NOT_PERMITTED);
      const h = pss as HashInfo;
      if (input.length !== h.length) throw new Pkcs11Error(ck.CKR_DATA_LEN_RANGE);
      if (!permits(h)) throw new Pkcs11Error(ck.CKR_KEY_FUNCTION_NOT_PERMITTED);
      return { alg: signature('rsaPss', h), hash: input };
    }
  }
}

function splitDigestInfo(b: Buffer): { hash: HashInfo; digest: Buffer } | undefined {
  for (const [name, prefix] of DIGEST_INFO_PREFIX) {
    const h = hashByName(name);
    if (b.length === prefix.length + h.length && b.subarray(0, prefix.length).equals(prefix)) {
      return { hash: h, digest: b.subarray(prefix.length) };
    }
  }
  return undefined;
}

/** The PSA encryption algorithm for CKM_RSA_PKCS / CKM_RSA_PKCS_OAEP (oaep: its hash) under `policy`. */
export function encryptAlgorithm(mech: number, policy: Algorithm | undefined, oaep: HashInfo | null): EncryptionInit {
  const enc = policy?.variant.case === 'asymmetricEncryption' ? policy.variant.value.variant : undefined;
  if (enc === undefined || enc.case === undefined) throw new Pkcs11Error(ck.CKR_KEY_FUNCTION_NOT_PERMITTED);
  if (mech === ck.CKM_RSA_PKCS) {
    if (enc.case !== 'rsaPkcs1v15Crypt') throw new Pkcs11Error(ck.CKR_KEY_FUNCTION_NOT_PERMITTED);
    return { variant: { case: 'rsaPkcs1v15Crypt', value: {} } };
  }
  const h = oaep as HashInfo;
  if (enc.case !== 'rsaOaep' || hashByPsa(enc.value.hashAlg) !== h) throw new Pkcs11Error(ck.CKR_KEY_FUNCTION_NOT_PERMITTED);
  return { variant: { case: 'rsaOaep', value: { hashAlg: h.psa } } };
}

/** The mechanisms a key's policy serves, for CKA_ALLOWED_MECHANISMS. */
export function allowedMechanisms(policy: Algorithm | undefined): number[] {
  const v = policy?.variant;
  if (v?.case === 'asymmetricEncryption') {
    const e = v.value.variant;
    if (e.case === 'rsaPkcs1v15Crypt') return [ck.CKM_RSA_PKCS];
    if (e.case === 'rsaOaep') return [ck.CKM_RSA_PKCS_OAEP];
    return [];
  }
  if (v?.case !== 'asymmetricSignature') return [];
  const sig = v.value.variant;
  const ph = policyHash(sig);
  if (sig.case === 'ecdsaAny') return [ck.CKM_ECDSA];
  if (sig.case === 'rsaPkcs1v15SignRaw') return [ck.CKM_RSA_PKCS];
  const fam: SignFamily | undefined =
    sig.case === 'ecdsa' || sig.case === 'deterministicEcdsa' ? 'ecdsa' : sig.case === 'rsaPkcs1v15Sign' ? 'pkcs1' : sig.case === 'rsaPss' ? 'pss' : undefined;
  if (fam === undefined || ph === undefined || ph === null) return [];
  const out: number[] = [];
  for (const [mech, m] of SIGN_MECHANISMS) {
    if (m.family !== fam) continue;
    if (m.prehash === null || ph === 'any' || ph === m.prehash) out.push(mech);
  }
  return out;
}

/**
 * The one PSA policy algorithm for a generated or imported key, from the
 * template's CKA_ALLOWED_MECHANISMS (when given) or the default of its key
 * type and usage. PSA keys have one algorithm: mechanisms of several
 * families (say RSA-PSS and RSA-OAEP) on one key are CKR_TEMPLATE_INCONSISTENT.
 * The hash is the one the allowed mechanisms name, else `dflt` (Parsec's
 * PKCS #11 provider refuses wildcard-hash policies); several hashes ask for
 * the wildcard, which the provider may refuse (its status answers).
 */
export function policyAlgorithm(keyType: number, allowed: number[] | null, sign: boolean, decrypt: boolean, dflt: HashInfo): AlgorithmInit {
  const anyHash = { variant: { case: 'any' as const, value: {} } };
  const sigAlg = (v: 'ecdsa' | 'rsaPkcs1v15Sign' | 'rsaPss', hashes: Set<HashInfo>): AlgorithmInit => {
    const hashAlg = hashes.size > 1 ? anyHash : { variant: { case: 'specific' as const, value: (hashes.size === 1 ? [...hashes][0] : dflt).psa } };
    return { variant: { case: 'asymmetricSignature', value: { variant: { case: v, value: { hashAlg } } } } };
  };
  if (allowed === null || allowed.length === 0) {
    if (keyType === ck.CKK_EC) {
      if (decrypt) throw new Pkcs11Error(ck.CKR_TEMPLATE_INCONSISTENT);
      return sigAlg('ecdsa', new Set());
    }
    if (sign && decrypt) throw new Pkcs11Error(ck.CKR_TEMPLATE_INCONSISTENT);
    if (decrypt) return { variant: { case: 'asymmetricEncryption', value: { variant: { case: 'rsaOaep', value: { hashAlg: 7 } } } } };
    return sigAlg('rsaPkcs1v15Sign', new Set());
  }
  const families = new Set<string>();
  const hashes = new Set<HashInfo>();
  const oaepHashes = new Set<HashInfo>();
  for (const mech of allowed) {
    const s = SIGN_MECHANISMS.get(mech);
    if (mech === ck.CKM_RSA_PKCS && keyType === ck.CKK_RSA && decrypt && !sign) families.add('pkcs1crypt');
    else if (mech === ck.CKM_RSA_PKCS_OAEP && keyType === ck.CKK_RSA) {
      families.add('oaep');
      oaepHashes.add(hashByName('sha256'));
    } else if (s !== undefined && s.keyType === keyType) {
      families.add(s.family);
      if (s.prehash) hashes.add(s.prehash);
    } else throw new Pkcs11Error(ck.CKR_ATTRIBUTE_VALUE_INVALID);
  }
  if (families.size !== 1) throw new Pkcs11Error(ck.CKR_TEMPLATE_INCONSISTENT);
  const f = [...families][0];
  if (f === 'pkcs1crypt') return { variant: { case: 'asymmetricEncryption', value: { variant: { case: 'rsaPkcs1v15Crypt', value: {} } } } };
  if (f === 'oaep') return { variant: { case: 'asymmetricEncryption', value: { variant: { case: 'rsaOaep', value: { hashAlg: 7 } } } } };
  if (f === 'ecdsa') return sigAlg('ecdsa', hashes);
  if (f === 'pss') return sigAlg('rsaPss', hashes);
  return sigAlg('rsaPkcs1v15Sign', hashes);
}
