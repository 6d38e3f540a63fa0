import { create } from '@bufbuild/protobuf';
import { AlgorithmSchema } from '../../generated/parsec/psa_algorithm_pb';
import type { Algorithm } from '../../generated/parsec/psa_algorithm_pb';
import { ck } from '../../pkcs11/constants';
import { rvOf } from '../../pkcs11/errors';
import { SIGN_MECHANISMS, allowedMechanisms, encryptAlgorithm, hashByName, oaepHash, policyAlgorithm, pssHash, signPlan } from './mechanisms';
import type { AlgorithmInit } from './mechanisms';

/** The CK_RV `fn` throws, CKR_OK when it returns. */
function rv(fn: () => unknown): number {
  try {
    fn();
    return ck.CKR_OK;
  } catch (e) {
    return rvOf(e);
  }
}
const alg = (a: AlgorithmInit): Algorithm => create(AlgorithmSchema, a);
const sig = (v: string, hash: number | 'any' | null): Algorithm =>
  alg({
    variant: {
      case: 'asymmetricSignature',
      value: { variant: { case: v as 'ecdsa', value: hash === null ? {} : { hashAlg: { variant: hash === 'any' ? { case: 'any', value: {} } : { case: 'specific', value: hash } } } } },
    },
  });
const SHA256 = 7;
const SHA384 = 8;
const m = (mech: number) => SIGN_MECHANISMS.get(mech)!;
const h32 = Buffer.alloc(32, 1);

describe('signPlan: the key policy decides, a mismatch is a precise CK_RV', () => {
  it('CKM_ECDSA takes the policy hash; a hash of another length is CKR_DATA_LEN_RANGE', () => {
    expect(signPlan(m(ck.CKM_ECDSA), sig('ecdsa', SHA256), null, h32).alg).toEqual({
      variant: { case: 'ecdsa', value: { hashAlg: { variant: { case: 'specific', value: SHA256 } } } },
    });
    expect(rv(() => signPlan(m(ck.CKM_ECDSA), sig('ecdsa', SHA256), null, Buffer.alloc(48)))).toBe(ck.CKR_DATA_LEN_RANGE);
    // Under a wildcard the length names the hash.
    expect(signPlan(m(ck.CKM_ECDSA), sig('ecdsa', 'any'), null, Buffer.alloc(48)).alg).toMatchObject({ variant: { value: { hashAlg: { variant: { value: SHA384 } } } } });
    expect(rv(() => signPlan(m(ck.CKM_ECDSA), sig('ecdsa', 'any'), null, Buffer.alloc(33)))).toBe(ck.CKR_DATA_LEN_RANGE);
  });
  it('a hashing mechanism of another hash, another family or an encryption key is CKR_KEY_FUNCTION_NOT_PERMITTED', () => {
    expect(rv(() => signPlan(m(ck.CKM_ECDSA_SHA384), sig('ecdsa', SHA256), null, Buffer.alloc(48)))).toBe(ck.CKR_KEY_FUNCTION_NOT_PERMITTED);
    expect(rv(() => signPlan(m(ck.CKM_SHA256_RSA_PKCS), sig('rsaPss', SHA256), null, h32))).toBe(ck.CKR_KEY_FUNCTION_NOT_PERMITTED);
    const oaep = alg({ variant: { case: 'asymmetricEncryption', value: { variant: { case: 'rsaOaep', value: { hashAlg: SHA256 } } } } });
    expect(rv(() => signPlan(m(ck.CKM_SHA256_RSA_PKCS), oaep, null, h32))).toBe(ck.CKR_KEY_FUNCTION_NOT_PERMITTED);
  });
  it('CKM_RSA_PKCS signs a DigestInfo as its hash; other bytes are CKR_DATA_INVALID unless the key is raw PKCS#1', () => {
    const di = Buffer.concat([Buffer.from('3031300d060960864801650304020105000420', 'hex'), h32]);
    const plan = signPlan(m(ck.CKM_RSA_PKCS), sig('rsaPkcs1v15Sign', SHA256), null, di);
    expect(plan.hash).toEqual(h32);
    expect(rv(() => signPlan(m(ck.CKM_RSA_PKCS), sig('rsaPkcs1v15Sign', SHA256), null, h32))).toBe(ck.CKR_DATA_INVALID);
    expect(signPlan(m(ck.CKM_RSA_PKCS), sig('rsaPkcs1v15SignRaw', null), null, h32)).toEqual({ alg: { variant: { case: 'rsaPkcs1v15SignRaw', value: {} } }, hash: h32 });
  });
});

