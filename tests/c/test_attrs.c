/*
 * Attribute values by their shape (rpc/attributes.table) through a PKCS#11
 * client library: CK_ULONG, CK_BBOOL, bytes, CK_DATE, CK_ULONG arrays
 * (CKA_ALLOWED_MECHANISMS) and nested templates, set through
 * C_GenerateKey / C_GenerateKeyPair / C_CreateObject templates and read
 * back with C_GetAttributeValue: size query, exact buffer, short buffer
 * (PKCS#11 2.40 section 5.7), alone and beside other attributes.
 * Environment: P11CLIENT_LIB (the client library under test), DAEMON
 * (ours, camlcrush, or direct when the library is SoftHSM2 itself: what
 * a nested template does differs),
 * P11TEST_CLIENT=camlcrush when the library is Caml Crush's client.
 * Prints "N passed, M failed" last; exits non-zero on any failure.
 */
#include <dlfcn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

static int passed, failed;
static CK_FUNCTION_LIST_PTR f;

#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    if (cond) {                                                                \
      passed++;                                                                \
    } else {                                                                   \
      failed++;                                                                \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                     \
      fprintf(stderr, __VA_ARGS__);                                            \
      fputc('\n', stderr);                                                     \
    }                                                                          \
  } while (0)

#define CHECK_RV(call, expected)                                               \
  do {                                                                         \
    CK_RV r_ = (call);                                                         \
    CHECK(r_ == (CK_RV)(expected), "%s -> 0x%lx, expected %s", #call,          \
          (unsigned long)r_, #expected);                                       \
  } while (0)

static const char PIN[] = "1234";
static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;

static bool caml_crush_client(void) {
  const char *c = getenv("P11TEST_CLIENT");
  return c != NULL && strcmp(c, "camlcrush") == 0;
}

/* DAEMON=direct: P11CLIENT_LIB is the module itself (the baseline). */
static bool direct_module(void) {
  const char *d = getenv("DAEMON");
  return d != NULL && strcmp(d, "direct") == 0;
}

static bool our_daemon(void) {
  const char *d = getenv("DAEMON");
  return d != NULL && strcmp(d, "ours") == 0;
}

/*
 * Reads `type` of `o` three ways and compares with `want` (`len` bytes):
 * a size query, an exact buffer, a buffer one byte short (unavailable and
 * CKR_BUFFER_TOO_SMALL), and the short buffer beside CKA_CLASS, which is
 * still answered.
 */
static void expect_attr(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o,
                        const char *name, CK_ATTRIBUTE_TYPE type,
                        const void *want, CK_ULONG len, CK_OBJECT_CLASS cls) {
  CK_ATTRIBUTE q = {type, NULL, 0};
  CK_RV rv = f->C_GetAttributeValue(s, o, &q, 1);
  CHECK(rv == CKR_OK && q.ulValueLen == len,
        "%s size query: rv 0x%lx, length %lu, expected %lu", name,
        (unsigned long)rv, (unsigned long)q.ulValueLen, (unsigned long)len);

  unsigned char buf[512];
  memset(buf, 0xa5, sizeof buf);
  CK_ATTRIBUTE e = {type, buf, len};
  rv = f->C_GetAttributeValue(s, o, &e, 1);
  CHECK(rv == CKR_OK && e.ulValueLen == len && memcmp(buf, want, len) == 0,
        "%s exact buffer: rv 0x%lx, length %lu", name, (unsigned long)rv,
        (unsigned long)e.ulValueLen);
  CHECK(buf[len] == 0xa5, "%s: nothing written past the value", name);

  /* Caml Crush's client takes a non-NULL buffer of size 0 for a size query
   * (CKR_OK, the length); PKCS#11 says CKR_BUFFER_TOO_SMALL. */
  if (len == 0 || (len == 1 && caml_crush_client()))
    return;
  memset(buf, 0xa5, sizeof buf);
  CK_ATTRIBUTE sh = {type, buf, len - 1};
  rv = f->C_GetAttributeValue(s, o, &sh, 1);
  CHECK(rv == CKR_BUFFER_TOO_SMALL && sh.ulValueLen == CK_UNAVAILABLE_INFORMATION,
        "%s short buffer: rv 0x%lx, length 0x%lx", name, (unsigned long)rv,
        (unsigned long)sh.ulValueLen);

  CK_OBJECT_CLASS got = (CK_OBJECT_CLASS)-2;
  CK_ATTRIBUTE two[] = {{type, buf, len - 1}, {CKA_CLASS, &got, sizeof got}};
  rv = f->C_GetAttributeValue(s, o, two, 2);
  CHECK(rv == CKR_BUFFER_TOO_SMALL &&
            two[0].ulValueLen == CK_UNAVAILABLE_INFORMATION &&
            two[1].ulValueLen == sizeof got && got == cls,
        "%s short beside CKA_CLASS: rv 0x%lx, class %lu (len %lu)", name,
        (unsigned long)rv, (unsigned long)got,
        (unsigned long)two[1].ulValueLen);
}

static CK_SESSION_HANDLE login(void) {
  CK_SLOT_ID slots[8];
  CK_ULONG n = 8;
  if (f->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK || n == 0) {
    fprintf(stderr, "no token slot\n");
    exit(2);
  }
  CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
  CHECK_RV(f->C_OpenSession(slots[0], CKF_SERIAL_SESSION | CKF_RW_SESSION,
                            NULL, NULL, &s),
           CKR_OK);
  CK_RV rv = f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)PIN, 4);
  CHECK(rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN, "C_Login -> 0x%lx",
        (unsigned long)rv);
  return s;
}

