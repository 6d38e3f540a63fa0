/*
 * mech_param_driver MODULE PIN
 *
 * Drives a PKCS#11 module (dlopen) through mechanisms whose parameters hold
 * pointers (AES-GCM, ECDH1-DERIVE), plain-byte and length-checked ones
 * (AES-CBC IVs), then ordinary calls on the same session (SHA-256 digest,
 * HMAC). Prints one line per step: "<step> <rv in hex> [detail]". Exits 0
 * when every step ran (whatever its rv), 2 on a setup failure.
 *
 * Used by tests/ts/mechanism-params.test.ts with Caml Crush's client library,
 * which sends the parameter of GCM and ECDH as the raw bytes of its C struct.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST_PTR f;

/* A setup step that must succeed: reports it and exits 2 otherwise. */
#define MUST(call)                                                             \
  do {                                                                         \
    CK_RV rv_ = (call);                                                        \
    if (rv_ != CKR_OK) {                                                       \
      fprintf(stderr, "%s: 0x%lx\n", #call, (unsigned long)rv_);               \
      return 2;                                                                \
    }                                                                          \
  } while (0)

#define STEP(name, call)                                                       \
  do {                                                                         \
    CK_RV rv_ = (call);                                                        \
    printf("%s 0x%lx\n", (name), (unsigned long)rv_);                          \
    fflush(stdout);                                                            \
  } while (0)

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s MODULE PIN\n", argv[0]);
    return 2;
  }
  void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    fprintf(stderr, "dlopen: %s\n", dlerror());
    return 2;
  }
  CK_C_GetFunctionList gfl = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
  if (gfl == NULL)
    return 2;
  MUST(gfl(&f));
  MUST(f->C_Initialize(NULL));
  /* Size query first: Caml Crush's client writes the whole list whatever the buffer's size. */
  CK_SLOT_ID slots[16];
  CK_ULONG nslots = 0;
  MUST(f->C_GetSlotList(CK_TRUE, NULL, &nslots));
  if (nslots < 1 || nslots > 16)
    return 2;
  MUST(f->C_GetSlotList(CK_TRUE, slots, &nslots));
  /* SoftHSM2 lists a free slot too, in no fixed order: take the initialized token. */
  CK_SLOT_ID slot = 0;
  CK_ULONG i;
  for (i = 0; i < nslots; i++) {
    CK_TOKEN_INFO ti;
    if (f->C_GetTokenInfo(slots[i], &ti) == CKR_OK && (ti.flags & CKF_TOKEN_INITIALIZED)) {
      slot = slots[i];
      break;
    }
  }
  if (i == nslots)
    return 2;
  CK_SESSION_HANDLE s;
  MUST(f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s));
  MUST(f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)argv[2], strlen(argv[2])));

  CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
  CK_ULONG len32 = 32;
  CK_OBJECT_CLASS secret = CKO_SECRET_KEY;
  CK_KEY_TYPE generic = CKK_GENERIC_SECRET;

  /* AES-256 session key. */
  CK_MECHANISM aes_gen = {CKM_AES_KEY_GEN, NULL, 0};
  CK_ATTRIBUTE aes_t[] = {{CKA_VALUE_LEN, &len32, sizeof len32},
                          {CKA_ENCRYPT, &yes, sizeof yes},
                          {CKA_TOKEN, &no, sizeof no}};
  CK_OBJECT_HANDLE aes;
  MUST(f->C_GenerateKey(s, &aes_gen, aes_t, 3, &aes));

  /* CK_GCM_PARAMS holds pIv and pAAD: pointers into this process. */
  CK_BYTE iv[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  CK_BYTE aad[8] = {0};
  CK_GCM_PARAMS gcm = {iv, 12, 96, aad, sizeof aad, 128};
  CK_MECHANISM m_gcm = {CKM_AES_GCM, &gcm, sizeof gcm};
  STEP("gcm_encrypt_init", f->C_EncryptInit(s, &m_gcm, aes));

  /* EC P-256 key pair, then ECDH1 with a CK_ECDH1_DERIVE_PARAMS (pPublicData a pointer). */
  static CK_BYTE p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
  CK_MECHANISM ec_gen = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
  CK_ATTRIBUTE pub_t[] = {{CKA_EC_PARAMS, p256, sizeof p256}, {CKA_TOKEN, &no, sizeof no}};
  CK_ATTRIBUTE priv_t[] = {{CKA_DERIVE, &yes, sizeof yes}, {CKA_TOKEN, &no, sizeof no}};
  CK_OBJECT_HANDLE pub, priv;
  MUST(f->C_GenerateKeyPair(s, &ec_gen, pub_t, 2, priv_t, 2, &pub, &priv));
  CK_BYTE point[65];
  memset(point, 0x11, sizeof point);
  point[0] = 0x04;
  CK_ECDH1_DERIVE_PARAMS ecdh = {CKD_NULL, 0, NULL, sizeof point, point};
  CK_MECHANISM m_ecdh = {CKM_ECDH1_DERIVE, &ecdh, sizeof ecdh};
  CK_ATTRIBUTE der_t[] = {{CKA_CLASS, &secret, sizeof secret},
                          {CKA_KEY_TYPE, &generic, sizeof generic},
                          {CKA_VALUE_LEN, &len32, sizeof len32},
                          {CKA_TOKEN, &no, sizeof no}};
  CK_OBJECT_HANDLE derived;
  STEP("ecdh1_derive", f->C_DeriveKey(s, &m_ecdh, priv, der_t, 4, &derived));

  /* Plain bytes: a 16-byte IV passes, a 15-byte one does not. */
  CK_MECHANISM m_cbc_short = {CKM_AES_CBC_PAD, iv, 15};
  STEP("cbc_iv15_encrypt_init", f->C_EncryptInit(s, &m_cbc_short, aes));
  CK_MECHANISM m_cbc = {CKM_AES_CBC_PAD, iv, 16};
  STEP("cbc_iv16_encrypt_init", f->C_EncryptInit(s, &m_cbc, aes));
  CK_BYTE plain[16] = {0}, cipher[64];
  CK_ULONG clen = sizeof cipher;
  STEP("cbc_encrypt", f->C_Encrypt(s, plain, sizeof plain, cipher, &clen));

  /* The same session keeps working. */
  CK_MECHANISM m_sha = {CKM_SHA256, NULL, 0};
  STEP("digest_init", f->C_DigestInit(s, &m_sha));
  CK_BYTE digest[32];
  CK_ULONG dlen = sizeof digest;
  CK_RV rv = f->C_Digest(s, (CK_BYTE_PTR) "abc", 3, digest, &dlen);
  printf("digest 0x%lx ", (unsigned long)rv);
  for (i = 0; rv == CKR_OK && i < dlen; i++)
    printf("%02x", digest[i]);
  printf("\n");

  CK_MECHANISM gen_gen = {CKM_GENERIC_SECRET_KEY_GEN, NULL, 0};
  CK_ATTRIBUTE hk_t[] = {{CKA_VALUE_LEN, &len32, sizeof len32},
                         {CKA_SIGN, &yes, sizeof yes},
                         {CKA_TOKEN, &no, sizeof no}};
  CK_OBJECT_HANDLE hk;
  STEP("hmac_keygen", f->C_GenerateKey(s, &gen_gen, hk_t, 3, &hk));
  CK_MECHANISM m_hmac = {CKM_SHA256_HMAC, NULL, 0};
  STEP("hmac_sign_init", f->C_SignInit(s, &m_hmac, hk));
  CK_BYTE mac[32];
  CK_ULONG mlen = sizeof mac;
  rv = f->C_Sign(s, (CK_BYTE_PTR) "abc", 3, mac, &mlen);
  printf("hmac_sign 0x%lx %lu\n", (unsigned long)rv, (unsigned long)mlen);

  f->C_Logout(s);
  f->C_CloseSession(s);
  f->C_Finalize(NULL);
  return 0;
}