test('PSS and OAEP parameters PSA cannot express are CKR_MECHANISM_PARAM_INVALID', () => {
  const pss = m(ck.CKM_SHA256_RSA_PKCS_PSS);
  expect(pssHash(pss, { hashAlg: ck.CKM_SHA256, mgf: ck.CKG_MGF1_SHA256, sLen: 32 })).toBe(hashByName('sha256'));
  for (const p of [
    null,
    { hashAlg: ck.CKM_SHA256, mgf: ck.CKG_MGF1_SHA1, sLen: 32 },
    { hashAlg: ck.CKM_SHA256, mgf: ck.CKG_MGF1_SHA256, sLen: 20 },
    { hashAlg: ck.CKM_SHA384, mgf: ck.CKG_MGF1_SHA384, sLen: 48 },
  ]) {
    expect(rv(() => pssHash(pss, p))).toBe(ck.CKR_MECHANISM_PARAM_INVALID);
  }
  expect(rv(() => oaepHash({ hashAlg: ck.CKM_SHA256, mgf: ck.CKG_MGF1_SHA1, source: ck.CKZ_DATA_SPECIFIED, sourceData: Buffer.alloc(0) }))).toBe(
    ck.CKR_MECHANISM_PARAM_INVALID,
  );
  const oaepKey = alg({ variant: { case: 'asymmetricEncryption', value: { variant: { case: 'rsaOaep', value: { hashAlg: SHA256 } } } } });
  expect(rv(() => encryptAlgorithm(ck.CKM_RSA_PKCS_OAEP, oaepKey, hashByName('sha1')))).toBe(ck.CKR_KEY_FUNCTION_NOT_PERMITTED);
  expect(rv(() => encryptAlgorithm(ck.CKM_RSA_PKCS, oaepKey, null))).toBe(ck.CKR_KEY_FUNCTION_NOT_PERMITTED);
});

test('policyAlgorithm: one algorithm per key, its CKA_ALLOWED_MECHANISMS read back', () => {
  const s256 = hashByName('sha256');
  const pss = policyAlgorithm(ck.CKK_RSA, [ck.CKM_RSA_PKCS_PSS, ck.CKM_SHA256_RSA_PKCS_PSS], true, false, s256);
  expect(allowedMechanisms(alg(pss))).toEqual([ck.CKM_RSA_PKCS_PSS, ck.CKM_SHA256_RSA_PKCS_PSS]);
  expect(rv(() => policyAlgorithm(ck.CKK_RSA, [ck.CKM_RSA_PKCS_PSS, ck.CKM_RSA_PKCS_OAEP], true, true, s256))).toBe(ck.CKR_TEMPLATE_INCONSISTENT);
  expect(rv(() => policyAlgorithm(ck.CKK_RSA, null, true, true, s256))).toBe(ck.CKR_TEMPLATE_INCONSISTENT);
  expect(rv(() => policyAlgorithm(ck.CKK_EC, [ck.CKM_RSA_PKCS_PSS], true, false, s256))).toBe(ck.CKR_ATTRIBUTE_VALUE_INVALID);
  expect(allowedMechanisms(alg(policyAlgorithm(ck.CKK_EC, null, true, false, hashByName('sha384'))))).toEqual([ck.CKM_ECDSA, ck.CKM_ECDSA_SHA384]);
  expect(allowedMechanisms(alg(policyAlgorithm(ck.CKK_RSA, null, false, true, s256)))).toEqual([ck.CKM_RSA_PKCS_OAEP]);
});