/* CK_ULONG, CK_BBOOL, bytes and CK_ULONG array on a secret key. */
static void secret_key_shapes(CK_SESSION_HANDLE s) {
  CK_MECHANISM gen = {CKM_AES_KEY_GEN, NULL, 0};
  CK_ULONG len = 16;
  CK_BYTE label[] = "shape-aes";
  /* Ascending: SoftHSM2 keeps the list as a set and answers it in order. */
  CK_MECHANISM_TYPE allowed[] = {CKM_AES_ECB, CKM_AES_CBC};
  CK_ATTRIBUTE t[] = {{CKA_TOKEN, &no, sizeof no},
                      {CKA_VALUE_LEN, &len, sizeof len},
                      {CKA_LABEL, label, sizeof label - 1},
                      {CKA_ENCRYPT, &yes, sizeof yes},
                      {CKA_ALLOWED_MECHANISMS, allowed, sizeof allowed}};
  CK_OBJECT_HANDLE k = CK_INVALID_HANDLE;
  CHECK_RV(f->C_GenerateKey(s, &gen, t, 5, &k), CKR_OK);
  CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  CK_KEY_TYPE kt = CKK_AES;
  expect_attr(s, k, "CKA_CLASS", CKA_CLASS, &cls, sizeof cls, cls);
  expect_attr(s, k, "CKA_KEY_TYPE", CKA_KEY_TYPE, &kt, sizeof kt, cls);
  expect_attr(s, k, "CKA_VALUE_LEN", CKA_VALUE_LEN, &len, sizeof len, cls);
  expect_attr(s, k, "CKA_ENCRYPT", CKA_ENCRYPT, &yes, sizeof yes, cls);
  expect_attr(s, k, "CKA_TOKEN", CKA_TOKEN, &no, sizeof no, cls);
  expect_attr(s, k, "CKA_LABEL", CKA_LABEL, label, sizeof label - 1, cls);
  expect_attr(s, k, "CKA_ALLOWED_MECHANISMS", CKA_ALLOWED_MECHANISMS, allowed,
              sizeof allowed, cls);

  /* The module enforces the list it received: it arrived as numbers. */
  CK_BYTE iv[16] = {0};
  CK_MECHANISM cbc = {CKM_AES_CBC, iv, sizeof iv};
  CK_AES_CTR_PARAMS ctr = {128, {0}};
  CK_MECHANISM ctr_mech = {CKM_AES_CTR, &ctr, sizeof ctr};
  CHECK_RV(f->C_EncryptInit(s, &cbc, k), CKR_OK);
  CK_BYTE block[16] = {0}, out[16];
  CK_ULONG out_len = sizeof out;
  CHECK_RV(f->C_Encrypt(s, block, sizeof block, out, &out_len), CKR_OK);
  CHECK_RV(f->C_EncryptInit(s, &ctr_mech, k), CKR_MECHANISM_INVALID);

  /* C_SetAttributeValue narrows the list; the new value reads back. */
  CK_MECHANISM_TYPE only_ecb[] = {CKM_AES_ECB};
  CK_ATTRIBUTE narrow = {CKA_ALLOWED_MECHANISMS, only_ecb, sizeof only_ecb};
  CK_RV rv = f->C_SetAttributeValue(s, k, &narrow, 1);
  /* SoftHSM2 2.6.1 lets CKA_ALLOWED_MECHANISMS be set only at creation. */
  CHECK(rv == CKR_OK || rv == CKR_ATTRIBUTE_READ_ONLY,
        "C_SetAttributeValue(CKA_ALLOWED_MECHANISMS) -> 0x%lx",
        (unsigned long)rv);
  if (rv == CKR_OK)
    expect_attr(s, k, "CKA_ALLOWED_MECHANISMS after set",
                CKA_ALLOWED_MECHANISMS, only_ecb, sizeof only_ecb, cls);
}

