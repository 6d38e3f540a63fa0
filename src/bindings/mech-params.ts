import * as pkcs11js from 'pkcs11js';
import {
  PX_MP_AES_CBC_ENCRYPT_DATA,
  PX_MP_AES_CTR,
  PX_MP_CCM,
  PX_MP_DES_CBC_ENCRYPT_DATA,
  PX_MP_ECDH1_DERIVE,
  PX_MP_EDDSA,
  PX_MP_GCM,
  PX_MP_KEY_DERIVATION_STRING_DATA,
  PX_MP_NONE,
  PX_MP_RAW,
  PX_MP_RSA_PKCS_OAEP,
  PX_MP_RSA_PKCS_PSS,
  PX_MP_ULONG,
  PX_MP_X9_42_DH1_DERIVE,
} from '../generated/pkcs11_rpc';
import type { px_mech_param, px_mechanism, px_mechanism_typed } from '../generated/pkcs11_rpc';
import { NATIVE_ARCH, writeULong } from '../pkcs11/arch';
import { CKR_MECHANISM_PARAM_INVALID } from '../pkcs11/constants';
import { Pkcs11Error } from '../pkcs11/errors';
import { checkRawParameter } from '../pkcs11/mechanism-shapes';

/** Largest CK_ULONG the daemon's own layout can hold that a JS number carries exactly. */
const MAX_ULONG = NATIVE_ARCH.ulongSize === 8 ? Number.MAX_SAFE_INTEGER : 0xffffffff;

/**
 * A CK_ULONG field of a typed parameter. pkcs11js converts through a double
 * and a C cast, which is undefined for negative numbers: refuse them here.
 */
function ulong(v: number): number {
  if (!Number.isSafeInteger(v) || v < 0 || v > MAX_ULONG) throw new Pkcs11Error(CKR_MECHANISM_PARAM_INVALID);
  return v;
}

/**
 * An optional pointer/length pair for pkcs11js: an absent property becomes
 * a NULL pointer with length 0, which is what a C caller passes for "no
 * data" (SoftHSM2 rejects a non-NULL pSharedData even with length 0).
 */
function optional<K extends string>(key: K, b: Buffer): Partial<Record<K, Buffer>> {
  return b.length > 0 ? ({ [key]: b } as Record<K, Buffer>) : {};
}

/** A struct of CK_ULONGs and byte arrays in the daemon's own layout ('u' a CK_ULONG, N that many bytes, aligned). */
function nativeStruct(fields: ReadonlyArray<{ u: number } | { bytes: Buffer } | { bool: boolean }>): Buffer {
  const u = NATIVE_ARCH.ulongSize;
  let size = 0;
  for (const f of fields) {
    if ('u' in f) size = Math.ceil(size / u) * u + u;
    else if ('bytes' in f) size += f.bytes.length;
    else size += 1;
  }
  const out = Buffer.alloc(Math.ceil(size / u) * u);
  let off = 0;
  for (const f of fields) {
    if ('u' in f) {
      off = Math.ceil(off / u) * u;
      writeULong(out, off, ulong(f.u), NATIVE_ARCH);
      off += u;
    } else if ('bytes' in f) {
      f.bytes.copy(out, off);
      off += f.bytes.length;
    } else {
      out[off] = f.bool ? 1 : 0;
      off += 1;
    }
  }
  return out;
}

/** A NULL pointer in the daemon's layout (pointers are CK_ULONG-sized on every supported ABI). */
const NULL_POINTER = { u: 0 };

/**
 * Rebuilds a typed parameter as pkcs11js wants it. pkcs11js builds the C
 * struct itself for the kinds it knows (pointing into these Buffers, which
 * therefore must stay referenced until the call returns); pointer-free
 * structs are laid out here in the daemon's own memory layout. Structs that
 * hold a pointer pkcs11js has no builder for can only be passed when every
 * such pointer is NULL: otherwise CKR_MECHANISM_PARAM_INVALID.
 */