/* C_GenerateKeyPair with an RSA-PSS-only private key; C_CreateObject data. */
static void key_pair_and_object_shapes(CK_SESSION_HANDLE s) {
  CK_MECHANISM gen = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
  CK_ULONG bits = 1024;
  CK_BYTE e[] = {1, 0, 1};
  CK_BYTE id[] = {0x5a, 0x00, 0x01};
  CK_MECHANISM_TYPE pss[] = {CKM_RSA_PKCS_PSS};
  CK_ATTRIBUTE pub[] = {{CKA_TOKEN, &no, sizeof no},
                        {CKA_VERIFY, &yes, sizeof yes},
                        {CKA_MODULUS_BITS, &bits, sizeof bits},
                        {CKA_PUBLIC_EXPONENT, e, sizeof e},
                        {CKA_ID, id, sizeof id},
                        {CKA_ALLOWED_MECHANISMS, pss, sizeof pss}};
  CK_ATTRIBUTE priv[] = {{CKA_TOKEN, &no, sizeof no},
                         {CKA_PRIVATE, &yes, sizeof yes},
                         {CKA_SIGN, &yes, sizeof yes},
                         {CKA_ID, id, sizeof id},
                         {CKA_ALLOWED_MECHANISMS, pss, sizeof pss}};
  CK_OBJECT_HANDLE hpub = CK_INVALID_HANDLE, hpriv = CK_INVALID_HANDLE;
  CHECK_RV(f->C_GenerateKeyPair(s, &gen, pub, 6, priv, 5, &hpub, &hpriv),
           CKR_OK);
  CK_OBJECT_CLASS pubc = CKO_PUBLIC_KEY, privc = CKO_PRIVATE_KEY;
  expect_attr(s, hpub, "public CKA_MODULUS_BITS", CKA_MODULUS_BITS, &bits,
              sizeof bits, pubc);
  expect_attr(s, hpub, "public CKA_PUBLIC_EXPONENT", CKA_PUBLIC_EXPONENT, e,
              sizeof e, pubc);
  expect_attr(s, hpub, "public CKA_ALLOWED_MECHANISMS",
              CKA_ALLOWED_MECHANISMS, pss, sizeof pss, pubc);
  expect_attr(s, hpriv, "private CKA_ALLOWED_MECHANISMS",
              CKA_ALLOWED_MECHANISMS, pss, sizeof pss, privc);
  expect_attr(s, hpriv, "private CKA_ID", CKA_ID, id, sizeof id, privc);
  expect_attr(s, hpriv, "private CKA_SIGN", CKA_SIGN, &yes, sizeof yes, privc);

  /* Only PSS signs; PKCS#1 v1.5 is refused by the module. */
  CK_RSA_PKCS_PSS_PARAMS pp = {CKM_SHA256, CKG_MGF1_SHA256, 32};
  CK_MECHANISM m_pss = {CKM_RSA_PKCS_PSS, &pp, sizeof pp};
  CK_MECHANISM m_v15 = {CKM_RSA_PKCS, NULL, 0};
  CK_BYTE digest[32] = {1, 2, 3};
  CK_BYTE sig[128];
  CK_ULONG sig_len = sizeof sig;
  CHECK_RV(f->C_SignInit(s, &m_pss, hpriv), CKR_OK);
  CHECK_RV(f->C_Sign(s, digest, sizeof digest, sig, &sig_len), CKR_OK);
  CHECK_RV(f->C_SignInit(s, &m_v15, hpriv), CKR_MECHANISM_INVALID);

  CK_OBJECT_CLASS data = CKO_DATA;
  CK_BYTE app[] = "shape-app";
  CK_BYTE value[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  CK_ATTRIBUTE dt[] = {{CKA_CLASS, &data, sizeof data},
                       {CKA_TOKEN, &no, sizeof no},
                       {CKA_APPLICATION, app, sizeof app - 1},
                       {CKA_VALUE, value, sizeof value}};
  CK_OBJECT_HANDLE d = CK_INVALID_HANDLE;
  CHECK_RV(f->C_CreateObject(s, dt, 4, &d), CKR_OK);
  expect_attr(s, d, "data CKA_CLASS", CKA_CLASS, &data, sizeof data, data);
  expect_attr(s, d, "data CKA_APPLICATION", CKA_APPLICATION, app,
              sizeof app - 1, data);
  expect_attr(s, d, "data CKA_VALUE", CKA_VALUE, value, sizeof value, data);
  CHECK_RV(f->C_DestroyObject(s, d), CKR_OK);

  /* CK_DATE on a certificate (SoftHSM2 2.6.1 answers CKR_GENERAL_ERROR for
   * the dates of keys, directly too). */
  CK_OBJECT_CLASS certc = CKO_CERTIFICATE;
  CK_CERTIFICATE_TYPE x509 = CKC_X_509;
  CK_BYTE der[] = {0x30, 0x00};
  CK_DATE start = {{'2', '0', '2', '6'}, {'1', '2'}, {'0', '1'}};
  CK_ATTRIBUTE ct[] = {{CKA_CLASS, &certc, sizeof certc},
                       {CKA_CERTIFICATE_TYPE, &x509, sizeof x509},
                       {CKA_TOKEN, &no, sizeof no},
                       {CKA_SUBJECT, der, sizeof der},
                       {CKA_VALUE, der, sizeof der},
                       {CKA_START_DATE, &start, sizeof start}};
  CK_OBJECT_HANDLE c = CK_INVALID_HANDLE;
  CHECK_RV(f->C_CreateObject(s, ct, 6, &c), CKR_OK);
  expect_attr(s, c, "certificate CKA_CERTIFICATE_TYPE", CKA_CERTIFICATE_TYPE,
              &x509, sizeof x509, certc);
  expect_attr(s, c, "certificate CKA_START_DATE", CKA_START_DATE, &start,
              sizeof start, certc);
  CHECK_RV(f->C_DestroyObject(s, c), CKR_OK);
}

/*
 * A nested template is a CK_ATTRIBUTE array holding pointers: no raw-byte
 * protocol can carry it. Sending one is CKR_ATTRIBUTE_VALUE_INVALID (our
 * client refuses it; our daemon refuses the raw bytes other clients send)
 * and the connection keeps working. Reading one through our daemon is
 * unavailable (CKR_ATTRIBUTE_SENSITIVE), the other attributes answered.
 */
static void nested_template_shape(CK_SESSION_HANDLE s) {
  CK_KEY_TYPE aes = CKK_AES;
  CK_ATTRIBUTE inner[] = {{CKA_KEY_TYPE, &aes, sizeof aes}};
  CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  CK_BYTE value[16] = {7};
  CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof cls},
                      {CKA_KEY_TYPE, &aes, sizeof aes},
                      {CKA_TOKEN, &no, sizeof no},
                      {CKA_VALUE, value, sizeof value},
                      {CKA_WRAP, &yes, sizeof yes},
                      {CKA_WRAP_TEMPLATE, inner, sizeof inner}};
  CK_OBJECT_HANDLE k = CK_INVALID_HANDLE;
  CK_ULONG stored = 0; /* the key's CKA_WRAP_TEMPLATE, in bytes */
  if (direct_module()) {
    CHECK_RV(f->C_CreateObject(s, t, 6, &k), CKR_OK);
    stored = sizeof inner;
  } else {
    CHECK_RV(f->C_CreateObject(s, t, 6, &k), CKR_ATTRIBUTE_VALUE_INVALID);
    CHECK_RV(f->C_CreateObject(s, t, 5, &k), CKR_OK);
  }

  CK_ATTRIBUTE q[] = {{CKA_WRAP_TEMPLATE, NULL, 0}, {CKA_CLASS, NULL, 0}};
  CK_RV rv = f->C_GetAttributeValue(s, k, q, 2);
  if (our_daemon()) {
    CHECK(rv == CKR_ATTRIBUTE_SENSITIVE &&
              q[0].ulValueLen == CK_UNAVAILABLE_INFORMATION &&
              q[1].ulValueLen == sizeof(CK_OBJECT_CLASS),
          "CKA_WRAP_TEMPLATE size query: rv 0x%lx, lengths 0x%lx, %lu",
          (unsigned long)rv, (unsigned long)q[0].ulValueLen,
          (unsigned long)q[1].ulValueLen);
  } else {
    /* SoftHSM2, directly or behind Caml Crush: the key's template. */
    CHECK(rv == CKR_OK && q[0].ulValueLen == stored,
          "CKA_WRAP_TEMPLATE size query: rv 0x%lx, length 0x%lx",
          (unsigned long)rv, (unsigned long)q[0].ulValueLen);
  }
  CK_OBJECT_CLASS got = 0;
  CK_ATTRIBUTE c = {CKA_CLASS, &got, sizeof got};
  CHECK_RV(f->C_GetAttributeValue(s, k, &c, 1), CKR_OK);
  CHECK(got == CKO_SECRET_KEY, "CKA_CLASS after the refusals: %lu",
        (unsigned long)got);
  CHECK_RV(f->C_DestroyObject(s, k), CKR_OK);
}

int main(void) {
  const char *lib = getenv("P11CLIENT_LIB");
  if (lib == NULL) {
    fprintf(stderr, "P11CLIENT_LIB is not set\n");
    return 2;
  }
  void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
  if (h == NULL) {
    fprintf(stderr, "dlopen: %s\n", dlerror());
    return 2;
  }
  CK_C_GetFunctionList gfl =
      (CK_C_GetFunctionList)(void (*)(void))dlsym(h, "C_GetFunctionList");
  if (gfl == NULL || gfl(&f) != CKR_OK) {
    fprintf(stderr, "C_GetFunctionList missing\n");
    return 2;
  }
  CHECK_RV(f->C_Initialize(NULL), CKR_OK);
  CK_SESSION_HANDLE s = login();
  secret_key_shapes(s);
  key_pair_and_object_shapes(s);
  nested_template_shape(s);
  CHECK_RV(f->C_CloseSession(s), CKR_OK);
  CHECK_RV(f->C_Finalize(NULL), CKR_OK);
  /* No dlclose: valgrind then resolves the library's frames in leak reports. */
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