export function typedParameter(mech: number, p: px_mech_param): pkcs11js.Mechanism['parameter'] {
  switch (p.tag) {
    case PX_MP_RAW:
      return p.value.length > 0 ? checkRawParameter(mech, p.value) : undefined;
    case PX_MP_NONE:
      return undefined;
    case PX_MP_ULONG:
      return nativeStruct([{ u: p.value }]);
    case PX_MP_RSA_PKCS_OAEP: {
      const v = p.value;
      const r: pkcs11js.RsaOAEP = {
        type: pkcs11js.CK_PARAMS_RSA_OAEP,
        hashAlg: ulong(v.hashAlg),
        mgf: ulong(v.mgf),
        source: ulong(v.source),
        ...optional('sourceData', v.sourceData),
      };
      return r;
    }
    case PX_MP_RSA_PKCS_PSS: {
      const v = p.value;
      const r: pkcs11js.RsaPSS = {
        type: pkcs11js.CK_PARAMS_RSA_PSS,
        hashAlg: ulong(v.hashAlg),
        mgf: ulong(v.mgf),
        saltLen: ulong(v.sLen),
      };
      return r;
    }
    case PX_MP_GCM: {
      const v = p.value;
      // CK_PARAMS_GCM is the 2.40 CK_GCM_PARAMS (with ulIvBits).
      const r: pkcs11js.GcmParams = {
        type: pkcs11js.CK_PARAMS_GCM,
        iv: v.iv,
        ivBits: ulong(v.ivBits),
        ...optional('aad', v.aad),
        tagBits: ulong(v.tagBits),
      };
      return r;
    }
    case PX_MP_CCM: {
      const v = p.value;
      // pkcs11js 2.1.7 reads 'dataLength' and 'macLength' (its typings say dataLen/macLen).
      return {
        type: pkcs11js.CK_PARAMS_CCM,
        dataLength: ulong(v.dataLen),
        ...optional('nonce', v.nonce),
        ...optional('aad', v.aad),
        macLength: ulong(v.macLen),
      } as pkcs11js.IParams;
    }
    case PX_MP_AES_CTR:
      return nativeStruct([{ u: p.value.counterBits }, { bytes: p.value.cb }]);
    case PX_MP_ECDH1_DERIVE: {
      const v = p.value;
      const r: pkcs11js.ECDH1 = {
        type: pkcs11js.CK_PARAMS_EC_DH,
        kdf: ulong(v.kdf),
        publicData: v.publicData,
        ...optional('sharedData', v.sharedData),
      };
      return r;
    }
    case PX_MP_X9_42_DH1_DERIVE: {
      const v = p.value;
      return {
        type: pkcs11js.CK_PARAMS_X9_42_DH1_DERIVE,
        kdf: ulong(v.kdf),
        publicData: v.publicData,
        ...optional('otherInfo', v.otherInfo),
      } as pkcs11js.IParams;
    }
    case PX_MP_KEY_DERIVATION_STRING_DATA:
      // CK_KEY_DERIVATION_STRING_DATA { pData, ulLen }: pkcs11js has no
      // builder and a Buffer parameter is copied as bytes, so no pointer to
      // the data can be put in it. Only the empty form is expressible.
      if (p.value.length > 0) throw new Pkcs11Error(CKR_MECHANISM_PARAM_INVALID);
      return nativeStruct([NULL_POINTER, { u: 0 }]);
    case PX_MP_AES_CBC_ENCRYPT_DATA: {
      const r: pkcs11js.AesCBC = { type: pkcs11js.CK_PARAMS_AES_CBC, iv: p.value.iv, ...optional('data', p.value.data) };
      return r;
    }
    case PX_MP_DES_CBC_ENCRYPT_DATA: {
      const r: pkcs11js.DesCbcEncryptDataParams = {
        type: pkcs11js.CK_PARAMS_DES_CBC_ENCRYPT_DATA,
        iv: p.value.iv,
        ...optional('data', p.value.data),
      };
      return r;
    }
    case PX_MP_EDDSA:
      // CK_EDDSA_PARAMS { CK_BBOOL phFlag; CK_ULONG ulContextDataLen; CK_BYTE_PTR pContextData }:
      // no pkcs11js builder, so a context (a pointer) cannot be carried.
      if (p.value.contextData.length > 0) throw new Pkcs11Error(CKR_MECHANISM_PARAM_INVALID);
      return nativeStruct([{ bool: p.value.phFlag }, { u: 0 }, NULL_POINTER]);
  }
}

/**
 * pkcs11js form of a version 3 mechanism (raw parameter bytes, already in the
 * daemon's layout). The bytes are checked against the mechanism's shape:
 * this and the RAW kind of typedParameter are the only ways client bytes
 * become a module's CK_MECHANISM.pParameter.
 */
export function rawMechanism(m: px_mechanism): pkcs11js.Mechanism {
  return m.parameter.length > 0
    ? { mechanism: m.mechanism, parameter: checkRawParameter(m.mechanism, m.parameter) }
    : { mechanism: m.mechanism };
}

/** pkcs11js form of a typed mechanism (procedures 73..84). */
export function typedMechanism(m: px_mechanism_typed): pkcs11js.Mechanism {
  const parameter = typedParameter(m.mechanism, m.param);
  return parameter === undefined ? { mechanism: m.mechanism } : { mechanism: m.mechanism, parameter };
}
